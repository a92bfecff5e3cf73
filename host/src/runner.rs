//! The run loop: venue ticks in, strategy actions out, fills back in.
//!
//! Each market tick's events go to the strategy's cell one by one. The actions
//! it returns are executed on the venue immediately, and the order updates and
//! fills that come back are queued as further events at the same event time,
//! so the strategy learns of its fills before the next market data. Timers the
//! strategy sets fire when event time reaches them.
//!
//! Shutdown is a future passed in; when it resolves the loop finishes the event
//! in hand, takes a final checkpoint and returns its report.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::contract::{Action, EventKind};
use crate::supervisor::{Cell, CellError, CellState, CellStats};
use crate::venue::{PortfolioSummary, Venue};

/// When a run ends by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunLimits {
    /// Stop after this many strategy events.
    pub max_events: Option<u64>,
    /// Stop after this much event time.
    pub max_event_time: Option<Duration>,
}

/// Live counters, shared with the progress display.
#[derive(Debug, Default)]
pub struct RunCounters {
    pub events: AtomicU64,
    pub orders: AtomicU64,
    pub fills: AtomicU64,
    pub restarts: AtomicU64,
    pub quarantined: AtomicU64,
    /// Total PnL as `f64` bits.
    pub pnl_bits: AtomicU64,
}

impl RunCounters {
    pub fn pnl(&self) -> f64 {
        f64::from_bits(self.pnl_bits.load(Ordering::Relaxed))
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    EventLimit,
    TimeLimit,
    Shutdown,
    FeedEnded,
    Fatal,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub strategy: String,
    pub state: CellState,
    pub stop: StopReason,
    pub events: u64,
    pub orders: u64,
    pub cancels: u64,
    pub fills: u64,
    pub first_event_ms: Option<u64>,
    pub last_event_ms: Option<u64>,
    pub portfolio: PortfolioSummary,
    pub cell: CellStats,
    /// The error that made the strategy fatal, if it did.
    pub fatal: Option<String>,
}

/// Runs `cell` against `venue` until a limit, the feed's end, a fatal strategy or `shutdown`.
pub async fn run<V: Venue>(
    cell: &mut Cell,
    venue: &mut V,
    limits: RunLimits,
    counters: Arc<RunCounters>,
    shutdown: impl Future<Output = ()>,
) -> RunReport {
    tokio::pin!(shutdown);
    let mut queue: VecDeque<(u64, EventKind)> = VecDeque::new();
    let mut timers: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut report = RunReport {
        strategy: cell.name().to_string(),
        state: cell.state(),
        stop: StopReason::FeedEnded,
        events: 0,
        orders: 0,
        cancels: 0,
        fills: 0,
        first_event_ms: None,
        last_event_ms: None,
        portfolio: venue.portfolio(),
        cell: cell.stats().clone(),
        fatal: None,
    };

    'run: loop {
        if limits.max_events.is_some_and(|max| report.events >= max) {
            report.stop = StopReason::EventLimit;
            break;
        }
        let tick = tokio::select! {
            biased;
            () = &mut shutdown => {
                report.stop = StopReason::Shutdown;
                break;
            }
            tick = venue.next_tick() => tick,
        };
        let tick = match tick {
            Ok(Some(tick)) => tick,
            Ok(None) => {
                report.stop = StopReason::FeedEnded;
                break;
            }
            Err(e) => {
                tracing::warn!("market data: {e}");
                continue;
            }
        };
        let first = *report.first_event_ms.get_or_insert(tick.timestamp_ms);
        if let Some(max) = limits.max_event_time
            && tick.timestamp_ms.saturating_sub(first) > max.as_millis() as u64
        {
            report.stop = StopReason::TimeLimit;
            break;
        }
        while let Some(&(at, id)) = timers.first()
            && at <= tick.timestamp_ms
        {
            timers.pop_first();
            queue.push_back((at, EventKind::Timer(id)));
        }
        queue.extend(
            tick.events
                .into_iter()
                .map(|kind| (tick.timestamp_ms, kind)),
        );

        while let Some((timestamp_ms, kind)) = queue.pop_front() {
            if matches!(kind, EventKind::Fill(_)) {
                report.fills += 1;
            }
            let step = match cell.handle(timestamp_ms, kind).await {
                Ok(step) => step,
                Err(e) => {
                    report.fatal = Some(e.to_string());
                    report.stop = match e {
                        CellError::Fatal { .. } | CellError::Store { .. } => StopReason::Fatal,
                    };
                    break 'run;
                }
            };
            report.events += 1;
            report.last_event_ms = Some(timestamp_ms);
            for planned in step.actions {
                let results = match &planned.action {
                    Action::PlaceOrder(order) => {
                        report.orders += 1;
                        venue.place_order(&planned.intent_id, order).await
                    }
                    Action::CancelOrder(id) => {
                        report.cancels += 1;
                        venue.cancel_order(id).await
                    }
                    Action::SetTimer(timer) => {
                        timers.insert((timer.at_ms.max(timestamp_ms), timer.id));
                        Ok(Vec::new())
                    }
                };
                match results {
                    Ok(events) => queue.extend(events.into_iter().map(|k| (timestamp_ms, k))),
                    Err(e) => tracing::warn!(strategy = %cell.name(), "venue: {e}"),
                }
            }
            publish(
                &counters,
                &report,
                cell.stats(),
                venue.portfolio().total_pnl(),
            );
        }
    }

    cell.stop().await;
    report.state = cell.state();
    report.portfolio = venue.portfolio();
    report.cell = cell.stats().clone();
    publish(
        &counters,
        &report,
        cell.stats(),
        report.portfolio.total_pnl(),
    );
    report
}

fn publish(counters: &RunCounters, report: &RunReport, stats: &CellStats, pnl: f64) {
    counters.events.store(report.events, Ordering::Relaxed);
    counters.orders.store(report.orders, Ordering::Relaxed);
    counters.fills.store(report.fills, Ordering::Relaxed);
    counters.restarts.store(stats.restarts, Ordering::Relaxed);
    counters
        .quarantined
        .store(stats.quarantined, Ordering::Relaxed);
    counters.pnl_bits.store(pnl.to_bits(), Ordering::Relaxed);
}
