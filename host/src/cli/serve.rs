//! `polybot-host serve`: every strategy of a fleet file in one host process.
//!
//! Parses and wires only: the fleet itself is [`crate::fleet::Host`]. The
//! whole file is checked (and every module tried) before anything starts;
//! bad input is one line and exit 2. Signals: SIGTERM or Ctrl-C stop every
//! strategy (each finishes its event and checkpoints) and exit 0; SIGHUP —
//! and, with `--watch`, a change of the file or of a module it names —
//! re-reads the file: new strategies start, removed ones stop, changed
//! modules are hot-swapped, and a file that does not check out is refused
//! with one line while the running set goes on. The host ends by itself
//! once every strategy has ended by itself (`events`/`duration` limits),
//! or at the first fatal strategy with `--exit-on-fatal` (exit 1).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::mpsc;

use super::Failure;
use super::run::StopSignal;
use crate::fleet::health::{self, Notifier};
use crate::fleet::heartbeat::{self, HeartbeatConfig};
use crate::fleet::{
    FleetConfig, Host, HostError, HostEvent, HostOptions, StrategyState, StrategyView,
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The fleet file (TOML): host-wide sections as in `run`'s config,
    /// [host], [health], [redis], and one [[strategy]] table per strategy.
    #[arg(long, value_name = "FILE", default_value = "polybot.toml")]
    pub config: PathBuf,

    /// Stop the host (exit 1) as soon as one strategy goes fatal, instead of
    /// keeping it in the registry as `fatal` while the others trade on.
    #[arg(long)]
    pub exit_on_fatal: bool,

    /// Re-read the file when it, or a module it names, changes (as SIGHUP does).
    #[arg(long)]
    pub watch: bool,

    /// Write heartbeats to this Redis (overrides `[redis] url`).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    #[command(flatten)]
    pub store: super::StoreArgs,

    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Serve the HTTP API, metrics and dashboard here (overrides `[http]
    /// addr`) [default: 127.0.0.1:8686]; port 0 picks a free port (the log
    /// says which).
    #[arg(long, value_name = "ADDR", env = "POLYBOT_HTTP")]
    pub http: Option<String>,

    /// Do not serve the HTTP API.
    #[arg(long)]
    pub no_http: bool,
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let config = FleetConfig::load(&args.config).map_err(Failure::bad_input)?;
    let redis = args.redis.clone().or_else(|| config.redis.url.clone());
    if let Some(url) = &redis {
        heartbeat::check_url(url).map_err(|e| {
            Failure::bad_input(anyhow::anyhow!(
                "{}: [redis] url: {e}",
                args.config.display()
            ))
        })?;
    }
    super::block_on(serve_async(args, config, redis))
}

/// Why the host stops.
enum Stop {
    Signal,
    AllEnded,
    Fatal(String),
}

async fn serve_async(
    args: ServeArgs,
    config: FleetConfig,
    redis: Option<String>,
) -> Result<ExitCode, Failure> {
    // Listen before starting, so a signal sent once the host runs stops it.
    let mut stop_signal = StopSignal::listen().map_err(Failure::runtime)?;
    let mut hangup = Hangup::listen().map_err(Failure::runtime)?;
    let started = Instant::now();
    let options = HostOptions {
        data_dir: args.store.data_dir.clone(),
        location: args.store.location()?,
    };
    let host_id = crate::fleet::host_id(&config);
    let stuck_after = config.health.stuck_after;
    let redis_timing = (config.redis.every, config.redis.ttl);
    // The address is checked and bound before anything starts.
    let http_env_token = crate::api::Token::from_env().map_err(Failure::bad_input)?;
    let listener = if args.no_http || !config.http.enabled {
        None
    } else {
        let addr = args.http.as_deref().unwrap_or(&config.http.addr);
        let addr = crate::api::parse_addr(addr).map_err(Failure::bad_input)?;
        Some(
            crate::api::bind(addr, http_env_token.is_some())
                .await
                .map_err(Failure::bad_input)?,
        )
    };
    let data_dir = args.store.data_dir.clone();
    let path = config.path.clone();
    let mut host = Host::start(config, options).await.map_err(|e| {
        // A strategy that cannot start is named with the file it is in.
        let bad = e.is_bad_input();
        let e = match e {
            HostError::Strategy { .. } => anyhow::anyhow!("{}: {e}", path.display()),
            other => anyhow::Error::new(other),
        };
        if bad {
            Failure::bad_input(e)
        } else {
            Failure::runtime(e)
        }
    })?;
    let registry = host.registry();
    let api = match listener {
        Some(listener) => {
            let token = match http_env_token {
                Some(token) => token,
                None => {
                    crate::api::Token::load_or_generate(&data_dir).map_err(Failure::bad_input)?
                }
            };
            let state = crate::api::ApiState {
                registry: registry.clone(),
                store: host.store(),
                store_outage: host.store_outage(),
                token: std::sync::Arc::new(token),
                started: Instant::now(),
                stuck_after,
                sandbox: host.sandbox(),
                data_dir: data_dir.clone(),
                views: Default::default(),
            };
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("HTTP API listening on http://{addr}");
            }
            Some(tokio::spawn(crate::api::serve(listener, state)))
        }
        None => None,
    };
    let notifier = Notifier::from_env();
    let health = tokio::spawn(health::watch(
        registry.clone(),
        host.store(),
        stuck_after,
        notifier,
    ));
    let beats = redis.map(|url| {
        tokio::spawn(heartbeat::run(
            HeartbeatConfig {
                url,
                every: redis_timing.0,
                ttl: redis_timing.1,
                host_id: host_id.clone(),
            },
            registry.clone(),
            host.store(),
        ))
    });
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel();
    let watcher = args
        .watch
        .then(|| tokio::spawn(watch_files(args.config.clone(), reload_tx)));

    let mut unsettled: HashSet<String> = host
        .config()
        .strategies
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let mut ended: HashSet<String> = HashSet::new();
    let mut ready = false;
    let stop = loop {
        tokio::select! {
            name = stop_signal.recv() => {
                tracing::info!("{name}: stopping every strategy (each finishes its event and checkpoints)");
                break Stop::Signal;
            }
            () = hangup.recv() => reload(&mut host, &args.config, "SIGHUP").await,
            Some(()) = reload_rx.recv() => reload(&mut host, &args.config, "file changed").await,
            Some(event) = host.next_event() => match event {
                HostEvent::Running { name } => {
                    ended.remove(&name);
                    unsettled.remove(&name);
                }
                HostEvent::Ended { name, fatal } => {
                    unsettled.remove(&name);
                    ended.insert(name.clone());
                    if fatal && args.exit_on_fatal {
                        break Stop::Fatal(name);
                    }
                    let all = registry.slots().iter().all(|s| ended.contains(&s.name));
                    if all {
                        tracing::info!("every strategy has ended; stopping");
                        break Stop::AllEnded;
                    }
                }
                HostEvent::Stopped { name } => {
                    ended.remove(&name);
                    host.forget(&name);
                }
            },
        }
        if !ready && unsettled.is_empty() {
            ready = true;
            let summary = registry.summary();
            tracing::info!(host = %host_id, "fleet running: {summary}");
            notifier.ready(&summary);
        }
    };
    notifier.stopping();
    health.abort();
    if let Some(api) = api {
        api.abort();
    }
    if let Some(beats) = beats {
        beats.abort();
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let closed = host.shutdown().await;
    let views = registry.snapshot();
    let elapsed = started.elapsed();
    if args.json {
        let json = serde_json::json!({
            "host": host_id,
            "strategies": views,
            "wall_seconds": elapsed.as_secs_f64(),
        });
        outln!("{json:#}");
    } else {
        print_summary(&host_id, &views, elapsed);
    }
    if let Err(e) = closed {
        return Err(Failure::runtime(anyhow::anyhow!(
            "the store did not close cleanly: {e}"
        )));
    }
    match stop {
        Stop::Fatal(name) => Err(Failure::runtime(anyhow::anyhow!(
            "strategy {name} is fatal (--exit-on-fatal)"
        ))),
        Stop::Signal | Stop::AllEnded => Ok(ExitCode::SUCCESS),
    }
}

/// Re-reads the fleet file and applies it; a file that does not check out
/// is refused with one line and the running set goes on.
async fn reload(host: &mut Host, path: &std::path::Path, why: &str) {
    tracing::info!("{why}: re-reading {}", path.display());
    let result = match FleetConfig::load(path) {
        Ok(config) => host.reload(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(summary) => tracing::info!(
            started = ?summary.started,
            stopped = ?summary.stopped,
            swapped = ?summary.swapped,
            changed_at_next_restart = ?summary.changed,
            "reloaded {}",
            path.display()
        ),
        Err(e) => {
            let line = e.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            tracing::error!("reload refused, the running strategies go on: {line}");
            crate::fleet::health::record(
                host.store().as_ref(),
                "reload-refused",
                format!("{}: {line}", path.display()),
            )
            .await;
        }
    }
}

/// SIGHUP: re-read the file.
struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangup {
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Hangup {
                signal: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Hangup {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

/// Polls the fleet file and the modules it names once a second; a change
/// asks for a reload.
async fn watch_files(path: PathBuf, reload: mpsc::UnboundedSender<()>) {
    let fingerprint = |path: &PathBuf| {
        let mut files = vec![path.clone()];
        if let Ok(config) = FleetConfig::load(path) {
            files.extend(config.strategies.into_iter().map(|e| e.module));
        }
        files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .ok()
                    .map(|t| (f.clone(), t, std::fs::metadata(f).map(|m| m.len()).ok()))
            })
            .collect::<Vec<_>>()
    };
    let mut last = fingerprint(&path);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let p = path.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&p)).await else {
            continue;
        };
        if now != last {
            last = now;
            if reload.send(()).is_err() {
                return;
            }
        }
    }
}

fn print_summary(host_id: &str, views: &[StrategyView], elapsed: Duration) {
    outln!(
        "polybot serve — host {host_id}, {} strategies, {:.2} s",
        views.len(),
        elapsed.as_secs_f64()
    );
    outln!(
        "  {:<24} {:<11} {:>9} {:>8} {:>7} {:>7} {:>10}",
        "strategy",
        "state",
        "last seq",
        "restarts",
        "orders",
        "fills",
        "pnl"
    );
    for v in views {
        outln!(
            "  {:<24} {:<11} {:>9} {:>8} {:>7} {:>7} {:>+10.2}",
            v.name,
            v.state,
            v.last_seq,
            v.restarts,
            v.orders,
            v.fills,
            v.pnl
        );
        if let Some(fault) = v
            .last_fault
            .as_ref()
            .filter(|_| v.state == StrategyState::Fatal)
        {
            outln!("      last fault: {fault}");
        }
    }
}
