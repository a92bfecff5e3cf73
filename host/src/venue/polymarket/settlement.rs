//! Settlement of live trades: which trades of this process's orders reached
//! a final status, and the reversal of those that `FAILED`.
//!
//! It reads nothing itself: the upkeep task hands it the venue's trades
//! (`GET /data/trades`) and sends on the events it returns. It never books
//! money (the venue's ledger books the reversal fill like any other).

use std::collections::{HashMap, HashSet};

use polybot_polymarket::types::Trade;

use super::{EPS, LiveOrder, TRADE_FAILED, Tracked, clean, side_from_wire, update};
use crate::contract::{EventKind, Fill, OrderStatus, Side};
use crate::venue::VenueTrade;

/// The legs of `all` that are orders of ours (as taker, or as one of the
/// makers) matched at or after `since_ms`, each with an id unique per leg:
/// the trade's id for the taker, `<trade>/<order hash>` for a maker.
pub(super) fn our_trades(orders: &Tracked, all: Vec<Trade>, since_ms: u64) -> Vec<VenueTrade> {
    let ours: HashMap<String, (String, Side)> = orders
        .lock()
        .iter()
        .map(|(id, o)| (o.hash.clone(), (id.clone(), o.side)))
        .collect();
    let mut out = Vec::new();
    for t in all {
        // The venue states match times in seconds.
        let time_ms = t.match_time.map(|s| s.saturating_mul(1000));
        if time_ms.is_some_and(|ms| ms + 1000 <= since_ms) {
            continue;
        }
        if let Some((intent_id, _)) = t.taker_order_id.as_ref().and_then(|h| ours.get(h)) {
            out.push(VenueTrade {
                id: t.id.clone(),
                intent_id: intent_id.clone(),
                market: t.asset_id.clone(),
                side: side_from_wire(t.side),
                price: t.price,
                size: t.size,
                status: t.status.clone(),
                time_ms,
            });
        }
        for m in &t.maker_orders {
            if let Some((intent_id, side)) = ours.get(&m.order_id) {
                out.push(VenueTrade {
                    id: format!("{}/{}", t.id, m.order_id),
                    intent_id: intent_id.clone(),
                    market: t.asset_id.clone(),
                    side: *side,
                    price: m.price.unwrap_or(t.price),
                    size: m.matched_amount.unwrap_or(t.size),
                    status: t.status.clone(),
                    time_ms,
                });
            }
        }
    }
    out
}

/// Settlement of the trades of this process's orders. A fill is provisional
/// until its trade is final: `CONFIRMED` settles it, `FAILED` reverses it —
/// a fill of the same side, market and price with the size negated (see
/// `wit/strategy.wit`), then an order update saying why.
#[derive(Debug, Default)]
pub(super) struct Settlement {
    /// Trade legs (ids as [`our_trades`] gives them) that reached a final status.
    done: HashSet<String>,
    /// Per intent: matched size whose trades are final.
    settled: HashMap<String, f64>,
    /// Per intent: matched size whose trades failed.
    reversed: HashMap<String, f64>,
}

impl Settlement {
    /// Whether some matched size of `orders` still waits for its trade to be final.
    pub(super) fn pending(&self, orders: &HashMap<String, LiveOrder>) -> bool {
        orders
            .iter()
            .any(|(id, o)| o.matched > self.settled.get(id).copied().unwrap_or(0.0) + EPS)
    }

    /// Takes in the venue's trades; returns the reversals of newly failed ones.
    ///
    /// A trade counts against its order's matched size, and one that would
    /// exceed it (its fill not reported yet) waits for a later round.
    /// Confirmed trades are taken first, so an order adopted from an earlier
    /// run with its fills net of reversals (matched = filled − reversed) has
    /// its confirmed trades settled and its already reversed ones left alone.
    pub(super) fn follow(
        &mut self,
        orders: &Tracked,
        mut trades: Vec<VenueTrade>,
    ) -> Vec<EventKind> {
        let failed_last = |t: &VenueTrade| {
            t.status
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("FAILED"))
        };
        trades.sort_by_key(failed_last);
        let mut events = Vec::new();
        for t in trades {
            let status = t.status.as_deref().unwrap_or_default().to_ascii_uppercase();
            let failed = status == "FAILED";
            if !(failed || status == "CONFIRMED") || self.done.contains(&t.id) {
                continue;
            }
            let settled = self.settled.get(&t.intent_id).copied().unwrap_or(0.0);
            let matched = orders.lock().get(&t.intent_id).map_or(0.0, |o| o.matched);
            if settled + t.size > matched + EPS {
                // Its fill has not been reported yet: settle it once it has.
                continue;
            }
            self.done.insert(t.id.clone());
            *self.settled.entry(t.intent_id.clone()).or_default() += t.size;
            if !failed {
                continue;
            }
            let before = orders
                .lock()
                .get(&t.intent_id)
                .map_or(0.0, |o| o.reversed_before);
            let reversed = self.reversed.entry(t.intent_id.clone()).or_default();
            *reversed += t.size;
            if *reversed <= before + EPS {
                // Reversed by an earlier run: the strategy was told.
                continue;
            }
            events.push(EventKind::Fill(Fill {
                intent_id: t.intent_id.clone(),
                market: t.market.clone(),
                side: t.side,
                price: t.price,
                size: -t.size,
                fee: 0.0,
            }));
            let order = orders.lock().get(&t.intent_id).cloned();
            let (status, filled, remaining) = match order {
                Some(o) => {
                    let filled = clean((o.matched - *reversed).max(0.0));
                    let status = match (o.resting, filled > 0.0) {
                        (true, true) => OrderStatus::PartiallyFilled,
                        (true, false) => OrderStatus::Open,
                        (false, _) => OrderStatus::Cancelled,
                    };
                    (status, filled, clean(o.size - o.matched))
                }
                None => (OrderStatus::Cancelled, 0.0, 0.0),
            };
            events.push(update(
                &t.intent_id,
                &t.market,
                status,
                filled,
                remaining,
                Some(format!(
                    "{TRADE_FAILED}: trade {} of {} at {} reversed",
                    t.id, t.size, t.price
                )),
            ));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(matched: f64) -> Tracked {
        let orders = Tracked::default();
        orders.lock().insert(
            "1.0".into(),
            LiveOrder {
                hash: "0xabc".into(),
                signed: None,
                market: "m".into(),
                side: Side::Buy,
                price: 0.5,
                size: 10.0,
                matched,
                reversed_before: 0.0,
                resting: false,
                refused: None,
            },
        );
        orders
    }

    fn trade(id: &str, status: &str) -> VenueTrade {
        VenueTrade {
            id: id.into(),
            intent_id: "1.0".into(),
            market: "m".into(),
            side: Side::Buy,
            price: 0.5,
            size: 5.0,
            status: Some(status.into()),
            time_ms: None,
        }
    }

    fn reversed(events: &[EventKind]) -> Vec<f64> {
        events
            .iter()
            .filter_map(|e| match e {
                EventKind::Fill(f) => Some(f.size),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failed_trade_is_reversed_once_and_a_confirmed_one_never() {
        let orders = tracked(10.0);
        let mut s = Settlement::default();
        assert!(s.pending(&orders.lock()));
        let trades = vec![trade("t2", "FAILED"), trade("t1", "CONFIRMED")];
        let events = s.follow(&orders, trades.clone());
        assert_eq!(reversed(&events), vec![-5.0]);
        assert!(!s.pending(&orders.lock()));
        assert!(s.follow(&orders, trades).is_empty(), "reported once");
    }

    #[test]
    fn a_trade_whose_fill_is_not_reported_yet_waits() {
        let orders = tracked(0.0);
        let mut s = Settlement::default();
        assert!(s.follow(&orders, vec![trade("t1", "FAILED")]).is_empty());
        orders.lock().get_mut("1.0").unwrap().matched = 5.0;
        let events = s.follow(&orders, vec![trade("t1", "FAILED")]);
        assert_eq!(reversed(&events), vec![-5.0]);
    }

    #[test]
    fn an_order_adopted_with_an_earlier_reversal_is_not_reversed_again() {
        // Filled 10 in two trades, one failed and reversed by the earlier run.
        let orders = tracked(10.0);
        orders.lock().get_mut("1.0").unwrap().reversed_before = 5.0;
        let mut s = Settlement::default();
        let events = s.follow(
            &orders,
            vec![trade("t2", "FAILED"), trade("t1", "CONFIRMED")],
        );
        assert!(events.is_empty(), "{events:?}");
        assert!(!s.pending(&orders.lock()));
    }

    #[test]
    fn a_settled_order_adopted_after_a_restart_has_a_later_failure_reversed() {
        // Filled by the earlier run, its trades still matched when it stopped;
        // one fails after the restart.
        let orders = tracked(10.0);
        let mut s = Settlement::default();
        assert!(s.pending(&orders.lock()));
        let mut t1 = trade("t1", "MATCHED");
        let t2 = trade("t2", "MATCHED");
        assert!(s.follow(&orders, vec![t1.clone(), t2.clone()]).is_empty());
        t1.status = Some("FAILED".into());
        let events = s.follow(&orders, vec![t1, t2]);
        assert_eq!(reversed(&events), vec![-5.0]);
        assert!(
            events.iter().any(|e| matches!(e, EventKind::OrderUpdate(u)
                if u.filled_size == 5.0 && u.status == OrderStatus::Cancelled)),
            "{events:?}"
        );
    }
}
