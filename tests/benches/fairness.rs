//! Fairness benchmark: a light strategy's per-event latency while
//! CPU-heavy strategies (the `faulty` fixture burning ~90 ms of CPU per
//! event) run beside it on the same two tokio worker threads — more heavy
//! strategies than workers, so without the epoch deadline yielding to the
//! runtime the light one would wait for a heavy call to finish. The light
//! one's events arrive every 2 ms; each latency runs from arrival to
//! handled. Prints p50, p99 and max, with and without the heavy strategies.
//!
//! Run: `cargo bench -p polybot-tests --bench fairness`; `POLYBOT_BENCH_HOGS=3`
//! sets how many heavy strategies run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use polybot_host::contract::EventKind;
use polybot_host::sandbox::SandboxLimits;
use polybot_host::supervisor::Cell;
use polybot_tests::{load, quick_restarts, sandbox, start_cell};
use serde_json::json;

const EVENTS: u64 = 1_000;
/// How often an event reaches the light strategy.
const ARRIVAL: Duration = Duration::from_millis(2);
const HOUR_MS: u64 = 3_600_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The light strategy's events arrive every [`ARRIVAL`]; each one's latency
/// runs from when it was due to when it was handled, so time spent waiting
/// for a worker (or behind earlier events) counts.
async fn light_latencies(cell: &mut Cell) -> Vec<Duration> {
    let mut times = Vec::with_capacity(EVENTS as usize);
    let mut arrivals = tokio::time::interval(ARRIVAL);
    arrivals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 1..=EVENTS {
        let due = arrivals.tick().await;
        cell.handle(i * HOUR_MS, EventKind::Timer(i)).await.unwrap();
        times.push(due.elapsed());
    }
    times.sort();
    times
}

fn main() {
    let hogs: usize = std::env::var("POLYBOT_BENCH_HOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = polybot_host::sandbox::runtime_builder()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let limits = SandboxLimits {
            call_deadline: Duration::from_secs(5),
            ..SandboxLimits::default()
        };
        let sandbox = sandbox(limits);
        let faulty = load(&sandbox, "faulty");
        let momentum = load(&sandbox, "momentum");

        // Calibrate: how many spins make ~90 ms of CPU on this machine.
        let probe_spins = 20_000_000u64;
        let mut probe = start_cell(
            faulty.clone(),
            json!({"spins_per_event": probe_spins}),
            quick_restarts(0),
            1_000_000,
        )
        .await;
        probe.handle(HOUR_MS, EventKind::Timer(1)).await.unwrap();
        let started = Instant::now();
        probe
            .handle(2 * HOUR_MS, EventKind::Timer(2))
            .await
            .unwrap();
        let per_spin = started.elapsed().as_secs_f64() / probe_spins as f64;
        let spins = (0.090 / per_spin) as u64;

        let mut light = start_cell(momentum, json!({}), quick_restarts(0), 1_000_000).await;
        let alone = light_latencies(&mut light).await;

        let stop = Arc::new(AtomicBool::new(false));
        let mut heavy_tasks = Vec::new();
        for _ in 0..hogs {
            let cell = start_cell(
                faulty.clone(),
                json!({"spins_per_event": spins}),
                quick_restarts(0),
                1_000_000,
            )
            .await;
            let stop = stop.clone();
            heavy_tasks.push(tokio::spawn(async move {
                let mut cell = cell;
                let mut i = 0;
                let mut calls = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let started = Instant::now();
                    cell.handle(i * HOUR_MS, EventKind::Timer(i)).await.unwrap();
                    calls.push(started.elapsed());
                }
                calls
            }));
        }
        // Let the heavy ones get going before measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let beside = tokio::spawn(async move {
            let mut light = light;
            light_latencies(&mut light).await
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut heavy_calls = Vec::new();
        for task in heavy_tasks {
            heavy_calls.extend(task.await.unwrap());
        }
        heavy_calls.sort();

        println!(
            "fairness benchmark: 2 tokio workers, {hogs} heavy strategies ({spins} spins per event)"
        );
        println!("| light strategy (momentum), per event | p50 | p99 | max |");
        println!("| --- | --- | --- | --- |");
        for (label, times) in [("alone", &alone), ("beside the heavy ones", &beside)] {
            println!(
                "| {label} | {:.2} ms | {:.2} ms | {:.2} ms |",
                percentile(times, 0.5).as_secs_f64() * 1e3,
                percentile(times, 0.99).as_secs_f64() * 1e3,
                times.last().unwrap().as_secs_f64() * 1e3
            );
        }
        if !heavy_calls.is_empty() {
            println!(
                "| (heavy strategy's own calls: p50 {:.1} ms over {} calls) | | | |",
                percentile(&heavy_calls, 0.5).as_secs_f64() * 1e3,
                heavy_calls.len()
            );
        }
    });
}
