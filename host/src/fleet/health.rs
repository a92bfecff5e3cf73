//! Health of a fleet: stuck detection and the service manager's view.
//!
//! A strategy is **stuck** when events wait (a tick is in the run loop's
//! hands) and none has been handled for `[health] stuck_after`, while its
//! cell says it runs (a cell in backoff or recovering is waiting on purpose).
//! The host's event loop lagging by more than the limit (a health check
//! running that late) is an `event-loop-lag` system event and fails the
//! health check too. A stuck strategy is restarted through its control handle — dropped
//! mid-event, as a crash would, and resumed exactly from its journal — and a
//! `strategy-stuck` system event says why. Its task counts these restarts
//! against the supervisor's budget: stuck more than `max_restarts` times
//! within `restart_window`, it goes `fatal` instead of looping.
//!
//! With systemd (`NOTIFY_SOCKET`), the host says READY=1 once every strategy
//! runs, STATUS= a one-line summary, WATCHDOG=1 only while no strategy is
//! stuck (so a host whose strategies stop making progress is restarted by
//! systemd when restarting them here does not help), and STOPPING=1 on
//! shutdown. Reads the registry; changes strategies only through their
//! control handles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{Control, Registry, StrategyState};
use super::task::system_event;
use crate::store::{StateStore, wall_clock_ms};

/// Messages to the service manager; does nothing when none listens.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Talks to systemd when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// How often systemd wants a watchdog ping, when it wants them.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled()
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[sd_notify::NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }

    pub fn stopping(&self) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
    }
}

/// Records a host-wide system event (component `fleet/host`).
pub async fn record(store: &dyn StateStore, kind: &str, message: String) {
    system_event(store, "host", kind, message).await;
}

/// Checks the fleet's health until the task is dropped: restarts stuck
/// strategies, keeps the service manager's status and watchdog.
pub async fn watch(
    registry: Arc<Registry>,
    store: Arc<dyn StateStore>,
    stuck_after: Duration,
    notifier: Notifier,
) {
    let watchdog = notifier.watchdog_interval();
    let mut period = (stuck_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    if let Some(w) = watchdog {
        period = period.min(w / 4).max(Duration::from_millis(10));
    }
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut restarted: HashMap<String, Instant> = HashMap::new();
    let mut last_status = String::new();
    let stuck_ms = u64::try_from(stuck_after.as_millis()).unwrap_or(u64::MAX);
    let mut lagging = false;
    loop {
        let scheduled = every.tick().await;
        let now = wall_clock_ms();
        let mut healthy = true;
        // The runtime itself lagging: this check ran late by more than the
        // stuck limit, so every strategy's events waited as long.
        let lag = scheduled.elapsed();
        if lag > stuck_after {
            healthy = false;
            if !lagging {
                let message = format!(
                    "the host's event loop lags: a health check ran {} late (limit {})",
                    humantime::format_duration(Duration::from_millis(lag.as_millis() as u64)),
                    humantime::format_duration(stuck_after)
                );
                tracing::warn!("{message}");
                record(store.as_ref(), "event-loop-lag", message).await;
            }
            lagging = true;
        } else {
            lagging = false;
        }
        for slot in registry.slots() {
            if slot.state() != StrategyState::Running {
                continue;
            }
            let Some(waiting) = slot.progress.waiting_ms(now) else {
                continue;
            };
            if waiting < stuck_ms {
                continue;
            }
            healthy = false;
            if restarted
                .get(&slot.name)
                .is_some_and(|at| at.elapsed() < stuck_after)
            {
                continue;
            }
            restarted.insert(slot.name.clone(), Instant::now());
            let view = slot.view();
            let reason = format!(
                "stuck: {} events waited {} with none handled (limit {}); last seq {}; restarting from the journal",
                view.queue_depth,
                humantime::format_duration(Duration::from_millis(waiting)),
                humantime::format_duration(stuck_after),
                view.last_seq
            );
            tracing::warn!(strategy = %slot.name, "{reason}");
            slot.stuck_restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            system_event(store.as_ref(), &slot.name, "strategy-stuck", reason.clone()).await;
            slot.send(Control::Stuck { reason });
        }
        if healthy && watchdog.is_some() {
            notifier.watchdog();
        }
        let status = registry.summary();
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
    }
}
