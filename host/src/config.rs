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
//!
//! [lease]               # a host's claim on the strategy
//! ttl = "30s"
//!
//! [exec]                # the execution layer (see `exec::ExecConfig`)
//! max_wait_ms = 300000
//!
//! [risk]                # risk limits, each optional
//! max_order_size = 100.0
//! ```
//!
//! Every section and key is optional; unknown keys are errors, so a typo is
//! reported instead of silently ignored. Every value is checked at load
//! ([`HostConfig::load`]): a value out of range is refused with one line
//! naming the file, the section and the key. This module never opens the
//! store or touches the data directory.

use std::path::Path;
use std::time::Duration;

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
    pub lease: LeaseSection,
    /// `[exec]`: retries, circuit breakers, rate limits and venue windows.
    pub exec: crate::exec::ExecConfig,
    /// `[risk]`: the strategy's risk limits (each optional).
    pub risk: crate::exec::RiskConfig,
}

/// `[lease]`: how long a host's claim on a strategy lasts without renewal
/// (renewed every third of it). Another host may take the strategy over once
/// it lapses; see `lease`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseSection {
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub ttl: Duration,
}

impl Default for LeaseSection {
    fn default() -> Self {
        LeaseSection {
            ttl: crate::lease::DEFAULT_TTL,
        }
    }
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

    /// Checks every value; the error names the section and key:
    /// `[sim] markets: empty: …`. Zero or negative durations, sizes and
    /// counts, NaN, empty or duplicate market lists and absurd values are
    /// refused here, at load, before anything runs or is written.
    fn check(&self) -> Result<(), String> {
        // Lower bounds of every [sandbox] key live with the limits themselves.
        self.sandbox.check()?;
        let s = &self.sandbox;
        at_most("sandbox", "memory_bytes", s.memory_bytes as u64, MAX_MEMORY)?;
        duration_at_most(
            "sandbox",
            "call_deadline",
            s.call_deadline,
            MAX_CALL_DEADLINE,
        )?;
        at_most(
            "sandbox",
            "max_actions_per_event",
            s.max_actions_per_event as u64,
            100_000,
        )?;
        at_most("sandbox", "max_log_line", s.max_log_line as u64, 1 << 20)?;
        at_most("sandbox", "max_id_bytes", s.max_id_bytes as u64, 64 << 10)?;
        at_most(
            "sandbox",
            "max_output_bytes",
            s.max_output_bytes as u64,
            64 << 20,
        )?;
        at_most(
            "sandbox",
            "max_snapshot_bytes",
            s.max_snapshot_bytes as u64,
            1 << 30,
        )?;
        at_least(
            "sandbox",
            "max_log_lines_per_sec",
            u64::from(s.max_log_lines_per_sec),
            1,
        )?;
        at_most(
            "sandbox",
            "max_log_lines_per_sec",
            u64::from(s.max_log_lines_per_sec),
            1_000_000,
        )?;
        at_most("sandbox", "max_instances", u64::from(s.max_instances), 1024)?;

        let r = &self.supervisor;
        at_most(
            "supervisor",
            "max_restarts",
            u64::from(r.max_restarts),
            1_000_000,
        )?;
        positive("supervisor", "restart_window", r.restart_window)?;
        duration_at_most("supervisor", "restart_window", r.restart_window, WEEK)?;
        positive("supervisor", "backoff_initial", r.backoff_initial)?;
        positive("supervisor", "backoff_max", r.backoff_max)?;
        duration_at_most("supervisor", "backoff_max", r.backoff_max, HOUR)?;
        if r.backoff_max < r.backoff_initial {
            return Err(format!(
                "[supervisor] backoff_max = {} is shorter than backoff_initial = {}",
                show(r.backoff_max),
                show(r.backoff_initial)
            ));
        }
        at_least(
            "supervisor",
            "quarantine_after",
            u64::from(r.quarantine_after),
            1,
        )?;
        at_most(
            "supervisor",
            "quarantine_after",
            u64::from(r.quarantine_after),
            1000,
        )?;

        at_least(
            "supervisor",
            "max_pending_timers",
            r.max_pending_timers as u64,
            1,
        )?;
        at_most(
            "supervisor",
            "max_pending_timers",
            r.max_pending_timers as u64,
            1_000_000,
        )?;

        let c = &self.checkpoint;
        at_least("checkpoint", "every_events", c.every_events, 1)?;
        positive("checkpoint", "every_event_time", c.every_event_time)?;

        let m = &self.sim;
        if let Some(markets) = &m.markets {
            check_markets(markets).map_err(|e| format!("[sim] markets: {e}"))?;
        }
        at_least("sim", "tick_ms", m.tick_ms, 1)?;
        at_most("sim", "tick_ms", m.tick_ms, 86_400_000)?;
        number_in("sim", "volatility", m.volatility, 0.0, 5.0)?;
        number_in("sim", "trade_probability", m.trade_probability, 0.0, 1.0)?;
        at_least("sim", "depth", m.depth as u64, 1)?;
        at_most("sim", "depth", m.depth as u64, 1000)?;

        let p = &self.paper;
        number_in("paper", "starting_cash", p.starting_cash, 0.0, 1e12)?;
        number_in("paper", "fee_bps", p.fee_bps, 0.0, 10_000.0)?;

        let l = &self.lease;
        if l.ttl < MIN_LEASE_TTL {
            return Err(format!(
                "[lease] ttl = {} is shorter than the {} minimum",
                show(l.ttl),
                show(MIN_LEASE_TTL)
            ));
        }
        duration_at_most("lease", "ttl", l.ttl, HOUR)?;

        self.exec.validate().map_err(|e| sectioned(&e))?;
        self.risk.validate().map_err(|e| sectioned(&e))?;
        Ok(())
    }

    /// What the run loop's execution layer is built from.
    pub fn exec_setup(&self) -> crate::runner::ExecSetup {
        crate::runner::ExecSetup {
            exec: self.exec.clone(),
            risk: self.risk.clone(),
        }
    }

    /// The `[strategy]` table as the JSON text `init` receives.
    pub fn strategy_json(&self) -> String {
        serde_json::to_string(&self.strategy).unwrap_or_else(|_| "{}".into())
    }
}

/// Smallest and largest linear memory a strategy may be given (wasm32 tops out at 4 GiB).
const MAX_MEMORY: u64 = 4 << 30;
const MAX_CALL_DEADLINE: Duration = Duration::from_secs(600);
const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a list of market ids (from `[sim] markets` or `--market`): at least
/// one, none empty or with spaces, no duplicates.
///
/// # Errors
/// What is wrong, naming the offending id.
pub fn check_markets(markets: &[String]) -> Result<(), String> {
    if markets.is_empty() {
        return Err("empty: name at least one market".into());
    }
    let mut seen = std::collections::HashSet::new();
    for id in markets {
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "`{id}` is not a market id (1–128 characters, no spaces)"
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(format!("`{id}` is listed twice"));
        }
    }
    Ok(())
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn at_least(section: &str, key: &str, value: u64, min: u64) -> Result<(), String> {
    if value < min {
        return Err(format!(
            "[{section}] {key} = {value} must be at least {min}"
        ));
    }
    Ok(())
}

fn at_most(section: &str, key: &str, value: u64, max: u64) -> Result<(), String> {
    if value > max {
        return Err(format!(
            "[{section}] {key} = {value} is more than the {max} allowed"
        ));
    }
    Ok(())
}

fn positive(section: &str, key: &str, value: Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err(format!(
            "[{section}] {key} = \"0s\" must be longer than zero"
        ));
    }
    Ok(())
}

fn duration_at_most(
    section: &str,
    key: &str,
    value: Duration,
    max: Duration,
) -> Result<(), String> {
    if value > max {
        return Err(format!(
            "[{section}] {key} = {} is longer than the {} allowed",
            show(value),
            show(max)
        ));
    }
    Ok(())
}

fn number_in(section: &str, key: &str, value: f64, min: f64, max: f64) -> Result<(), String> {
    if !(value.is_finite() && (min..=max).contains(&value)) {
        return Err(format!(
            "[{section}] {key} = {value} must be a number from {min} to {max}"
        ));
    }
    Ok(())
}

/// `exec.retry.max_attempts must be …` as `[exec.retry] max_attempts must be …`.
fn sectioned(e: &str) -> String {
    let (path, rest) = e.split_once(' ').unwrap_or((e, ""));
    match path.rsplit_once('.') {
        Some((section, key)) => format!("[{section}] {key} {rest}"),
        None => e.to_string(),
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

    #[test]
    fn refused_values_name_section_and_key() {
        for (text, needle) in [
            ("[sim]\nmarkets = []\n", "[sim] markets"),
            ("[sim]\nmarkets = [\"x\", \"x\"]\n", "listed twice"),
            (
                "[sandbox]\nmax_actions_per_event = 0\n",
                "[sandbox] max_actions_per_event",
            ),
            ("[sandbox]\ncall_deadline = \"1ms\"\n", "epoch tick"),
            (
                "[supervisor]\nrestart_window = \"0s\"\n",
                "[supervisor] restart_window",
            ),
            ("[paper]\nfee_bps = -1.0\n", "[paper] fee_bps"),
            ("[paper]\nstarting_cash = nan\n", "[paper] starting_cash"),
            ("[lease]\nttl = \"0s\"\n", "[lease] ttl"),
            ("[risk]\nmax_order_size = -5.0\n", "[risk] max_order_size"),
            (
                "[exec.retry]\nmax_attempts = 0\n",
                "[exec.retry] max_attempts",
            ),
            ("[risk]\nmax_size = 5.0\n", "max_size"),
            ("[exec.breaker]\nopen_for = 3\n", "open_for"),
        ] {
            let e = HostConfig::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let ok =
            HostConfig::parse("[sim]\nmarkets = [\"a\", \"b\"]\n[lease]\nttl = \"5s\"\n").unwrap();
        assert_eq!(ok.lease.ttl, std::time::Duration::from_secs(5));
    }
}
