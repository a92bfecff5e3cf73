//! Settling with the venue: after a restart, a reconnect or a lost
//! heartbeat, every non-terminal intent is looked up and moved to its true
//! state, missed fills are told once (by trade id), and venue orders no
//! intent knows are reported (and cancelled when configured).
//!
//! Part of [`Executor`]; never sends a new order.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::fills::{Leg, Told, is_failed};
use super::{Executor, Hold};
use crate::contract::VenueHealth;
use crate::exec::ExecError;
use crate::exec::intent::IntentState;
use crate::exec::output::{ExecOutput, NoteKind};
use crate::venue::ExecutionClient;

impl Executor {
    /// Heartbeats failed: the venue may have cancelled every resting order.
    /// Resting intents become `unknown` and placement holds until
    /// [`Executor::reconcile`].
    ///
    /// # Errors
    /// A record could not be written.
    pub async fn heartbeat_lost(&mut self, now_ms: u64) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        self.hold = Some(Hold::Heartbeat);
        let resting: Vec<String> = self
            .intents
            .values()
            .filter(|i| {
                matches!(
                    i.state,
                    IntentState::Acknowledged | IntentState::PartiallyFilled
                )
            })
            .map(|i| i.id.clone())
            .collect();
        for id in &resting {
            let filled = self.intents.get(id).map_or(0.0, |i| i.filled);
            self.move_to(
                id,
                IntentState::Unknown,
                filled,
                Some("heartbeat lost".into()),
                now_ms,
                &mut out,
            )
            .await?;
        }
        self.status(
            VenueHealth::Degraded,
            format!(
                "heartbeat lost: {} resting orders unknown, placement held until reconciled",
                resting.len()
            ),
            &mut out,
        );
        Ok(out)
    }

    /// Settles every non-terminal intent with the venue, journals fills missed
    /// since `since_ms` once (by trade id), and reports (and, when configured,
    /// cancels) venue orders no intent knows. Lifts a placement hold.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn reconcile(
        &mut self,
        client: &mut dyn ExecutionClient,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        let mut open: Vec<String> = self
            .intents
            .values()
            .filter(|i| !i.state.is_terminal())
            .map(|i| i.id.clone())
            .collect();
        open.sort();
        let mut complete = true;
        let untold = std::mem::take(&mut self.untold);
        // Orders an earlier run sent: the venue learns their references
        // again, with the shares reversed so far (it reverses no trade twice).
        for id in open.iter().chain(&untold) {
            if let Some(i) = self.intent(id)
                && let Some(r) = &i.venue_ref
            {
                let reversed = self.reversed.get(id).copied().unwrap_or(0.0);
                client.adopt(id, &i.order, r, i.filled, reversed);
            }
        }
        // Settled orders whose trades may still fail: the venue follows them
        // (first come, first kept: an open or untold intent is adopted above).
        for (id, order, r, filled) in std::mem::take(&mut self.settling) {
            let reversed = self.reversed.get(&id).copied().unwrap_or(0.0);
            client.adopt(&id, &order, &r, filled, reversed);
        }
        // The venue's trades, grouped by intent, new ones only.
        let mut trades: BTreeMap<String, Vec<crate::venue::VenueTrade>> = BTreeMap::new();
        // Per intent: matched size whose trades failed to settle. The venue's
        // matched size still counts it; the strategy had it reversed (or
        // never told), so it is no fill.
        let mut failed: BTreeMap<String, f64> = BTreeMap::new();
        match client.trades(since_ms).await {
            Ok(ts) => {
                for t in ts {
                    if is_failed(&t) {
                        *failed.entry(t.intent_id.clone()).or_default() += t.size;
                        continue;
                    }
                    if self.log.record_trade(&self.strategy, &t.id).await? {
                        trades.entry(t.intent_id.clone()).or_default().push(t);
                    }
                }
            }
            Err(e) => {
                complete = false;
                out.note(
                    NoteKind::Unknown,
                    format!("reconcile: trades since {since_ms}: {e}"),
                );
            }
        }
        for id in &open {
            if self.state_of(id) == Some(IntentState::Pending) {
                // Recorded but never sent: the Sent record precedes every send.
                self.move_to(
                    id,
                    IntentState::Rejected,
                    0.0,
                    Some("never sent: the host stopped before sending it".into()),
                    now_ms,
                    &mut out,
                )
                .await?;
                out.note(
                    NoteKind::Reconciled,
                    format!("intent {id}: pending → rejected (never sent)"),
                );
                continue;
            }
            let mut backoff = self.backoff();
            let start = Instant::now();
            let found = loop {
                match self.lookup(client, id, &mut out).await {
                    Ok(f) => break Some(f),
                    Err(e) => match self.delay(&mut backoff, &e, start) {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            out.note(NoteKind::Unknown, format!("reconcile: intent {id}: {e}"));
                            break None;
                        }
                    },
                }
            };
            let Some(found) = found else {
                complete = false;
                continue;
            };
            let before = self.state_of(id);
            match found {
                Some(u) => {
                    let new_trades = trades.remove(id).unwrap_or_default();
                    let net = self.net_of_failed(id, u.filled_size, &failed);
                    self.tell_trades(id, net, &new_trades, &mut out);
                    self.apply_found(id, &u, now_ms, &mut out).await?;
                }
                None => {
                    let (to, why) = match before {
                        Some(IntentState::Pending | IntentState::Sent | IntentState::Unknown) => {
                            (IntentState::Rejected, "never reached the venue")
                        }
                        _ => (IntentState::Cancelled, "the venue has no record of it"),
                    };
                    let filled = self.intents.get(id).map_or(0.0, |i| i.filled);
                    self.move_to(id, to, filled, Some(why.into()), now_ms, &mut out)
                        .await?;
                }
            }
            let after = self.state_of(id);
            if before != after {
                out.note(
                    NoteKind::Reconciled,
                    format!(
                        "intent {id}: {} → {}",
                        before.map_or("?", IntentState::as_str),
                        after.map_or("?", IntentState::as_str)
                    ),
                );
            }
        }
        // Settled intents whose fills were not all told: from their trades,
        // else at the order's price.
        for id in &untold {
            let ts = trades.remove(id).unwrap_or_default();
            if let Some(filled) = self.intent(id).map(|i| i.filled) {
                let net = self.net_of_failed(id, filled, &failed);
                self.tell_trades(id, net, &ts, &mut out);
            }
        }
        // Trades of intents that were already settled: fills not yet told.
        for (id, ts) in std::mem::take(&mut trades) {
            if let Some(filled) = self.intent(&id).map(|i| i.filled) {
                let net = self.net_of_failed(&id, filled, &failed);
                self.tell_trades(&id, net, &ts, &mut out);
            }
        }
        match client.open().await {
            Ok(orders) => {
                for o in orders
                    .iter()
                    .filter(|o| self.intent(&o.intent_id).is_none())
                {
                    out.note(
                        NoteKind::UnknownOrder,
                        format!(
                            "venue order {} in {} ({} open) is not one of strategy {}'s intents{}",
                            o.intent_id,
                            o.market,
                            o.remaining_size,
                            self.strategy,
                            if self.cfg.cancel_unknown_orders {
                                "; cancelling it"
                            } else {
                                ""
                            }
                        ),
                    );
                    if self.cfg.cancel_unknown_orders
                        && let Err(e) = client.cancel(&o.intent_id).await
                    {
                        out.note(
                            NoteKind::UnknownOrder,
                            format!("cancel of venue order {}: {e}", o.intent_id),
                        );
                    }
                }
            }
            Err(e) => {
                complete = false;
                out.note(NoteKind::Unknown, format!("reconcile: open orders: {e}"));
            }
        }
        if complete && self.hold.take().is_some() {
            self.status(
                VenueHealth::Recovered,
                "reconciled with the venue; placement resumes".into(),
                &mut out,
            );
        }
        Ok(out)
    }

    /// `venue_filled` (the venue's matched size of intent `id`, which counts
    /// trades that failed to settle) less what failed: the size of the
    /// failed trades the venue lists, or what was reversed for the strategy,
    /// whichever is larger.
    fn net_of_failed(&self, id: &str, venue_filled: f64, failed: &BTreeMap<String, f64>) -> f64 {
        let listed = failed.get(id).copied().unwrap_or(0.0);
        let reversed = self.reversed.get(id).copied().unwrap_or(0.0);
        (venue_filled - listed.max(reversed)).max(0.0)
    }

    /// Fills of intent `id` the strategy has not been told, up to `net`
    /// shares in all: from the venue's trades first, then (no trade data)
    /// one fill at the order's price for the rest.
    fn tell_trades(
        &mut self,
        id: &str,
        net: f64,
        trades: &[crate::venue::VenueTrade],
        out: &mut ExecOutput,
    ) {
        let legs: Vec<Leg> = trades.iter().map(Leg::from).collect();
        self.tell_up_to(id, net, &legs, true, Told::Missed, out);
    }
}
