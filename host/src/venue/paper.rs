//! Paper execution: orders filled against the last book seen, with no real venue.
//!
//! [`PaperExchange`] owns the strategy's simulated orders and its account,
//! booked in the one [`Ledger`] (cash, positions, fees, PnL). It fills
//! orders against whatever books it is shown through
//! [`PaperExchange::on_book`], so it works on top of any market-data source
//! (the simulated market, a replay, a live feed).
//!
//! It also answers what it holds open and the last state of an order by its
//! intent id ([`PaperExchange::open_order_updates`], [`PaperExchange::order`]):
//! every open order, and the newest [`REMEMBERED_FINISHED`] finished ones —
//! older finished orders are forgotten, so a run of any length holds a
//! bounded account. The whole account serialises (serde), so the host can
//! save it and resume from it.
//!
//! It does not produce market data, keep time, or model queue position,
//! latency or market impact beyond one book: a fill consumes the shown
//! liquidity until the next book for that market replaces it. Its own resting
//! orders are not added to the book, so the strategy never trades with itself.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::contract::{
    Book, EventKind, Fill, Level, OrderStatus, OrderType, OrderUpdate, PlaceOrder, Side,
};
use crate::contract::{order_rejected as rejected, order_update as update};
use crate::ledger::Ledger;
use crate::venue::PortfolioSummary;

/// Prices must lie on this grid.
const TICK: f64 = 0.01;
/// Tolerance for float comparisons of prices and sizes: sizes and cash are sums
/// of products of decimal fractions, which are never exact in binary.
const EPS: f64 = 1e-9;
/// Finished (filled, cancelled, rejected) orders remembered for lookups,
/// cancels of finished orders and duplicate ids; older ones are forgotten.
pub const REMEMBERED_FINISHED: usize = 1024;

/// Money and fees of the paper account.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperConfig {
    pub starting_cash: f64,
    /// Fee in basis points of notional (price × size), charged on every fill.
    pub fee_bps: f64,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self {
            starting_cash: 10_000.0,
            fee_bps: 0.0,
        }
    }
}

/// A GTC order waiting on the book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resting {
    intent_id: String,
    market: String,
    side: Side,
    price: f64,
    size: f64,
    filled: f64,
}

impl Resting {
    fn remaining(&self) -> f64 {
        clean(self.size - self.filled)
    }
}

/// Paper execution against the last books seen; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperExchange {
    fee_rate: f64,
    /// Cash, positions at average cost, fees and realised PnL.
    ledger: Ledger,
    /// Last book per market, minus the liquidity our fills took from it.
    books: HashMap<String, Book>,
    /// Mid of the last book per market as shown, for marking positions.
    mids: HashMap<String, f64>,
    /// Resting orders in placement order, which is their time priority.
    resting: Vec<Resting>,
    /// The last update of every open order and of the newest finished ones,
    /// rejected ones included: for duplicate detection, lookups, and truthful
    /// answers to cancels of finished orders.
    known: HashMap<String, OrderUpdate>,
    /// Ids of the finished orders in `known`, oldest first.
    finished: VecDeque<String>,
}

impl PaperExchange {
    pub fn new(cfg: PaperConfig) -> Self {
        Self {
            fee_rate: cfg.fee_bps / 10_000.0,
            ledger: Ledger::new(cfg.starting_cash),
            books: HashMap::new(),
            mids: HashMap::new(),
            resting: Vec::new(),
            known: HashMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Stores `book` as the market's current book and fills the resting orders
    /// it crosses, at their own limit price. Returns the fills and order updates.
    pub fn on_book(&mut self, book: &Book) -> Vec<EventKind> {
        let market = book.market.clone();
        if let Some(mid) = book.mid() {
            self.mids.insert(market.clone(), mid);
        }
        self.books.insert(market.clone(), book.clone());

        // Better-priced orders first, then earlier ones, as a venue would match them.
        let mut order: Vec<usize> = (0..self.resting.len())
            .filter(|&i| self.resting[i].market == market)
            .collect();
        // Buys and sells take from different sides of the book, so grouping them
        // is only there to make the comparison a total order. The sort is stable.
        order.sort_by(|&a, &b| {
            let (a, b) = (&self.resting[a], &self.resting[b]);
            match (a.side, b.side) {
                (Side::Buy, Side::Buy) => b.price.total_cmp(&a.price),
                (Side::Sell, Side::Sell) => a.price.total_cmp(&b.price),
                (Side::Buy, Side::Sell) => std::cmp::Ordering::Less,
                (Side::Sell, Side::Buy) => std::cmp::Ordering::Greater,
            }
        });

        let mut events = Vec::new();
        for i in order {
            let (side, price, want) = {
                let r = &self.resting[i];
                (r.side, r.price, r.remaining())
            };
            let Some(book) = self.books.get_mut(&market) else {
                break;
            };
            let taken: f64 = take_liquidity(opposite_levels(book, side), side, price, want)
                .iter()
                .map(|&(_, q)| q)
                .sum();
            if taken <= EPS {
                continue;
            }
            let intent_id = self.resting[i].intent_id.clone();
            events.push(self.apply_fill(&intent_id, &market, side, price, taken));
            let r = &mut self.resting[i];
            r.filled += taken;
            let (filled, remaining) = (r.filled, r.remaining());
            let status = if remaining <= 0.0 {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            events.push(update(&intent_id, &market, status, filled, remaining, None));
        }
        self.resting.retain(|r| r.remaining() > 0.0);
        self.remember(&events);
        events
    }

    /// Validates and executes an order: fills what crosses the book now, then
    /// rests, cancels or kills the rest according to its order type.
    pub fn place(&mut self, intent_id: &str, order: &PlaceOrder) -> Vec<EventKind> {
        if self.known.contains_key(intent_id) {
            // Not remembered: the id still names the first order.
            return vec![rejected(
                intent_id,
                order,
                format!("duplicate intent id {intent_id}"),
            )];
        }
        let events = self.execute(intent_id, order);
        // Remembered even if rejected: an id names one order attempt, once.
        self.remember(&events);
        events
    }

    /// [`Self::place`] for an intent id not seen before.
    fn execute(&mut self, intent_id: &str, order: &PlaceOrder) -> Vec<EventKind> {
        let reject = |reason: String| vec![rejected(intent_id, order, reason)];
        if let Err(reason) = self.validate(order) {
            return reject(reason);
        }

        let mut events = Vec::new();
        let (side, limit, size) = (order.side, order.price, order.size);
        let Some(book) = self.books.get_mut(&order.market) else {
            // validate() checked the market has a book; kept as a rejection, not a panic.
            return reject(format!("unknown market {}", order.market));
        };
        let levels = opposite_levels(book, side);
        if order.order_type == OrderType::Fok {
            let available: f64 = levels
                .iter()
                .take_while(|l| crosses(side, l.price, limit))
                .map(|l| l.size)
                .sum();
            if available + EPS < size {
                return vec![update(
                    intent_id,
                    &order.market,
                    OrderStatus::Cancelled,
                    0.0,
                    size,
                    Some(format!(
                        "fill-or-kill: only {available} of {size} available at {limit} or better"
                    )),
                )];
            }
        }
        let taken = take_liquidity(levels, side, limit, size);
        let mut filled = 0.0;
        for (price, qty) in taken {
            events.push(self.apply_fill(intent_id, &order.market, side, price, qty));
            filled += qty;
        }
        let remaining = clean(size - filled);

        let (status, reason) = if remaining <= 0.0 {
            (OrderStatus::Filled, None)
        } else {
            match order.order_type {
                OrderType::Gtc => {
                    self.resting.push(Resting {
                        intent_id: intent_id.to_string(),
                        market: order.market.clone(),
                        side,
                        price: limit,
                        size,
                        filled,
                    });
                    let status = if filled > 0.0 {
                        OrderStatus::PartiallyFilled
                    } else {
                        OrderStatus::Open
                    };
                    (status, None)
                }
                // FOK only gets here if float sums disagreed with the check above;
                // it then behaves like FAK rather than pretending to have filled.
                OrderType::Fak | OrderType::Fok => {
                    let reason = if filled > 0.0 {
                        format!("fill-and-kill: unfilled {remaining} cancelled")
                    } else {
                        format!("fill-and-kill: nothing available at {limit} or better")
                    };
                    (OrderStatus::Cancelled, Some(reason))
                }
            }
        };
        events.push(update(
            intent_id,
            &order.market,
            status,
            filled,
            remaining,
            reason,
        ));
        events
    }

    /// Cancels a resting order. Unknown and already finished orders are answered
    /// with a rejected update.
    pub fn cancel(&mut self, intent_id: &str) -> Vec<EventKind> {
        if let Some(i) = self.resting.iter().position(|r| r.intent_id == intent_id) {
            let r = self.resting.remove(i);
            let events = vec![update(
                intent_id,
                &r.market,
                OrderStatus::Cancelled,
                r.filled,
                r.remaining(),
                Some("cancelled on request".into()),
            )];
            self.remember(&events);
            return events;
        }
        // Answered but not remembered: the order keeps its own last state.
        let (market, filled) = self
            .known
            .get(intent_id)
            .map_or((String::new(), 0.0), |k| (k.market.clone(), k.filled_size));
        vec![update(
            intent_id,
            &market,
            OrderStatus::Rejected,
            filled,
            0.0,
            Some("unknown order".into()),
        )]
    }

    /// Number of orders resting on the book.
    pub fn open_orders(&self) -> usize {
        self.resting.len()
    }

    /// The resting orders as order updates (`open` or `partially-filled`), in
    /// placement order.
    pub fn open_order_updates(&self) -> Vec<OrderUpdate> {
        self.resting
            .iter()
            .map(|r| OrderUpdate {
                intent_id: r.intent_id.clone(),
                market: r.market.clone(),
                status: if r.filled > 0.0 {
                    OrderStatus::PartiallyFilled
                } else {
                    OrderStatus::Open
                },
                filled_size: r.filled,
                remaining_size: r.remaining(),
                reason: None,
            })
            .collect()
    }

    /// The last update of the order named `intent_id`, whatever its status;
    /// `None` if no order of that id was ever placed here.
    pub fn order(&self, intent_id: &str) -> Option<OrderUpdate> {
        self.known.get(intent_id).cloned()
    }

    /// Cash, PnL (average-cost realised; unrealised at each market's last mid), fees and activity.
    pub fn summary(&self) -> PortfolioSummary {
        self.ledger.summary(|market| self.mids.get(market).copied())
    }

    /// Shares of `market` held (never negative).
    pub fn position(&self, market: &str) -> f64 {
        self.ledger.position(market)
    }

    /// The account's ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Keeps the last order update of each order in `events`, forgetting the
    /// oldest finished orders beyond [`REMEMBERED_FINISHED`].
    fn remember(&mut self, events: &[EventKind]) {
        for e in events {
            if let EventKind::OrderUpdate(u) = e {
                let was_finished = self.known.get(&u.intent_id).is_some_and(is_finished);
                self.known.insert(u.intent_id.clone(), u.clone());
                if is_finished(u) && !was_finished {
                    self.finished.push_back(u.intent_id.clone());
                }
            }
        }
        while self.finished.len() > REMEMBERED_FINISHED {
            if let Some(id) = self.finished.pop_front() {
                self.known.remove(&id);
            }
        }
    }

    fn validate(&self, order: &PlaceOrder) -> Result<(), String> {
        let (price, size) = (order.price, order.size);
        if !(price.is_finite() && price > 0.0 && price < 1.0) {
            return Err(format!("price {price} outside (0, 1)"));
        }
        let ticks = price / TICK;
        if (ticks - ticks.round()).abs() > 1e-6 {
            return Err(format!("price {price} is not on the {TICK} tick"));
        }
        if !(size.is_finite() && size > 0.0) {
            return Err(format!("size {size} must be positive and finite"));
        }
        if !self.books.contains_key(&order.market) {
            return Err(format!("unknown market {}: no book seen", order.market));
        }
        match order.side {
            Side::Buy => {
                // Worst case: everything fills at the limit price.
                let need = price * size * (1.0 + self.fee_rate);
                let available = self.ledger.cash() - self.reserved_cash();
                if need > available + EPS {
                    return Err(format!(
                        "insufficient cash: need {need:.4}, available {available:.4}"
                    ));
                }
            }
            Side::Sell => {
                let available = self.position(&order.market) - self.reserved_shares(&order.market);
                if size > available + EPS {
                    return Err(format!(
                        "insufficient position: selling {size} with {available} available \
                         (outcome tokens cannot be sold short)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Cash promised to resting buys, so new orders cannot spend it twice.
    fn reserved_cash(&self) -> f64 {
        self.resting
            .iter()
            .filter(|r| r.side == Side::Buy)
            .map(|r| r.price * r.remaining() * (1.0 + self.fee_rate))
            .sum()
    }

    /// Shares promised to resting sells of `market`, so they cannot oversell.
    fn reserved_shares(&self, market: &str) -> f64 {
        self.resting
            .iter()
            .filter(|r| r.side == Side::Sell && r.market == market)
            .map(Resting::remaining)
            .sum()
    }

    /// Books one fill in the ledger: cash, position at average cost, fees,
    /// realised PnL. Sells never exceed the position (see `validate`).
    fn apply_fill(
        &mut self,
        intent_id: &str,
        market: &str,
        side: Side,
        price: f64,
        size: f64,
    ) -> EventKind {
        let fill = Fill {
            intent_id: intent_id.to_string(),
            market: market.to_string(),
            side,
            price,
            size,
            fee: self.fee_rate * price * size,
        };
        self.ledger.apply(&fill);
        EventKind::Fill(fill)
    }
}

/// Whether an order has reached a status it never leaves.
fn is_finished(update: &OrderUpdate) -> bool {
    matches!(
        update.status,
        OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected
    )
}

/// The side of the book an order of `side` trades against.
fn opposite_levels(book: &mut Book, side: Side) -> &mut Vec<Level> {
    match side {
        Side::Buy => &mut book.asks,
        Side::Sell => &mut book.bids,
    }
}

/// Whether a level at `level_price` is marketable for an order of `side` at `limit`.
fn crosses(side: Side, level_price: f64, limit: f64) -> bool {
    match side {
        Side::Buy => level_price <= limit + EPS,
        Side::Sell => level_price >= limit - EPS,
    }
}

/// Takes up to `want` shares from the front of `levels` (best first) while they
/// cross `limit`, removing what it takes. Returns (level price, size) taken.
fn take_liquidity(levels: &mut Vec<Level>, side: Side, limit: f64, want: f64) -> Vec<(f64, f64)> {
    let mut taken = Vec::new();
    let mut left = want;
    while left > 0.0 {
        let Some(level) = levels.first_mut() else {
            break;
        };
        if !crosses(side, level.price, limit) {
            break;
        }
        let qty = level.size.min(left);
        if qty > 0.0 {
            taken.push((level.price, qty));
        }
        level.size = clean(level.size - qty);
        left = clean(left - qty);
        if level.size <= 0.0 {
            levels.remove(0);
        }
    }
    taken
}

/// Rounds float residue of size arithmetic to zero.
fn clean(x: f64) -> f64 {
    if x.abs() <= EPS { 0.0 } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "m";

    fn lv(price: f64, size: f64) -> Level {
        Level { price, size }
    }

    fn book(bids: &[(f64, f64)], asks: &[(f64, f64)]) -> Book {
        Book {
            market: M.into(),
            bids: bids.iter().map(|&(p, s)| lv(p, s)).collect(),
            asks: asks.iter().map(|&(p, s)| lv(p, s)).collect(),
        }
    }

    fn order(side: Side, price: f64, size: f64, order_type: OrderType) -> PlaceOrder {
        PlaceOrder {
            market: M.into(),
            side,
            price,
            size,
            order_type,
        }
    }

    fn buy(price: f64, size: f64, t: OrderType) -> PlaceOrder {
        order(Side::Buy, price, size, t)
    }

    fn sell(price: f64, size: f64, t: OrderType) -> PlaceOrder {
        order(Side::Sell, price, size, t)
    }

    /// An exchange that has seen one book: 0.39 / 0.41, with depth behind the ask.
    fn exchange(fee_bps: f64) -> PaperExchange {
        let mut x = PaperExchange::new(PaperConfig {
            fee_bps,
            ..PaperConfig::default()
        });
        assert!(
            x.on_book(&book(
                &[(0.39, 100.0), (0.38, 100.0)],
                &[(0.41, 100.0), (0.42, 200.0), (0.45, 1000.0)]
            ))
            .is_empty()
        );
        x
    }

    fn fills(events: &[EventKind]) -> Vec<(f64, f64)> {
        events
            .iter()
            .filter_map(|e| match e {
                EventKind::Fill(f) => Some((f.price, f.size)),
                _ => None,
            })
            .collect()
    }

    fn last_update(events: &[EventKind]) -> &OrderUpdate {
        match events.last() {
            Some(EventKind::OrderUpdate(u)) => u,
            other => panic!("expected an order update last, got {other:?}"),
        }
    }

    fn assert_close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    fn assert_rejected(events: &[EventKind], needle: &str) {
        assert_eq!(events.len(), 1, "{events:?}");
        let u = last_update(events);
        assert_eq!(u.status, OrderStatus::Rejected);
        let reason = u.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains(needle),
            "reason {reason:?} lacks {needle:?}"
        );
    }

    #[test]
    fn marketable_buy_fills_at_touch() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.45, 50.0, OrderType::Gtc));
        assert_eq!(fills(&ev), vec![(0.41, 50.0)]);
        assert!(
            matches!(ev[0], EventKind::Fill(_)),
            "fill comes before the update"
        );
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Filled);
        assert_eq!((u.filled_size, u.remaining_size), (50.0, 0.0));
        assert_close(x.position(M), 50.0);
        let s = x.summary();
        assert_close(s.cash, 10_000.0 - 0.41 * 50.0);
        assert_eq!(s.fills, 1);
        assert_close(s.volume, 50.0);
        assert_eq!(x.open_orders(), 0);
    }

    #[test]
    fn marketable_order_walks_levels_up_to_limit() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.42, 400.0, OrderType::Gtc));
        assert_eq!(fills(&ev), vec![(0.41, 100.0), (0.42, 200.0)]);
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::PartiallyFilled);
        assert_eq!((u.filled_size, u.remaining_size), (300.0, 100.0));
        assert_eq!(x.open_orders(), 1);
        assert_close(x.summary().cash, 10_000.0 - 41.0 - 84.0);

        // A marketable sell walks the bids down.
        let ev = x.place("1.1", &sell(0.38, 150.0, OrderType::Fak));
        assert_eq!(fills(&ev), vec![(0.39, 100.0), (0.38, 50.0)]);
        assert_eq!(last_update(&ev).status, OrderStatus::Filled);
        assert_close(x.position(M), 150.0);
    }

    #[test]
    fn fills_consume_the_books_liquidity() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.41, 80.0, OrderType::Fak));
        assert_eq!(fills(&ev), vec![(0.41, 80.0)]);
        let ev = x.place("1.1", &buy(0.41, 80.0, OrderType::Fak));
        assert_eq!(fills(&ev), vec![(0.41, 20.0)]);
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert_eq!((u.filled_size, u.remaining_size), (20.0, 60.0));
        // A fresh book restores the liquidity.
        x.on_book(&book(&[(0.39, 100.0)], &[(0.41, 100.0)]));
        let ev = x.place("1.2", &buy(0.41, 80.0, OrderType::Fak));
        assert_eq!(fills(&ev), vec![(0.41, 80.0)]);
    }

    #[test]
    fn fok_that_cannot_fill_completely_does_not_fill() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.42, 301.0, OrderType::Fok));
        assert!(fills(&ev).is_empty(), "{ev:?}");
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert_eq!((u.filled_size, u.remaining_size), (0.0, 301.0));
        assert!(u.reason.is_some());
        assert_close(x.summary().cash, 10_000.0);
        assert_eq!(x.position(M), 0.0);
        assert_eq!(x.open_orders(), 0);

        // The book was left intact, and an FOK that fits fills across levels.
        let ev = x.place("1.1", &buy(0.42, 300.0, OrderType::Fok));
        assert_eq!(fills(&ev), vec![(0.41, 100.0), (0.42, 200.0)]);
        assert_eq!(last_update(&ev).status, OrderStatus::Filled);
    }

    #[test]
    fn fak_with_nothing_marketable_is_cancelled() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.40, 10.0, OrderType::Fak));
        assert_eq!(ev.len(), 1);
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert!(u.reason.is_some());
        assert_eq!(x.open_orders(), 0);
    }

    #[test]
    fn gtc_rests_and_fills_when_a_crossing_book_arrives() {
        let mut x = exchange(0.0);
        let ev = x.place("1.0", &buy(0.40, 100.0, OrderType::Gtc));
        assert_eq!(ev.len(), 1);
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        assert_eq!(x.open_orders(), 1);

        // A book that does not cross leaves it alone.
        assert!(
            x.on_book(&book(&[(0.39, 10.0)], &[(0.41, 10.0)]))
                .is_empty()
        );

        // Crossing asks total 90: the order fills 90 at its own price.
        let ev = x.on_book(&book(
            &[(0.38, 10.0)],
            &[(0.39, 60.0), (0.40, 30.0), (0.41, 500.0)],
        ));
        assert_eq!(fills(&ev), vec![(0.40, 90.0)]);
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::PartiallyFilled);
        assert_eq!((u.filled_size, u.remaining_size), (90.0, 10.0));

        let ev = x.on_book(&book(&[(0.38, 10.0)], &[(0.40, 500.0)]));
        assert_eq!(fills(&ev), vec![(0.40, 10.0)]);
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Filled);
        assert_eq!((u.filled_size, u.remaining_size), (100.0, 0.0));
        assert_eq!(x.open_orders(), 0);
        assert_close(x.position(M), 100.0);
        assert_close(x.summary().cash, 10_000.0 - 40.0);
    }

    #[test]
    fn resting_orders_fill_best_price_first_and_share_liquidity() {
        let mut x = exchange(0.0);
        x.place("a", &buy(0.30, 50.0, OrderType::Gtc));
        x.place("b", &buy(0.35, 50.0, OrderType::Gtc));
        let ev = x.on_book(&book(&[(0.20, 10.0)], &[(0.30, 70.0)]));
        let ids: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                EventKind::Fill(f) => Some((f.intent_id.as_str(), f.size)),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![("b", 50.0), ("a", 20.0)]);
        assert_eq!(x.open_orders(), 1);
    }

    #[test]
    fn resting_buys_reserve_cash() {
        let mut x = PaperExchange::new(PaperConfig {
            starting_cash: 100.0,
            fee_bps: 0.0,
        });
        x.on_book(&book(&[(0.10, 10.0)], &[(0.90, 10.0)]));
        let ev = x.place("1.0", &buy(0.50, 150.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        // Only 25 of cash is left unpromised.
        assert_rejected(&x.place("1.1", &buy(0.50, 60.0, OrderType::Gtc)), "cash");
        let ev = x.place("1.2", &buy(0.50, 50.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        // Cancelling releases the reservation.
        x.cancel("1.0");
        let ev = x.place("1.3", &buy(0.50, 140.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
    }

    #[test]
    fn resting_sells_reserve_shares() {
        let mut x = exchange(0.0);
        x.place("1.0", &buy(0.41, 100.0, OrderType::Fak));
        let ev = x.place("1.1", &sell(0.90, 70.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        assert_rejected(
            &x.place("1.2", &sell(0.90, 40.0, OrderType::Gtc)),
            "position",
        );
        let ev = x.place("1.3", &sell(0.90, 30.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
    }

    #[test]
    fn rejections() {
        let mut x = exchange(0.0);
        assert_rejected(&x.place("a", &buy(0.41, 30_000.0, OrderType::Gtc)), "cash");
        assert_rejected(&x.place("b", &sell(0.39, 1.0, OrderType::Gtc)), "position");
        assert_rejected(&x.place("c", &buy(0.405, 1.0, OrderType::Gtc)), "tick");
        assert_rejected(&x.place("d", &buy(0.0, 1.0, OrderType::Gtc)), "(0, 1)");
        assert_rejected(&x.place("e", &buy(1.0, 1.0, OrderType::Gtc)), "(0, 1)");
        assert_rejected(&x.place("f", &buy(f64::NAN, 1.0, OrderType::Gtc)), "(0, 1)");
        assert_rejected(&x.place("g", &buy(0.41, 0.0, OrderType::Gtc)), "size");
        assert_rejected(
            &x.place("h", &buy(0.41, f64::INFINITY, OrderType::Gtc)),
            "size",
        );
        let mut unknown = buy(0.41, 1.0, OrderType::Gtc);
        unknown.market = "elsewhere".into();
        let ev = x.place("i", &unknown);
        assert_rejected(&ev, "unknown market");
        assert_eq!(last_update(&ev).market, "elsewhere");

        let ev = x.place("j", &buy(0.41, 1.0, OrderType::Gtc));
        assert_eq!(last_update(&ev).status, OrderStatus::Filled);
        assert_rejected(&x.place("j", &buy(0.41, 1.0, OrderType::Gtc)), "duplicate");
        // A rejected id is used up too.
        assert_rejected(&x.place("a", &buy(0.41, 1.0, OrderType::Gtc)), "duplicate");

        // Nothing but the one good order touched the account.
        let s = x.summary();
        assert_eq!(s.fills, 1);
        assert_close(s.cash, 10_000.0 - 0.41);
    }

    #[test]
    fn cancel_resting_then_unknown() {
        let mut x = exchange(0.0);
        x.place("1.0", &buy(0.42, 350.0, OrderType::Gtc));
        let ev = x.cancel("1.0");
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert_eq!((u.filled_size, u.remaining_size), (300.0, 50.0));
        assert_eq!(x.open_orders(), 0);

        for id in ["1.0", "never"] {
            let ev = x.cancel(id);
            assert_rejected(&ev, "unknown order");
        }
        // A finished order's cancel still reports what it filled.
        assert_eq!(last_update(&x.cancel("1.0")).filled_size, 300.0);
    }

    #[test]
    fn open_orders_and_lookups_follow_each_order() {
        let mut x = exchange(0.0);
        assert!(x.open_order_updates().is_empty());
        x.place("r", &buy(0.40, 100.0, OrderType::Gtc));
        let open = x.open_order_updates();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].intent_id.as_str(), open[0].market.as_str()),
            ("r", M)
        );
        assert_eq!(open[0].status, OrderStatus::Open);
        assert_eq!((open[0].filled_size, open[0].remaining_size), (0.0, 100.0));
        assert_eq!(x.order("r").as_ref(), Some(&open[0]));

        x.on_book(&book(&[(0.38, 10.0)], &[(0.40, 90.0)]));
        let open = x.open_order_updates();
        assert_eq!(open[0].status, OrderStatus::PartiallyFilled);
        assert_eq!((open[0].filled_size, open[0].remaining_size), (90.0, 10.0));
        assert_eq!(x.order("r").as_ref(), Some(&open[0]));

        // Filled: no longer open, but still known.
        x.on_book(&book(&[(0.38, 10.0)], &[(0.40, 90.0)]));
        assert!(x.open_order_updates().is_empty());
        let u = x.order("r").expect("known");
        assert_eq!(u.status, OrderStatus::Filled);
        assert_eq!((u.filled_size, u.remaining_size), (100.0, 0.0));
        // Neither a duplicate nor a cancel of it changes what it was.
        x.place("r", &buy(0.40, 1.0, OrderType::Gtc));
        x.cancel("r");
        assert_eq!(x.order("r"), Some(u));

        assert_eq!(x.order("never"), None);
        x.cancel("never");
        assert_eq!(x.order("never"), None, "a cancel does not make an order");

        x.place("poor", &buy(0.40, 1e6, OrderType::Gtc));
        let u = x.order("poor").expect("rejections are remembered");
        assert_eq!(u.status, OrderStatus::Rejected);
        assert!(u.reason.as_deref().unwrap_or_default().contains("cash"));

        x.place("c", &buy(0.30, 5.0, OrderType::Gtc));
        x.cancel("c");
        assert!(x.open_order_updates().is_empty());
        assert_eq!(x.order("c").map(|u| u.status), Some(OrderStatus::Cancelled));
        let u = x.order("c").expect("known");
        assert_eq!((u.filled_size, u.remaining_size), (0.0, 5.0));
    }

    #[test]
    fn finished_orders_are_forgotten_oldest_first_open_ones_never() {
        let mut x = exchange(0.0);
        x.place("open", &buy(0.30, 1.0, OrderType::Gtc));
        for i in 0..REMEMBERED_FINISHED + 10 {
            // Rejected: finished at once.
            x.place(&format!("r{i}"), &buy(0.405, 1.0, OrderType::Gtc));
        }
        assert_eq!(x.known.len(), REMEMBERED_FINISHED + 1);
        assert_eq!(
            x.order("r0"),
            None,
            "the oldest finished order is forgotten"
        );
        assert!(x.order(&format!("r{}", REMEMBERED_FINISHED + 9)).is_some());
        assert_eq!(
            x.order("open").map(|u| u.status),
            Some(OrderStatus::Open),
            "an open order is never forgotten"
        );
        // Once it finishes it queues up behind the others to be forgotten.
        x.cancel("open");
        assert_eq!(x.finished.back().map(String::as_str), Some("open"));
        assert_eq!(x.known.len(), REMEMBERED_FINISHED);
    }

    #[test]
    fn the_account_round_trips_through_its_encoding() {
        let mut x = exchange(10.0);
        x.place("a", &buy(0.42, 150.0, OrderType::Gtc));
        x.place("b", &buy(0.30, 10.0, OrderType::Gtc));
        x.place("c", &buy(0.405, 1.0, OrderType::Gtc));
        let bytes = postcard::to_allocvec(&x).unwrap();
        let mut y: PaperExchange = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(y, x);
        let next = book(&[(0.29, 10.0)], &[(0.30, 500.0)]);
        assert_eq!(y.on_book(&next), x.on_book(&next));
        assert_eq!(y.summary(), x.summary());
    }

    #[test]
    fn round_trip_pnl() {
        for fee_bps in [0.0, 10.0] {
            let mut x = exchange(fee_bps);
            x.on_book(&book(&[(0.39, 100.0)], &[(0.40, 100.0)]));
            x.place("1.0", &buy(0.40, 10.0, OrderType::Fak));
            x.on_book(&book(&[(0.50, 100.0)], &[(0.51, 100.0)]));
            let ev = x.place("2.0", &sell(0.50, 10.0, OrderType::Fak));
            assert_eq!(fills(&ev), vec![(0.50, 10.0)]);

            let fees = fee_bps / 10_000.0 * (0.40 * 10.0 + 0.50 * 10.0);
            let s = x.summary();
            assert_close(s.fees, fees);
            assert_close(s.realized_pnl, 1.0 - fees);
            assert_close(s.unrealized_pnl, 0.0);
            assert_close(s.cash, 10_000.0 + 1.0 - fees);
            assert_eq!(s.fills, 2);
            assert_close(s.volume, 20.0);
            assert_eq!(x.position(M), 0.0);
        }
    }

    #[test]
    fn average_cost_and_marking() {
        let mut x = exchange(25.0);
        x.on_book(&book(&[(0.39, 100.0)], &[(0.40, 100.0)]));
        x.place("1", &buy(0.40, 10.0, OrderType::Fak));
        x.on_book(&book(&[(0.49, 100.0)], &[(0.50, 100.0)]));
        x.place("2", &buy(0.50, 10.0, OrderType::Fak));
        x.on_book(&book(&[(0.60, 100.0)], &[(0.62, 100.0)]));
        x.place("3", &sell(0.60, 10.0, OrderType::Fak));

        let s = x.summary();
        // Average cost 0.45: selling 10 at 0.60 realises 1.5 before fees.
        assert_close(s.realized_pnl, 1.5 - s.fees);
        // 10 left at cost 0.45, marked at mid 0.61.
        assert_close(s.unrealized_pnl, 10.0 * (0.61 - 0.45));
        assert_close(x.position(M), 10.0);
        // Total PnL is exactly the change in cash plus the marked position.
        assert_close(s.total_pnl(), s.cash + 10.0 * 0.61 - 10_000.0);
    }
}
