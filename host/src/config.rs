//! The host's configuration file (TOML), for `run --config FILE`.
//!
//! ```toml
//! [strategy]            # handed to the strategy's `init`, as JSON
//! lookback = 20
//!
//! [sandbox]             # limits every instance runs under (`SandboxLimits`)
//! memory_bytes = 67108864
//! call_deadline = "100ms"
//! max_actions_per_event = 64
//! max_id_bytes = 256
//! max_output_bytes = 65536
//! max_snapshot_bytes = 16777216
//! max_log_line = 4096
//! max_log_lines_per_sec = 100
//!
//! [supervisor]          # restart policy
//! max_restarts = 10
//! restart_window = "60s"
//!
//! [checkpoint]
//! every_events = 1000
//! every_event_time = "60s"
//!
//! [sim]                 # the simulated market
//! tick_ms = 200
//!
//! [paper]               # paper execution
//! starting_cash = 10000.0
//! ```
//!
//! Every section and key is optional; unknown keys are errors, so a typo is
//! reported instead of silently ignored.

use std::path::Path;

use crate::sandbox::SandboxLimits;
use crate::supervisor::{CheckpointPolicy, RestartPolicy};
use crate::venue::paper::PaperConfig;

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// The strategy's own parameters, passed to `init` as JSON.
    pub strategy: toml::Table,
    pub sandbox: SandboxLimits,
    pub supervisor: RestartPolicy,
    pub checkpoint: CheckpointPolicy,
    pub sim: SimSection,
    pub paper: PaperSection,
}

/// `[sim]`: how the simulated market behaves (seed and markets also have flags).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    pub seed: Option<u64>,
    pub markets: Option<Vec<String>>,
    pub tick_ms: u64,
    pub volatility: f64,
    pub trade_probability: f64,
    pub depth: usize,
}

impl Default for SimSection {
    fn default() -> Self {
        let d = crate::venue::sim::SimConfig::default();
        SimSection {
            seed: None,
            markets: None,
            tick_ms: d.tick_ms,
            volatility: d.volatility,
            trade_probability: d.trade_probability,
            depth: d.depth,
        }
    }
}

/// `[paper]`: the paper account.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaperSection {
    pub starting_cash: f64,
    pub fee_bps: f64,
}

impl Default for PaperSection {
    fn default() -> Self {
        let d = PaperConfig::default();
        PaperSection {
            starting_cash: d.starting_cash,
            fee_bps: d.fee_bps,
        }
    }
}

impl From<&PaperSection> for PaperConfig {
    fn from(p: &PaperSection) -> Self {
        PaperConfig {
            starting_cash: p.starting_cash,
            fee_bps: p.fee_bps,
        }
    }
}

/// A config file that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl HostConfig {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file: unreadable, not TOML, unknown keys,
    /// wrong types or values out of range.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text; the error is a one-line description.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: HostConfig = toml::from_str(text).map_err(|e| {
            e.to_string()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.sandbox.check()?;
        if self.sim.tick_ms == 0 {
            return Err("[sim] tick_ms must be at least 1".into());
        }
        if !(self.sim.volatility.is_finite() && self.sim.volatility >= 0.0) {
            return Err("[sim] volatility must be a non-negative number".into());
        }
        if !(0.0..=1.0).contains(&self.sim.trade_probability) {
            return Err("[sim] trade_probability must be between 0 and 1".into());
        }
        if self.sim.depth == 0 {
            return Err("[sim] depth must be at least 1".into());
        }
        if !(self.paper.starting_cash.is_finite() && self.paper.starting_cash >= 0.0) {
            return Err("[paper] starting_cash must be a non-negative number".into());
        }
        if self.supervisor.quarantine_after == 0 {
            return Err("[supervisor] quarantine_after must be at least 1".into());
        }
        if self.checkpoint.every_events == 0 {
            return Err("[checkpoint] every_events must be at least 1".into());
        }
        Ok(())
    }

    /// The `[strategy]` table as the JSON text `init` receives.
    pub fn strategy_json(&self) -> String {
        serde_json::to_string(&self.strategy).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = HostConfig::parse("").unwrap();
        assert_eq!(c, HostConfig::default());
        assert_eq!(c.strategy_json(), "{}");
    }

    #[test]
    fn sections_parse_with_durations() {
        let c = HostConfig::parse(
            "[strategy]\nlookback = 5\n[sandbox]\ncall_deadline = \"250ms\"\n[supervisor]\nrestart_window = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sandbox.call_deadline,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            c.supervisor.restart_window,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(c.strategy_json(), r#"{"lookback":5}"#);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = HostConfig::parse("[supervisor]\nmax_restart = 3\n").unwrap_err();
        assert!(e.contains("max_restart"), "{e}");
        let e = HostConfig::parse("[sandbox]\ncall_deadline = \"soon\"\n").unwrap_err();
        assert!(
            e.contains("call_deadline") || e.contains("soon") || e.contains("duration"),
            "{e}"
        );
        let e = HostConfig::parse("[sim]\ndepth = 0\n").unwrap_err();
        assert!(e.contains("depth"), "{e}");
        assert!(HostConfig::parse("this is = = not toml").is_err());
    }
}
