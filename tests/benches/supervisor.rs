//! Supervisor benchmark: what a trap costs before the next event is handled,
//! through the real cell. Prints a table.
//!
//! Each instance of the `faulty` fixture traps on its 2nd call, and the cell
//! checkpoints after every event, so every event after the first traps once:
//! its `handle` is the trapping call, the fault record, the immediate restart
//! (new instance + restore of the newest checkpoint, nothing to replay) and
//! the event handled by the new instance. Against it, the same cell path
//! without faults. The events are an hour of event time apart so the restart
//! window never fills.
//!
//! Run: `cargo bench -p polybot-tests --bench supervisor`

use std::time::{Duration, Instant};

use polybot_host::contract::EventKind;
use polybot_host::sandbox::SandboxLimits;
use polybot_host::supervisor::{Cell, RestartPolicy};
use polybot_tests::{load, quick_restarts, sandbox, start_cell};
use serde_json::json;

const ROUNDS: u64 = 2_000;
const HOUR_MS: u64 = 3_600_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Times `ROUNDS` events through `cell`, after one warm-up event.
async fn time_events(cell: &mut Cell) -> Vec<Duration> {
    cell.handle(0, EventKind::Timer(0)).await.unwrap();
    let mut times = Vec::with_capacity(ROUNDS as usize);
    for i in 1..=ROUNDS {
        let started = Instant::now();
        let step = cell.handle(i * HOUR_MS, EventKind::Timer(i)).await.unwrap();
        times.push(started.elapsed());
        assert!(!step.quarantined);
    }
    times.sort();
    times
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = sandbox(SandboxLimits::default());
        let module = load(&sandbox, "faulty");
        let restart = RestartPolicy {
            max_restarts: u32::MAX,
            ..quick_restarts(0)
        };

        let mut trapping = start_cell(
            module.clone(),
            json!({"fault": "unreachable", "after_calls": 2}),
            restart.clone(),
            1,
        )
        .await;
        let traps = time_events(&mut trapping).await;
        assert_eq!(trapping.stats().restarts, ROUNDS, "one restart per event");

        let mut healthy = start_cell(module, json!({}), restart, 1).await;
        let plain = time_events(&mut healthy).await;

        println!();
        println!(
            "| measurement (cell.handle, checkpoint every event) | value        | target     |"
        );
        println!(
            "|---------------------------------------------------|--------------|------------|"
        );
        for (label, times, p, target) in [
            ("trap → next event handled, p50", &traps, 0.50, "—"),
            ("trap → next event handled, p90", &traps, 0.90, "—"),
            ("trap → next event handled, p99", &traps, 0.99, "≤ 1000 µs"),
            ("event without a fault, p50", &plain, 0.50, "—"),
            ("event without a fault, p99", &plain, 0.99, "—"),
        ] {
            println!(
                "| {label:<49} | {:>9.1} µs | {target:<10} |",
                percentile(times, p).as_secs_f64() * 1e6
            );
        }
        println!(
            "| rounds                                            | {ROUNDS:>12} | —          |"
        );
    });
}
