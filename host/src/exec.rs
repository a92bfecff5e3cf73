//! The execution layer: between a strategy's actions and a venue, so that no
//! order is lost and none is sent twice.
//!
//! Owns, for one strategy: the intent lifecycle ([`intent`]), retry with
//! backoff ([`retry`]), circuit breakers per endpoint group ([`breaker`]),
//! client-side rate limits ([`limits`]), risk limits ([`risk`]) and the
//! [`Executor`] that puts them together, plus the `[exec]` config
//! ([`ExecConfig`]). It talks to venues only through
//! [`crate::venue::ExecutionClient`], so the simulated venue, paper execution
//! and live Polymarket go through the same path.
//!
//! Never owns: the venue protocol, the journal or the store (intents are
//! written through [`IntentLog`]; [`store_log`] implements it over the
//! store), the run loop
//! (which turns [`ExecOutput`] into journaled events and system events).

pub mod breaker;
pub mod executor;
pub mod halt;
pub mod intent;
pub mod limits;
pub mod output;
pub mod retry;
pub mod risk;
pub mod store_log;

use serde::{Deserialize, Serialize};

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, EndpointGroup};
pub use executor::{ExecError, ExecFigures, ExecSnapshot, Executor, SETTLE_WINDOW_MS};
pub use intent::{Intent, IntentLog, IntentLogError, IntentRecord, IntentState, MemoryIntentLog};
pub use limits::LimitsConfig;
pub use output::{ExecOutput, NoteKind, SystemNote};
pub use retry::RetryConfig;
pub use risk::RiskConfig;

/// `[exec.windows]`: how the executor waits out venue windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// After a 425, the next order probes this long (ms) later.
    pub too_early_probe_ms: u64,
    /// After a 503 (cancel-only or disabled), the next order probes this long (ms) later.
    pub halted_probe_ms: u64,
    /// After a 425 window, only resting (GTC) orders for this long (ms).
    pub post_only_ms: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            too_early_probe_ms: 5_000,
            halted_probe_ms: 5_000,
            post_only_ms: 120_000,
        }
    }
}

/// `[exec]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub limits: LimitsConfig,
    pub windows: WindowConfig,
    /// Longest (ms) an order waits for an open circuit, a venue window or a
    /// placement hold before it is rejected with the reason.
    pub max_wait_ms: u64,
    /// Cancel venue orders that no intent knows when reconciling.
    pub cancel_unknown_orders: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            limits: LimitsConfig::default(),
            windows: WindowConfig::default(),
            max_wait_ms: 300_000,
            cancel_unknown_orders: false,
        }
    }
}

impl ExecConfig {
    /// Checks every value.
    ///
    /// # Errors
    /// One line naming the key (under `exec.`) and the problem.
    pub fn validate(&self) -> Result<(), String> {
        self.retry
            .validate()
            .and_then(|()| self.breaker.validate())
            .and_then(|()| self.limits.validate())
            .map_err(|e| format!("exec.{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("[exec]\nmax_wait_ms")
            .expect("the example is in the README");
        let end = start + readme[start..].find("```").expect("end of the block");
        let table: toml::Table = toml::from_str(&readme[start..end]).expect("parses");
        let exec: ExecConfig = table["exec"].clone().try_into().expect("[exec]");
        let risk: RiskConfig = table["risk"].clone().try_into().expect("[risk]");
        exec.validate().expect("valid [exec]");
        risk.validate().expect("valid [risk]");
        assert_eq!(exec, ExecConfig::default(), "the README shows the defaults");
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_keys() {
        let c: ExecConfig = toml::from_str(
            "cancel_unknown_orders = true\n[retry]\nmax_attempts = 4\n[breaker]\nopen_ms = 1000\n",
        )
        .expect("config");
        assert!(c.cancel_unknown_orders);
        assert_eq!((c.retry.max_attempts, c.breaker.open_ms), (4, 1_000));
        assert_eq!(c.limits, LimitsConfig::default());
        c.validate().expect("valid");
        let e = toml::from_str::<ExecConfig>("[breaker]\nopen_for = 3").expect_err("unknown");
        assert!(e.to_string().contains("open_for"), "{e}");
        let bad: ExecConfig = toml::from_str("[retry]\nmax_attempts = 0").expect("parses");
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("exec.retry.max_attempts")
        );
    }
}
