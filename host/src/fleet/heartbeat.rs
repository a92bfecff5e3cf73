//! Heartbeats, for whoever watches the host from outside.
//!
//! In the store: every `[health] beat_every` (and once more at shutdown) the
//! host writes each strategy's heartbeat ([`StoreBeats`]: state, last seq,
//! events/s, events waiting, stuck or not, restarts, orders, PnL, checkpoint
//! age), so `polybot-host status` shows how each stood, and how long ago,
//! while the host is down.
//!
//! In Redis, for monitors outside the host: every `[redis] every`
//! the host writes `heartbeat:<strategy>` (JSON: state, last_seq,
//! last_event_ms, restarts, pnl, host, updated_ms) and `heartbeat:host:<id>`
//! (JSON: id, pid, strategies, summary, started_ms, updated_ms), each with a
//! TTL of `[redis] ttl`, so a key that disappears means a host or strategy
//! that stopped beating.
//!
//! Redis is never on the trading path: heartbeats run in their own task with
//! short timeouts, a Redis that does not answer is retried at the next beat,
//! and the gap (its start and its end) is recorded as system events. Reads
//! the registry only.

use std::sync::Arc;
use std::time::Duration;

use super::registry::Registry;
use super::task::system_event;
use crate::store::{HeartbeatRecord, StateStore, Write, wall_clock_ms};

/// How long one connection attempt or one round of writes may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how often to beat.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    pub url: String,
    pub every: Duration,
    pub ttl: Duration,
    pub host_id: String,
}

/// Checks a Redis URL's form (not whether Redis answers).
///
/// # Errors
/// What is wrong with the URL.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!(
            "`{}` is not a Redis URL: {e}",
            crate::redact::scrub(url, url)
        )
    })
}

/// The JSON a monitor reads for one strategy.
fn strategy_beat(view: &super::StrategyView, host_id: &str, now: u64) -> String {
    serde_json::json!({
        "state": view.state,
        "last_seq": view.last_seq,
        "last_event_ms": view.last_event_ms,
        "restarts": view.restarts,
        "pnl": view.pnl,
        "host": host_id,
        "updated_ms": now,
    })
    .to_string()
}

/// Writes every strategy's heartbeat to the store; remembers the last beat
/// of each to tell its events/s.
#[derive(Default)]
pub struct StoreBeats {
    /// Each strategy's last seq and wall time at its last beat.
    last: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl StoreBeats {
    /// One beat of every strategy in the registry. A store that refuses it
    /// is logged (the store reports its own outages as system events).
    pub async fn beat(
        &self,
        registry: &Registry,
        store: &dyn StateStore,
        host_id: &str,
        stuck_after: Duration,
    ) {
        let now = wall_clock_ms();
        let stuck_ms = u64::try_from(stuck_after.as_millis()).unwrap_or(u64::MAX);
        for view in registry.snapshot() {
            let before = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(view.name.clone(), (view.last_seq, now));
            // Unknown (null) until a strategy's second beat.
            let events_per_sec = match before {
                Some((seq, at)) if now > at => {
                    Some(view.last_seq.saturating_sub(seq) as f64 * 1000.0 / (now - at) as f64)
                }
                _ => None,
            };
            let body = serde_json::json!({
                "state": view.state,
                "last_seq": view.last_seq,
                "last_event_ms": view.last_event_ms,
                "events_per_sec": events_per_sec,
                "queue_depth": view.queue_depth,
                "waiting_ms": view.waiting_ms,
                // The stuck detector's rule: only a running strategy is stuck.
                "stuck": view.state == super::StrategyState::Running
                    && view.waiting_ms.is_some_and(|w| w >= stuck_ms),
                "restarts": view.restarts,
                "restarts_in_window": view.restarts_in_window,
                "stuck_restarts": view.stuck_restarts,
                "orders": view.orders,
                "fills": view.fills,
                "pnl": view.pnl,
                "last_checkpoint_seq": view.last_checkpoint_seq,
                "checkpoint_age_ms": view.checkpoint_age_ms,
                "last_fault": view.last_fault,
            });
            let record = HeartbeatRecord {
                strategy: view.name.clone(),
                host: host_id.to_string(),
                at_ms: now,
                body,
            };
            if let Err(e) = store.write(Write::Heartbeat(record)).await {
                tracing::warn!(strategy = %view.name, "cannot record a heartbeat: {e}");
            }
        }
    }

    /// Beats every `every` until the task is dropped.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        registry: Arc<Registry>,
        store: Arc<dyn StateStore>,
        host_id: String,
        stuck_after: Duration,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.beat(&registry, store.as_ref(), &host_id, stuck_after)
                .await;
        }
    }
}

/// Beats until the task is dropped.
pub async fn run(config: HeartbeatConfig, registry: Arc<Registry>, store: Arc<dyn StateStore>) {
    let client = match redis::Client::open(config.url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("heartbeats off: {e}");
            return;
        }
    };
    let started_ms = wall_clock_ms();
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut gap_since: Option<u64> = None;
    let mut every = tokio::time::interval(config.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl = config.ttl.as_secs().max(1);
    loop {
        every.tick().await;
        let result = async {
            if connection.is_none() {
                let made =
                    tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                        .await
                        .map_err(|_| "connecting timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                connection = Some(made);
            }
            let Some(conn) = connection.as_mut() else {
                return Err("no connection".to_string());
            };
            let now = wall_clock_ms();
            let views = registry.snapshot();
            let mut pipe = redis::pipe();
            for view in &views {
                pipe.cmd("SET")
                    .arg(format!("heartbeat:{}", view.name))
                    .arg(strategy_beat(view, &config.host_id, now))
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
            let host = serde_json::json!({
                "id": config.host_id,
                "pid": std::process::id(),
                "strategies": views.len(),
                "summary": registry.summary(),
                "started_ms": started_ms,
                "updated_ms": now,
            });
            pipe.cmd("SET")
                .arg(format!("heartbeat:host:{}", config.host_id))
                .arg(host.to_string())
                .arg("EX")
                .arg(ttl)
                .ignore();
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(conn))
                .await
                .map_err(|_| "writing timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        match (result, gap_since) {
            (Ok(()), None) => {}
            (Ok(()), Some(since)) => {
                gap_since = None;
                let message = format!(
                    "heartbeats resumed after a gap of {}",
                    humantime::format_duration(Duration::from_millis(
                        wall_clock_ms().saturating_sub(since) / 1000 * 1000
                    ))
                );
                tracing::info!("{message}");
                system_event(store.as_ref(), "heartbeat", "heartbeat-resumed", message).await;
            }
            (Err(e), gap) => {
                connection = None;
                if gap.is_none() {
                    gap_since = Some(wall_clock_ms());
                    let message = format!(
                        "Redis does not take heartbeats ({e}); trading goes on, retrying every {}",
                        humantime::format_duration(config.every)
                    );
                    tracing::warn!("{message}");
                    system_event(store.as_ref(), "heartbeat", "heartbeat-gap", message).await;
                }
            }
        }
    }
}
