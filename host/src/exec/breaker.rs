//! Circuit breakers, one per endpoint group (orders, cancels, market-data
//! reads), with Resilience4j's semantics.
//!
//! Owns the breaker state machine: `closed` counts the outcomes of the last
//! `window_size` calls; once at least `minimum_calls` were made and the
//! failure rate or the slow-call rate reaches its threshold, it opens. `open`
//! refuses every call for `open_ms`, then lets `half_open_calls` probes
//! through; their outcomes close it again or re-open it. Every change of state
//! is kept as a [`BreakerTransition`] for the caller to turn into a
//! `venue-status` event and a system event.
//!
//! Never sleeps and never reads a clock of its own: the caller passes `now`
//! (a tokio instant, so tests run on the paused clock). Does not decide what
//! counts as a failure (the executor classifies errors).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The endpoint groups that break separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointGroup {
    Orders,
    Cancels,
    MarketData,
}

impl EndpointGroup {
    /// Every group, in the order executors keep their breakers.
    pub const ALL: [EndpointGroup; 3] = [
        EndpointGroup::Orders,
        EndpointGroup::Cancels,
        EndpointGroup::MarketData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointGroup::Orders => "orders",
            EndpointGroup::Cancels => "cancels",
            EndpointGroup::MarketData => "market-data",
        }
    }
}

/// `[exec.breaker]`. Defaults are Resilience4j's, scaled to a trading
/// strategy's call rate (a window of 20 calls rather than 100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failure rate (0–1) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call rate (0–1) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call at least this long (ms) is slow.
    pub slow_call_ms: u64,
    /// Calls in the sliding window.
    pub window_size: usize,
    /// Calls needed in the window before rates count.
    pub minimum_calls: usize,
    /// How long (ms) the breaker stays open.
    pub open_ms: u64,
    /// Probe calls let through half-open.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_ms: 5_000,
            window_size: 20,
            minimum_calls: 10,
            open_ms: 30_000,
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks the values; the error names the key.
    ///
    /// # Errors
    /// A message naming the first bad key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("breaker.{key} must be in (0, 1], got {v}"));
            }
        }
        for (key, v) in [
            ("window_size", self.window_size),
            ("minimum_calls", self.minimum_calls),
            ("half_open_calls", self.half_open_calls),
        ] {
            if v == 0 {
                return Err(format!("breaker.{key} must be at least 1"));
            }
        }
        if self.minimum_calls > self.window_size {
            return Err(format!(
                "breaker.minimum_calls ({}) exceeds breaker.window_size ({})",
                self.minimum_calls, self.window_size
            ));
        }
        Ok(())
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// A change of state, to report.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerTransition {
    pub group: EndpointGroup,
    pub from: BreakerState,
    pub to: BreakerState,
    /// Rates of the window that decided it (0 when not decided by rates).
    pub failure_rate: f64,
    pub slow_call_rate: f64,
}

impl BreakerTransition {
    pub fn detail(&self) -> String {
        match self.to {
            BreakerState::Open => format!(
                "{} circuit open: failure rate {:.0} %, slow calls {:.0} %",
                self.group.as_str(),
                self.failure_rate * 100.0,
                self.slow_call_rate * 100.0
            ),
            BreakerState::HalfOpen => format!("{} circuit half-open: probing", self.group.as_str()),
            BreakerState::Closed => {
                format!("{} circuit closed: probes succeeded", self.group.as_str())
            }
        }
    }
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Not before this long.
    Wait(Duration),
}

/// Outcomes over a window: failure and slowness bits with running counts.
#[derive(Debug, Clone, Default)]
struct Window {
    calls: VecDeque<(bool, bool)>,
    failed: usize,
    slow: usize,
}

impl Window {
    fn push(&mut self, failed: bool, slow: bool, cap: usize) {
        if self.calls.len() == cap
            && let Some((f, s)) = self.calls.pop_front()
        {
            self.failed -= usize::from(f);
            self.slow -= usize::from(s);
        }
        self.calls.push_back((failed, slow));
        self.failed += usize::from(failed);
        self.slow += usize::from(slow);
    }

    fn rates(&self) -> (f64, f64) {
        let n = self.calls.len().max(1) as f64;
        (self.failed as f64 / n, self.slow as f64 / n)
    }

    fn clear(&mut self) {
        *self = Window::default();
    }
}

/// One breaker; see the module docs.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    group: EndpointGroup,
    cfg: BreakerConfig,
    state: BreakerState,
    open_until: Option<Instant>,
    /// Probes let through since half-open began.
    admitted: usize,
    window: Window,
    transitions: Vec<BreakerTransition>,
}

impl CircuitBreaker {
    pub fn new(group: EndpointGroup, cfg: BreakerConfig) -> Self {
        CircuitBreaker {
            group,
            cfg,
            state: BreakerState::Closed,
            open_until: None,
            admitted: 0,
            window: Window::default(),
            transitions: Vec::new(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn group(&self) -> EndpointGroup {
        self.group
    }

    /// May a call go now? Moves `open` to `half-open` once the wait is over
    /// and counts the probes let through.
    pub fn permit(&mut self, now: Instant) -> Gate {
        match self.state {
            BreakerState::Closed => Gate::Go,
            BreakerState::Open => match self.open_until {
                Some(until) if now < until => Gate::Wait(until - now),
                _ => {
                    self.shift(BreakerState::HalfOpen, (0.0, 0.0));
                    self.window.clear();
                    self.admitted = 1;
                    Gate::Go
                }
            },
            BreakerState::HalfOpen => {
                if self.admitted < self.cfg.half_open_calls {
                    self.admitted += 1;
                    Gate::Go
                } else {
                    // Probes are out; their outcomes decide.
                    Gate::Wait(Duration::from_millis(self.cfg.open_ms.clamp(1, 100)))
                }
            }
        }
    }

    /// Records the outcome of a call that was let through.
    pub fn record(&mut self, now: Instant, failed: bool, took: Duration) {
        let slow = took >= Duration::from_millis(self.cfg.slow_call_ms);
        match self.state {
            BreakerState::Closed => {
                self.window.push(failed, slow, self.cfg.window_size);
                if self.window.calls.len() >= self.cfg.minimum_calls && self.tripped() {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => {
                self.window.push(failed, slow, self.cfg.half_open_calls);
                if self.window.calls.len() >= self.cfg.half_open_calls {
                    if self.tripped() {
                        self.open(now);
                    } else {
                        self.shift(BreakerState::Closed, self.window.rates());
                        self.window.clear();
                    }
                }
            }
            // A late answer from before it opened changes nothing.
            BreakerState::Open => {}
        }
    }

    /// The transitions since the last call, oldest first.
    pub fn take_transitions(&mut self) -> Vec<BreakerTransition> {
        std::mem::take(&mut self.transitions)
    }

    fn tripped(&self) -> bool {
        let (f, s) = self.window.rates();
        f >= self.cfg.failure_rate_threshold || s >= self.cfg.slow_call_rate_threshold
    }

    fn open(&mut self, now: Instant) {
        let rates = self.window.rates();
        self.open_until = Some(now + Duration::from_millis(self.cfg.open_ms));
        self.shift(BreakerState::Open, rates);
        self.window.clear();
    }

    fn shift(&mut self, to: BreakerState, (failure_rate, slow_call_rate): (f64, f64)) {
        self.transitions.push(BreakerTransition {
            group: self.group,
            from: self.state,
            to,
            failure_rate,
            slow_call_rate,
        });
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window_size: 10,
            minimum_calls: 4,
            open_ms: 1_000,
            half_open_calls: 2,
            slow_call_ms: 500,
            slow_call_rate_threshold: 0.8,
            ..BreakerConfig::default()
        }
    }

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_only_after_the_minimum_calls() {
        let mut b = CircuitBreaker::new(EndpointGroup::Orders, cfg());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.permit(now), Gate::Go);
            b.record(now, true, FAST);
        }
        assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum 4");
        b.record(now, true, FAST);
        assert_eq!(b.state(), BreakerState::Open);
        let t = b.take_transitions();
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].from, t[0].to, t[0].failure_rate),
            (BreakerState::Closed, BreakerState::Open, 1.0)
        );
        assert_eq!(b.permit(now), Gate::Wait(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_below_the_threshold_keeps_it_closed() {
        let mut b = CircuitBreaker::new(EndpointGroup::Orders, cfg());
        let now = Instant::now();
        // 4 failures in 10 calls: 40 % < 50 %, and the window slides.
        for i in 0..30 {
            b.permit(now);
            b.record(now, i % 10 >= 6, FAST);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.take_transitions().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let mut b = CircuitBreaker::new(EndpointGroup::MarketData, cfg());
        let now = Instant::now();
        for _ in 0..4 {
            b.permit(now);
            b.record(now, false, Duration::from_millis(600));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.take_transitions()[0].slow_call_rate, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_a_few_probes_through_then_closes_or_reopens() {
        let mut b = CircuitBreaker::new(EndpointGroup::Orders, cfg());
        let start = Instant::now();
        for _ in 0..4 {
            b.permit(start);
            b.record(start, true, FAST);
        }
        tokio::time::advance(Duration::from_millis(1_000)).await;
        let now = Instant::now();
        assert_eq!(b.permit(now), Gate::Go);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.permit(now), Gate::Go);
        assert!(matches!(b.permit(now), Gate::Wait(_)), "only 2 probes");
        b.record(now, false, FAST);
        b.record(now, true, FAST);
        // 1 of 2 failed: 50 % reopens.
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        let now = Instant::now();
        b.permit(now);
        b.permit(now);
        b.record(now, false, FAST);
        b.record(now, false, FAST);
        assert_eq!(b.state(), BreakerState::Closed);
        let path: Vec<_> = b.take_transitions().iter().map(|t| t.to).collect();
        assert_eq!(
            path,
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let c = BreakerConfig {
            failure_rate_threshold: 1.5,
            ..BreakerConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("failure_rate_threshold"));
        let c = BreakerConfig {
            minimum_calls: 50,
            ..BreakerConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("minimum_calls"));
        assert!(BreakerConfig::default().validate().is_ok());
    }
}
