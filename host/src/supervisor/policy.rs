//! Restart and checkpoint policy, the sliding restart window and the backoff
//! sequence, and how the run's clock relates to wall time.
//!
//! Owns the rules that judge a strategy's faults; never calls a strategy or
//! the store itself.
//!
//! **Event time.** The restart window and the backoff between restarts are
//! measured on the run's clock — event time — not on the wall clock, so a
//! compressed run (`--speed 3600`, `--speed max`) judges a strategy exactly as
//! a real-time run would: a strategy that traps once per simulated hour is
//! restarted every time however fast the run goes. A backoff of `d` event time
//! waits `d / speed` of wall time ([`Pace`]); unpaced, it does not wait at all
//! (the restart window still counts the restarts, and a strategy that faults
//! over and over on one event is quarantined).

use std::collections::VecDeque;
use std::time::Duration;

use crate::sandbox::humantime_serde_compat as hms;

/// When to give up on a strategy and how long to wait between restarts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// More restarts than this within `restart_window` make the strategy `fatal`.
    pub max_restarts: u32,
    /// Sliding window over which restarts are counted, in event time.
    #[serde(with = "hms")]
    pub restart_window: Duration,
    /// Backoff before the second restart in a row, in event time; the first
    /// restart after a handled event happens at once. Doubles with each
    /// further fault in a row.
    #[serde(with = "hms")]
    pub backoff_initial: Duration,
    #[serde(with = "hms")]
    pub backoff_max: Duration,
    /// Faults in a row on one event before it is quarantined.
    pub quarantine_after: u32,
    /// Most timers a strategy may have pending at once; setting more is a
    /// fault of the event that set them.
    pub max_pending_timers: usize,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            quarantine_after: 3,
            max_pending_timers: 1024,
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

/// The waits between restarts in a row: none before the first (a restart
/// after a handled event is immediate, as in an OTP supervisor), then the
/// policy's exponential backoff. Reset once an event is handled.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    sequence: Option<backon::ExponentialBackoff>,
}

impl Backoff {
    /// The wait before the next restart.
    pub(crate) fn next_delay(&mut self, policy: &RestartPolicy) -> Duration {
        match &mut self.sequence {
            None => {
                self.sequence = Some(policy.backoff());
                Duration::ZERO
            }
            Some(sequence) => sequence.next().unwrap_or(policy.backoff_max),
        }
    }

    /// Forgets the faults so far: the next restart is immediate again.
    pub(crate) fn reset(&mut self) {
        self.sequence = None;
    }
}

/// How event time relates to wall time in this run: what a wait in event
/// time (a backoff) costs on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Event time runs this many times faster than wall time (1 for a live market).
    Speed(f64),
    /// Event time runs as fast as the host can go: event-time waits cost nothing.
    Unpaced,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::Speed(1.0)
    }
}

impl Pace {
    /// The wall time that `event_time` takes at this pace.
    pub fn wall(&self, event_time: Duration) -> Duration {
        match *self {
            Pace::Speed(speed) if speed.is_finite() && speed > 0.0 => event_time.div_f64(speed),
            Pace::Speed(_) | Pace::Unpaced => Duration::ZERO,
        }
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

/// Restart times (event time, ms) within the policy's window.
#[derive(Debug, Default)]
pub(crate) struct RestartWindow {
    times: VecDeque<u64>,
}

impl RestartWindow {
    /// Records a restart at event time `now_ms`; returns how many fall within
    /// `window` of it.
    pub(crate) fn record(&mut self, now_ms: u64, window: Duration) -> usize {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.times.push_back(now_ms);
        while let Some(&oldest) = self.times.front() {
            if now_ms.saturating_sub(oldest) > window_ms {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.len()
    }

    /// How many restarts fall within `window` of event time `now_ms`
    /// (forgetting older ones).
    pub(crate) fn count(&mut self, now_ms: u64, window: Duration) -> usize {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        while let Some(&oldest) = self.times.front() {
            if now_ms.saturating_sub(oldest) > window_ms {
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
        let start = 1_767_225_600_000u64;
        let mut w = RestartWindow::default();
        let window = Duration::from_secs(60);
        for i in 0..5 {
            w.record(start + i * 1000, window);
        }
        assert_eq!(w.record(start + 30_000, window), 6);
        // 63 s: restarts at 0..=2 s are now outside the window.
        assert_eq!(w.record(start + 63_000, window), 4);
    }

    #[test]
    fn the_first_restart_does_not_wait_and_a_handled_event_resets_the_backoff() {
        let policy = RestartPolicy::default();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(&policy), Duration::ZERO);
        assert!(backoff.next_delay(&policy) >= policy.backoff_initial);
        backoff.reset();
        assert_eq!(backoff.next_delay(&policy), Duration::ZERO);
    }

    #[test]
    fn event_time_waits_shrink_with_the_speed_of_the_run() {
        let backoff = Duration::from_secs(6);
        assert_eq!(Pace::Speed(1.0).wall(backoff), backoff);
        assert_eq!(Pace::Speed(60.0).wall(backoff), Duration::from_millis(100));
        assert_eq!(Pace::Unpaced.wall(backoff), Duration::ZERO);
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
