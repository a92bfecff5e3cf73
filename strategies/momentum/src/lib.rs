//! Momentum: buy a binary-outcome token while its price trends up, sell what
//! is held when the trend turns.
//!
//! For each market the strategy keeps the last `lookback + 1` mid prices. When
//! the mid has risen by at least `threshold` over the lookback and the position
//! is below `max_position`, it buys `order_size` at the best ask (fill-and-kill,
//! so nothing rests). When the mid has fallen by `threshold` and it holds
//! shares, it sells up to `order_size` at the best bid. At most one order per
//! market is in flight, and a `cooldown_ms` of event time separates orders.
//!
//! Positions, average cost, realised PnL and counters are all in the state, so
//! they survive restarts exactly.

use std::collections::{BTreeMap, VecDeque};

use polybot_strategy::{
    Action, Event, EventKind, OrderStatus, OrderType, PlaceOrder, Side, Strategy, intent_id,
};
use serde::{Deserialize, Serialize};

/// Parameters, from the `[strategy]` table of the host's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// How many book updates back the trend is measured over.
    pub lookback: usize,
    /// Minimum change of the mid over the lookback that counts as a trend.
    pub threshold: f64,
    /// Shares per order.
    pub order_size: f64,
    /// Largest position held in one market, in shares.
    pub max_position: f64,
    /// Event time between two orders in one market.
    pub cooldown_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            lookback: 20,
            threshold: 0.02,
            order_size: 10.0,
            max_position: 100.0,
            cooldown_ms: 5_000,
        }
    }
}

/// Per-market view and position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarketState {
    pub mids: VecDeque<f64>,
    pub position: f64,
    pub avg_price: f64,
    pub last_order_ms: Option<u64>,
    /// Intent id of the order in flight, if any.
    pub in_flight: Option<String>,
}

/// The strategy's whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Momentum {
    pub params: Params,
    pub markets: BTreeMap<String, MarketState>,
    pub events_seen: u64,
    pub orders_placed: u64,
    pub fills: u64,
    pub realized_pnl: f64,
    pub fees: f64,
}

impl Momentum {
    fn on_book(&mut self, event: &Event, book: &polybot_strategy::Book, actions: &mut Vec<Action>) {
        let (Some(bid), Some(ask)) = (book.best_bid(), book.best_ask()) else {
            return;
        };
        let params = &self.params;
        let market = self.markets.entry(book.market.clone()).or_default();
        market.mids.push_back((bid + ask) / 2.0);
        while market.mids.len() > params.lookback + 1 {
            market.mids.pop_front();
        }
        if market.mids.len() <= params.lookback || market.in_flight.is_some() {
            return;
        }
        let cooled = market
            .last_order_ms
            .is_none_or(|t| event.timestamp_ms.saturating_sub(t) >= params.cooldown_ms);
        if !cooled {
            return;
        }
        let change = market.mids.back().copied().unwrap_or_default()
            - market.mids.front().copied().unwrap_or_default();
        let order = if change >= params.threshold
            && market.position + params.order_size <= params.max_position + 1e-9
        {
            Some((Side::Buy, ask, params.order_size))
        } else if change <= -params.threshold && market.position > 1e-9 {
            Some((Side::Sell, bid, market.position.min(params.order_size)))
        } else {
            None
        };
        if let Some((side, price, size)) = order {
            let id = intent_id(event.seq, actions.len());
            actions.push(Action::PlaceOrder(PlaceOrder {
                market: book.market.clone(),
                side,
                price,
                size,
                order_type: OrderType::Fak,
            }));
            market.in_flight = Some(id);
            market.last_order_ms = Some(event.timestamp_ms);
            self.orders_placed += 1;
        }
    }

    fn on_fill(&mut self, fill: &polybot_strategy::Fill) {
        let market = self.markets.entry(fill.market.clone()).or_default();
        match fill.side {
            Side::Buy => {
                let cost = market.avg_price * market.position + fill.price * fill.size;
                market.position += fill.size;
                market.avg_price = if market.position > 0.0 {
                    cost / market.position
                } else {
                    0.0
                };
            }
            Side::Sell => {
                // A reversal (negative size) puts the shares back at the
                // average they were sold from, which a flat position keeps.
                let size = fill.size.min(market.position);
                self.realized_pnl += (fill.price - market.avg_price) * size;
                market.position -= size;
                if market.position <= 1e-9 {
                    market.position = 0.0;
                }
            }
        }
        self.realized_pnl -= fill.fee;
        self.fees += fill.fee;
        if fill.is_reversal() {
            self.fills = self.fills.saturating_sub(1);
        } else {
            self.fills += 1;
        }
    }
}

impl Strategy for Momentum {
    const NAME: &'static str = "momentum";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const STATE_VERSION: u32 = 1;
    type Config = Params;

    fn new(params: Params) -> Result<Self, String> {
        if params.lookback == 0 {
            return Err("lookback must be at least 1".into());
        }
        if !(params.threshold.is_finite() && params.threshold > 0.0 && params.threshold < 1.0) {
            return Err(format!(
                "threshold must be in (0, 1), got {}",
                params.threshold
            ));
        }
        if !(params.order_size.is_finite() && params.order_size > 0.0) {
            return Err(format!(
                "order_size must be positive, got {}",
                params.order_size
            ));
        }
        if !(params.max_position.is_finite() && params.max_position >= params.order_size) {
            return Err(format!(
                "max_position ({}) must be at least order_size ({})",
                params.max_position, params.order_size
            ));
        }
        Ok(Momentum {
            params,
            markets: BTreeMap::new(),
            events_seen: 0,
            orders_placed: 0,
            fills: 0,
            realized_pnl: 0.0,
            fees: 0.0,
        })
    }

    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>) {
        self.events_seen += 1;
        match &event.kind {
            EventKind::Book(book) => self.on_book(event, book, actions),
            EventKind::Fill(fill) => self.on_fill(fill),
            EventKind::OrderUpdate(update) => {
                let done = matches!(
                    update.status,
                    OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected
                );
                if done
                    && let Some(market) = self.markets.get_mut(&update.market)
                    && market.in_flight.as_deref() == Some(update.intent_id.as_str())
                {
                    market.in_flight = None;
                }
            }
            EventKind::Trade(_) | EventKind::Timer(_) | EventKind::VenueStatus(_) => {}
        }
    }
}

polybot_strategy::export_strategy!(Momentum);

#[cfg(test)]
mod tests {
    use super::*;
    use polybot_strategy::{Book, Fill, Level, OrderUpdate};

    fn book(seq: u64, t: u64, mid: f64) -> Event {
        Event {
            seq,
            timestamp_ms: t,
            kind: EventKind::Book(Book {
                market: "m".into(),
                bids: vec![Level {
                    price: mid - 0.005,
                    size: 100.0,
                }],
                asks: vec![Level {
                    price: mid + 0.005,
                    size: 100.0,
                }],
            }),
        }
    }

    fn params() -> Params {
        Params {
            lookback: 3,
            threshold: 0.02,
            order_size: 5.0,
            max_position: 10.0,
            cooldown_ms: 0,
        }
    }

    #[test]
    fn a_reversed_fill_is_undone() {
        let mut s = Momentum::new(params()).unwrap();
        let mut actions = Vec::new();
        let fill = |side, price, size| Event {
            seq: 1,
            timestamp_ms: 0,
            kind: EventKind::Fill(Fill {
                intent_id: "1.0".into(),
                market: "m".into(),
                side,
                price,
                size,
                fee: 0.0,
            }),
        };
        s.on_event(&fill(Side::Buy, 0.40, 5.0), &mut actions);
        // A sell whose trade failed: the shares come back at their cost.
        s.on_event(&fill(Side::Sell, 0.50, 5.0), &mut actions);
        s.on_event(&fill(Side::Sell, 0.50, -5.0), &mut actions);
        assert!(s.realized_pnl.abs() < 1e-9, "{}", s.realized_pnl);
        assert!((s.markets["m"].position - 5.0).abs() < 1e-9);
        assert!((s.markets["m"].avg_price - 0.40).abs() < 1e-9);
        // A buy whose trade failed: the shares go again.
        s.on_event(&fill(Side::Buy, 0.40, -5.0), &mut actions);
        assert_eq!(s.markets["m"].position, 0.0);
        assert_eq!(s.fills, 0, "two fills, both reversed");
        assert!(actions.is_empty());
    }

    #[test]
    fn buys_on_an_uptrend_at_the_ask() {
        let mut s = Momentum::new(params()).unwrap();
        let mut actions = Vec::new();
        for (i, mid) in [0.40, 0.41, 0.42, 0.43].into_iter().enumerate() {
            s.on_event(&book(i as u64 + 1, i as u64 * 1000, mid), &mut actions);
        }
        assert_eq!(actions.len(), 1);
        let Action::PlaceOrder(order) = &actions[0] else {
            panic!("not an order")
        };
        assert_eq!(order.side, Side::Buy);
        assert!((order.price - 0.435).abs() < 1e-9);
        assert_eq!(s.markets["m"].in_flight.as_deref(), Some("4.0"));
    }

    #[test]
    fn no_second_order_while_one_is_in_flight_and_round_trip_pnl() {
        let mut s = Momentum::new(params()).unwrap();
        let mut actions = Vec::new();
        for (i, mid) in [0.40, 0.41, 0.42, 0.43, 0.44].into_iter().enumerate() {
            s.on_event(&book(i as u64 + 1, 0, mid), &mut actions);
        }
        assert_eq!(actions.len(), 1, "in-flight order blocks a second one");
        let fill = |side, price| Event {
            seq: 10,
            timestamp_ms: 0,
            kind: EventKind::Fill(Fill {
                intent_id: "4.0".into(),
                market: "m".into(),
                side,
                price,
                size: 5.0,
                fee: 0.0,
            }),
        };
        s.on_event(&fill(Side::Buy, 0.40), &mut actions);
        s.on_event(&fill(Side::Sell, 0.50), &mut actions);
        assert!((s.realized_pnl - 0.5).abs() < 1e-9);
        assert_eq!(s.markets["m"].position, 0.0);
        s.on_event(
            &Event {
                seq: 11,
                timestamp_ms: 0,
                kind: EventKind::OrderUpdate(OrderUpdate {
                    intent_id: "4.0".into(),
                    market: "m".into(),
                    status: OrderStatus::Filled,
                    filled_size: 5.0,
                    remaining_size: 0.0,
                    reason: None,
                }),
            },
            &mut actions,
        );
        assert!(s.markets["m"].in_flight.is_none());
    }

    #[test]
    fn rejects_bad_parameters() {
        let bad = Params {
            lookback: 0,
            ..Params::default()
        };
        assert!(Momentum::new(bad).unwrap_err().contains("lookback"));
        let bad = Params {
            max_position: 1.0,
            order_size: 5.0,
            ..Params::default()
        };
        assert!(Momentum::new(bad).unwrap_err().contains("max_position"));
    }

    #[test]
    fn snapshot_round_trips_and_refuses_other_versions() {
        let mut s = Momentum::new(params()).unwrap();
        let mut actions = Vec::new();
        s.on_event(&book(1, 0, 0.5), &mut actions);
        let bytes = s.snapshot();
        assert_eq!(Momentum::restore(&bytes, 1).unwrap(), s);
        assert!(
            Momentum::restore(&bytes, 2)
                .unwrap_err()
                .contains("version 2")
        );
        assert!(Momentum::restore(b"{not json", 1).is_err());
    }
}
