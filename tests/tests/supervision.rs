//! A strategy that traps, loops or exhausts memory is contained and recovered
//! with its state intact; repeated faults end in `fatal`; a poison event is
//! quarantined. All in-process: the test process surviving is part of the proof.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use polybot_host::contract::EventKind;
use polybot_host::sandbox::SandboxLimits;
use polybot_host::store::StoreError;
use polybot_host::supervisor::{Cell, CellError, CellState};
use polybot_tests::{load, momentum_books, quick_restarts, sandbox, start_cell};
use serde_json::json;

/// The `faulty` fixture's state, read from the cell's newest checkpoint.
async fn faulty_state(cell: &Cell) -> serde_json::Value {
    let checkpoints = cell
        .store()
        .checkpoints(cell.name())
        .await
        .expect("checkpoints");
    let newest = checkpoints.first().expect("a checkpoint");
    assert!(newest.is_intact());
    serde_json::from_slice(&newest.state).expect("faulty state is JSON")
}

/// Records every state change the cell goes through.
fn watch(cell: &mut Cell) -> Arc<Mutex<Vec<CellState>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    cell.on_state_change(Arc::new(move |state| sink.lock().unwrap().push(state)));
    seen
}

async fn feed(cell: &mut Cell, n: u64) -> Vec<polybot_host::supervisor::Step> {
    let mut steps = Vec::new();
    for i in 0..n {
        steps.push(
            cell.handle(1_000 + i, EventKind::Timer(i))
                .await
                .expect("handled"),
        );
    }
    steps
}

fn assert_recovered(states: &[CellState]) {
    // A fault after a handled event restarts at once, without a backoff.
    let recovered = states
        .windows(2)
        .any(|w| w == [CellState::Recovering, CellState::Running]);
    assert!(recovered, "expected recovering → running in {states:?}");
}

/// A transient fault every `after_calls` calls of an instance; checkpoints every 4 events.
async fn transient_fault_is_recovered_exactly(fault: &str, limits: SandboxLimits) -> Cell {
    let sandbox = sandbox(limits);
    let module = load(&sandbox, "faulty");
    let mut cell = start_cell(
        module,
        json!({"fault": fault, "after_calls": 7}),
        quick_restarts(20),
        4,
    )
    .await;
    let states = watch(&mut cell);
    let steps = feed(&mut cell, 30).await;
    assert!(
        steps.iter().all(|s| !s.quarantined),
        "a transient fault must not quarantine"
    );
    assert!(cell.stats().restarts >= 3, "stats: {:?}", cell.stats());
    assert_eq!(cell.state(), CellState::Running);
    assert_recovered(&states.lock().unwrap());
    cell.stop().await;
    let state = faulty_state(&cell).await;
    // Every event counted exactly once: the count continued across restarts.
    assert_eq!(state["count"], 30, "state: {state}");
    assert_eq!(state["last_seq"], 30);
    cell
}

/// The state in the cell's newest checkpoint (its final one once stopped).
async fn newest_state(cell: &Cell) -> Vec<u8> {
    cell.store().checkpoints("under-test").await.unwrap()[0]
        .state
        .clone()
}

#[tokio::test]
async fn panic_is_contained_and_state_continues() {
    let cell = transient_fault_is_recovered_exactly("panic", SandboxLimits::default()).await;
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(
        fault.contains("trapped") && fault.contains("configured panic"),
        "{fault}"
    );
}

#[tokio::test]
async fn unreachable_is_contained_and_state_continues() {
    let cell = transient_fault_is_recovered_exactly("unreachable", SandboxLimits::default()).await;
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(fault.contains("trapped"), "{fault}");
}

#[tokio::test]
async fn deadline_overrun_is_contained_and_state_continues() {
    let limits = SandboxLimits {
        call_deadline: Duration::from_millis(30),
        ..SandboxLimits::default()
    };
    let cell = transient_fault_is_recovered_exactly("loop", limits).await;
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(fault.contains("deadline"), "{fault}");
}

#[tokio::test]
async fn memory_limit_is_contained_and_state_continues() {
    let limits = SandboxLimits {
        memory_bytes: 16 << 20,
        ..SandboxLimits::default()
    };
    let cell = transient_fault_is_recovered_exactly("hog", limits).await;
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(fault.contains("memory limit"), "{fault}");
}

#[tokio::test]
async fn a_leak_hits_the_cap_and_a_fresh_instance_gets_past_it() {
    let sandbox = sandbox(SandboxLimits {
        memory_bytes: 16 << 20,
        ..SandboxLimits::default()
    });
    let module = load(&sandbox, "faulty");
    // 2 MiB kept per event outside the state: the cap is hit every few events.
    let mut cell = start_cell(
        module,
        json!({"leak_bytes": 2 << 20}),
        quick_restarts(50),
        2,
    )
    .await;
    feed(&mut cell, 24).await;
    assert!(cell.stats().restarts >= 2, "stats: {:?}", cell.stats());
    assert!(
        cell.stats()
            .last_fault
            .as_deref()
            .unwrap_or("")
            .contains("memory limit")
    );
    cell.stop().await;
    assert_eq!(faulty_state(&cell).await["count"], 24);
}

#[tokio::test]
async fn poison_event_is_quarantined_and_the_strategy_goes_on() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "at_seq": [5]}),
        quick_restarts(10),
        3,
    )
    .await;
    let steps = feed(&mut cell, 12).await;
    let quarantined: Vec<u64> = steps
        .iter()
        .filter(|s| s.quarantined)
        .map(|s| s.seq)
        .collect();
    assert_eq!(quarantined, vec![5]);
    assert_eq!(cell.stats().quarantined, 1);
    assert_eq!(cell.state(), CellState::Running);
    let events = cell.store().system_events(1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "quarantine" && e.message.contains("event 5")),
        "{events:?}"
    );
    cell.stop().await;
    // Eleven events counted: the poison one is skipped, in replay too.
    let state = faulty_state(&cell).await;
    assert_eq!(state["count"], 11, "state: {state}");
    assert_eq!(state["last_seq"], 12);
}

#[tokio::test]
async fn too_many_restarts_in_the_window_is_fatal() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    // Every instance faults on its first call: nothing can make progress.
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "after_calls": 1}),
        quick_restarts(4),
        1,
    )
    .await;
    let mut fatal = None;
    for i in 0..10 {
        match cell.handle(i, EventKind::Timer(i)).await {
            Ok(_) => {}
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    let fatal = fatal.expect("the cell went fatal");
    assert!(
        matches!(
            fatal,
            CellError::Fatal {
                restarts: 5,
                limit: 4,
                ..
            }
        ),
        "{fatal}"
    );
    assert_eq!(cell.state(), CellState::Fatal);
    // Fatal is final: later events are refused the same way.
    assert!(matches!(
        cell.handle(99, EventKind::Timer(99)).await,
        Err(CellError::Fatal { .. })
    ));
    let events = cell.store().system_events(1000).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == "fatal"));
}

#[tokio::test]
async fn restarts_spread_over_event_time_are_not_fatal_however_fast_the_run() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    // A fault every 5th call of an instance, and at most 2 restarts per minute
    // of event time. The events are 31 s of event time apart but handled as
    // fast as the host goes: the window is judged on event time, as a
    // real-time run would see it.
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "after_calls": 5}),
        quick_restarts(2),
        1,
    )
    .await;
    for i in 0..40 {
        cell.handle(1_000 + i * 31_000, EventKind::Timer(i))
            .await
            .expect("never fatal");
    }
    assert!(cell.stats().restarts >= 8, "stats: {:?}", cell.stats());
    assert_eq!(cell.state(), CellState::Running);
}

#[tokio::test]
async fn restarts_crowded_in_event_time_are_fatal() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    // The same strategy with its events 1 s of event time apart: more than
    // 2 restarts within a minute of event time.
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "after_calls": 5}),
        quick_restarts(2),
        1,
    )
    .await;
    let mut fatal = None;
    for i in 0..40 {
        if let Err(e) = cell.handle(1_000 + i * 1_000, EventKind::Timer(i)).await {
            fatal = Some(e);
            break;
        }
    }
    assert!(
        matches!(fatal, Some(CellError::Fatal { restarts: 3, .. })),
        "{fatal:?}"
    );
}

#[tokio::test]
async fn refused_snapshots_fall_back_to_replay_from_the_start() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "at_seq": [15], "reject_restore": true}),
        quick_restarts(10),
        2,
    )
    .await;
    // Event 15 forces restarts; every restore is refused, so recovery is init + full replay.
    feed(&mut cell, 40).await;
    assert!(cell.stats().restarts >= 2);
    assert!(
        cell.stats().replayed >= 28,
        "two full replays of 14 events: {:?}",
        cell.stats()
    );
    let events = cell.store().system_events(1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "checkpoint-rejected" && e.message.contains("refusing"))
    );
    assert!(events.iter().any(|e| e.event_type == "replay-from-start"));
    assert_eq!(cell.stats().divergences, 0);
    cell.stop().await;
    assert_eq!(faulty_state(&cell).await["count"], 39);
}

#[tokio::test]
async fn momentum_resumes_from_its_journal_to_the_uninterrupted_state() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let config = json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0});
    let books = momentum_books();

    // Uninterrupted reference run.
    let mut reference = start_cell(module.clone(), config.clone(), quick_restarts(10), 1000).await;
    let mut orders = 0;
    for (i, book) in books.iter().enumerate() {
        orders += reference
            .handle(i as u64 * 1000, book.clone())
            .await
            .unwrap()
            .actions
            .len();
    }
    assert!(orders > 0, "momentum placed no orders");
    reference.stop().await;

    // Same events, then a crash (no final checkpoint), then a new cell resumes.
    let mut crashed = start_cell(module.clone(), config.clone(), quick_restarts(10), 1000).await;
    for (i, book) in books.iter().enumerate() {
        crashed.handle(i as u64 * 1000, book.clone()).await.unwrap();
    }
    // A crash: the cell is dropped without stop() and its final checkpoint.
    let store = crashed.store().clone();
    drop(crashed);
    let spec = polybot_host::supervisor::CellSpec {
        name: "under-test".into(),
        module,
        config_json: config.to_string(),
        restart: quick_restarts(10),
        checkpoint: Default::default(),
    };
    let mut resumed = Cell::start(spec, store).await.expect("resumes");
    assert_eq!(resumed.last_seq(), 300);
    assert_eq!(
        resumed.stats().replayed,
        300,
        "replayed the journal after checkpoint 0"
    );
    assert_eq!(
        resumed.stats().divergences,
        0,
        "replay produced the recorded actions"
    );
    resumed.stop().await;

    let resumed_state = newest_state(&resumed).await;
    let reference_state = newest_state(&reference).await;
    assert_eq!(
        resumed_state, reference_state,
        "resumed state equals the uninterrupted one"
    );
}

/// A swap asked for on the cell's channel (as the API and `run --watch` ask)
/// is brought up beside the running module: the old module handles the
/// events that come meanwhile, the new one catches up with them and takes
/// over. Every event's actions and the final state equal an uninterrupted
/// run's; the swap is answered, recorded with its pause, and the events the
/// old module handled after the snapshot are counted before the new one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_asked_for_on_the_channel_is_prepared_beside_the_running_module() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let config = json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0});
    let books = momentum_books();

    let mut reference = start_cell(module.clone(), config.clone(), quick_restarts(10), 1000).await;
    let mut swapped = start_cell(module.clone(), config, quick_restarts(10), 1000).await;
    let board = polybot_host::supervisor::SwapBoard::default();
    swapped.set_swap_board(board.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    swapped.take_swaps_from(rx);
    let mut answer = None;
    let mut done_at = None;
    for (i, book) in books.iter().enumerate() {
        if i == 150 {
            let replacement = sandbox.load(&polybot_tests::guest("momentum")).unwrap();
            let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
            tx.send(polybot_host::supervisor::SwapRequest::Swap {
                module: replacement,
                mode: polybot_host::supervisor::SwapMode::Direct,
                config: None,
                answer: Some(answer_tx),
            })
            .unwrap();
            answer = Some(answer_rx);
        }
        let a = reference
            .handle(i as u64 * 1000, book.clone())
            .await
            .unwrap();
        let b = swapped.handle(i as u64 * 1000, book.clone()).await.unwrap();
        assert_eq!(a.actions, b.actions, "event {i}");
        if done_at.is_none()
            && let Some(rx) = answer.as_mut()
            && let Ok(outcome) = rx.try_recv()
        {
            outcome.expect("the swap is done");
            done_at = Some(i);
        }
    }
    if done_at.is_none() {
        // The new instance was still being made when the events ran out:
        // the end of the run finishes the swap.
        assert_eq!(swapped.refuse_pending_swaps("the run ended").await, 0);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), answer.unwrap())
            .await
            .expect("answered");
        outcome.expect("sent").expect("the swap is done");
    }
    reference.stop().await;
    swapped.stop().await;
    let (a, b) = (newest_state(&reference).await, newest_state(&swapped).await);
    assert_eq!(
        a, b,
        "the swapped cell's state equals the uninterrupted one"
    );
    let record = board.status().last_swap.expect("the swap is on the board");
    assert_eq!(record.kind, "swap");
    assert!(record.pause_us.is_some_and(|us| us > 0));
    assert!(
        record.at_seq >= 151,
        "the new module took over after the old one handled the event it was asked at: seq {}",
        record.at_seq
    );
}

#[tokio::test]
async fn hot_swap_mid_run_keeps_the_state_exact() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "momentum");
    let config = json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0});
    let books = momentum_books();

    let mut reference = start_cell(module.clone(), config.clone(), quick_restarts(10), 1000).await;
    let mut swapped = start_cell(module.clone(), config, quick_restarts(10), 1000).await;
    for (i, book) in books.iter().enumerate() {
        if i == 150 {
            // A new instance of the module takes over from a fresh checkpoint.
            let replacement = sandbox.load(&polybot_tests::guest("momentum")).unwrap();
            swapped.swap_module(replacement).await.expect("swap");
        }
        let a = reference
            .handle(i as u64 * 1000, book.clone())
            .await
            .unwrap();
        let b = swapped.handle(i as u64 * 1000, book.clone()).await.unwrap();
        assert_eq!(a.actions, b.actions, "event {i}");
    }
    reference.stop().await;
    swapped.stop().await;
    let (a, b) = (newest_state(&reference).await, newest_state(&swapped).await);
    assert_eq!(a, b);
    let events = swapped.store().system_events(1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "hot-swap" && e.message.contains("momentum"))
    );
}

#[tokio::test]
async fn a_hot_swap_that_cannot_take_over_is_refused_and_the_old_module_goes_on() {
    let sandbox = sandbox(SandboxLimits::default());
    let momentum = load(&sandbox, "momentum");
    let faulty = load(&sandbox, "faulty");
    let config = json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0});
    let books = momentum_books();
    let mut cell = start_cell(momentum, config, quick_restarts(10), 1000).await;
    for (i, book) in books.iter().take(100).enumerate() {
        cell.handle(i as u64 * 1000, book.clone()).await.unwrap();
    }
    // `faulty` cannot read momentum's state, and its init refuses momentum's config.
    let refused = cell.swap_module(faulty).await.unwrap_err();
    assert!(refused.to_string().contains("faulty.wasm"), "{refused}");
    assert_eq!(cell.info().name, "momentum");
    assert_eq!(cell.state(), CellState::Running);
    for (i, book) in books.iter().enumerate().skip(100) {
        cell.handle(i as u64 * 1000, book.clone())
            .await
            .expect("momentum goes on");
    }
    let events = cell.store().system_events(1000).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == "hot-swap-refused"));
}

/// The same, asked for on the channel: the prepared new instance cannot read
/// the state, so the swap falls back to the plain way, which refuses it; the
/// requester is told, and momentum's actions are an uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_swap_that_cannot_take_over_is_refused_and_the_old_module_goes_on() {
    let sandbox = sandbox(SandboxLimits::default());
    let momentum = load(&sandbox, "momentum");
    let faulty = load(&sandbox, "faulty");
    let config = json!({"lookback": 3, "threshold": 0.01, "cooldown_ms": 0});
    let books = momentum_books();
    let mut reference =
        start_cell(momentum.clone(), config.clone(), quick_restarts(10), 1000).await;
    let mut cell = start_cell(momentum, config, quick_restarts(10), 1000).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    cell.take_swaps_from(rx);
    let (answer, mut outcome) = tokio::sync::oneshot::channel();
    let mut answer = Some(answer);
    let mut refused = None;
    for (i, book) in books.iter().enumerate() {
        if i == 100 {
            tx.send(polybot_host::supervisor::SwapRequest::Swap {
                module: faulty.clone(),
                mode: polybot_host::supervisor::SwapMode::Direct,
                config: None,
                answer: None,
            })
            .unwrap();
            // A second request waits until the first is decided.
            tx.send(polybot_host::supervisor::SwapRequest::Swap {
                module: faulty.clone(),
                mode: polybot_host::supervisor::SwapMode::Direct,
                config: None,
                answer: answer.take(),
            })
            .unwrap();
        }
        let a = reference
            .handle(i as u64 * 1000, book.clone())
            .await
            .unwrap();
        let b = cell
            .handle(i as u64 * 1000, book.clone())
            .await
            .expect("momentum goes on");
        assert_eq!(a.actions, b.actions, "event {i}");
        if refused.is_none()
            && let Ok(told) = outcome.try_recv()
        {
            refused = Some(told.expect_err("refused"));
        }
    }
    assert_eq!(cell.refuse_pending_swaps("the run ended").await, 0);
    let refused = match refused {
        Some(reason) => reason,
        None => tokio::time::timeout(std::time::Duration::from_secs(10), outcome)
            .await
            .expect("answered")
            .expect("sent")
            .expect_err("refused"),
    };
    assert!(refused.contains("faulty.wasm"), "{refused}");
    assert_eq!(cell.info().name, "momentum");
    let events = cell.store().system_events(1000).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "hot-swap-refused")
            .count(),
        2,
        "both requests are recorded as refused"
    );
}

#[tokio::test]
async fn too_many_actions_for_one_event_is_a_fault() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let mut cell = start_cell(
        module,
        json!({"fault": "flood", "at_seq": [4]}),
        quick_restarts(10),
        2,
    )
    .await;
    let steps = feed(&mut cell, 8).await;
    assert!(steps[3].quarantined, "the flooding event is quarantined");
    assert!(steps.iter().all(|s| s.actions.len() <= 64));
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(
        fault.contains("returned 1000 actions") && fault.contains("limit is 64"),
        "{fault}"
    );
    cell.stop().await;
    assert_eq!(faulty_state(&cell).await["count"], 7);
}

/// Event types of the cell's system events, in order.
async fn system_events(cell: &Cell) -> Vec<polybot_host::store::SystemEvent> {
    cell.store().system_events(10_000).await.unwrap()
}

#[tokio::test]
async fn a_failed_first_checkpoint_drops_the_instance_and_no_event_takes_the_blame() {
    let sandbox = sandbox(SandboxLimits {
        call_deadline: Duration::from_millis(30),
        ..SandboxLimits::default()
    });
    let module = load(&sandbox, "faulty");
    // `snapshot` overruns its deadline for the state right after init only.
    let mut cell = start_cell(
        module,
        json!({"fault": "loop", "snapshot_fault_at": [0]}),
        quick_restarts(10),
        4,
    )
    .await;
    let steps = feed(&mut cell, 10).await;
    assert!(steps.iter().all(|s| !s.quarantined));
    let faults: Vec<String> = system_events(&cell)
        .await
        .into_iter()
        .filter(|e| e.event_type == "fault")
        .map(|e| e.message)
        .collect();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].contains("checkpoint after init") && faults[0].contains("deadline"),
        "{faults:?}"
    );
    assert!(
        !faults
            .iter()
            .any(|f| f.contains("event 1") || f.contains("cannot enter")),
        "{faults:?}"
    );
    cell.stop().await;
    let state = faulty_state(&cell).await;
    assert_eq!(state["count"], 10, "state: {state}");
}

#[tokio::test]
async fn a_snapshot_that_loses_state_is_rebuilt_from_an_older_start() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    // Snapshots forget `count`; every event returns a cancel naming `count`;
    // the checkpoint after event 8 traps, so event 9 needs a recovery, which
    // restores the (lossy) checkpoint at 4.
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "snapshot_fault_at": [8], "lossy_snapshot": true}),
        quick_restarts(20),
        4,
    )
    .await;
    let steps = feed(&mut cell, 20).await;
    assert_eq!(cell.stats().restarts, 1, "stats: {:?}", cell.stats());
    assert_eq!(cell.stats().divergences, 1, "stats: {:?}", cell.stats());
    assert_eq!(cell.state(), CellState::Running);
    // The state that acts is right: each event names its true count.
    for step in &steps {
        let cancel = step
            .actions
            .iter()
            .find_map(|a| match &a.action {
                polybot_host::contract::Action::CancelOrder(id) => Some(id.clone()),
                _ => None,
            })
            .expect("a cancel per event");
        assert_eq!(cancel, format!("count-{}", step.seq));
    }
    let events = system_events(&cell).await;
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "divergence" && e.message.contains("rebuilding from")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.event_type == "fatal"));
}

#[tokio::test]
async fn divergence_that_persists_from_seq_1_is_fatal() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    // Each event's actions name how many snapshots the instance took: no
    // replay reproduces them. The checkpoint after event 8 traps, so event 9
    // needs a recovery.
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "snapshot_fault_at": [8], "hidden_state": true}),
        quick_restarts(20),
        4,
    )
    .await;
    let mut error = None;
    for i in 0..20 {
        if let Err(e) = cell.handle(1_000 + i, EventKind::Timer(i)).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the cell went fatal");
    assert!(matches!(error, CellError::Diverged { .. }), "{error}");
    assert!(error.to_string().contains("even from init"), "{error}");
    assert_eq!(cell.state(), CellState::Fatal);
    assert!(matches!(
        cell.handle(99_999, EventKind::Timer(99)).await,
        Err(CellError::Diverged { .. })
    ));
    let events = system_events(&cell).await;
    let divergences = events
        .iter()
        .filter(|e| e.event_type == "divergence")
        .count();
    // From the newest checkpoint, then an older one, then init: the last is the fatal one.
    assert_eq!(divergences, 2, "{events:?}");
    assert_eq!(cell.stats().divergences, 3);
    assert!(events.iter().any(|e| e.event_type == "fatal"));
}

#[tokio::test]
async fn pending_timers_survive_a_restart_of_the_instance() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "after_calls": 3, "timers_per_event": 1, "timer_delay_ms": 10_000}),
        quick_restarts(10),
        1,
    )
    .await;
    // Events 1..=5 at 1 s apart; the instance traps on event 3 and restarts.
    for i in 1..=5u64 {
        cell.handle(i * 1_000, EventKind::Timer(0)).await.unwrap();
    }
    assert!(cell.stats().restarts >= 1);
    assert_eq!(cell.pending_timers(), 5);
    assert_eq!(cell.take_due_timers(10_999), vec![]);
    assert_eq!(
        cell.take_due_timers(13_000),
        vec![(11_000, 1_000), (12_000, 2_000), (13_000, 3_000)]
    );
    // Firing a timer removes it; the ones not yet fired stay pending.
    cell.handle(11_000, EventKind::Timer(1_000)).await.unwrap();
    assert_eq!(
        cell.pending_timers(),
        3,
        "timers 4, 5 and the one event 6 set"
    );
}

#[tokio::test]
async fn too_many_pending_timers_is_a_fault_of_the_event_that_set_them() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let restart = polybot_host::supervisor::RestartPolicy {
        max_pending_timers: 100,
        ..quick_restarts(20)
    };
    // 30 timers per event: the fourth event would leave 120 pending.
    let mut cell = start_cell(
        module,
        json!({"timers_per_event": 30, "timer_delay_ms": 60_000}),
        restart,
        100,
    )
    .await;
    let steps = feed(&mut cell, 5).await;
    let quarantined: Vec<u64> = steps
        .iter()
        .filter(|s| s.quarantined)
        .map(|s| s.seq)
        .collect();
    assert_eq!(quarantined, vec![4, 5]);
    assert_eq!(cell.pending_timers(), 90);
    let fault = cell.stats().last_fault.clone().unwrap_or_default();
    assert!(
        fault.contains("too many timers") && fault.contains("limit is 100"),
        "{fault}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_restart_is_immediate_and_repeated_faults_back_off() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let restart = polybot_host::supervisor::RestartPolicy {
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        ..quick_restarts(20)
    };
    // Event 3 is poison (three faults in a row); event 6 faults once (the
    // 3rd call of the instance that came back after the quarantine).
    let mut cell = start_cell(
        module,
        json!({"fault": "panic", "at_seq": [3], "after_calls": 3}),
        restart,
        1,
    )
    .await;
    let states = watch(&mut cell);
    cell.handle(1_000, EventKind::Timer(1)).await.unwrap();
    cell.handle(2_000, EventKind::Timer(2)).await.unwrap();
    // The clock is paused: only the backoffs move it.
    let started = tokio::time::Instant::now();
    let step = cell.handle(3_000, EventKind::Timer(3)).await.unwrap();
    assert!(step.quarantined);
    let poison = started.elapsed();
    // Faults 2 and 3 in a row waited at least 10 s and 20 s; the first none.
    assert!(poison >= Duration::from_secs(30), "{poison:?}");
    assert!(states.lock().unwrap().contains(&CellState::Backoff));
    states.lock().unwrap().clear();
    let started = tokio::time::Instant::now();
    for i in 4..=8 {
        cell.handle(i * 1_000, EventKind::Timer(i)).await.unwrap();
    }
    assert!(cell.stats().restarts >= 4, "stats: {:?}", cell.stats());
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "single faults restart at once"
    );
    assert!(!states.lock().unwrap().contains(&CellState::Backoff));
}

#[tokio::test]
async fn a_stop_request_ends_a_backoff_at_once() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let restart = polybot_host::supervisor::RestartPolicy {
        backoff_initial: Duration::from_secs(600),
        backoff_max: Duration::from_secs(600),
        ..quick_restarts(20)
    };
    let mut cell = start_cell(module, json!({"fault": "panic", "at_seq": [2]}), restart, 1).await;
    let shutdown = polybot_host::supervisor::Shutdown::new();
    cell.set_shutdown(shutdown.clone());
    // Ask for the stop as soon as the cell starts waiting out a backoff.
    cell.on_state_change(Arc::new(move |state| {
        if state == CellState::Backoff {
            shutdown.request();
        }
    }));
    cell.handle(1_000, EventKind::Timer(1)).await.unwrap();
    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        cell.handle(2_000, EventKind::Timer(2)),
    )
    .await
    .expect("the backoff did not end on the stop request");
    assert!(
        matches!(stopped, Err(CellError::Shutdown { .. })),
        "{stopped:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    cell.stop().await;
    assert_eq!(cell.state(), CellState::Stopped);
}

#[test]
fn sigterm_during_a_crash_loop_stops_the_host_at_once_as_a_shutdown() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crash-loop.toml");
    // Every instance traps on its first call; repeated faults back off 30 s.
    std::fs::write(
        &config,
        "[strategy]\nfault = \"panic\"\nafter_calls = 1\n\
         [supervisor]\nbackoff_initial = \"30s\"\nbackoff_max = \"60s\"\n",
    )
    .unwrap();
    let mut command = polybot_tests::host_command!("info");
    command
        .arg("run")
        .arg("--strategy")
        .arg(polybot_tests::guest("faulty"))
        .arg("--config")
        .arg(&config)
        .args(["--speed", "1", "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped());
    let mut host = polybot_tests::LoggingHost::start_running(&mut command);
    host.wait_for("to=backoff");
    let started = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        host.drain_log();
        let _ = done.send(host.child.wait_with_output());
    });
    let output = exited
        .recv_timeout(Duration::from_secs(60))
        .expect("the host exited")
        .expect("the host's output");
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_secs(2),
        "stopping took {elapsed:?}"
    );
    assert!(output.status.success(), "{:?}", output.status);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["report"]["stop"], "shutdown", "{report}");
    assert_eq!(report["report"]["state"], "stopped", "{report}");
}

/// The in-memory store, with reads of checkpoints failing while `failures` lasts.
struct FlakyStore {
    inner: polybot_host::store::memory::MemoryStore,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl polybot_host::store::StateStore for FlakyStore {
    async fn write(&self, write: polybot_host::store::Write) -> Result<(), StoreError> {
        self.inner.write(write).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }
    async fn entries_after(
        &self,
        strategy: &str,
        after: u64,
    ) -> Result<Vec<polybot_host::store::JournalEntry>, StoreError> {
        self.inner.entries_after(strategy, after).await
    }
    async fn journal_page(
        &self,
        strategy: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<polybot_host::store::JournalEntry>, StoreError> {
        self.inner.journal_page(strategy, after, limit).await
    }
    async fn host_states(
        &self,
        strategy: &str,
    ) -> Result<Vec<polybot_host::store::HostState>, StoreError> {
        self.inner.host_states(strategy).await
    }
    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(strategy).await
    }
    async fn checkpoints(
        &self,
        strategy: &str,
    ) -> Result<Vec<polybot_host::store::Checkpoint>, StoreError> {
        use std::sync::atomic::Ordering;
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::new("read checkpoints", "database unavailable"));
        }
        self.inner.checkpoints(strategy).await
    }
    async fn system_events(
        &self,
        limit: usize,
    ) -> Result<Vec<polybot_host::store::SystemEvent>, StoreError> {
        self.inner.system_events(limit).await
    }
    async fn status(&self) -> Result<Vec<polybot_host::store::StrategyStatus>, StoreError> {
        self.inner.status().await
    }
    async fn orders(
        &self,
        strategy: &str,
    ) -> Result<Vec<polybot_host::store::OrderRecord>, StoreError> {
        self.inner.orders(strategy).await
    }
    async fn trades(
        &self,
        strategy: &str,
    ) -> Result<Vec<polybot_host::store::TradeRecord>, StoreError> {
        self.inner.trades(strategy).await
    }

    async fn intents(
        &self,
        strategy: Option<&str>,
    ) -> Result<Vec<polybot_host::store::IntentRow>, StoreError> {
        self.inner.intents(strategy).await
    }

    async fn intent_transitions(
        &self,
        strategy: &str,
    ) -> Result<Vec<polybot_host::store::IntentWrite>, StoreError> {
        self.inner.intent_transitions(strategy).await
    }

    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError> {
        self.inner.exec_trades(strategy).await
    }

    async fn halt(
        &self,
        strategy: &str,
    ) -> Result<Option<polybot_host::store::HaltRecord>, StoreError> {
        self.inner.halt(strategy).await
    }

    async fn heartbeats(&self) -> Result<Vec<polybot_host::store::HeartbeatRecord>, StoreError> {
        self.inner.heartbeats().await
    }
}

#[tokio::test]
async fn store_failures_during_recovery_are_retried_and_never_count_as_restarts() {
    let sandbox = sandbox(SandboxLimits::default());
    let store = Arc::new(FlakyStore {
        inner: polybot_host::store::memory::MemoryStore::new(),
        failures: std::sync::atomic::AtomicU32::new(0),
    });
    let spec = polybot_host::supervisor::CellSpec {
        name: "under-test".into(),
        module: load(&sandbox, "faulty"),
        config_json: json!({"fault": "panic", "after_calls": 3}).to_string(),
        // One restart allowed: counting the store's failures would make it fatal.
        restart: quick_restarts(1),
        checkpoint: polybot_host::supervisor::CheckpointPolicy {
            every_events: 1,
            every_event_time: Duration::from_secs(3600),
        },
    };
    let mut cell = Cell::start(spec, store.clone()).await.expect("starts");
    cell.handle(1_000, EventKind::Timer(1)).await.unwrap();
    cell.handle(2_000, EventKind::Timer(2)).await.unwrap();
    // The instance traps on event 3; the recovery cannot read checkpoints 5 times.
    store.failures.store(5, std::sync::atomic::Ordering::SeqCst);
    let step = cell
        .handle(3_000, EventKind::Timer(3))
        .await
        .expect("handled once the store answers again");
    assert!(!step.quarantined);
    assert_eq!(cell.stats().restarts, 1, "stats: {:?}", cell.stats());
    assert_eq!(cell.state(), CellState::Running);
    let events = system_events(&cell).await;
    let host_failures = events
        .iter()
        .filter(|e| e.event_type == "host-failure" && e.message.contains("database unavailable"))
        .count();
    assert_eq!(host_failures, 5, "{events:?}");
    cell.stop().await;
    assert_eq!(faulty_state(&cell).await["count"], 3);
}

#[test]
fn a_strategy_flooding_timers_cannot_carry_the_host_past_its_event_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flood.toml");
    // 64 timers due at once from every event, timer events included.
    std::fs::write(&config, "[strategy]\ntimers_per_event = 64\n").unwrap();
    let output = polybot_tests::host_command!("warn")
        .arg("run")
        .arg("--strategy")
        .arg(polybot_tests::guest("faulty"))
        .arg("--config")
        .arg(&config)
        .args(["--speed", "max", "--events", "5000", "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let last_seq = report["report"]["last_seq"].as_u64().unwrap();
    assert!(last_seq <= 5000, "{report}");
    let fault = report["report"]["cell"]["last_fault"]
        .as_str()
        .unwrap_or("");
    assert!(fault.contains("too many timers"), "{report}");
    let size: u64 = walk(&dir.path().join("data"));
    assert!(size < 50 << 20, "data dir holds {size} bytes");
}

/// Bytes under `path`.
fn walk(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}
