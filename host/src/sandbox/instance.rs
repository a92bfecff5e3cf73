//! One live strategy instance: a wasmtime `Store` plus the bound exports.
//!
//! Every call is bounded by the call deadline, whatever the guest does:
//! - while guest code runs, the epoch deadline fires every tick; the call then
//!   yields to the async runtime (one busy strategy never holds a worker
//!   thread for long) and is interrupted once its deadline of wall time is
//!   spent;
//! - while the guest waits outside wasm code (a WASI sleep or pollable, where
//!   epoch interruption cannot reach it), the host stops waiting for the call
//!   at the deadline and drops it.
//!
//! Both end as a [`GuestFault::Deadline`]. Every transfer of data from the
//! guest is capped before the host copies it (wasmtime's hostcall fuel: the
//! call's output budget), and what a call returns is checked by `output.rs`
//! before it is handed on. Failures come back classified (see `fault.rs`).
//!
//! Invariant: an instance that returned any [`CallError`] is poisoned — a
//! trap or a dropped call leaves the store unusable — and refuses every
//! further call with [`CallError::Poisoned`]; drop it and instantiate afresh.

use std::future::Future;
use std::time::Duration;

use wasmtime::Store;

use super::fault::{CallError, DeadlineElapsed, Export, FaultContext, classify};
use super::guest::{GuestState, MAX_HOST_RESOURCES};
use super::log::LogTarget;
use super::{EPOCH_TICK, SandboxLimits, output};
use crate::contract::{Action, Event, Strategy, StrategyInfo, StrategyPre};

/// Bytes a call that returns no data of note (describe, init, restore) may
/// transfer from the guest in one value.
const SMALL_TRANSFER: usize = 64 << 10;

/// A live instance. After any [`CallError`] it refuses further calls; drop it.
pub struct Instance {
    store: Store<GuestState>,
    bindings: Strategy,
    limits: SandboxLimits,
    poisoned: Option<String>,
}

impl Instance {
    pub(super) async fn new(
        pre: &StrategyPre<GuestState>,
        strategy: &str,
        limits: &SandboxLimits,
    ) -> Result<Self, CallError> {
        let state = GuestState::new(
            LogTarget::new(strategy, limits.max_log_line, limits.max_log_lines_per_sec),
            limits.memory_bytes,
            limits.call_deadline,
        );
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_max_component_handles(MAX_HOST_RESOURCES);
        store.epoch_deadline_callback(|store| Ok(store.data().on_epoch_deadline()));
        store.set_hostcall_fuel(SMALL_TRANSFER);
        store.data_mut().begin_call();
        store.set_epoch_deadline(1);
        let result = within(limits.call_deadline, pre.instantiate_async(&mut store)).await;
        match result {
            Ok(bindings) => Ok(Instance {
                store,
                bindings,
                limits: limits.clone(),
                poisoned: None,
            }),
            Err(e) => Err(classify(
                &fault_context(&store, limits, Export::Instantiate, SMALL_TRANSFER),
                e,
            )),
        }
    }

    /// Calls `describe`.
    pub async fn describe(&mut self) -> Result<StrategyInfo, CallError> {
        self.begin(SMALL_TRANSFER)?;
        let call = self.bindings.call_describe(&mut self.store);
        let result = within(self.limits.call_deadline, call).await;
        let info = self.finish(Export::Describe, SMALL_TRANSFER, result)?;
        self.accept(output::check_info(&info))?;
        Ok(info)
    }

    /// Calls `init`; the inner `Err` is the strategy refusing its configuration.
    pub async fn init(&mut self, config: &str) -> Result<Result<(), String>, CallError> {
        self.begin(SMALL_TRANSFER)?;
        let call = self.bindings.call_init(&mut self.store, config);
        let result = within(self.limits.call_deadline, call).await;
        let refused = self.finish(Export::Init, SMALL_TRANSFER, result)?;
        Ok(refused.map_err(output::message))
    }

    /// Calls `on-event` and checks the actions it returns (see `output.rs`).
    pub async fn on_event(&mut self, event: &Event) -> Result<Vec<Action>, CallError> {
        let budget = self.limits.max_output_bytes;
        self.begin(budget)?;
        let call = self.bindings.call_on_event(&mut self.store, event);
        let result = within(self.limits.call_deadline, call).await;
        let actions = self.finish(Export::OnEvent, budget, result)?;
        self.accept(output::check_actions(&actions, &self.limits))?;
        Ok(actions)
    }

    /// Calls `snapshot`; a snapshot over `max_snapshot_bytes` is refused.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        let budget = self.limits.max_snapshot_bytes;
        self.begin(budget)?;
        let call = self.bindings.call_snapshot(&mut self.store);
        let result = within(self.limits.call_deadline, call).await;
        let state = self.finish(Export::Snapshot, budget, result)?;
        self.accept(output::check_snapshot(state.len(), &self.limits))?;
        Ok(state)
    }

    /// Calls `restore`; the inner `Err` is the strategy refusing the snapshot.
    pub async fn restore(
        &mut self,
        state: &[u8],
        version: u32,
    ) -> Result<Result<(), String>, CallError> {
        self.begin(SMALL_TRANSFER)?;
        let call = self.bindings.call_restore(&mut self.store, state, version);
        let result = within(self.limits.call_deadline, call).await;
        let refused = self.finish(Export::Restore, SMALL_TRANSFER, result)?;
        Ok(refused.map_err(output::message))
    }

    /// Bytes of linear memory the limiter has seen requested at most (0 if never grown).
    pub fn memory_limit_hit(&self) -> Option<usize> {
        self.store.data().limiter.hit
    }

    /// Bytes of linear memory the instance has (what its limiter granted).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.granted
    }

    /// Whether an earlier failure made this instance refuse calls.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Refuses a poisoned instance; otherwise arms the deadline and the
    /// transfer budget for a new call.
    fn begin(&mut self, transfer_budget: usize) -> Result<(), CallError> {
        if let Some(reason) = &self.poisoned {
            return Err(CallError::Poisoned(reason.clone()));
        }
        self.store.set_hostcall_fuel(transfer_budget);
        self.store.data_mut().begin_call();
        self.store.set_epoch_deadline(1);
        Ok(())
    }

    fn finish<T>(
        &mut self,
        export: Export,
        transfer_budget: usize,
        result: wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        result.map_err(|e| {
            let cx = fault_context(&self.store, &self.limits, export, transfer_budget);
            self.poison(classify(&cx, e))
        })
    }

    fn accept(&mut self, checked: Result<(), super::GuestFault>) -> Result<(), CallError> {
        checked.map_err(|fault| self.poison(CallError::Guest(fault)))
    }

    fn poison(&mut self, error: CallError) -> CallError {
        self.poisoned = Some(error.to_string());
        error
    }
}

fn fault_context<'a>(
    store: &Store<GuestState>,
    limits: &'a SandboxLimits,
    export: Export,
    transfer_budget: usize,
) -> FaultContext<'a> {
    FaultContext {
        export,
        limits,
        memory_limit_hit: store.data().limiter.hit.is_some(),
        transfer_budget,
        recent_stderr: store.data().log.recent_stderr(),
    }
}

/// Awaits `call` for at most `deadline` (plus one epoch tick, so a busy guest
/// is normally stopped by its epoch interrupt first). A call still waiting
/// then is dropped and fails with [`DeadlineElapsed`]; its instance must be
/// treated as poisoned.
async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(deadline + EPOCH_TICK, call).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::new(DeadlineElapsed)),
    }
}
