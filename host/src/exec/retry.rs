//! Retry policy: exponential backoff with full jitter, bounded by attempts and
//! elapsed time, honouring the venue's `Retry-After`.
//!
//! Owns `[exec.retry]` and the delay sequence. The ceilings come from
//! `backon`'s exponential builder; each delay is drawn uniformly from zero to
//! its ceiling ("full jitter"), and never shorter than a `Retry-After`.
//! Never decides *whether* to retry (the executor retries transient classes
//! only) and never sleeps.

use std::time::Duration;

use backon::BackoffBuilder;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[exec.retry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Ceiling of the first delay (ms).
    pub initial_backoff_ms: u64,
    /// Largest ceiling (ms).
    pub max_backoff_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No new attempt starts this long (ms) after the first.
    pub max_elapsed_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
            max_attempts: 10,
            max_elapsed_ms: 120_000,
        }
    }
}

impl RetryConfig {
    /// # Errors
    /// A message naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.initial_backoff_ms == 0 {
            return Err("retry.initial_backoff_ms must be at least 1".into());
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(format!(
                "retry.max_backoff_ms ({}) is below retry.initial_backoff_ms ({})",
                self.max_backoff_ms, self.initial_backoff_ms
            ));
        }
        Ok(())
    }

    pub fn max_elapsed(&self) -> Duration {
        Duration::from_millis(self.max_elapsed_ms)
    }

    /// The delays for one operation.
    pub fn backoff(&self, seed: u64) -> Backoff {
        let ceilings = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_backoff_ms))
            .with_max_delay(Duration::from_millis(self.max_backoff_ms))
            .with_factor(2.0)
            .without_max_times()
            .build();
        Backoff {
            ceilings,
            rng: StdRng::seed_from_u64(seed),
            attempts: 1,
            max_attempts: self.max_attempts,
        }
    }
}

/// The delay sequence of one operation.
#[derive(Debug)]
pub struct Backoff {
    ceilings: backon::ExponentialBackoff,
    rng: StdRng,
    attempts: u32,
    max_attempts: u32,
}

impl Backoff {
    /// The wait before the next attempt, or `None` when attempts are used up.
    /// `retry_after` (the venue's) is a floor.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.max_attempts {
            return None;
        }
        self.attempts += 1;
        let ceiling = self.ceilings.next().unwrap_or(Duration::from_secs(1));
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(self.rng.random_range(0..=nanos));
        Some(jittered.max(retry_after.unwrap_or_default()))
    }

    /// Attempts made so far (the first included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_jittered_below_doubling_ceilings_and_bounded_in_number() {
        let cfg = RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 800,
            max_attempts: 6,
            max_elapsed_ms: 10_000,
        };
        let mut b = cfg.backoff(7);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay(None)).collect();
        assert_eq!(delays.len(), 5, "6 attempts: 5 waits");
        for (d, ceiling) in delays.iter().zip([100, 200, 400, 800, 800]) {
            assert!(*d <= Duration::from_millis(ceiling), "{d:?} > {ceiling} ms");
        }
        // Full jitter: not all at the ceiling, and reproducible from the seed.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        let mut again = cfg.backoff(7);
        let same: Vec<Duration> = std::iter::from_fn(|| again.next_delay(None)).collect();
        assert_eq!(delays, same);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut b = RetryConfig::default().backoff(1);
        let d = b.next_delay(Some(Duration::from_secs(3))).expect("delay");
        assert!(d >= Duration::from_secs(3));
    }

    #[test]
    fn config_is_checked_and_unknown_keys_refused() {
        assert!(
            RetryConfig {
                max_attempts: 0,
                ..RetryConfig::default()
            }
            .validate()
            .is_err()
        );
        let e = toml::from_str::<RetryConfig>("max_attempt = 3").expect_err("typo");
        assert!(e.to_string().contains("max_attempt"), "{e}");
        let c: RetryConfig = toml::from_str("max_attempts = 3").expect("partial");
        assert_eq!((c.max_attempts, c.initial_backoff_ms), (3, 200));
    }
}
