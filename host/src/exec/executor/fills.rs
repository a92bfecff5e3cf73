//! Telling fills: the one place that decides how many shares of an intent the
//! strategy is told, so each share is told once.
//!
//! A venue can report the same matched size twice: a user stream delivering
//! the fill of an answer that was lost after a lookup already told it, or a
//! poll whose mark of what it reported predates a restart whose
//! reconciliation told the rest. Every positive fill a venue reports is
//! therefore held until the order update that follows it in the same batch,
//! whose cumulative filled size says how many shares the intent stands at;
//! the strategy is told the part of the held fills it was not told yet, and
//! the rest is dropped with an `exec-stale` note. A fill with no update after
//! it is told up to the order's size. Reversals (negative fills) pass as
//! they come.
//!
//! Part of [`Executor`]; never calls the venue.

use super::{EPS, Executor};
use crate::contract::{EventKind, Fill, OrderUpdate, Side};
use crate::exec::output::{ExecOutput, NoteKind};
use crate::venue::{ExecutionClient, VenueTrade};

/// Whether a venue trade failed to settle (it is no fill).
pub(super) fn is_failed(t: &VenueTrade) -> bool {
    t.status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("FAILED"))
}

/// Where a told fill's price (and fee) comes from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Leg {
    pub price: f64,
    pub size: f64,
    pub fee: f64,
}

impl From<&VenueTrade> for Leg {
    fn from(t: &VenueTrade) -> Self {
        Leg {
            price: t.price,
            size: t.size,
            fee: 0.0,
        }
    }
}

impl From<&Fill> for Leg {
    fn from(f: &Fill) -> Self {
        Leg {
            price: f.price,
            size: f.size,
            fee: f.fee,
        }
    }
}

/// Whether a fill is told as found by reconciliation (with a note) or as the
/// venue reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Told {
    Reported,
    Missed,
}

impl Executor {
    /// Books a fill told to the strategy: shares told, reversals, position.
    pub(super) fn on_fill(&mut self, f: &Fill) {
        *self.told.entry(f.intent_id.clone()).or_default() += f.size;
        if f.size < 0.0 {
            *self.reversed.entry(f.intent_id.clone()).or_default() -= f.size;
            self.reversal_pending.insert(f.intent_id.clone());
        }
        let signed = match f.side {
            Side::Buy => f.size,
            Side::Sell => -f.size,
        };
        *self.positions.entry(f.market.clone()).or_default() += signed;
    }

    /// Shares of intent `id` a venue's cumulative matched size stands for:
    /// less what was reversed (the venue's matched size still counts it).
    pub(super) fn net_matched(&self, id: &str, matched: f64) -> f64 {
        (matched - self.reversed.get(id).copied().unwrap_or(0.0)).max(0.0)
    }

    /// Whether a fill the venue reported waits for its order's update.
    pub(super) fn holds(&self, f: &Fill) -> bool {
        f.size > 0.0 && self.intent(&f.intent_id).is_some()
    }

    /// Tells the held fills of `u`'s intent (those in `held`), up to what
    /// `u`'s filled size stands for; removes them from `held`.
    pub(super) fn tell_held(
        &mut self,
        u: &OrderUpdate,
        held: &mut Vec<Fill>,
        out: &mut ExecOutput,
    ) {
        let (mine, rest): (Vec<Fill>, Vec<Fill>) =
            held.drain(..).partition(|f| f.intent_id == u.intent_id);
        *held = rest;
        if mine.is_empty() {
            return;
        }
        let target = self.net_matched(&u.intent_id, u.filled_size);
        let legs: Vec<Leg> = mine.iter().map(Leg::from).collect();
        self.tell_up_to(&u.intent_id, target, &legs, false, Told::Reported, out);
    }

    /// Fills no order update followed: told up to the order's size.
    pub(super) fn tell_unexplained(&mut self, held: Vec<Fill>, out: &mut ExecOutput) {
        for f in held {
            let Some(size) = self.intent(&f.intent_id).map(|i| i.order.size) else {
                continue;
            };
            let id = f.intent_id.clone();
            let told = self.told.get(&id).copied().unwrap_or(0.0);
            let reversed = self.reversed.get(&id).copied().unwrap_or(0.0);
            // The order's size bounds its matched size, reversed shares included.
            let target = told + f.size.min((size - reversed - told).max(0.0));
            self.tell_up_to(&id, target, &[Leg::from(&f)], false, Told::Reported, out);
        }
    }

    /// A lookup found matched size of intent `id` the strategy was not told
    /// (the answer to placing it was lost): told now, at the prices of the
    /// venue's trades where it lists them, else at the order's price. The
    /// venue's own later report of it is then a repeat.
    pub(super) async fn tell_found(
        &mut self,
        client: &mut dyn ExecutionClient,
        id: &str,
        u: &OrderUpdate,
        out: &mut ExecOutput,
    ) {
        let net = self.net_matched(id, u.filled_size);
        if net <= self.told.get(id).copied().unwrap_or(0.0) + EPS {
            return;
        }
        let since = self.intent(id).map_or(0, |i| i.created_ms);
        let legs: Vec<Leg> = match client.trades(since).await {
            Ok(trades) => trades
                .iter()
                .filter(|t| t.intent_id == id && !is_failed(t))
                .map(Leg::from)
                .collect(),
            Err(e) => {
                out.note(
                    NoteKind::Unknown,
                    format!("intent {id}: its trades could not be read ({e}); its fill is told at the order's price"),
                );
                Vec::new()
            }
        };
        self.tell_up_to(id, net, &legs, true, Told::Missed, out);
    }

    /// Tells fills of intent `id` from `legs` in order until the strategy has
    /// been told `target` shares of it in all; with `rest_at_order_price`,
    /// what the legs do not cover is told as one fill at the order's price.
    /// Leg shares beyond `target` were told already: dropped, with a note.
    pub(super) fn tell_up_to(
        &mut self,
        id: &str,
        target: f64,
        legs: &[Leg],
        rest_at_order_price: bool,
        how: Told,
        out: &mut ExecOutput,
    ) {
        let Some(intent) = self.intent(id) else {
            return;
        };
        let order = intent.order.clone();
        let mut told = self.told.get(id).copied().unwrap_or(0.0);
        let mut fills = Vec::new();
        let mut dropped = 0.0;
        for leg in legs {
            let size = leg.size.min((target - told).max(0.0));
            dropped += leg.size - size;
            if size <= EPS {
                continue;
            }
            told += size;
            fills.push(Fill {
                intent_id: id.to_string(),
                market: order.market.clone(),
                side: order.side,
                price: leg.price,
                size,
                fee: if leg.size > 0.0 {
                    leg.fee * size / leg.size
                } else {
                    0.0
                },
            });
        }
        if rest_at_order_price && target - told > EPS {
            fills.push(Fill {
                intent_id: id.to_string(),
                market: order.market.clone(),
                side: order.side,
                price: order.price,
                size: target - told,
                fee: 0.0,
            });
        }
        if how == Told::Reported && dropped > EPS {
            out.note(
                NoteKind::Stale,
                format!(
                    "intent {id}: the venue reported {dropped} shares the strategy was told already; not told again"
                ),
            );
        }
        for f in fills {
            if how == Told::Missed {
                out.note(
                    NoteKind::Reconciled,
                    format!("intent {id}: missed fill of {} at {}", f.size, f.price),
                );
            }
            self.on_fill(&f);
            out.events.push(EventKind::Fill(f));
        }
    }
}
