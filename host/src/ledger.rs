//! The one average-cost ledger: positions, cost basis, realised PnL, fees and
//! cash of one strategy, booked fill by fill.
//!
//! Paper execution, the live Polymarket venue and the run loop (which gives
//! each row of the `trades` table its realised PnL) all book fills here, so
//! they cannot disagree. The rules:
//!
//! - **Buy** `size` at `price` with `fee`: the position grows, its average
//!   cost becomes the size-weighted mean of the old cost and `price`; cash
//!   falls by `price × size + fee`; realised PnL falls by `fee`.
//! - **Sell** `size` at `price` with `fee`: realised PnL grows by
//!   `(price − average cost) × sold − fee`; the position shrinks; cash grows
//!   by `price × size − fee`. The average cost of what is left does not move.
//! - **A sell larger than the position** is clamped, not turned into a
//!   short: outcome tokens cannot be sold without holding them (the venue
//!   refuses such an order), so the excess means shares the ledger never saw
//!   bought (held before the run, or a missed fill). PnL is realised on the
//!   shares held only, the position ends flat, cash still receives the whole
//!   proceeds (money the venue paid), and the excess is reported in
//!   [`Booked::uncovered`] and summed in [`Ledger::uncovered`] so the caller
//!   can raise it to an operator.
//! - **Fees** always reduce both cash and realised PnL, on both sides.
//! - **A reversal** (a trade that failed to settle, see [`Ledger::reverse`])
//!   books the fill again with size and fee negated, which undoes it exactly
//!   when nothing else happened to that market in between: a reversed buy
//!   takes the shares and their cost back out and refunds the cash and fee; a
//!   reversed sell puts the shares back at the average cost they were sold
//!   from (a flat position keeps its last average cost for this reason) and
//!   takes the proceeds and realised PnL back. A reversed buy whose shares
//!   were sold meanwhile clamps the position at zero and reports the
//!   shortfall as [`Booked::uncovered`].
//!
//! It never decides whether an order may be placed (paper execution and the
//! risk limits do), never reads a venue, and holds no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::{Fill, Side};
use crate::venue::PortfolioSummary;

/// Sizes and cash are sums of products of decimal fractions, never exact in
/// binary; differences this small are zero.
const EPS: f64 = 1e-9;

/// One market's holding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Shares held; never negative.
    pub qty: f64,
    /// Average cost per share of the shares held (of the last ones held, when flat).
    pub avg_cost: f64,
}

/// What booking one fill did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Booked {
    /// Realised PnL of this fill, fee included (negative for a buy's fee).
    pub realized_pnl: f64,
    /// Shares sold (or reversed out) beyond the position: clamped, see the
    /// module docs. Zero in the normal case.
    pub uncovered: f64,
}

/// A strategy's money and positions; see the module docs for the rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    cash: f64,
    realized_pnl: f64,
    fees: f64,
    /// Fills booked, less fills reversed.
    fills: u64,
    /// Shares traded, both sides, less reversed ones.
    volume: f64,
    /// Shares sold beyond the position, over the ledger's life.
    uncovered: f64,
    /// Ordered so sums run in the same order every time.
    positions: BTreeMap<String, Position>,
}

impl Ledger {
    /// An empty ledger holding `cash`.
    pub fn new(cash: f64) -> Self {
        Ledger {
            cash,
            ..Ledger::default()
        }
    }

    /// Books `fill`. A fill with a negative size is a reversal (see
    /// [`Self::reverse`]).
    pub fn apply(&mut self, fill: &Fill) -> Booked {
        self.book(&fill.market, fill.side, fill.price, fill.size, fill.fee)
    }

    /// Undoes `fill` (a trade that failed to settle): books it with size
    /// and fee negated. Returns what the reversal did.
    pub fn reverse(&mut self, fill: &Fill) -> Booked {
        self.book(
            &fill.market,
            fill.side,
            fill.price,
            -fill.size.abs(),
            -fill.fee,
        )
    }

    /// Books `size` (negative: a reversal) of `market` at `price`, paying `fee`.
    pub fn book(&mut self, market: &str, side: Side, price: f64, size: f64, fee: f64) -> Booked {
        let pos = self.positions.entry(market.to_string()).or_default();
        let notional = price * size;
        let mut booked = Booked::default();
        match side {
            Side::Buy => {
                let qty = clean(pos.qty + size);
                if qty > 0.0 {
                    pos.avg_cost = (pos.avg_cost * pos.qty + notional) / qty;
                    pos.qty = qty;
                } else {
                    // Reversed out to (or past) flat: nothing held, and what
                    // would be negative was sold meanwhile.
                    booked.uncovered = -qty;
                    pos.qty = 0.0;
                }
                self.cash -= notional + fee;
                booked.realized_pnl = -fee;
            }
            Side::Sell => {
                let sold = if size > 0.0 { size.min(pos.qty) } else { size };
                booked.uncovered = clean(size - sold).max(0.0);
                booked.realized_pnl = (price - pos.avg_cost) * sold - fee;
                pos.qty = clean(pos.qty - sold);
                self.cash += notional - fee;
            }
        }
        self.realized_pnl += booked.realized_pnl;
        self.fees += fee;
        if size > 0.0 {
            self.fills += 1;
        } else {
            self.fills = self.fills.saturating_sub(1);
        }
        self.volume = clean(self.volume + size).max(0.0);
        self.uncovered += booked.uncovered;
        booked
    }

    /// Shares of `market` held (never negative).
    pub fn position(&self, market: &str) -> f64 {
        self.positions.get(market).map_or(0.0, |p| p.qty)
    }

    /// Average cost of `market`'s position, if one was ever held.
    pub fn avg_cost(&self, market: &str) -> Option<f64> {
        self.positions.get(market).map(|p| p.avg_cost)
    }

    /// Every market's holding, by market.
    pub fn positions(&self) -> &BTreeMap<String, Position> {
        &self.positions
    }

    pub fn cash(&self) -> f64 {
        self.cash
    }

    pub fn realized_pnl(&self) -> f64 {
        self.realized_pnl
    }

    pub fn fees(&self) -> f64 {
        self.fees
    }

    /// Shares sold beyond the position over the ledger's life (see the module docs).
    pub fn uncovered(&self) -> f64 {
        self.uncovered
    }

    /// Cash, PnL (unrealised at `mid` of each market that has one), fees and activity.
    pub fn summary(&self, mid: impl Fn(&str) -> Option<f64>) -> PortfolioSummary {
        PortfolioSummary {
            cash: self.cash,
            realized_pnl: self.realized_pnl,
            unrealized_pnl: self
                .positions
                .iter()
                .filter(|(_, p)| p.qty > 0.0)
                .filter_map(|(market, p)| Some(p.qty * (mid(market)? - p.avg_cost)))
                .sum(),
            fees: self.fees,
            fills: self.fills,
            volume: self.volume,
        }
    }
}

/// Rounds float residue of size arithmetic to zero.
fn clean(x: f64) -> f64 {
    if x.abs() <= EPS { 0.0 } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(side: Side, price: f64, size: f64, fee: f64) -> Fill {
        Fill {
            intent_id: "1.0".into(),
            market: "m".into(),
            side,
            price,
            size,
            fee,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn buys_average_and_sells_realise_against_the_average() {
        let mut l = Ledger::new(100.0);
        assert_eq!(l.apply(&fill(Side::Buy, 0.40, 10.0, 0.0)).realized_pnl, 0.0);
        l.apply(&fill(Side::Buy, 0.50, 10.0, 0.0));
        close(l.avg_cost("m").unwrap(), 0.45);
        let b = l.apply(&fill(Side::Sell, 0.60, 10.0, 0.0));
        close(b.realized_pnl, 1.5);
        assert_eq!(b.uncovered, 0.0);
        close(l.position("m"), 10.0);
        close(l.avg_cost("m").unwrap(), 0.45);
        close(l.cash(), 100.0 - 4.0 - 5.0 + 6.0);
        let s = l.summary(|_| Some(0.61));
        close(s.unrealized_pnl, 10.0 * (0.61 - 0.45));
        assert_eq!(s.fills, 3);
        close(s.volume, 30.0);
        // Total PnL is the change in cash plus the marked position.
        close(s.total_pnl(), s.cash + 10.0 * 0.61 - 100.0);
    }

    #[test]
    fn fees_reduce_cash_and_realised_pnl_on_both_sides() {
        let mut l = Ledger::new(0.0);
        close(
            l.apply(&fill(Side::Buy, 0.40, 10.0, 0.02)).realized_pnl,
            -0.02,
        );
        close(l.cash(), -4.02);
        let b = l.apply(&fill(Side::Sell, 0.50, 10.0, 0.03));
        close(b.realized_pnl, 1.0 - 0.03);
        close(l.cash(), -4.02 + 5.0 - 0.03);
        close(l.realized_pnl(), 1.0 - 0.05);
        close(l.fees(), 0.05);
        // Flat: realised PnL is exactly the change in cash.
        close(l.realized_pnl(), l.cash());
    }

    #[test]
    fn a_sell_larger_than_the_position_is_clamped_and_reported() {
        let mut l = Ledger::new(0.0);
        l.apply(&fill(Side::Buy, 0.40, 10.0, 0.0));
        let b = l.apply(&fill(Side::Sell, 0.50, 15.0, 0.0));
        close(b.realized_pnl, 1.0);
        close(b.uncovered, 5.0);
        assert_eq!(l.position("m"), 0.0, "never short");
        // The venue paid for all 15.
        close(l.cash(), -4.0 + 7.5);
        close(l.uncovered(), 5.0);
        // Selling with nothing held realises nothing.
        let b = l.apply(&fill(Side::Sell, 0.50, 2.0, 0.0));
        close(b.uncovered, 2.0);
        close(l.uncovered(), 7.0);
    }

    #[test]
    fn a_reversed_buy_is_undone_exactly() {
        let mut l = Ledger::new(50.0);
        l.apply(&fill(Side::Buy, 0.30, 20.0, 0.0));
        let before = l.clone();
        let f = fill(Side::Buy, 0.50, 10.0, 0.01);
        l.apply(&f);
        let b = l.reverse(&f);
        close(b.realized_pnl, 0.01);
        assert_eq!(b.uncovered, 0.0);
        close(l.position("m"), before.position("m"));
        close(l.avg_cost("m").unwrap(), 0.30);
        close(l.cash(), before.cash());
        close(l.realized_pnl(), before.realized_pnl());
        close(l.fees(), before.fees());
        assert_eq!(l.summary(|_| None).fills, 1);
    }

    #[test]
    fn a_reversed_sell_is_undone_exactly_even_when_it_went_flat() {
        let mut l = Ledger::new(0.0);
        l.apply(&fill(Side::Buy, 0.40, 10.0, 0.0));
        let before = l.clone();
        let f = fill(Side::Sell, 0.70, 10.0, 0.02);
        l.apply(&f);
        assert_eq!(l.position("m"), 0.0);
        let b = l.reverse(&f);
        close(b.realized_pnl, -(3.0 - 0.02));
        close(l.position("m"), 10.0);
        close(l.avg_cost("m").unwrap(), 0.40);
        close(l.cash(), before.cash());
        close(l.realized_pnl(), before.realized_pnl());
        close(l.summary(|_| Some(0.5)).unrealized_pnl, 1.0);
    }

    #[test]
    fn a_reversed_buy_whose_shares_were_sold_clamps_and_reports() {
        let mut l = Ledger::new(0.0);
        let f = fill(Side::Buy, 0.40, 10.0, 0.0);
        l.apply(&f);
        l.apply(&fill(Side::Sell, 0.45, 6.0, 0.0));
        let b = l.reverse(&f);
        close(b.uncovered, 6.0);
        assert_eq!(l.position("m"), 0.0);
        close(l.cash(), 0.45 * 6.0);
    }

    #[test]
    fn a_negative_fill_is_a_reversal() {
        let f = fill(Side::Sell, 0.70, 4.0, 0.01);
        let mut a = Ledger::new(0.0);
        a.apply(&fill(Side::Buy, 0.40, 10.0, 0.0));
        let mut b = a.clone();
        a.apply(&f);
        b.apply(&f);
        a.reverse(&f);
        b.apply(&Fill {
            size: -f.size,
            fee: -f.fee,
            ..f.clone()
        });
        assert_eq!(a, b);
    }

    #[test]
    fn it_round_trips_through_its_encoding() {
        let mut l = Ledger::new(10.0);
        l.apply(&fill(Side::Buy, 0.40, 10.0, 0.01));
        let bytes = postcard::to_allocvec(&l).unwrap();
        assert_eq!(postcard::from_bytes::<Ledger>(&bytes).unwrap(), l);
    }
}
