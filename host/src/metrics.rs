//! The Prometheus text of `GET /metrics`: every strategy's figures from the
//! registry, labelled `strategy` (its run loop's counters, its executor's
//! intents, breakers, rate-limit waits and positions, its instance's memory,
//! its event-handling latency histogram), plus the host's own (store outage
//! flag, resident memory, uptime).
//!
//! Owns the metric names, types and units (Prometheus conventions: base
//! units, `_seconds`, `_bytes`, counters ending in `_total`). Renders through
//! `metrics-exporter-prometheus` with a recorder of its own per scrape, so
//! nothing is global; the latency histogram, whose buckets the run loop
//! keeps itself, is written in the same text format after it. Never reads
//! the store: a scrape costs no query.

use std::fmt::Write as _;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::exec::BreakerState;
use crate::fleet::{StrategyState, StrategyView};
use crate::runner::telemetry::HistogramReading;

/// The latency histogram's family.
const HANDLE_SECONDS: &str = "polybot_event_handle_seconds";

/// Every breaker state, for the one-gauge-per-state family.
const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::HalfOpen,
    BreakerState::Open,
];

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
    }
}

/// Every state a strategy can be in, for the one-gauge-per-state family.
const STATES: [StrategyState; 8] = [
    StrategyState::Starting,
    StrategyState::Running,
    StrategyState::Backoff,
    StrategyState::Recovering,
    StrategyState::Restarting,
    StrategyState::Paused,
    StrategyState::Fatal,
    StrategyState::Stopped,
];

fn describe() {
    describe_counter!(
        "polybot_events_total",
        Unit::Count,
        "Events journaled and handled by the strategy (its journal position)."
    );
    describe_gauge!(
        "polybot_strategy_state",
        "1 for the state the strategy is in, 0 for the others."
    );
    describe_counter!(
        "polybot_strategy_restarts_total",
        Unit::Count,
        "Restarts: the supervisor's (traps, deadlines) and the host's (stuck, on request)."
    );
    describe_counter!(
        "polybot_strategy_stuck_restarts_total",
        Unit::Count,
        "Restarts by the stuck detector."
    );
    describe_counter!(
        "polybot_quarantined_events_total",
        Unit::Count,
        "Events quarantined since the strategy's task last started it."
    );
    describe_counter!(
        "polybot_orders_total",
        Unit::Count,
        "Orders placed since the strategy's task last started it."
    );
    describe_counter!(
        "polybot_fills_total",
        Unit::Count,
        "Fills since the strategy's task last started it."
    );
    describe_gauge!(
        "polybot_pnl",
        "Profit and loss, in the venue's quote currency."
    );
    describe_gauge!(
        "polybot_checkpoint_age_seconds",
        Unit::Seconds,
        "Wall time since the strategy's last checkpoint."
    );
    describe_gauge!(
        "polybot_journal_uncheckpointed_events",
        Unit::Count,
        "Events journaled since the last checkpoint (replayed on a restart)."
    );
    describe_gauge!(
        "polybot_queue_depth",
        Unit::Count,
        "Events of the tick in hand, waiting or being handled."
    );
    describe_gauge!(
        "polybot_last_event_age_seconds",
        Unit::Seconds,
        "Wall time since the strategy last handled an event (feed staleness)."
    );
    describe_counter!(
        "polybot_divergences_total",
        Unit::Count,
        "Rebuilds of the strategy's state that did not reproduce its journal (current attempt)."
    );
    describe_gauge!(
        "polybot_intents",
        Unit::Count,
        "Order intents the executor holds, per status (open ones and the newest finished)."
    );
    describe_gauge!(
        "polybot_breaker_state",
        "1 for the state the endpoint group's circuit breaker is in, 0 for the others."
    );
    describe_counter!(
        "polybot_rate_limit_waits_total",
        Unit::Count,
        "Client-side rate-limiter checks answered with a wait (current attempt)."
    );
    describe_gauge!(
        "polybot_venue_feed_staleness_seconds",
        Unit::Seconds,
        "Wall time since the strategy's venue last gave a tick of market data."
    );
    describe_gauge!(
        "polybot_open_positions",
        Unit::Count,
        "Markets in which the strategy holds a non-zero position."
    );
    describe_gauge!(
        "polybot_instance_memory_bytes",
        Unit::Bytes,
        "Linear memory of the strategy's WebAssembly instance."
    );
    describe_gauge!(
        "polybot_store_outage",
        "1 while the database is unreachable and writes go to the local backlog."
    );
    describe_gauge!(
        "polybot_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the host process."
    );
    describe_gauge!(
        "polybot_strategies",
        Unit::Count,
        "Strategies in the registry."
    );
    describe_gauge!(
        "polybot_uptime_seconds",
        Unit::Seconds,
        "Time since the control plane started."
    );
}

/// The Prometheus text for these strategies (each view with its latency histogram).
pub fn render(
    strategies: &[(StrategyView, HistogramReading)],
    store_outage: bool,
    uptime: Duration,
) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for (v, _) in strategies {
            let name = v.name.clone();
            counter!("polybot_events_total", "strategy" => name.clone()).absolute(v.last_seq);
            for state in STATES {
                gauge!(
                    "polybot_strategy_state",
                    "strategy" => name.clone(),
                    "state" => state.to_string()
                )
                .set(if v.state == state { 1.0 } else { 0.0 });
            }
            counter!("polybot_strategy_restarts_total", "strategy" => name.clone())
                .absolute(v.restarts);
            counter!("polybot_strategy_stuck_restarts_total", "strategy" => name.clone())
                .absolute(v.stuck_restarts);
            counter!("polybot_quarantined_events_total", "strategy" => name.clone())
                .absolute(v.quarantined);
            counter!("polybot_orders_total", "strategy" => name.clone()).absolute(v.orders);
            counter!("polybot_fills_total", "strategy" => name.clone()).absolute(v.fills);
            gauge!("polybot_pnl", "strategy" => name.clone()).set(v.pnl);
            if let Some(age) = v.checkpoint_age_ms {
                gauge!("polybot_checkpoint_age_seconds", "strategy" => name.clone())
                    .set(age as f64 / 1000.0);
            }
            gauge!("polybot_journal_uncheckpointed_events", "strategy" => name.clone())
                .set(v.last_seq.saturating_sub(v.last_checkpoint_seq) as f64);
            gauge!("polybot_queue_depth", "strategy" => name.clone()).set(v.queue_depth as f64);
            if let Some(age) = v.last_handled_age_ms {
                gauge!("polybot_last_event_age_seconds", "strategy" => name.clone())
                    .set(age as f64 / 1000.0);
            }
            per_exec(v);
        }
        gauge!("polybot_store_outage").set(if store_outage { 1.0 } else { 0.0 });
        if let Some(rss) = resident_bytes() {
            gauge!("polybot_process_resident_memory_bytes").set(rss as f64);
        }
        gauge!("polybot_strategies").set(strategies.len() as f64);
        gauge!("polybot_uptime_seconds").set(uptime.as_secs_f64());
    });
    let mut text = handle.render();
    histograms(&mut text, strategies);
    text
}

/// The figures from the executor and the instance of one strategy.
fn per_exec(v: &StrategyView) {
    let name = v.name.clone();
    counter!("polybot_divergences_total", "strategy" => name.clone()).absolute(v.divergences);
    for (status, n) in &v.intents {
        gauge!("polybot_intents", "strategy" => name.clone(), "status" => *status).set(*n as f64);
    }
    for (group, state) in &v.breakers {
        for each in BREAKER_STATES {
            gauge!(
                "polybot_breaker_state",
                "strategy" => name.clone(),
                "group" => *group,
                "state" => breaker_name(each)
            )
            .set(if *state == each { 1.0 } else { 0.0 });
        }
    }
    counter!("polybot_rate_limit_waits_total", "strategy" => name.clone())
        .absolute(v.rate_limit_waits);
    if let Some(age) = v.feed_age_ms {
        gauge!("polybot_venue_feed_staleness_seconds", "strategy" => name.clone())
            .set(age as f64 / 1000.0);
    }
    gauge!("polybot_open_positions", "strategy" => name.clone()).set(v.open_positions as f64);
    gauge!("polybot_instance_memory_bytes", "strategy" => name).set(v.instance_memory_bytes as f64);
}

/// Appends the event-handling latency histograms (text format 0.0.4).
fn histograms(text: &mut String, strategies: &[(StrategyView, HistogramReading)]) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "# HELP {HANDLE_SECONDS} Wall time the strategy took to handle one live event."
    );
    let _ = writeln!(text, "# TYPE {HANDLE_SECONDS} histogram");
    for (v, h) in strategies {
        let name = escape(&v.name);
        for (le, n) in &h.cumulative {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let _ = writeln!(
                text,
                "{HANDLE_SECONDS}_bucket{{strategy=\"{name}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            text,
            "{HANDLE_SECONDS}_sum{{strategy=\"{name}\"}} {}",
            h.sum_seconds
        );
        let _ = writeln!(
            text,
            "{HANDLE_SECONDS}_count{{strategy=\"{name}\"}} {}",
            h.count
        );
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident memory from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
