//! Client-side rate limits: polybot slows itself down before the venue
//! throttles it.
//!
//! Owns one GCRA limiter (`governor`) per published limit of the venue —
//! per endpoint a 10 s burst limit and, for `POST /order`, the 10 min
//! sustained one; per signer the order and cancel token buckets — and the
//! `Poly-RateLimit-Warning` reaction: while the venue warns, new orders pause
//! for `warning_pause_ms` while cancels keep going. Cancels never wait for the
//! order buckets, and the executor sends a batch's cancels before its orders:
//! that is how cancels get priority.
//!
//! Never sleeps: it answers "go" or "wait this long"; the executor waits.
//! Time is tokio's (a paused clock in tests).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::breaker::{EndpointGroup, Gate};

/// `[exec.limits]`: the venue's published limits (standard tier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `POST /order` per 10 s (burst).
    pub orders_per_10s: u32,
    /// `POST /order` per 10 min (sustained).
    pub orders_per_10min: u32,
    /// `DELETE /order` per 10 s.
    pub cancels_per_10s: u32,
    /// `/data/orders`, `/data/trades` reads per 10 s.
    pub reads_per_10s: u32,
    /// Per-signer order bucket: refill per second and burst.
    pub signer_orders_per_s: u32,
    pub signer_orders_burst: u32,
    /// Per-signer cancel bucket: refill per second and burst.
    pub signer_cancels_per_s: u32,
    pub signer_cancels_burst: u32,
    /// How long new orders pause after a `Poly-RateLimit-Warning`.
    pub warning_pause_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            orders_per_10s: 3_500,
            orders_per_10min: 36_000,
            cancels_per_10s: 3_000,
            reads_per_10s: 500,
            signer_orders_per_s: 40,
            signer_orders_burst: 60,
            signer_cancels_per_s: 80,
            signer_cancels_burst: 120,
            warning_pause_ms: 1_000,
        }
    }
}

impl LimitsConfig {
    /// # Errors
    /// A message naming the first limit that is zero.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("orders_per_10s", self.orders_per_10s),
            ("orders_per_10min", self.orders_per_10min),
            ("cancels_per_10s", self.cancels_per_10s),
            ("reads_per_10s", self.reads_per_10s),
            ("signer_orders_per_s", self.signer_orders_per_s),
            ("signer_orders_burst", self.signer_orders_burst),
            ("signer_cancels_per_s", self.signer_cancels_per_s),
            ("signer_cancels_burst", self.signer_cancels_burst),
        ] {
            if v == 0 {
                return Err(format!("limits.{key} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Tokio's clock for governor: time since the limiter set was made, so the
/// paused test clock drives it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

fn limiter(clock: TokioClock, per: Duration, count: u32, burst: u32) -> Limiter {
    let count = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(per / count.get())
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(burst);
    RateLimiter::direct_with_clock(quota, clock)
}

/// The limiters of one strategy's venue; see the module docs.
pub struct RateLimits {
    clock: TokioClock,
    orders: Vec<Limiter>,
    cancels: Vec<Limiter>,
    reads: Vec<Limiter>,
    warning_pause: Duration,
    paused_until: Option<Instant>,
    /// Off for a venue with no remote limits (the simulated one): every
    /// check answers go, so its runs stay deterministic.
    off: bool,
    /// Checks answered with a wait.
    waits: u64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("paused_until", &self.paused_until)
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let ten_s = Duration::from_secs(10);
        RateLimits {
            clock,
            orders: vec![
                limiter(
                    clock,
                    Duration::from_secs(1),
                    cfg.signer_orders_per_s,
                    cfg.signer_orders_burst,
                ),
                limiter(clock, ten_s, cfg.orders_per_10s, cfg.orders_per_10s),
                limiter(
                    clock,
                    Duration::from_secs(600),
                    cfg.orders_per_10min,
                    cfg.orders_per_10min,
                ),
            ],
            cancels: vec![
                limiter(
                    clock,
                    Duration::from_secs(1),
                    cfg.signer_cancels_per_s,
                    cfg.signer_cancels_burst,
                ),
                limiter(clock, ten_s, cfg.cancels_per_10s, cfg.cancels_per_10s),
            ],
            reads: vec![limiter(clock, ten_s, cfg.reads_per_10s, cfg.reads_per_10s)],
            warning_pause: Duration::from_millis(cfg.warning_pause_ms),
            paused_until: None,
            off: false,
            waits: 0,
        }
    }

    /// Turns every limit off (see the `off` field).
    pub fn turn_off(&mut self) {
        self.off = true;
    }

    /// Checks answered with a wait so far.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Takes one call's worth from every limit of `group`, or says how long
    /// to wait (and counts the wait).
    pub fn check(&mut self, group: EndpointGroup) -> Gate {
        let gate = self.gate(group);
        if gate != Gate::Go {
            self.waits += 1;
        }
        gate
    }

    fn gate(&mut self, group: EndpointGroup) -> Gate {
        if self.off {
            return Gate::Go;
        }
        let now = Instant::now();
        if group == EndpointGroup::Orders
            && let Some(until) = self.paused_until
        {
            if now < until {
                return Gate::Wait(until - now);
            }
            self.paused_until = None;
        }
        let limiters = match group {
            EndpointGroup::Orders => &self.orders,
            EndpointGroup::Cancels => &self.cancels,
            EndpointGroup::MarketData => &self.reads,
        };
        for l in limiters {
            if let Err(not_until) = l.check() {
                let from = self.clock.now();
                let wait = not_until.earliest_possible().duration_since(from);
                return Gate::Wait(Duration::from(wait).max(Duration::from_micros(1)));
            }
        }
        Gate::Go
    }

    /// The venue answered with `Poly-RateLimit-Warning: true`: new orders
    /// pause; cancels go on.
    pub fn on_warning(&mut self) {
        self.paused_until = Some(Instant::now() + self.warning_pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_signer_order_bucket_allows_its_burst_then_its_rate() {
        let mut l = RateLimits::new(&LimitsConfig::default());
        for i in 0..60 {
            assert_eq!(l.check(EndpointGroup::Orders), Gate::Go, "order {i}");
        }
        let Gate::Wait(w) = l.check(EndpointGroup::Orders) else {
            panic!("61st order in the same instant must wait")
        };
        assert_eq!(l.waits(), 1, "the wait is counted, the 60 goes are not");
        assert!(
            w <= Duration::from_millis(25) && w > Duration::ZERO,
            "{w:?}"
        );
        // Cancels have their own buckets: the order burst does not hold them.
        assert_eq!(l.check(EndpointGroup::Cancels), Gate::Go);
        tokio::time::advance(Duration::from_millis(25)).await;
        assert_eq!(l.check(EndpointGroup::Orders), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_pauses_orders_not_cancels() {
        let mut l = RateLimits::new(&LimitsConfig::default());
        l.on_warning();
        assert!(matches!(l.check(EndpointGroup::Orders), Gate::Wait(_)));
        assert_eq!(l.check(EndpointGroup::Cancels), Gate::Go);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(l.check(EndpointGroup::Orders), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sustained_limit_bites_after_the_burst() {
        let cfg = LimitsConfig {
            signer_orders_per_s: 1_000,
            signer_orders_burst: 1_000,
            orders_per_10s: 100,
            orders_per_10min: 150,
            ..LimitsConfig::default()
        };
        let mut l = RateLimits::new(&cfg);
        let mut sent = 0;
        // 30 s at 10 per second of attempts: the 10 min limit holds it to its burst.
        for _ in 0..300 {
            if l.check(EndpointGroup::Orders) == Gate::Go {
                sent += 1;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!((150..=160).contains(&sent), "{sent}");
    }
}
