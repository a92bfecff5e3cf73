//! # polybot-strategy: the guest SDK
//!
//! A polybot strategy is a WebAssembly component implementing the
//! `polybot:strategy` world (`wit/strategy.wit`). This crate hides the
//! component plumbing: implement [`Strategy`] for a serde-serialisable type,
//! call [`export_strategy!`] once, and build with either
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! cargo component build --release
//! ```
//!
//! Snapshots come for free: the host calls `snapshot`, which serialises the
//! strategy value as JSON, and `restore`, which reads it back. A strategy whose
//! state layout changes bumps [`Strategy::STATE_VERSION`] and overrides
//! [`Strategy::restore`] to read (or refuse) older versions.
//!
//! A strategy sees no clock, randomness, files or network: everything arrives
//! in an [`Event`], which is what lets the host replay it exactly after a
//! failure. Keep it that way — derive everything from events and state.

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "strategy",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_strategy_world",
        default_bindings_module: "polybot_strategy::bindings",
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}

pub use bindings::polybot::strategy::types::{
    Action, Book, Event, EventKind, Fill, Level, LogLevel, OrderStatus, OrderType, OrderUpdate,
    PlaceOrder, SetTimer, Side, StrategyInfo, TradePrint, VenueHealth, VenueStatus,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

impl Fill {
    /// Whether this fill reverses an earlier one whose trade failed to
    /// settle: its size (and fee) are negated (see `fill` in the contract).
    pub fn is_reversal(&self) -> bool {
        self.size < 0.0
    }
}

/// A trading strategy: pure decision logic over events.
///
/// The value itself is the strategy's whole state; it is snapshotted with serde,
/// so every field that matters after a restart must be serialisable.
pub trait Strategy: Sized + Serialize + DeserializeOwned {
    /// Name reported by `describe`.
    const NAME: &'static str;
    /// Version reported by `describe`.
    const VERSION: &'static str;
    /// Version of the snapshot layout. Bump it when the state's shape changes.
    const STATE_VERSION: u32 = 1;

    /// The configuration the host passes to `init`, as JSON.
    type Config: DeserializeOwned;

    /// Builds a fresh strategy from its configuration.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Handles one event, pushing any actions to take onto `actions`.
    fn on_event(&mut self, event: &Event, actions: &mut Vec<Action>);

    /// Reads a snapshot written by `snapshot`, taken with `state_version`.
    /// The default reads the current version and refuses any other.
    fn restore(state: &[u8], state_version: u32) -> Result<Self, String> {
        if state_version != Self::STATE_VERSION {
            return Err(format!(
                "{} cannot read state version {state_version}; it writes version {}",
                Self::NAME,
                Self::STATE_VERSION
            ));
        }
        serde_json::from_slice(state).map_err(|e| format!("snapshot does not parse: {e}"))
    }

    /// Writes the snapshot `restore` reads back.
    fn snapshot(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail for derived impls.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The id the host gives the order placed by action `index` of the actions
/// returned for the event with sequence number `seq` (see `place-order` in the WIT).
pub fn intent_id(seq: u64, index: usize) -> String {
    format!("{seq}.{index}")
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

/// Logging into the host's log, tagged with the strategy's name.
pub mod log {
    use super::LogLevel;

    fn emit(level: LogLevel, message: &str) {
        #[cfg(target_arch = "wasm32")]
        super::bindings::polybot::strategy::host::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Natively (tests, benchmarks) there is no host: drop the line.
            let _ = (level, message);
        }
    }

    pub fn debug(message: &str) {
        emit(LogLevel::Debug, message)
    }
    pub fn info(message: &str) {
        emit(LogLevel::Info, message)
    }
    pub fn warn(message: &str) {
        emit(LogLevel::Warn, message)
    }
    pub fn error(message: &str) {
        emit(LogLevel::Error, message)
    }
}

/// The state cell an exported strategy lives in. Used by [`export_strategy!`].
#[doc(hidden)]
pub mod runtime {
    use super::*;
    use std::cell::RefCell;

    pub fn describe<S: Strategy>() -> StrategyInfo {
        StrategyInfo {
            name: S::NAME.to_string(),
            version: S::VERSION.to_string(),
            state_version: S::STATE_VERSION,
        }
    }

    pub fn init<S: Strategy>(cell: &RefCell<Option<S>>, config: &str) -> Result<(), String> {
        let config = if config.trim().is_empty() {
            "{}"
        } else {
            config
        };
        let config: S::Config =
            serde_json::from_str(config).map_err(|e| format!("bad configuration: {e}"))?;
        *cell.borrow_mut() = Some(S::new(config)?);
        Ok(())
    }

    pub fn on_event<S: Strategy>(cell: &RefCell<Option<S>>, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match cell.borrow_mut().as_mut() {
            Some(strategy) => strategy.on_event(&event, &mut actions),
            // The host always calls init or restore first; reaching this is a host bug.
            None => panic!("on-event called before init or restore"),
        }
        actions
    }

    pub fn snapshot<S: Strategy>(cell: &RefCell<Option<S>>) -> Vec<u8> {
        cell.borrow().as_ref().map(S::snapshot).unwrap_or_default()
    }

    pub fn restore<S: Strategy>(
        cell: &RefCell<Option<S>>,
        state: &[u8],
        state_version: u32,
    ) -> Result<(), String> {
        *cell.borrow_mut() = Some(S::restore(state, state_version)?);
        Ok(())
    }
}

/// Exports a [`Strategy`] implementation as the component's `strategy` world.
///
/// ```ignore
/// polybot_strategy::export_strategy!(Momentum);
/// ```
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __polybot_export {
            use super::*;
            use $crate::runtime;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<Option<$strategy>> =
                    const { ::core::cell::RefCell::new(None) };
            }

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn describe() -> $crate::StrategyInfo {
                    runtime::describe::<$strategy>()
                }
                fn init(config: String) -> Result<(), String> {
                    STATE.with(|cell| runtime::init::<$strategy>(cell, &config))
                }
                fn on_event(ev: $crate::Event) -> Vec<$crate::Action> {
                    STATE.with(|cell| runtime::on_event::<$strategy>(cell, ev))
                }
                fn snapshot() -> Vec<u8> {
                    STATE.with(|cell| runtime::snapshot::<$strategy>(cell))
                }
                fn restore(state: Vec<u8>, state_version: u32) -> Result<(), String> {
                    STATE.with(|cell| runtime::restore::<$strategy>(cell, &state, state_version))
                }
            }

            $crate::bindings::__export_strategy_world!(Export with_types_in $crate::bindings);
        }
    };
}
