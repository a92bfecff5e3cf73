//! Sandbox benchmark: prints a table.
//!
//! - trap → running again: a fresh instance from the pre-instantiated module
//!   plus `restore` of momentum's snapshot (what the supervisor does after a
//!   fault), p50 / p99 over many rounds;
//! - per-event cost of calling momentum through the sandbox, against the same
//!   momentum code compiled natively, and the ratio;
//! - a supervisor cell's full per-event path (journal + checkpoints + call).
//!
//! Run: `cargo bench -p polybot-tests --bench sandbox`

use std::time::{Duration, Instant};

use polybot_host::contract::{Book, Event, EventKind, Level};
use polybot_host::sandbox::SandboxLimits;
use polybot_strategy::Strategy;
use polybot_tests::{load, quick_restarts, sandbox, start_cell};

const EVENTS: u64 = 200_000;
const RECOVERIES: usize = 2_000;

fn mids() -> impl Iterator<Item = (u64, f64)> {
    let mut mid: f64 = 0.5;
    (0..EVENTS).map(move |i| {
        // A zig-zag with trends long enough to trigger orders.
        mid += if (i / 40) % 2 == 0 { 0.001 } else { -0.001 };
        (i, mid.clamp(0.05, 0.95))
    })
}

fn host_event(seq: u64, mid: f64) -> Event {
    Event {
        seq: seq + 1,
        timestamp_ms: seq * 200,
        kind: EventKind::Book(Book {
            market: format!("sim-{}", seq % 3),
            bids: vec![
                Level {
                    price: mid - 0.005,
                    size: 100.0,
                },
                Level {
                    price: mid - 0.015,
                    size: 200.0,
                },
            ],
            asks: vec![
                Level {
                    price: mid + 0.005,
                    size: 100.0,
                },
                Level {
                    price: mid + 0.015,
                    size: 200.0,
                },
            ],
        }),
    }
}

fn guest_event(seq: u64, mid: f64) -> polybot_strategy::Event {
    use polybot_strategy as s;
    s::Event {
        seq: seq + 1,
        timestamp_ms: seq * 200,
        kind: s::EventKind::Book(s::Book {
            market: format!("sim-{}", seq % 3),
            bids: vec![
                s::Level {
                    price: mid - 0.005,
                    size: 100.0,
                },
                s::Level {
                    price: mid - 0.015,
                    size: 200.0,
                },
            ],
            asks: vec![
                s::Level {
                    price: mid + 0.005,
                    size: 100.0,
                },
                s::Level {
                    price: mid + 0.015,
                    size: 200.0,
                },
            ],
        }),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = sandbox(SandboxLimits::default());
        let module = load(&sandbox, "momentum");
        let config = r#"{"cooldown_ms": 0}"#;

        // Per-event cost through the sandbox.
        let mut instance = module.instantiate("bench").await.unwrap();
        instance.init(config).await.unwrap().unwrap();
        let events: Vec<Event> = mids().map(|(i, m)| host_event(i, m)).collect();
        let started = Instant::now();
        let mut actions = 0usize;
        for event in &events {
            actions += instance.on_event(event).await.unwrap().len();
        }
        let sandboxed = started.elapsed() / EVENTS as u32;
        let snapshot = instance.snapshot().await.unwrap();

        // The same momentum code, native.
        let mut native = momentum::Momentum::new(serde_json::from_str(config).unwrap()).unwrap();
        let guest_events: Vec<polybot_strategy::Event> =
            mids().map(|(i, m)| guest_event(i, m)).collect();
        let started = Instant::now();
        let mut native_actions = 0usize;
        let mut out = Vec::new();
        for event in &guest_events {
            out.clear();
            native.on_event(event, &mut out);
            native_actions += out.len();
        }
        let native_cost = started.elapsed() / EVENTS as u32;
        assert_eq!(
            actions, native_actions,
            "sandboxed and native momentum disagree"
        );

        // Trap → running again: new instance + restore.
        let mut recoveries = Vec::with_capacity(RECOVERIES);
        for _ in 0..RECOVERIES {
            let started = Instant::now();
            let mut fresh = module.instantiate("bench").await.unwrap();
            fresh.restore(&snapshot, 1).await.unwrap().unwrap();
            recoveries.push(started.elapsed());
            drop(fresh);
        }
        recoveries.sort();

        // A supervisor cell's whole per-event path.
        let mut cell = start_cell(
            module.clone(),
            serde_json::json!({"cooldown_ms": 0}),
            quick_restarts(10),
            1000,
        )
        .await;
        let started = Instant::now();
        for event in &events {
            cell.handle(event.timestamp_ms, event.kind.clone())
                .await
                .unwrap();
        }
        let cell_cost = started.elapsed() / EVENTS as u32;

        println!();
        println!("| measurement                                   | value        | target     |");
        println!("|-----------------------------------------------|--------------|------------|");
        println!(
            "| trap → running (instantiate + restore), p50   | {:>9.1} µs | —          |",
            percentile(&recoveries, 0.50).as_secs_f64() * 1e6
        );
        println!(
            "| trap → running (instantiate + restore), p99   | {:>9.1} µs | ≤ 1000 µs  |",
            percentile(&recoveries, 0.99).as_secs_f64() * 1e6
        );
        println!(
            "| momentum per event, sandboxed                 | {:>9.3} µs | ≤ 2 µs     |",
            sandboxed.as_secs_f64() * 1e6
        );
        println!(
            "| momentum per event, native                    | {:>9.3} µs | —          |",
            native_cost.as_secs_f64() * 1e6
        );
        println!(
            "| sandboxed / native                            | {:>9.1} ×  | —          |",
            sandboxed.as_secs_f64() / native_cost.as_secs_f64()
        );
        println!(
            "| supervisor cell per event (journal + call)    | {:>9.3} µs | —          |",
            cell_cost.as_secs_f64() * 1e6
        );
        println!(
            "| snapshot size                                 | {:>9} B  | —          |",
            snapshot.len()
        );
        println!(
            "| orders placed over {EVENTS} events            | {:>12} | —          |",
            actions
        );
    });
}
