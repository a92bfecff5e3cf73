//! One live strategy instance: a wasmtime `Store` plus the bound exports.
//!
//! Every call sets the epoch deadline first, so an infinite loop is cut off
//! within one epoch tick of the deadline. Failures come back classified as a
//! [`GuestFault`] (the strategy's fault: trap, deadline, memory cap, too many
//! actions) or a host error (the host's fault), because the supervisor treats
//! them differently: only guest faults count towards quarantining an event.

use std::time::Duration;

use wasmtime::Store;

use super::guest::{GuestState, MemoryLimitExceeded};
use super::{LogTarget, SandboxLimits};
use crate::contract::{Action, Event, Strategy, StrategyInfo, StrategyPre};

/// Something the strategy did wrong during a call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestFault {
    #[error("trapped: {message}")]
    Trap { message: String },
    #[error("exceeded its {limit:?} call deadline")]
    Deadline { limit: Duration },
    #[error("hit its memory limit of {limit} bytes")]
    MemoryLimit { limit: usize },
    #[error("returned {returned} actions for one event; the limit is {limit}")]
    TooManyActions { returned: usize, limit: usize },
}

impl GuestFault {
    /// A short word for logs and system events.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFault::Trap { .. } => "trap",
            GuestFault::Deadline { .. } => "deadline",
            GuestFault::MemoryLimit { .. } => "memory-limit",
            GuestFault::TooManyActions { .. } => "too-many-actions",
        }
    }
}

/// Why a call into a strategy failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("strategy {0}")]
    Guest(GuestFault),
    #[error("host failure: {0:#}")]
    Host(wasmtime::Error),
}

/// A live instance. Drop it after any [`CallError`]: a trapped instance cannot be re-entered.
pub struct Instance {
    store: Store<GuestState>,
    bindings: Strategy,
    limits: SandboxLimits,
    deadline_ticks: u64,
}

impl Instance {
    pub(super) async fn new(
        pre: &StrategyPre<GuestState>,
        strategy: &str,
        limits: &SandboxLimits,
        deadline_ticks: u64,
    ) -> Result<Self, CallError> {
        let state = GuestState::new(
            LogTarget::new(strategy, limits.max_log_line),
            limits.memory_bytes,
        );
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify(&store, limits, e))?;
        Ok(Instance {
            store,
            bindings,
            limits: limits.clone(),
            deadline_ticks,
        })
    }

    /// Calls `describe`.
    pub async fn describe(&mut self) -> Result<StrategyInfo, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_describe(&mut self.store).await;
        self.finish(result)
    }

    /// Calls `init`; the inner `Err` is the strategy refusing its configuration.
    pub async fn init(&mut self, config: &str) -> Result<Result<(), String>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_init(&mut self.store, config).await;
        self.finish(result)
    }

    /// Calls `on-event` and enforces the cap on returned actions.
    pub async fn on_event(&mut self, event: &Event) -> Result<Vec<Action>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_on_event(&mut self.store, event).await;
        let actions = self.finish(result)?;
        let limit = self.limits.max_actions_per_event;
        if actions.len() > limit {
            return Err(CallError::Guest(GuestFault::TooManyActions {
                returned: actions.len(),
                limit,
            }));
        }
        Ok(actions)
    }

    /// Calls `snapshot`.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_snapshot(&mut self.store).await;
        self.finish(result)
    }

    /// Calls `restore`; the inner `Err` is the strategy refusing the snapshot.
    pub async fn restore(
        &mut self,
        state: &[u8],
        version: u32,
    ) -> Result<Result<(), String>, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self
            .bindings
            .call_restore(&mut self.store, state, version)
            .await;
        self.finish(result)
    }

    /// Bytes of linear memory the limiter has seen requested at most (0 if never grown).
    pub fn memory_limit_hit(&self) -> Option<usize> {
        self.store.data().limiter.hit
    }

    fn finish<T>(&self, result: wasmtime::Result<T>) -> Result<T, CallError> {
        result.map_err(|e| classify(&self.store, &self.limits, e))
    }
}

fn classify(
    store: &Store<GuestState>,
    limits: &SandboxLimits,
    error: wasmtime::Error,
) -> CallError {
    if error.downcast_ref::<MemoryLimitExceeded>().is_some() || store.data().limiter.hit.is_some() {
        return CallError::Guest(GuestFault::MemoryLimit {
            limit: limits.memory_bytes,
        });
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallError::Guest(GuestFault::Deadline {
            limit: limits.call_deadline,
        }),
        Some(trap) => {
            // A Rust panic prints its message to stderr before trapping; name it.
            let message = match store.data().recent_stderr() {
                Some(line) => format!("{trap}: {line}"),
                None => trap.to_string(),
            };
            CallError::Guest(GuestFault::Trap { message })
        }
        None => CallError::Host(error),
    }
}
