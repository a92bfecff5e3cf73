//! Hot-swap benchmark: the swap pause with a 1 MiB strategy state, through
//! the real cell (in-memory store), on a two-worker runtime as the host
//! runs. Prints a table.
//!
//! The `faulty` fixture carries 1 MiB of ballast in its state from event 1
//! on. Each round swaps in a fresh load of the module directly, in the two
//! ways a swap is done:
//! - asked for on the cell's channel, as the API, `serve`'s reload and
//!   `run --watch` ask: the state is snapshotted between two events, the new
//!   instance restores it on another task while the old module goes on
//!   handling events, then catches up with them and takes over;
//! - called on the cell (`Cell::swap_module`, the plain way a shadow's
//!   promotion or a module that cannot read the state takes): snapshot, new
//!   instance and restore between two events.
//!
//! Figures per round: the swap pause the cell reports (the time events
//! waited for the swap: the snapshot and the take-over), as shown in the
//! API; and the longest wall time between the returns of two consecutive
//! events while the swap was under way (handling and journaling included).
//!
//! Target: pause ≤ 5 ms. Run: `cargo bench -p polybot-tests --bench swap`

use std::time::{Duration, Instant};

use polybot_host::contract::EventKind;
use polybot_host::sandbox::SandboxLimits;
use polybot_host::supervisor::{SwapBoard, SwapMode, SwapRequest};
use polybot_tests::{load, quick_restarts, sandbox, start_cell};
use serde_json::json;

const ROUNDS: u64 = 60;
const STATE_BYTES: usize = 1 << 20;
/// Events a prepared swap may take to be done before the round fails.
const MAX_EVENTS: u64 = 100_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn row(what: &str, times: &mut [Duration]) {
    times.sort();
    println!(
        "| {what} | {:.2} ms | {:.2} ms | {:.2} ms |",
        percentile(times, 0.5).as_secs_f64() * 1e3,
        percentile(times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = sandbox(SandboxLimits::default());
        let module = load(&sandbox, "faulty");
        let mut cell = start_cell(
            module.clone(),
            json!({"fault": "huge-snapshot", "at_seq": [1], "bytes": STATE_BYTES}),
            quick_restarts(3),
            1_000_000,
        )
        .await;
        let board = SwapBoard::default();
        cell.set_swap_board(board.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        cell.take_swaps_from(rx);
        let mut seq = 1;
        cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
        let mut state_bytes = 0;
        let (mut pauses, mut gaps) = (Vec::new(), Vec::new());
        let (mut plain_pauses, mut plain_gaps) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            // Asked for on the channel.
            seq += 1;
            cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
            let fresh = sandbox.load(module.path()).unwrap();
            let (answer, mut outcome) = tokio::sync::oneshot::channel();
            tx.send(SwapRequest::Swap {
                module: fresh,
                mode: SwapMode::Direct,
                config: None,
                answer: Some(answer),
            })
            .unwrap();
            let mut last = Instant::now();
            let mut longest = Duration::ZERO;
            let first = seq;
            loop {
                seq += 1;
                assert!(seq - first < MAX_EVENTS, "the swap is not done");
                cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
                longest = longest.max(last.elapsed());
                last = Instant::now();
                if let Ok(done) = outcome.try_recv() {
                    done.expect("swap");
                    break;
                }
            }
            // The event the new module handles first.
            seq += 1;
            cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
            gaps.push(longest.max(last.elapsed()));
            let record = board.status().last_swap.expect("a swap record");
            pauses.push(Duration::from_micros(record.pause_us.expect("a pause")));

            // The plain way.
            seq += 1;
            cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
            let fresh = sandbox.load(module.path()).unwrap();
            let last_old = Instant::now();
            cell.swap_module(fresh).await.expect("swap");
            seq += 1;
            cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
            plain_gaps.push(last_old.elapsed());
            let record = board.status().last_swap.expect("a swap record");
            plain_pauses.push(Duration::from_micros(record.pause_us.expect("a pause")));

            if state_bytes == 0 {
                let checkpoints = cell.store().checkpoints("under-test").await.unwrap();
                state_bytes = checkpoints
                    .iter()
                    .max_by_key(|c| c.seq)
                    .map_or(0, |c| c.state.len());
            }
        }
        assert!(
            state_bytes >= STATE_BYTES,
            "the state is {state_bytes} bytes"
        );
        println!("| swap, state {state_bytes} bytes, {ROUNDS} rounds | p50 | p99 | max |");
        println!("|---|---|---|---|");
        row("asked for: swap pause (as reported)", &mut pauses);
        row("asked for: longest gap between two events", &mut gaps);
        row("plain: swap pause (as reported)", &mut plain_pauses);
        row(
            "plain: old's last event → new's first returned",
            &mut plain_gaps,
        );
    });
}
