//! Risk limits, checked before an intent exists.
//!
//! Owns `[risk]` (max order size, max position per market, max open orders,
//! max orders per minute, max daily loss) and the check of one new order
//! against them and the strategy's current exposure ([`Exposure`]). A breach
//! is a reason string: the executor turns it into a `rejected` update and a
//! system event. Never sends, never reads a clock (times come in as event
//! time).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::contract::{PlaceOrder, Side};

/// `[risk]`: every limit is optional; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Largest size of one order (shares).
    pub max_order_size: Option<f64>,
    /// Largest absolute position in one market (shares), counting what open
    /// orders would add.
    pub max_position: Option<f64>,
    /// Most orders open at once.
    pub max_open_orders: Option<u32>,
    /// Most new orders in any 60 s of event time.
    pub max_orders_per_minute: Option<u32>,
    /// Stop placing once the day's loss reaches this (a positive amount).
    pub max_daily_loss: Option<f64>,
}

impl RiskConfig {
    /// # Errors
    /// A message naming the first limit that is not a positive number.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_order_size", self.max_order_size),
            ("max_position", self.max_position),
            ("max_daily_loss", self.max_daily_loss),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(format!("risk.{key} must be a positive number, got {v}"));
            }
        }
        for (key, v) in [
            ("max_open_orders", self.max_open_orders),
            ("max_orders_per_minute", self.max_orders_per_minute),
        ] {
            if v == Some(0) {
                return Err(format!("risk.{key} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// What the strategy holds and has asked for, as the check needs it.
#[derive(Debug, Clone, Default)]
pub struct Exposure {
    /// Signed position in the order's market (buys positive).
    pub position: f64,
    /// Signed size still open in that market's orders.
    pub open_in_market: f64,
    pub open_orders: u32,
    /// Profit and loss today (negative is a loss).
    pub pnl_today: f64,
}

/// The limits plus the memory the per-minute limit needs.
#[derive(Debug, Clone, Default)]
pub struct RiskGate {
    cfg: RiskConfig,
    recent_ms: VecDeque<u64>,
}

impl RiskGate {
    pub fn new(cfg: RiskConfig) -> Self {
        RiskGate {
            cfg,
            recent_ms: VecDeque::new(),
        }
    }

    /// Event times of the orders counted towards the per-minute limit.
    pub fn recent(&self) -> Vec<u64> {
        self.recent_ms.iter().copied().collect()
    }

    /// Restores what [`RiskGate::recent`] returned.
    pub fn restore_recent(&mut self, recent: Vec<u64>) {
        self.recent_ms = recent.into();
    }

    /// Checks one new order; on success it counts towards the per-minute limit.
    ///
    /// # Errors
    /// The reason, naming the limit and the figures.
    pub fn check(&mut self, order: &PlaceOrder, exp: &Exposure, now_ms: u64) -> Result<(), String> {
        let c = &self.cfg;
        if let Some(max) = c.max_daily_loss
            && -exp.pnl_today >= max
        {
            return Err(format!(
                "risk: daily loss {:.2} reached max_daily_loss {max}; placement stopped for the day",
                -exp.pnl_today
            ));
        }
        if let Some(max) = c.max_order_size
            && order.size > max
        {
            return Err(format!(
                "risk: order size {} exceeds max_order_size {max}",
                order.size
            ));
        }
        if let Some(max) = c.max_open_orders
            && exp.open_orders >= max
        {
            return Err(format!(
                "risk: {} orders open, max_open_orders is {max}",
                exp.open_orders
            ));
        }
        if let Some(max) = c.max_position {
            let signed = match order.side {
                Side::Buy => order.size,
                Side::Sell => -order.size,
            };
            let after = exp.position + exp.open_in_market + signed;
            if after.abs() > max + 1e-9 {
                return Err(format!(
                    "risk: position in {} would reach {after} (held {}, open {}), max_position is {max}",
                    order.market, exp.position, exp.open_in_market
                ));
            }
        }
        if let Some(max) = c.max_orders_per_minute {
            while self
                .recent_ms
                .front()
                .is_some_and(|&t| t + 60_000 <= now_ms)
            {
                self.recent_ms.pop_front();
            }
            if self.recent_ms.len() >= max as usize {
                return Err(format!(
                    "risk: {} orders in the last minute, max_orders_per_minute is {max}",
                    self.recent_ms.len()
                ));
            }
            self.recent_ms.push_back(now_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::OrderType;

    fn buy(size: f64) -> PlaceOrder {
        PlaceOrder {
            market: "m".into(),
            side: Side::Buy,
            price: 0.5,
            size,
            order_type: OrderType::Gtc,
        }
    }

    #[test]
    fn each_limit_names_itself() {
        let cfg = RiskConfig {
            max_order_size: Some(10.0),
            max_position: Some(15.0),
            max_open_orders: Some(2),
            max_orders_per_minute: Some(3),
            max_daily_loss: Some(50.0),
        };
        let mut g = RiskGate::new(cfg);
        let none = Exposure::default();
        assert!(
            g.check(&buy(11.0), &none, 0)
                .unwrap_err()
                .contains("max_order_size")
        );
        let held = Exposure {
            position: 10.0,
            ..Exposure::default()
        };
        assert!(
            g.check(&buy(6.0), &held, 0)
                .unwrap_err()
                .contains("max_position")
        );
        let busy = Exposure {
            open_orders: 2,
            ..Exposure::default()
        };
        assert!(
            g.check(&buy(1.0), &busy, 0)
                .unwrap_err()
                .contains("max_open_orders")
        );
        let lost = Exposure {
            pnl_today: -50.0,
            ..Exposure::default()
        };
        assert!(
            g.check(&buy(1.0), &lost, 0)
                .unwrap_err()
                .contains("max_daily_loss")
        );
        for t in [0, 1, 2] {
            g.check(&buy(1.0), &none, t).expect("within the rate");
        }
        assert!(
            g.check(&buy(1.0), &none, 3)
                .unwrap_err()
                .contains("max_orders_per_minute")
        );
        g.check(&buy(1.0), &none, 60_000).expect("a minute later");
    }

    #[test]
    fn negative_limits_and_unknown_keys_are_refused() {
        let c: RiskConfig = toml::from_str("max_order_size = -5.0").expect("parses");
        assert!(c.validate().unwrap_err().contains("risk.max_order_size"));
        assert!(toml::from_str::<RiskConfig>("max_size = 5.0").is_err());
    }
}
