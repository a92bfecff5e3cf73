//! The Prometheus text of `GET /metrics`: every strategy's figures from the
//! registry, labelled `strategy`, plus the host's own (store outage flag,
//! resident memory, uptime).
//!
//! Owns the metric names, types and units (Prometheus conventions: base
//! units, `_seconds`, `_bytes`, counters ending in `_total`). Renders through
//! `metrics-exporter-prometheus` with a recorder of its own per scrape, so
//! nothing is global. Never reads the store: a scrape costs no query.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::fleet::{StrategyState, StrategyView};

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

/// The Prometheus text for these views.
pub fn render(views: &[StrategyView], store_outage: bool, uptime: Duration) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for v in views {
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
                gauge!("polybot_last_event_age_seconds", "strategy" => name)
                    .set(age as f64 / 1000.0);
            }
        }
        gauge!("polybot_store_outage").set(if store_outage { 1.0 } else { 0.0 });
        if let Some(rss) = resident_bytes() {
            gauge!("polybot_process_resident_memory_bytes").set(rss as f64);
        }
        gauge!("polybot_strategies").set(views.len() as f64);
        gauge!("polybot_uptime_seconds").set(uptime.as_secs_f64());
    });
    handle.render()
}

/// Resident memory from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
