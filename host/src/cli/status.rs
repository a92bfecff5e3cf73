//! `polybot-host status`: every strategy's standing, read from the store, so
//! it works while the host is down: state, restarts in the restart window,
//! journal, events/s, checkpoint age, open orders, PnL, heartbeat age and
//! whether it is stuck (from the heartbeat its host last wrote, see
//! `fleet::heartbeat`), which host holds its lease (see `lease`), and its
//! order intents counted by state. `--watch` redraws it every `--interval`
//! until Ctrl-C, `--count` frames, or a reader that has gone.
//!
//! Reads only; never writes to the store.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{Failure, OpenedStore, StoreArgs, block_on};
use crate::store::{StateStore, wall_clock_ms};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts: `{"strategies": [{"name", "state", "restarts", …}]}`
    /// (with `--watch`, one JSON object per line and frame).
    #[arg(long)]
    pub json: bool,

    /// Also show this many recent system events.
    #[arg(long, default_value_t = 10)]
    pub events: usize,

    /// Redraw as a live table until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// Time between two frames of `--watch`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// With `--watch`: stop after this many frames.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// One strategy's row: the store's standing and its last heartbeat.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    name: String,
    state: String,
    restarts: u64,
    restarts_in_window: Option<u64>,
    last_seq: u64,
    events_per_sec: Option<f64>,
    last_checkpoint_seq: Option<u64>,
    last_checkpoint_at: Option<u64>,
    checkpoint_age_ms: Option<u64>,
    open_orders: u64,
    trades: u64,
    pnl: f64,
    heartbeat_host: Option<String>,
    heartbeat_age_ms: Option<u64>,
    stuck: bool,
    /// Events waiting, none handled, this long (at the last heartbeat).
    waiting_ms: Option<u64>,
    updated_at: u64,
}

/// Everything one frame shows.
struct Frame {
    rows: Vec<Row>,
    json: serde_json::Value,
    intents: Vec<(String, Vec<(String, u64)>)>,
    leases: Vec<crate::lease::LeaseRecord>,
    events: Vec<crate::store::SystemEvent>,
    now: u64,
    location: String,
}

async fn frame(opened: &OpenedStore, events: usize) -> Result<Frame, Failure> {
    let store = &opened.store;
    let strategies = store.status().await.map_err(Failure::runtime)?;
    let beats = store.heartbeats().await.map_err(Failure::runtime)?;
    let leases = opened.backend.leases().await.map_err(Failure::runtime)?;
    let system_events = store
        .system_events(events)
        .await
        .map_err(Failure::runtime)?;
    let intents = store.intents(None).await.map_err(Failure::runtime)?;
    let now = wall_clock_ms();
    let rows: Vec<Row> = strategies
        .iter()
        .map(|s| {
            let beat = beats.iter().find(|b| b.strategy == s.name);
            let body = beat.map(|b| &b.body);
            let field = |key: &str| body.and_then(|b| b.get(key));
            // The heartbeat knows the host's own states (restarting,
            // paused); the store's state is the newer when the cell
            // changed state since.
            let state = match (beat, field("state").and_then(|v| v.as_str())) {
                (Some(b), Some(state)) if b.at_ms >= s.updated_at => state.to_string(),
                _ => s.state.clone(),
            };
            Row {
                name: s.name.clone(),
                state,
                restarts: s.restarts,
                restarts_in_window: field("restarts_in_window").and_then(|v| v.as_u64()),
                last_seq: s.last_seq,
                events_per_sec: field("events_per_sec").and_then(|v| v.as_f64()),
                last_checkpoint_seq: s.last_checkpoint_seq,
                last_checkpoint_at: s.last_checkpoint_at,
                checkpoint_age_ms: s.last_checkpoint_at.map(|at| now.saturating_sub(at)),
                open_orders: intents
                    .iter()
                    .filter(|r| r.strategy == s.name && super::orders::is_open(r))
                    .count() as u64,
                trades: s.trades,
                pnl: s.pnl,
                heartbeat_host: beat.map(|b| b.host.clone()),
                heartbeat_age_ms: beat.map(|b| now.saturating_sub(b.at_ms)),
                stuck: field("stuck").and_then(|v| v.as_bool()).unwrap_or(false),
                waiting_ms: field("waiting_ms").and_then(|v| v.as_u64()),
                updated_at: s.updated_at,
            }
        })
        .collect();
    let counts: Vec<(String, Vec<(String, u64)>)> = strategies
        .iter()
        .map(|s| (s.name.clone(), super::orders::counts(&intents, &s.name)))
        .collect();
    let lease_json: Vec<_> = leases
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or_default();
            v["held"] = serde_json::Value::Bool(l.is_live(now));
            v
        })
        .collect();
    let intents_json: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(name, c)| {
            let by_state: serde_json::Map<String, serde_json::Value> = c
                .iter()
                .map(|(s, n)| (s.clone(), serde_json::Value::from(*n)))
                .collect();
            (name.clone(), serde_json::Value::Object(by_state))
        })
        .collect();
    let json = serde_json::json!({
        "at_ms": now,
        "strategies": rows,
        "intents": intents_json,
        "leases": lease_json,
        "system_events": system_events,
    });
    Ok(Frame {
        rows,
        json,
        intents: counts,
        leases,
        events: system_events,
        now,
        location: store.location().describe(),
    })
}

/// A wall-time age, to the second (`—` when unknown).
fn age(ms: Option<u64>) -> String {
    ms.map(|ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string())
        .unwrap_or_else(|| "—".into())
}

fn print_table(f: &Frame) {
    if f.rows.is_empty() {
        outln!("no strategies in {}", f.location);
        return;
    }
    outln!(
        "{:<20} {:<11} {:>8} {:>8} {:>9} {:>9} {:>5} {:>12} {:>10} {:>6}",
        "strategy",
        "state",
        "restarts",
        "last seq",
        "events/s",
        "ckpt age",
        "open",
        "pnl",
        "beat age",
        "stuck"
    );
    for r in &f.rows {
        let restarts = match r.restarts_in_window {
            Some(w) => format!("{w}/{}", r.restarts),
            None => r.restarts.to_string(),
        };
        outln!(
            "{:<20} {:<11} {:>8} {:>8} {:>9} {:>9} {:>5} {:>+12.2} {:>10} {:>6}",
            r.name,
            r.state,
            restarts,
            r.last_seq,
            r.events_per_sec.map_or("—".into(), |v| format!("{v:.1}")),
            age(r.checkpoint_age_ms),
            r.open_orders,
            r.pnl,
            age(r.heartbeat_age_ms),
            if r.stuck { "STUCK" } else { "no" }
        );
    }
    outln!("(restarts: within the restart window / in all)");
    if f.intents.iter().any(|(_, c)| !c.is_empty()) {
        outln!("\norder intents by state");
        for (name, c) in f.intents.iter().filter(|(_, c)| !c.is_empty()) {
            let line: Vec<String> = c.iter().map(|(s, n)| format!("{s} {n}")).collect();
            outln!("  {:<20} {}", name, line.join(", "));
        }
    }
    if !f.leases.is_empty() {
        outln!("\nleases");
        for l in &f.leases {
            let standing = if l.is_live(f.now) {
                format!(
                    "held by {}, token {}, expires in {}",
                    l.holder,
                    l.token,
                    humantime::format_duration(Duration::from_secs(
                        l.expires_at_ms.saturating_sub(f.now).div_ceil(1000)
                    ))
                )
            } else {
                format!("free (last held by {}, token {})", l.holder, l.token)
            };
            outln!("  {:<20} {standing}", l.strategy);
        }
    }
    if !f.events.is_empty() {
        outln!("\nrecent system events");
        for e in &f.events {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(e.timestamp_ms);
            outln!(
                "  {}  {:<18} {:<24} {}",
                humantime::format_rfc3339_millis(at),
                e.event_type,
                e.component,
                e.message
            );
        }
    }
}

pub fn status(args: StatusArgs) -> Result<ExitCode, Failure> {
    if args.watch && args.interval.is_zero() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--interval must be longer than zero"
        )));
    }
    if args.count == Some(0) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--count must be at least 1"
        )));
    }
    block_on(async {
        let opened = args.store.open_existing().await?;
        if !args.watch {
            let f = frame(&opened, args.events).await?;
            if args.json {
                outln!("{:#}", f.json);
            } else {
                print_table(&f);
            }
            return Ok(ExitCode::SUCCESS);
        }
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut ticks = tokio::time::interval(args.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut drawn = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut ctrl_c => break,
            }
            let f = frame(&opened, args.events).await?;
            if args.json {
                outln!("{}", f.json);
            } else {
                if terminal {
                    // Clear the screen and draw from the top.
                    outln!(
                        "\x1b[2J\x1b[H{}",
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(f.now)
                        )
                    );
                } else if drawn > 0 {
                    outln!();
                }
                print_table(&f);
            }
            drawn += 1;
            if args.count.is_some_and(|n| drawn >= n) || super::output::closed() {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
