//! Restart and checkpoint policy, and the sliding restart window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::sandbox::humantime_serde_compat as hms;

/// When to give up on a strategy and how long to wait between restarts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// More restarts than this within `restart_window` make the strategy `fatal`.
    pub max_restarts: u32,
    #[serde(with = "hms")]
    pub restart_window: Duration,
    /// First backoff after a fault; doubles with each consecutive fault.
    #[serde(with = "hms")]
    pub backoff_initial: Duration,
    #[serde(with = "hms")]
    pub backoff_max: Duration,
    /// Faults in a row on one event before it is quarantined.
    pub quarantine_after: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            quarantine_after: 3,
        }
    }
}

impl RestartPolicy {
    /// A fresh backoff sequence: exponential from `backoff_initial`, capped at
    /// `backoff_max`, with random jitter so many strategies do not restart in step.
    pub(crate) fn backoff(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.backoff_initial)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// When to take checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// Take one after this many events.
    pub every_events: u64,
    /// Take one when this much event time has passed since the last.
    #[serde(with = "hms")]
    pub every_event_time: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_events: 1000,
            every_event_time: Duration::from_secs(60),
        }
    }
}

/// Restart times within the policy's window.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Records a restart at `now`; returns how many fall within `window` of it.
    pub(crate) fn record(&mut self, now: Instant, window: Duration) -> usize {
        self.times.push_back(now);
        while let Some(&oldest) = self.times.front() {
            if now.duration_since(oldest) > window {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_restarts_older_than_the_window() {
        let start = Instant::now();
        let mut w = RestartWindow::default();
        let window = Duration::from_secs(60);
        for i in 0..5 {
            w.record(start + Duration::from_secs(i), window);
        }
        assert_eq!(w.record(start + Duration::from_secs(30), window), 6);
        // 63 s: restarts at 0..=2 s are now outside the window.
        assert_eq!(w.record(start + Duration::from_secs(63), window), 4);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RestartPolicy {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..RestartPolicy::default()
        };
        let delays: Vec<Duration> = policy.backoff().take(8).collect();
        assert!(delays[0] >= Duration::from_millis(10) && delays[0] < Duration::from_millis(20));
        assert!(delays[3] >= Duration::from_millis(80), "{delays:?}");
        // jitter may add up to the delay itself on top of the cap
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(200)),
            "{delays:?}"
        );
    }
}
