//! `polybot-host status`: every strategy's standing, read from the store, so
//! it works while the host is down: state, journal, checkpoints, trades, and
//! which host holds its lease (see `lease`), and its order intents counted
//! by state.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{Failure, StoreArgs, block_on};
use crate::store::{StateStore, wall_clock_ms};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts: `{"strategies": [{"name", "state", "restarts", …}]}`.
    #[arg(long)]
    pub json: bool,

    /// Also show this many recent system events.
    #[arg(long, default_value_t = 10)]
    pub events: usize,

    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn status(args: StatusArgs) -> Result<ExitCode, Failure> {
    block_on(async {
        let opened = args.store.open_existing().await?;
        let store = opened.store;
        let strategies = store.status().await.map_err(Failure::runtime)?;
        let leases = opened.backend.leases().await.map_err(Failure::runtime)?;
        let now = wall_clock_ms();
        let events = store
            .system_events(args.events)
            .await
            .map_err(Failure::runtime)?;
        let intents = store.intents(None).await.map_err(Failure::runtime)?;
        let counts: Vec<(String, Vec<(String, u64)>)> = strategies
            .iter()
            .map(|s| (s.name.clone(), super::orders::counts(&intents, &s.name)))
            .collect();
        if args.json {
            let leases: Vec<_> = leases
                .iter()
                .map(|l| {
                    let mut v = serde_json::to_value(l).unwrap_or_default();
                    v["held"] = serde_json::Value::Bool(l.is_live(now));
                    v
                })
                .collect();
            let intents: serde_json::Map<String, serde_json::Value> = counts
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
                "strategies": strategies,
                "intents": intents,
                "leases": leases,
                "system_events": events,
            });
            outln!("{json:#}");
            return Ok(ExitCode::SUCCESS);
        }
        if strategies.is_empty() {
            outln!("no strategies in {}", store.location().describe());
            return Ok(ExitCode::SUCCESS);
        }
        outln!(
            "{:<20} {:<11} {:>8} {:>10} {:>10} {:>12} {:>8} {:>12}",
            "strategy",
            "state",
            "restarts",
            "last seq",
            "checkpoint",
            "ckpt age",
            "trades",
            "pnl"
        );
        for s in &strategies {
            let age = s
                .last_checkpoint_at
                .map(|at| {
                    humantime::format_duration(Duration::from_secs(now.saturating_sub(at) / 1000))
                        .to_string()
                })
                .unwrap_or_else(|| "—".into());
            outln!(
                "{:<20} {:<11} {:>8} {:>10} {:>10} {:>12} {:>8} {:>+12.2}",
                s.name,
                s.state,
                s.restarts,
                s.last_seq,
                s.last_checkpoint_seq.map_or("—".into(), |v| v.to_string()),
                age,
                s.trades,
                s.pnl
            );
        }
        if counts.iter().any(|(_, c)| !c.is_empty()) {
            outln!("\norder intents by state");
            for (name, c) in counts.iter().filter(|(_, c)| !c.is_empty()) {
                let line: Vec<String> = c.iter().map(|(s, n)| format!("{s} {n}")).collect();
                outln!("  {:<20} {}", name, line.join(", "));
            }
        }
        if !leases.is_empty() {
            outln!("\nleases");
            for l in &leases {
                let standing = if l.is_live(now) {
                    format!(
                        "held by {}, token {}, expires in {}",
                        l.holder,
                        l.token,
                        humantime::format_duration(Duration::from_secs(
                            l.expires_at_ms.saturating_sub(now).div_ceil(1000)
                        ))
                    )
                } else {
                    format!("free (last held by {}, token {})", l.holder, l.token)
                };
                outln!("  {:<20} {standing}", l.strategy);
            }
        }
        if !events.is_empty() {
            outln!("\nrecent system events");
            for e in &events {
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
        Ok(ExitCode::SUCCESS)
    })
}
