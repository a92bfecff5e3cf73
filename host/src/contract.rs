//! The strategy contract (`wit/strategy.wit`) as Rust types.
//!
//! `bindgen!` turns the WIT world into the types every other part of the host
//! speaks: the event a strategy receives, the actions it returns, and the
//! `Strategy` bindings the sandbox calls. Keeping one definition, generated from
//! the WIT file, means the host can never drift from what strategies were built
//! against. The types also derive serde so the journal can store them.

wasmtime::component::bindgen!({
    world: "strategy",
    path: "../wit",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    // Calls into a strategy are async so WASI's stdio (a panic message, say)
    // works inside the tokio runtime the host runs on.
    exports: { default: async },
});

pub use polybot::strategy::types::{
    Book, EventKind, Fill, Level, LogLevel, OrderStatus, OrderType, OrderUpdate, PlaceOrder,
    SetTimer, Side, TradePrint, VenueHealth, VenueStatus,
};

/// The id the host gives the order placed by action `index` of the actions
/// returned for event `seq`. Deterministic, so a replay names orders the same way.
pub fn intent_id(seq: u64, index: usize) -> String {
    format!("{seq}.{index}")
}

/// An `order-update` event for the order named `intent_id`.
pub fn order_update(
    intent_id: &str,
    market: &str,
    status: OrderStatus,
    filled_size: f64,
    remaining_size: f64,
    reason: Option<String>,
) -> EventKind {
    EventKind::OrderUpdate(OrderUpdate {
        intent_id: intent_id.to_string(),
        market: market.to_string(),
        status,
        filled_size,
        remaining_size,
        reason,
    })
}

/// The order update refusing a new order outright: nothing filled, all of it
/// left, and why.
pub fn order_rejected(intent_id: &str, order: &PlaceOrder, reason: String) -> EventKind {
    order_update(
        intent_id,
        &order.market,
        OrderStatus::Rejected,
        0.0,
        order.size,
        Some(reason),
    )
}

impl Book {
    /// Best bid price, if any.
    pub fn best_bid(&self) -> Option<f64> {
        self.bids.first().map(|l| l.price)
    }

    /// Best ask price, if any.
    pub fn best_ask(&self) -> Option<f64> {
        self.asks.first().map(|l| l.price)
    }

    /// Mid price when both sides are present.
    pub fn mid(&self) -> Option<f64> {
        Some((self.best_bid()? + self.best_ask()?) / 2.0)
    }
}
