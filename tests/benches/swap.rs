//! Hot-swap benchmark: the swap pause with a 1 MiB strategy state, through
//! the real cell (in-memory store). Prints a table.
//!
//! The `faulty` fixture carries 1 MiB of ballast in its state from event 1
//! on. Each round handles an event with the live module, swaps in a fresh
//! load of the module directly (snapshot of the old state, a new instance
//! restoring it, then the checkpoint of that state), and handles the next
//! event with the new module. Two figures per round:
//! - the swap pause the cell reports (the old module's last event handled →
//!   the new module ready for the next one), as shown in the API;
//! - the wall time from the return of the old module's last event to the
//!   return of the new module's first one (the pause plus the checkpoint,
//!   and handling and journaling that event).
//!
//! Target: pause ≤ 5 ms. Run: `cargo bench -p polybot-tests --bench swap`

use std::time::{Duration, Instant};

use polybot_host::contract::EventKind;
use polybot_host::sandbox::SandboxLimits;
use polybot_host::supervisor::SwapBoard;
use polybot_tests::{load, quick_restarts, sandbox, start_cell};
use serde_json::json;

const ROUNDS: u64 = 60;
const STATE_BYTES: usize = 1 << 20;

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
        cell.handle(1, EventKind::Timer(1)).await.unwrap();
        let mut pauses = Vec::new();
        let mut gaps = Vec::new();
        let mut state_bytes = 0;
        for round in 0..ROUNDS {
            let seq = 2 + round * 2;
            cell.handle(seq, EventKind::Timer(seq)).await.unwrap();
            let last_old = Instant::now();
            let fresh = sandbox.load(module.path()).unwrap();
            let loaded = last_old.elapsed();
            cell.swap_module(fresh).await.expect("swap");
            cell.handle(seq + 1, EventKind::Timer(seq + 1))
                .await
                .unwrap();
            // Loading (compiling) the module happens before a swap is asked
            // for (the API loads and checks it), so it is not in the gap.
            gaps.push(last_old.elapsed() - loaded);
            let record = board.status().last_swap.expect("a swap record");
            pauses.push(Duration::from_micros(record.pause_us.expect("a pause")));
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
        pauses.sort();
        gaps.sort();
        println!("| swap, state {state_bytes} bytes, {ROUNDS} rounds | p50 | p99 | max |");
        println!("|---|---|---|---|");
        for (what, times) in [
            ("swap pause (as reported)", &pauses),
            ("old's last event returned → new's first returned", &gaps),
        ] {
            println!(
                "| {what} | {:.2} ms | {:.2} ms | {:.2} ms |",
                percentile(times, 0.5).as_secs_f64() * 1e3,
                percentile(times, 0.99).as_secs_f64() * 1e3,
                times.last().unwrap().as_secs_f64() * 1e3
            );
        }
    });
}
