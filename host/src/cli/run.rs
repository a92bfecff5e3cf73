//! `polybot-host run`: one strategy, in the foreground, on the simulated
//! market (default) or on Polymarket (`--venue polymarket`, paper execution
//! unless `--live`).
//!
//! Order of a start, so that bad input writes nothing: arguments and config
//! are checked, the module is loaded and tried completely (describe, init)
//! and the venue is reached; then the strategy's lease is taken (lock file,
//! then database row; another host holding it is bad input naming the
//! holder); only then is the store opened and the strategy started. A lease
//! lost while running stops the run (exit 1).

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
pub use crate::fleet::venue::Speed;
use crate::fleet::venue::VenueSpec;
use crate::fleet::{HostError, assemble};
use crate::runner::{RunCounters, RunLimits, RunReport, StopReason};
use crate::sandbox::Sandbox;
use crate::store::StateStore;
use crate::supervisor::{Cell, CellSpec, CellState, Shutdown};
use crate::venue::polymarket::{self, Execution, LiveConfig, PolymarketConfig};
use crate::venue::sim::SimConfig;
use polybot_polymarket::auth::Credentials;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The strategy component to run (`.wasm`, built for wasm32-wasip2 or with cargo component).
    #[arg(long, value_name = "PATH")]
    pub strategy: PathBuf,

    /// Name for this strategy instance in logs and records [default: the file's stem].
    #[arg(long)]
    pub name: Option<String>,

    /// Host config file (TOML): [strategy] parameters, [sandbox] limits,
    /// [supervisor] restart policy, [checkpoint], [sim], [paper], [lease],
    /// [exec] execution layer, [risk] limits.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Market ids to simulate (repeat for several) [default: sim-0 sim-1
    /// sim-2]; with `--venue polymarket`, the outcome token ids to trade
    /// (required).
    #[arg(long = "market", value_name = "ID")]
    pub markets: Vec<String>,

    /// Where market data comes from and orders go: `sim`, the offline
    /// simulated market, or `polymarket`, the Polymarket CLOB.
    #[arg(long, value_enum, default_value_t = VenueKind::Sim)]
    pub venue: VenueKind,

    #[command(flatten)]
    pub polymarket: Box<PolymarketArgs>,

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
    #[arg(long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    #[command(flatten)]
    pub store: super::StoreArgs,

    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Hot-swap: check the strategy file every second and, when it changes,
    /// replace the running module with it (state carried over; a module that
    /// cannot take over is refused and the running one goes on).
    #[arg(long)]
    pub watch: bool,
}

/// Flags of `--venue polymarket` (boxed: they would make every command's
/// arguments as large as these).
#[derive(Debug, Args)]
pub struct PolymarketArgs {
    /// Paper execution: orders are filled against the venue's books by the
    /// host and never sent (the default for `--venue polymarket`).
    #[arg(long)]
    pub paper: bool,

    /// Live execution on Polymarket: signed orders are sent to the CLOB.
    /// Needs credentials: `--credentials FILE` or the POLYMARKET_* environment
    /// variables.
    #[arg(long, conflicts_with = "paper")]
    pub live: bool,

    /// Credentials file for `--live` (KEY=VALUE lines named like the
    /// POLYMARKET_* variables; must not be readable by group or others).
    #[arg(long, value_name = "FILE", requires = "live")]
    pub credentials: Option<PathBuf>,

    /// Polymarket CLOB REST endpoint.
    #[arg(long, value_name = "URL", default_value = polymarket::CLOB_URL)]
    pub clob_url: String,

    /// Polymarket market WebSocket endpoint.
    #[arg(long, value_name = "URL", default_value = polymarket::WS_URL)]
    pub ws_url: String,

    /// Polymarket Gamma (market listing) endpoint.
    #[arg(long, value_name = "URL", default_value = polymarket::GAMMA_URL)]
    pub gamma_url: String,

    /// With `--venue polymarket`: no market data for this long counts as a
    /// stalled feed (reported to the strategy as degraded, then reconnected).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub stall_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VenueKind {
    Sim,
    Polymarket,
}

/// A duration flag: `90s`, `6h`, `7d`; zero is refused.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("`{text}` must be longer than zero")),
        Err(e) => Err(format!(
            "`{text}` is not a duration ({e}); use e.g. 90s, 6h, 7d"
        )),
    }
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    Speed::parse(text)
}

/// A fleet error as the command line's failure: bad input exits 2.
fn host_failure(e: HostError) -> Failure {
    if e.is_bad_input() {
        Failure::bad_input(e)
    } else {
        Failure::runtime(e)
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
    if !args.markets.is_empty() {
        crate::config::check_markets(&args.markets)
            .map_err(|e| Failure::bad_input(anyhow::anyhow!("--market: {e}")))?;
    }
    let credentials = check_venue_args(&args).map_err(Failure::bad_input)?;

    let runtime = crate::sandbox::runtime_builder()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    runtime.block_on(run_async(args, config, name, credentials))
}

/// Checks the venue flags that clap cannot express; for `--live`, loads the
/// credentials (from `--credentials FILE`, else the environment).
fn check_venue_args(args: &RunArgs) -> anyhow::Result<Option<Credentials>> {
    match args.venue {
        VenueKind::Sim => {
            if args.polymarket.live {
                anyhow::bail!(
                    "--live needs --venue polymarket (the simulated market is paper only)"
                );
            }
            Ok(None)
        }
        VenueKind::Polymarket => {
            if args.markets.is_empty() {
                anyhow::bail!(
                    "--venue polymarket needs --market <token-id> (see the README: Gamma `clobTokenIds`)"
                );
            }
            if !args.polymarket.live {
                return Ok(None);
            }
            let credentials = match &args.polymarket.credentials {
                Some(path) => Credentials::from_file(path),
                None => Credentials::from_env(),
            };
            credentials.map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "--live needs credentials (--credentials FILE or POLYMARKET_* variables): {e}"
                )
            })
        }
    }
}

/// What the run trades on, from the flags and the config; for
/// `--venue polymarket` building it connects, so an unreachable or misnamed
/// endpoint is bad input reported before anything is written.
fn venue_spec(
    args: &RunArgs,
    config: &HostConfig,
    name: &str,
    credentials: Option<Credentials>,
) -> VenueSpec {
    match args.venue {
        VenueKind::Sim => VenueSpec::Sim {
            sim: SimConfig {
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
            },
            paper: (&config.paper).into(),
            speed: args.speed,
        },
        VenueKind::Polymarket => {
            let execution = match credentials {
                Some(credentials) => Execution::Live(LiveConfig {
                    strategy: name.to_string(),
                    credentials,
                }),
                None => Execution::Paper((&config.paper).into()),
            };
            VenueSpec::Polymarket(Box::new(PolymarketConfig {
                clob_url: args.polymarket.clob_url.clone(),
                ws_url: args.polymarket.ws_url.clone(),
                gamma_url: args.polymarket.gamma_url.clone(),
                tokens: args.markets.clone(),
                stall_timeout: args.polymarket.stall_timeout,
                execution,
            }))
        }
    }
}

pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    crate::fleet::config::check_name(name).map_err(anyhow::Error::msg)
}

async fn run_async(
    args: RunArgs,
    config: HostConfig,
    name: String,
    credentials: Option<Credentials>,
) -> Result<ExitCode, Failure> {
    let data_dir = args.store.data_dir.clone();
    let sandbox = assemble::sandbox(config.sandbox.clone(), &data_dir, args.config.as_deref())
        .map_err(host_failure)?;
    let module = sandbox.load(&args.strategy).map_err(Failure::bad_input)?;
    assemble::preflight(&module, &name, &config.strategy_json())
        .await
        .map_err(host_failure)?;
    let venue_spec = venue_spec(&args, &config, &name, credentials);
    let mut venue = venue_spec.build().await.map_err(Failure::bad_input)?;
    // The module and its configuration are good. Claim the strategy before
    // the store writes anything for it.
    let ttl = config.lease.ttl;
    let location = args.store.location()?;
    let leased = assemble::take_leases(&data_dir, &location, std::slice::from_ref(&name), ttl)
        .await
        .map_err(host_failure)?;
    let mut lease = leased
        .leases
        .into_iter()
        .next()
        .expect("one lease per name");
    let opened = args.store.open_on(leased.reach, location).await?;
    let shared: Arc<dyn StateStore> = opened.store.clone();
    lease.keep_renewed(ttl, shared.clone());
    // What the strategy writes stops the moment its lease is lost.
    let store = lease.fence(shared);
    let spec = CellSpec {
        name: name.clone(),
        module: module.clone(),
        config_json: config.strategy_json(),
        restart: config.supervisor.clone(),
        checkpoint: config.checkpoint.clone(),
    };
    let mut cell = match Cell::start(spec, store.clone()).await {
        Ok(cell) => cell,
        Err(e) => {
            // Not started: let the next host have the strategy at once.
            lease.release().await;
            return Err(host_failure(e.into()));
        }
    };
    // Started: only now does anything get written.
    if let Err(e) = module.save_to_cache() {
        tracing::warn!("cannot cache compiled code in {}: {e}", data_dir.display());
    }
    if args.watch {
        let (swaps, receiver) = tokio::sync::mpsc::unbounded_channel();
        cell.take_swaps_from(receiver);
        tokio::spawn(watch_module(
            sandbox.clone(),
            args.strategy.clone(),
            module.digest(),
            swaps,
        ));
    }
    // Listen for SIGINT/SIGTERM before saying we run, so a signal sent as
    // soon as the host reports running already stops it cleanly.
    let mut stop_signal = StopSignal::listen().map_err(Failure::runtime)?;
    let info = cell.info().clone();
    tracing::info!(
        strategy = %name,
        module = %args.strategy.display(),
        version = %info.version,
        cached = module.from_cache(),
        "strategy running"
    );

    let counters = Arc::new(RunCounters::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::start(counters.clone(), args.events));
    let limits = RunLimits {
        max_events: args.events,
        max_event_time: args.duration,
    };
    let started = Instant::now();
    cell.set_pace(venue_spec.pace());
    let lease_lost = lease.lost();
    let shutdown = Shutdown::new();
    let requested = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            name = stop_signal.recv() => {
                tracing::info!("{name}: finishing the event in hand, then stopping");
            }
            loss = lease_lost => {
                tracing::error!("{loss}: finishing the event in hand, then stopping");
            }
        }
        requested.request();
    });
    let setup = config.exec_setup();
    let report = assemble::drive(
        &mut cell, &mut venue, limits, counters, shutdown, None, &setup,
    )
    .await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let elapsed = started.elapsed();
    // The cell synced its last writes when it stopped; closing lets go of the database too.
    let lost = lease.is_lost();
    if lost.is_none() {
        lease.release().await;
    }
    if let Err(e) = store.close().await {
        tracing::error!("store did not close cleanly: {e}");
    }

    if args.json {
        let json = serde_json::json!({ "report": &report, "wall_seconds": elapsed.as_secs_f64() });
        outln!("{json:#}");
    } else {
        print_summary(&report, &info, &args, &module.digest(), elapsed);
    }
    if let Some(loss) = lost {
        return Err(Failure::runtime(loss));
    }
    match (&report.fatal, report.state) {
        (Some(fatal), _) => Err(Failure::runtime(anyhow::anyhow!("{fatal}"))),
        (None, CellState::Fatal) => Err(Failure::runtime(anyhow::anyhow!(
            "strategy {name} is fatal"
        ))),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Ctrl-C (SIGINT) or SIGTERM — what a terminal or a service manager sends to stop.
pub(super) struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Installs the handlers now (not on first poll).
    pub(super) fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    /// Waits for either signal; returns its name.
    pub(super) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Polls the strategy file once a second; a changed file that loads as a
/// strategy is handed to the cell to swap in.
async fn watch_module(
    sandbox: Arc<Sandbox>,
    path: PathBuf,
    mut digest: String,
    swaps: tokio::sync::mpsc::UnboundedSender<crate::supervisor::SwapRequest>,
) {
    use sha2::{Digest, Sha256};
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        let current = hex::encode(Sha256::digest(&bytes));
        if current == digest {
            continue;
        }
        digest = current;
        let (sandbox, file) = (sandbox.clone(), path.clone());
        match tokio::task::spawn_blocking(move || sandbox.load(&file)).await {
            Ok(Ok(module)) => {
                tracing::info!(module = %path.display(), "strategy file changed; swapping it in");
                let request = crate::supervisor::SwapRequest::Swap {
                    module,
                    mode: crate::supervisor::SwapMode::Direct,
                    config: None,
                    answer: None,
                };
                if swaps.send(request).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("strategy file changed but cannot be used, not swapping: {e}")
            }
            Err(e) => tracing::warn!("loading the changed strategy file failed: {e}"),
        }
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
        StopReason::Shutdown => "stopped on request (Ctrl-C or SIGTERM)",
        StopReason::FeedEnded => "market feed ended",
        StopReason::Fatal => "strategy fatal",
        StopReason::Diverged => "venue history does not match the journal",
    };
    outln!("polybot run — {} ({stop})", report.strategy);
    outln!(
        "  strategy     {} {} from {} (sha256 {})",
        info.name,
        info.version,
        args.strategy.display(),
        &digest[..12]
    );
    outln!("  state        {}", report.state);
    if report.resumed_at_seq > 0 {
        outln!(
            "  resumed      at seq {} from the journal",
            report.resumed_at_seq
        );
    }
    if let Some(c) = &report.catch_up {
        outln!(
            "  caught up    {} journal entries after seq {} in {:.2} s",
            c.entries,
            c.from_seq,
            c.wall_ms as f64 / 1000.0
        );
    }
    outln!(
        "  events       {} handled in this run, {} in all, over {span} of event time",
        report.events,
        report.last_seq
    );
    outln!(
        "  orders       {} placed, {} cancels, {} fills, {:.0} shares traded",
        report.orders,
        report.cancels,
        report.fills,
        p.volume
    );
    outln!(
        "  pnl          {:+.2} (realized {:+.2}, unrealized {:+.2}, fees {:.2}); cash {:.2}",
        p.total_pnl(),
        p.realized_pnl,
        p.unrealized_pnl,
        p.fees,
        p.cash
    );
    outln!(
        "  supervision  {} restarts, {} quarantined events, {} divergences, {} checkpoints",
        report.cell.restarts,
        report.cell.quarantined,
        report.cell.divergences,
        report.cell.checkpoints
    );
    if let Some(fault) = &report.cell.last_fault {
        outln!("  last fault   {fault}");
    }
    outln!(
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
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(
            parse_positive_duration("2m").unwrap(),
            Duration::from_secs(120)
        );
    }

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        use clap::Parser as _;
        let args = ["run", "--strategy", "s.wasm"].iter().chain(extra);
        Wrapper::try_parse_from(args).map(|w| w.run)
    }

    #[test]
    fn venue_flags_are_checked() {
        let ok = parse(&["--venue", "polymarket", "--market", "1"]).unwrap();
        assert!(check_venue_args(&ok).unwrap().is_none(), "paper by default");
        assert_eq!(ok.polymarket.clob_url, polymarket::CLOB_URL);

        assert!(parse(&["--paper", "--live"]).is_err());
        assert!(parse(&["--credentials", "c.env"]).is_err(), "needs --live");
        let no_market = parse(&["--venue", "polymarket"]).unwrap();
        assert!(
            check_venue_args(&no_market)
                .unwrap_err()
                .to_string()
                .contains("--market")
        );
        let sim_live = parse(&["--live"]).unwrap();
        assert!(
            check_venue_args(&sim_live)
                .unwrap_err()
                .to_string()
                .contains("--venue polymarket")
        );
    }

    #[cfg(unix)]
    #[test]
    fn live_credentials_come_from_a_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.env");
        std::fs::write(
            &file,
            "POLYMARKET_API_KEY=k\nPOLYMARKET_API_SECRET=c2VjcmV0\nPOLYMARKET_API_PASSPHRASE=p\n\
             POLYMARKET_ADDRESS=0x0\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let args = parse(&[
            "--venue",
            "polymarket",
            "--market",
            "1",
            "--live",
            "--credentials",
            path,
        ])
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_venue_args(&args).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = check_venue_args(&args).unwrap().expect("credentials");
        assert_eq!(creds.api_key, "k");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("momentum-1").is_ok());
        assert!(check_name("../etc").is_err());
        assert!(check_name("").is_err());
    }
}
