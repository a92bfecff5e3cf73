//! The fleet file of `serve`: host-wide sections, as in `run`'s config, plus
//! `[host]`, `[health]`, `[redis]` and one `[[strategy]]` table per strategy.
//!
//! ```toml
//! [host]
//! id = "trader-1"             # names heartbeat:host:<id> [default: host name]
//! shutdown_timeout = "10s"
//!
//! [health]
//! stuck_after = "30s"         # events waiting, none handled this long: restart
//! beat_every = "5s"           # each strategy's heartbeat in the store (`status`)
//!
//! [redis]                     # heartbeats; also --redis URL
//! url = "redis://127.0.0.1:6379"
//! every = "30s"
//! ttl = "90s"
//!
//! [sandbox]                   # host-wide defaults: any section `run` reads
//! call_deadline = "100ms"
//!
//! [[strategy]]
//! name = "momentum-fast"
//! module = "momentum.wasm"    # relative to this file
//! markets = ["sim-0"]         # [sim] markets for this strategy
//! seed = 7                    # [sim] seed for this strategy
//! speed = 1                   # event-time speed, or "max"
//! events = 100000             # optional: stop after this many events
//! duration = "6h"             # optional: stop after this much event time
//! config = { lookback = 10 }  # handed to the strategy's init
//! supervisor = { max_restarts = 3 }   # overrides, merged key by key
//!
//! [[strategy]]
//! name = "pm"
//! module = "momentum.wasm"
//! venue = "polymarket"        # markets are token ids; one feed per endpoint
//! markets = ["<token id>"]
//! polymarket = { ws_url = "wss://…", live = false }
//! ```
//!
//! A strategy's own sections (`sandbox`, `supervisor`, `checkpoint`, `sim`,
//! `paper`, `lease`, and any section `run`'s config gains) are merged key by
//! key over the host-wide ones and checked by the same rules as `run`'s
//! config ([`HostConfig::parse`]). The whole file is checked before anything
//! starts; the error is one line naming the file, the table and the key.
//! This module reads files only; it never starts anything.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::venue::{Speed, VenueSpec};
use crate::config::HostConfig;
use crate::runner::RunLimits;
use crate::venue::polymarket;
use crate::venue::sim::SimConfig;

/// A fleet file that cannot be used: one line naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum FleetConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// This host's name in heartbeats [default: the machine's host name].
    pub id: Option<String>,
    /// How long a shutdown waits for the strategies to finish their event
    /// and checkpoint.
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub shutdown_timeout: Duration,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            id: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// A strategy with events waiting and none handled for this long is
    /// stuck: it is restarted.
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub stuck_after: Duration,
    /// How often each strategy's heartbeat is written to the store.
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub beat_every: Duration,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            stuck_after: Duration::from_secs(30),
            beat_every: Duration::from_secs(5),
        }
    }
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    pub url: Option<String>,
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub every: Duration,
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub ttl: Duration,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: None,
            every: Duration::from_secs(30),
            ttl: Duration::from_secs(90),
        }
    }
}

/// One `[[strategy]]`, merged over the host-wide sections and checked.
#[derive(Debug, Clone)]
pub struct StrategyEntry {
    pub name: String,
    /// The module file, resolved against the fleet file's directory.
    pub module: PathBuf,
    /// The host-wide sections with this strategy's overrides, and its
    /// `config` as `[strategy]`.
    pub config: HostConfig,
    pub speed: Speed,
    /// `venue = "polymarket"`: where to connect and how to execute.
    pub polymarket: Option<PolymarketEntry>,
    pub limits: RunLimits,
    /// The strategy's table as written, to tell a changed entry on reload.
    pub source: toml::Table,
}

/// A strategy's `polymarket = { … }` table: what `run --venue polymarket`
/// takes as flags. Credentials (live only) are read when the file is checked.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolymarketEntry {
    pub clob_url: String,
    pub ws_url: String,
    pub gamma_url: String,
    #[serde(with = "crate::sandbox::humantime_serde_compat")]
    pub stall_timeout: Duration,
    /// Live execution: signed orders are sent to the CLOB.
    pub live: bool,
    /// Credentials file for live execution [default: POLYMARKET_* variables].
    pub credentials: Option<PathBuf>,
    #[serde(skip)]
    pub resolved: Option<polybot_polymarket::auth::Credentials>,
}

impl Default for PolymarketEntry {
    fn default() -> Self {
        PolymarketEntry {
            clob_url: polymarket::CLOB_URL.into(),
            ws_url: polymarket::WS_URL.into(),
            gamma_url: polymarket::GAMMA_URL.into(),
            stall_timeout: Duration::from_secs(30),
            live: false,
            credentials: None,
            resolved: None,
        }
    }
}

impl StrategyEntry {
    /// The market this strategy trades on: its simulated market, or
    /// Polymarket (its `markets` are token ids).
    pub fn venue(&self) -> VenueSpec {
        let c = &self.config;
        if let Some(p) = &self.polymarket {
            let execution = match &p.resolved {
                Some(credentials) => polymarket::Execution::Live(polymarket::LiveConfig {
                    strategy: self.name.clone(),
                    credentials: credentials.clone(),
                }),
                None => polymarket::Execution::Paper((&c.paper).into()),
            };
            return VenueSpec::Polymarket(Box::new(polymarket::PolymarketConfig {
                clob_url: p.clob_url.clone(),
                ws_url: p.ws_url.clone(),
                gamma_url: p.gamma_url.clone(),
                tokens: c.sim.markets.clone().unwrap_or_default(),
                stall_timeout: p.stall_timeout,
                execution,
            }));
        }
        VenueSpec::Sim {
            sim: SimConfig {
                seed: c.sim.seed.unwrap_or(42),
                markets: c
                    .sim
                    .markets
                    .clone()
                    .unwrap_or_else(|| SimConfig::default().markets),
                tick_ms: c.sim.tick_ms,
                volatility: c.sim.volatility,
                trade_probability: c.sim.trade_probability,
                depth: c.sim.depth,
                ..SimConfig::default()
            },
            paper: (&c.paper).into(),
            speed: self.speed,
        }
    }
}

/// A checked fleet file.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub path: PathBuf,
    pub host: HostSection,
    pub health: HealthSection,
    pub redis: RedisSection,
    /// `[http]`: the control plane's address (see `api`).
    pub http: crate::api::HttpSection,
    /// `[swap]`: when a module on probation is rolled back.
    pub swap: crate::supervisor::ProbationPolicy,
    /// The host-wide sections.
    pub defaults: HostConfig,
    pub strategies: Vec<StrategyEntry>,
}

/// Keys of a `[[strategy]]` table that are not sections.
const STRATEGY_KEYS: [&str; 10] = [
    "name",
    "module",
    "venue",
    "markets",
    "seed",
    "speed",
    "events",
    "duration",
    "config",
    "polymarket",
];

impl FleetConfig {
    /// Reads and checks a fleet file: every table and key, every module file
    /// present, no name twice.
    ///
    /// # Errors
    /// A [`FleetConfigError`] naming the file, the table and the key.
    pub fn load(path: &Path) -> Result<FleetConfig, FleetConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
            .map(|mut c| {
                c.path = path.to_path_buf();
                c
            })
            .map_err(|message| FleetConfigError::Invalid {
                path: path.display().to_string(),
                message,
            })
    }

    /// Parses fleet text; module paths are resolved against `base`.
    ///
    /// # Errors
    /// A one-line description naming the table and key.
    pub fn parse(text: &str, base: &Path) -> Result<FleetConfig, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(one_line)?;
        let host: HostSection = section(&mut table, "host")?;
        let health: HealthSection = section(&mut table, "health")?;
        let redis: RedisSection = section(&mut table, "redis")?;
        let http: crate::api::HttpSection = section(&mut table, "http")?;
        let swap: crate::supervisor::ProbationPolicy = section(&mut table, "swap")?;
        if swap.probation_events == 0 {
            return Err("[swap] probation_events must be at least 1".into());
        }
        if health.stuck_after.is_zero() {
            return Err("[health] stuck_after must be longer than zero".into());
        }
        if health.beat_every.is_zero() {
            return Err("[health] beat_every must be longer than zero".into());
        }
        if redis.every.is_zero() || redis.ttl < redis.every {
            return Err("[redis] every must be longer than zero and ttl at least every".into());
        }
        if let Some(id) = &host.id {
            check_name(id).map_err(|e| format!("[host] id: {e}"))?;
        }
        let strategies = match table.remove("strategy") {
            None => Vec::new(),
            Some(toml::Value::Array(list)) => list,
            Some(_) => {
                return Err(
                    "`strategy` must be [[strategy]] tables, one per strategy (its parameters go in its `config`)"
                        .into(),
                );
            }
        };
        let defaults_text = toml::to_string(&table).map_err(|e| e.to_string())?;
        let defaults = HostConfig::parse(&defaults_text)?;
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(strategies.len());
        for (index, value) in strategies.into_iter().enumerate() {
            let toml::Value::Table(source) = value else {
                return Err(format!("[[strategy]] #{}: not a table", index + 1));
            };
            let entry = strategy(&table, &defaults, source, base, index)?;
            if !seen.insert(entry.name.clone()) {
                return Err(format!(
                    "[[strategy]] `{}`: the name is used twice",
                    entry.name
                ));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err("no [[strategy]] tables: name at least one strategy to serve".into());
        }
        Ok(FleetConfig {
            path: PathBuf::new(),
            host,
            health,
            redis,
            http,
            swap,
            defaults,
            strategies: entries,
        })
    }
}

fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn section<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
) -> Result<T, String> {
    match table.remove(key) {
        None => Ok(T::default()),
        Some(value) => value
            .try_into()
            .map_err(|e| format!("[{key}] {}", one_line(e))),
    }
}

/// Checks a strategy name: 1–64 letters, digits, `-` or `_`.
///
/// # Errors
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "strategy name `{name}` must be 1–64 letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

fn strategy(
    defaults_table: &toml::Table,
    defaults: &HostConfig,
    mut source_table: toml::Table,
    base: &Path,
    index: usize,
) -> Result<StrategyEntry, String> {
    let source = source_table.clone();
    let label = match source_table.get("name") {
        Some(toml::Value::String(name)) => format!("[[strategy]] `{name}`"),
        _ => format!("[[strategy]] #{}", index + 1),
    };
    let fail = |message: String| format!("{label}: {message}");
    let name = match source_table.remove("name") {
        Some(toml::Value::String(name)) => name,
        Some(_) => return Err(fail("name must be a string".into())),
        None => return Err(fail("name is missing".into())),
    };
    check_name(&name).map_err(fail)?;
    let module = match source_table.remove("module") {
        Some(toml::Value::String(module)) => base.join(module),
        Some(_) => return Err(fail("module must be a path".into())),
        None => return Err(fail("module is missing".into())),
    };
    if !module.is_file() {
        return Err(fail(format!("module {}: no such file", module.display())));
    }
    let on_polymarket = match source_table.remove("venue") {
        None => false,
        Some(toml::Value::String(v)) if v == "sim" => false,
        Some(toml::Value::String(v)) if v == "polymarket" => true,
        Some(other) => {
            return Err(fail(format!(
                "venue {other}: use \"sim\" (the simulated market) or \"polymarket\""
            )));
        }
    };
    let polymarket = match (on_polymarket, source_table.remove("polymarket")) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(fail(
                "polymarket = { … } needs venue = \"polymarket\"".into(),
            ));
        }
        (true, table) => {
            let table = match table {
                None => toml::Table::new(),
                Some(toml::Value::Table(t)) => t,
                Some(_) => return Err(fail("polymarket must be a table".into())),
            };
            let mut entry: PolymarketEntry = table
                .try_into()
                .map_err(|e: toml::de::Error| fail(format!("polymarket: {}", one_line(e))))?;
            if entry.live {
                let credentials = match &entry.credentials {
                    Some(path) => {
                        polybot_polymarket::auth::Credentials::from_file(&base.join(path))
                    }
                    None => polybot_polymarket::auth::Credentials::from_env(),
                };
                entry.resolved = Some(credentials.map_err(|e| {
                    fail(format!(
                        "polymarket live needs credentials (credentials = FILE or POLYMARKET_* variables): {e}"
                    ))
                })?);
            }
            Some(entry)
        }
    };
    if polymarket.is_some()
        && !matches!(source_table.get("markets"), Some(toml::Value::Array(a)) if !a.is_empty())
    {
        return Err(fail(
            "venue = \"polymarket\" needs markets = [\"<token id>\", …]".into(),
        ));
    }
    let speed = match source_table.remove("speed") {
        None => Speed::Times(1.0),
        Some(toml::Value::String(s)) => {
            Speed::parse(&s).map_err(|e| fail(format!("speed: {e}")))?
        }
        Some(toml::Value::Integer(i)) => {
            Speed::parse(&i.to_string()).map_err(|e| fail(format!("speed: {e}")))?
        }
        Some(toml::Value::Float(x)) => {
            Speed::parse(&x.to_string()).map_err(|e| fail(format!("speed: {e}")))?
        }
        Some(_) => return Err(fail("speed must be a number or \"max\"".into())),
    };
    let events = match source_table.remove("events") {
        None => None,
        Some(toml::Value::Integer(n)) if n > 0 => Some(n as u64),
        Some(_) => return Err(fail("events must be a positive whole number".into())),
    };
    let duration = match source_table.remove("duration") {
        None => None,
        Some(toml::Value::String(text)) => match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(fail(format!(
                    "duration `{text}` is not a duration (e.g. 90s, 6h)"
                )));
            }
        },
        Some(_) => return Err(fail("duration must be a string like \"6h\"".into())),
    };
    if events.is_some() && duration.is_some() {
        return Err(fail("give events or duration, not both".into()));
    }
    let config = match source_table.remove("config") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(fail("config must be a table".into())),
    };
    // What is left: sections merged over the host-wide ones.
    let mut merged = defaults_table.clone();
    let mut sim_shortcuts = toml::Table::new();
    if let Some(markets) = source_table.remove("markets") {
        sim_shortcuts.insert("markets".into(), markets);
    }
    if let Some(seed) = source_table.remove("seed") {
        sim_shortcuts.insert("seed".into(), seed);
    }
    for (key, value) in source_table {
        let toml::Value::Table(overrides) = value else {
            return Err(fail(format!(
                "unknown key `{key}` (expected {}, or a section such as sandbox, supervisor, checkpoint, sim, paper)",
                STRATEGY_KEYS.join(", ")
            )));
        };
        if key == "sandbox" && overrides.contains_key("max_instances") {
            return Err(fail(
                "[sandbox] max_instances is host-wide: set it in the top-level [sandbox]".into(),
            ));
        }
        merge_section(&mut merged, &key, overrides);
    }
    if !sim_shortcuts.is_empty() {
        merge_section(&mut merged, "sim", sim_shortcuts);
    }
    merged.insert("strategy".into(), toml::Value::Table(config));
    let text = toml::to_string(&merged).map_err(|e| fail(e.to_string()))?;
    let config = HostConfig::parse(&text).map_err(fail)?;
    if config.sandbox.memory_bytes > defaults.sandbox.memory_bytes {
        return Err(fail(format!(
            "[sandbox] memory_bytes = {} is more than the host-wide {} (the pool is sized by the top-level [sandbox])",
            config.sandbox.memory_bytes, defaults.sandbox.memory_bytes
        )));
    }
    Ok(StrategyEntry {
        name,
        module,
        config,
        speed,
        polymarket,
        limits: RunLimits {
            max_events: events,
            max_event_time: duration,
        },
        source,
    })
}

fn merge_section(merged: &mut toml::Table, key: &str, overrides: toml::Table) {
    match merged.get_mut(key) {
        Some(toml::Value::Table(existing)) => existing.extend(overrides),
        _ => {
            merged.insert(key.to_string(), toml::Value::Table(overrides));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"\0asm").unwrap();
        FleetConfig::parse(text, dir.path())
    }

    #[test]
    fn strategies_merge_over_host_wide_sections() {
        let c = parse(
            "[supervisor]\nmax_restarts = 4\nrestart_window = \"2m\"\n\
             [[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nseed = 7\nspeed = \"max\"\nevents = 10\n\
             config = { lookback = 3 }\nsupervisor = { max_restarts = 1 }\n\
             [[strategy]]\nname = \"b\"\nmodule = \"m.wasm\"\n",
        )
        .unwrap();
        let a = &c.strategies[0];
        assert_eq!(a.config.supervisor.max_restarts, 1);
        assert_eq!(
            a.config.supervisor.restart_window,
            Duration::from_secs(120),
            "kept from the host-wide section"
        );
        assert_eq!(a.config.sim.seed, Some(7));
        assert_eq!(a.config.strategy_json(), r#"{"lookback":3}"#);
        assert_eq!(a.speed, Speed::Max);
        assert_eq!(a.limits.max_events, Some(10));
        assert_eq!(c.strategies[1].config.supervisor.max_restarts, 4);
    }

    #[test]
    fn polymarket_strategies_name_their_tokens_and_endpoints() {
        let c = parse(
            "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nvenue = \"polymarket\"\n\
             markets = [\"1001\"]\npolymarket = { ws_url = \"ws://127.0.0.1:9/ws\" }\n",
        )
        .unwrap();
        let VenueSpec::Polymarket(cfg) = c.strategies[0].venue() else {
            panic!("not polymarket");
        };
        assert_eq!(cfg.tokens, ["1001"]);
        assert_eq!(cfg.ws_url, "ws://127.0.0.1:9/ws");
        assert_eq!(cfg.clob_url, polymarket::CLOB_URL, "the default");
        assert!(matches!(cfg.execution, polymarket::Execution::Paper(_)));
        for (text, needle) in [
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nvenue = \"polymarket\"\n",
                "needs markets",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\npolymarket = { live = true }\n",
                "needs venue = \"polymarket\"",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nvenue = \"polymarket\"\n\
                 markets = [\"1\"]\npolymarket = { clob = \"x\" }\n",
                "polymarket: ",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nvenue = \"kalshi\"\n",
                "venue \"kalshi\"",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn the_swap_section_sets_probation_and_refuses_nonsense() {
        let strategy = "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\n";
        let c = parse(strategy).unwrap();
        assert_eq!(c.swap, crate::supervisor::ProbationPolicy::default());
        let c = parse(&format!(
            "[swap]\nprobation_faults = 2\nprobation_events = 50\n{strategy}"
        ))
        .unwrap();
        assert_eq!(c.swap.probation_faults, 2);
        assert_eq!(c.swap.probation_events, 50);
        let e = parse(&format!("[swap]\nprobation_events = 0\n{strategy}")).unwrap_err();
        assert!(e.contains("[swap] probation_events"), "{e}");
        let e = parse(&format!("[swap]\nprobation = 3\n{strategy}")).unwrap_err();
        assert!(e.contains("[swap]") && e.contains("probation"), "{e}");
    }

    #[test]
    fn bad_files_are_named_by_table_and_key() {
        for (text, needle) in [
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\n[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\n",
                "`a`: the name is used twice",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"gone.wasm\"\n",
                "`a`: module",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nlookbak = 3\n",
                "unknown key `lookbak`",
            ),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nsupervisor = { max_restart = 3 }\n",
                "max_restart",
            ),
            ("[host]\nid = \"x\"\nfoo = 1\n", "[host]"),
            ("[strategy]\nlookback = 3\n", "[[strategy]]"),
            ("", "no [[strategy]]"),
            (
                "[[strategy]]\nname = \"a\"\nmodule = \"m.wasm\"\nsandbox = { memory_bytes = 1073741824 }\n",
                "host-wide",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
