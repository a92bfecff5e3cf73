//! `polybot-host run`: one strategy, in the foreground, on the simulated market.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::Failure;
use super::progress::Progress;
use crate::config::HostConfig;
use crate::runner::{self, RunCounters, RunLimits, RunReport, StopReason};
use crate::sandbox::Sandbox;
use crate::store::StateStore;
use crate::supervisor::{Cell, CellSpec, CellState, StartError};
use crate::venue::sim::SimConfig;
use crate::venue::simulated::{Pacing, SimVenue};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The strategy component to run (`.wasm`, built for wasm32-wasip2 or with cargo component).
    #[arg(long, value_name = "PATH")]
    pub strategy: PathBuf,

    /// Name for this strategy instance in logs and records [default: the file's stem].
    #[arg(long)]
    pub name: Option<String>,

    /// Host config file (TOML): [strategy] parameters, [sandbox] limits,
    /// [supervisor] restart policy, [checkpoint], [sim], [paper].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Market ids to simulate (repeat for several) [default: sim-0 sim-1 sim-2].
    #[arg(long = "market", value_name = "ID")]
    pub markets: Vec<String>,

    /// Seed of the simulated market: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Event-time speed: 1 is real time, 60 runs an hour a minute, `max` runs
    /// as fast as the host can.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: Speed,

    /// Stop once the strategy has handled this many events in all (a resumed
    /// run counts the events before it).
    #[arg(long, conflicts_with = "duration")]
    pub events: Option<u64>,

    /// Stop after this much event time from the strategy's first event (e.g. `90s`, `6h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    #[command(flatten)]
    pub store: super::StoreArgs,

    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    Times(f64),
    Max,
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Times(x)),
        _ => Err(format!(
            "`{text}` is not a speed: use a positive number or `max`"
        )),
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let config = match &args.config {
        Some(path) => HostConfig::load(path).map_err(Failure::bad_input)?,
        None => HostConfig::default(),
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .strategy
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "strategy".into()),
    };
    check_name(&name).map_err(Failure::bad_input)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    runtime.block_on(run_async(args, config, name))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        anyhow::bail!("strategy name `{name}` must be 1–64 letters, digits, `-` or `_`");
    }
    Ok(())
}

async fn run_async(args: RunArgs, config: HostConfig, name: String) -> Result<ExitCode, Failure> {
    let data_dir = args.store.data_dir.clone();
    let sandbox = Sandbox::new(config.sandbox.clone(), Some(data_dir.join("cache")))
        .map_err(Failure::bad_input)?;
    let module = sandbox.load(&args.strategy).map_err(Failure::bad_input)?;
    preflight(&module, &name, &config.strategy_json()).await?;
    // The module and its configuration are good; now the store may create its files.
    let store: Arc<dyn StateStore> = Arc::new(args.store.open().await?);
    let history = store
        .entries_after(&name, 0)
        .await
        .map_err(Failure::runtime)?;
    let spec = CellSpec {
        name: name.clone(),
        module: module.clone(),
        config_json: config.strategy_json(),
        restart: config.supervisor.clone(),
        checkpoint: config.checkpoint.clone(),
    };
    let mut cell = Cell::start(spec, store.clone())
        .await
        .map_err(|e| match e {
            StartError::Store { .. } => Failure::runtime(e),
            _ => Failure::bad_input(e),
        })?;
    // Started: only now does anything get written.
    if let Err(e) = module.save_to_cache() {
        tracing::warn!("cannot cache compiled code in {}: {e}", data_dir.display());
    }
    let info = cell.info().clone();
    tracing::info!(
        strategy = %name,
        module = %args.strategy.display(),
        version = %info.version,
        cached = module.from_cache(),
        "strategy running"
    );

    let sim = SimConfig {
        seed: config.sim.seed.unwrap_or(args.seed),
        markets: if !args.markets.is_empty() {
            args.markets.clone()
        } else {
            config
                .sim
                .markets
                .clone()
                .unwrap_or_else(|| SimConfig::default().markets)
        },
        tick_ms: config.sim.tick_ms,
        volatility: config.sim.volatility,
        trade_probability: config.sim.trade_probability,
        depth: config.sim.depth,
        ..SimConfig::default()
    };
    let pacing = match args.speed {
        Speed::Max => Pacing::Unpaced,
        Speed::Times(x) => Pacing::Realtime(x),
    };
    let mut venue = SimVenue::new(sim, (&config.paper).into(), pacing);

    let counters = Arc::new(RunCounters::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::start(counters.clone(), args.events));
    let limits = RunLimits {
        max_events: args.events,
        max_event_time: args.duration,
    };
    let started = Instant::now();
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C: finishing the event in hand, then stopping");
        } else {
            std::future::pending::<()>().await;
        }
    };
    let report = runner::run(&mut cell, &mut venue, history, limits, counters, shutdown).await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let elapsed = started.elapsed();

    if args.json {
        let json = serde_json::json!({ "report": &report, "wall_seconds": elapsed.as_secs_f64() });
        println!("{json:#}");
    } else {
        print_summary(&report, &info, &args, &module.digest(), elapsed);
    }
    match (&report.fatal, report.state) {
        (Some(fatal), _) => Err(Failure::runtime(anyhow::anyhow!("{fatal}"))),
        (None, CellState::Fatal) => Err(Failure::runtime(anyhow::anyhow!(
            "strategy {name} is fatal"
        ))),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Instantiates the strategy once and hands it its configuration, so a module
/// that cannot start, or refuses its configuration, is reported before
/// anything is written.
async fn preflight(
    module: &crate::sandbox::StrategyModule,
    name: &str,
    config_json: &str,
) -> Result<(), Failure> {
    let path = module.path().display().to_string();
    let mut instance = module.instantiate(name).await.map_err(|source| {
        Failure::bad_input(StartError::Instantiate {
            path: path.clone(),
            source,
        })
    })?;
    match instance.init(config_json).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(Failure::bad_input(StartError::InitRefused {
            path,
            message,
        })),
        Err(source) => Err(Failure::bad_input(StartError::Instantiate { path, source })),
    }
}

fn print_summary(
    report: &RunReport,
    info: &crate::contract::StrategyInfo,
    args: &RunArgs,
    digest: &str,
    elapsed: Duration,
) {
    let p = &report.portfolio;
    let span = match (report.first_event_ms, report.last_event_ms) {
        (Some(a), Some(b)) => {
            humantime::format_duration(Duration::from_millis(b.saturating_sub(a))).to_string()
        }
        _ => "0s".into(),
    };
    let rate = report.events as f64 / elapsed.as_secs_f64().max(1e-9);
    let stop = match report.stop {
        StopReason::EventLimit => "event limit reached",
        StopReason::TimeLimit => "duration reached",
        StopReason::Shutdown => "stopped by Ctrl-C",
        StopReason::FeedEnded => "market feed ended",
        StopReason::Fatal => "strategy fatal",
        StopReason::Diverged => "venue history does not match the journal",
    };
    println!("polybot run — {} ({stop})", report.strategy);
    println!(
        "  strategy     {} {} from {} (sha256 {})",
        info.name,
        info.version,
        args.strategy.display(),
        &digest[..12]
    );
    println!("  state        {}", report.state);
    if report.resumed_at_seq > 0 {
        println!(
            "  resumed      at seq {} from the journal",
            report.resumed_at_seq
        );
    }
    println!(
        "  events       {} handled in this run, {} in all, over {span} of event time",
        report.events, report.last_seq
    );
    println!(
        "  orders       {} placed, {} cancels, {} fills, {:.0} shares traded",
        report.orders, report.cancels, report.fills, p.volume
    );
    println!(
        "  pnl          {:+.2} (realized {:+.2}, unrealized {:+.2}, fees {:.2}); cash {:.2}",
        p.total_pnl(),
        p.realized_pnl,
        p.unrealized_pnl,
        p.fees,
        p.cash
    );
    println!(
        "  supervision  {} restarts, {} quarantined events, {} divergences, {} checkpoints",
        report.cell.restarts,
        report.cell.quarantined,
        report.cell.divergences,
        report.cell.checkpoints
    );
    if let Some(fault) = &report.cell.last_fault {
        println!("  last fault   {fault}");
    }
    println!(
        "  wall time    {:.2} s ({rate:.0} events/s)",
        elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_numbers_and_max() {
        assert_eq!(parse_speed("max").unwrap(), Speed::Max);
        assert_eq!(parse_speed("60").unwrap(), Speed::Times(60.0));
        assert!(parse_speed("0").is_err());
        assert!(parse_speed("fast").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("momentum-1").is_ok());
        assert!(check_name("../etc").is_err());
        assert!(check_name("").is_err());
    }
}
