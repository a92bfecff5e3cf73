//! The durable record of a hot swap: the checkpoint of the old module's
//! state at the swap's seq, written once the new module is ready (off the
//! swap pause) and before the next event is journaled.
//!
//! - a swap cut short while that checkpoint is written (the process gone
//!   mid-swap) leaves the store as before the swap: a cell started again
//!   from it resumes exactly, as an uninterrupted run;
//! - a swap whose checkpoint the store refuses is refused, the old module
//!   goes on and the refusal is a system event;
//! - after a completed swap, a crash and a start of the new module from the
//!   store resume exactly (the checkpoint is there for it).
//!
//! All in-process, against a real in-memory store whose checkpoint writes
//! can be refused or stalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use polybot_host::sandbox::{SandboxLimits, StrategyModule};
use polybot_host::store::StateStore;
use polybot_host::supervisor::{
    Cell, CellSpec, CellState, CheckpointPolicy, PlannedAction, SwapBoard,
};
use polybot_tests::sim::{CheckpointWrites, FaultyStore, Injected, StoreFaults};
use polybot_tests::{guest, load, momentum_books, quick_restarts, sandbox, start_cell};
use serde_json::json;

const SWAP_AT: usize = 150;

fn config() -> serde_json::Value {
    json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0})
}

fn store() -> Arc<FaultyStore> {
    let none = StoreFaults {
        fail: 0.0,
        slow_chance: 0.0,
        slow: Duration::ZERO,
        outage_chance: 0.0,
        outage_len: 0,
    };
    Arc::new(FaultyStore::new(1, none, Arc::new(Injected::default())))
}

/// A cell of `module` on `store` (the name the reference run uses too).
async fn cell_on(module: StrategyModule, store: Arc<FaultyStore>) -> Cell {
    let spec = CellSpec {
        name: "under-test".into(),
        module,
        config_json: config().to_string(),
        restart: quick_restarts(10),
        checkpoint: CheckpointPolicy {
            every_events: 40,
            every_event_time: Duration::from_secs(24 * 3600),
        },
    };
    match Cell::start(spec, store).await {
        Ok(cell) => cell,
        Err(e) => panic!("cell did not start: {e}"),
    }
}

/// The uninterrupted run: every event's actions and the final state.
async fn reference(module: StrategyModule) -> (Vec<Vec<PlannedAction>>, Vec<u8>) {
    let mut cell = start_cell(module, config(), quick_restarts(10), 40).await;
    let mut actions = Vec::new();
    for (i, book) in momentum_books().into_iter().enumerate() {
        actions.push(cell.handle(i as u64 * 1000, book).await.unwrap().actions);
    }
    cell.stop().await;
    (actions, newest_state(cell.store().as_ref()).await)
}

async fn newest_state(store: &dyn StateStore) -> Vec<u8> {
    let checkpoints = store.checkpoints("under-test").await.unwrap();
    let newest = checkpoints.iter().max_by_key(|c| c.seq).unwrap();
    assert!(newest.is_intact());
    newest.state.clone()
}

/// Feeds books `from..to` to `cell`, checking each event's actions against
/// the uninterrupted run's.
async fn feed(cell: &mut Cell, from: usize, to: usize, expected: &[Vec<PlannedAction>]) {
    let books = momentum_books();
    for (i, book) in books.iter().enumerate().take(to).skip(from) {
        let step = cell.handle(i as u64 * 1000, book.clone()).await.unwrap();
        assert_eq!(step.seq, i as u64 + 1);
        assert_eq!(step.actions, expected[i], "event {}", i + 1);
    }
}

#[tokio::test]
async fn a_swap_cut_short_while_its_checkpoint_is_written_resumes_exactly() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let (expected, final_state) = reference(module.clone()).await;

    let store = store();
    let mut cell = cell_on(module.clone(), store.clone()).await;
    let board = SwapBoard::default();
    cell.set_swap_board(board.clone());
    feed(&mut cell, 0, SWAP_AT, &expected).await;
    let checkpoints_before = store.checkpoints("under-test").await.unwrap().len();

    // The new module is ready; the swap's checkpoint never finishes and the
    // process is gone (the cell dropped mid-swap).
    store.set_checkpoint_writes(CheckpointWrites::Stall);
    let replacement = sandbox.load(&guest("momentum")).unwrap();
    {
        let swap = cell.swap_module(replacement);
        tokio::pin!(swap);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.injected.counts().get("checkpoint-stalled") != Some(&1) {
            assert!(
                Instant::now() < deadline,
                "the swap did not reach its checkpoint"
            );
            tokio::select! {
                outcome = &mut swap => panic!("the swap finished: {outcome:?}"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }
    drop(cell);
    assert!(
        board.status().last_swap.is_none(),
        "no swap is shown for a swap that did not finish"
    );
    assert_eq!(
        store.checkpoints("under-test").await.unwrap().len(),
        checkpoints_before
    );

    // Started again from the store: the same actions and state as the
    // uninterrupted run.
    store.set_checkpoint_writes(CheckpointWrites::Keep);
    let mut resumed = cell_on(module, store.clone()).await;
    assert_eq!(resumed.last_seq(), SWAP_AT as u64);
    feed(&mut resumed, SWAP_AT, expected.len(), &expected).await;
    resumed.stop().await;
    assert_eq!(newest_state(store.as_ref()).await, final_state);
}

#[tokio::test]
async fn a_swap_whose_checkpoint_is_refused_is_refused_and_the_old_module_goes_on() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let (expected, final_state) = reference(module.clone()).await;

    let store = store();
    let mut cell = cell_on(module, store.clone()).await;
    let board = SwapBoard::default();
    cell.set_swap_board(board.clone());
    feed(&mut cell, 0, SWAP_AT, &expected).await;
    store.set_checkpoint_writes(CheckpointWrites::Refuse);
    let replacement = sandbox.load(&guest("momentum")).unwrap();
    let refused = cell.swap_module(replacement).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("checkpoint before the swap failed"),
        "{refused}"
    );
    store.set_checkpoint_writes(CheckpointWrites::Keep);
    assert_eq!(cell.state(), CellState::Running);
    let record = board.status().last_swap.expect("the refusal is shown");
    assert_eq!(record.kind, "refused");
    assert_eq!(record.at_seq, SWAP_AT as u64);
    let events = store.system_events(1000).await.unwrap();
    assert!(
        events.iter().any(|e| e.event_type == "hot-swap-refused"
            && e.message.contains("checkpoint before the swap failed")),
        "the refusal is a system event"
    );
    feed(&mut cell, SWAP_AT, expected.len(), &expected).await;
    cell.stop().await;
    assert_eq!(newest_state(store.as_ref()).await, final_state);
}

#[tokio::test]
async fn after_a_swap_a_crash_resumes_the_new_module_exactly_from_the_swap_checkpoint() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let (expected, final_state) = reference(module.clone()).await;

    let store = store();
    let mut cell = cell_on(module, store.clone()).await;
    feed(&mut cell, 0, SWAP_AT, &expected).await;
    let replacement = sandbox.load(&guest("momentum")).unwrap();
    cell.swap_module(replacement.clone()).await.expect("swap");
    let at_swap = store.checkpoints("under-test").await.unwrap();
    assert_eq!(
        at_swap.iter().map(|c| c.seq).max(),
        Some(SWAP_AT as u64),
        "the swap's checkpoint is written before the next event"
    );
    // The new module handles a few events (none checkpointed), then the
    // process is gone.
    feed(&mut cell, SWAP_AT, SWAP_AT + 7, &expected).await;
    drop(cell);

    let mut resumed = cell_on(replacement, store.clone()).await;
    assert_eq!(resumed.last_seq(), SWAP_AT as u64 + 7);
    assert_eq!(resumed.stats().divergences, 0);
    feed(&mut resumed, SWAP_AT + 7, expected.len(), &expected).await;
    resumed.stop().await;
    assert_eq!(newest_state(store.as_ref()).await, final_state);
}
