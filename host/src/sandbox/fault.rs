//! What can go wrong in a call into a strategy, and whose fault it is.
//!
//! [`classify`] turns the error a wasmtime call returned into a [`CallError`]:
//! a [`GuestFault`] when the strategy's behaviour caused it (a trap, an
//! overrun deadline, the memory cap, calling `exit`, a value the host cannot
//! read, a handle limit), [`CallError::Host`] only for the host's own trouble
//! (an instance allocator that is full). The supervisor quarantines events on
//! guest faults and must not count host failures against the strategy, so the
//! class matters more than the wording. Every message is one line: wasm
//! backtraces are logged at debug level, never put into a fault.
//!
//! This module decides nothing about what happens next; that is the supervisor's.

use std::time::Duration;

use super::SandboxLimits;

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
    /// Output the host refuses: not UTF-8, over a size limit, a non-finite
    /// number, an order of no size. The reason quotes at most a short prefix.
    #[error("returned invalid output: {reason}")]
    InvalidOutput { reason: String },
    /// The strategy called WASI `exit`.
    #[error("called exit with status {code}")]
    Exit { code: i32 },
    /// Too many handles or host resources held at once.
    #[error("exceeded a resource limit: {reason}")]
    ResourceLimit { reason: String },
}

impl GuestFault {
    /// A short word for logs and system events.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFault::Trap { .. } => "trap",
            GuestFault::Deadline { .. } => "deadline",
            GuestFault::MemoryLimit { .. } => "memory-limit",
            GuestFault::TooManyActions { .. } => "too-many-actions",
            GuestFault::InvalidOutput { .. } => "invalid-output",
            GuestFault::Exit { .. } => "exit",
            GuestFault::ResourceLimit { .. } => "resource-limit",
        }
    }
}

/// Why a call into a strategy failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The strategy's fault; counts towards quarantining the event.
    #[error("strategy {0}")]
    Guest(GuestFault),
    /// The host's own fault (store, I/O, allocator); not the strategy's.
    #[error("host failure: {}", one_line(.0))]
    Host(wasmtime::Error),
    /// The instance failed earlier and refuses every further call.
    #[error("strategy instance refused the call: it is poisoned by an earlier failure ({0})")]
    Poisoned(String),
}

/// Which export a call went to, for messages and budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Instantiate,
    Describe,
    Init,
    OnEvent,
    Snapshot,
    Restore,
}

impl Export {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Export::Instantiate => "instantiation",
            Export::Describe => "describe",
            Export::Init => "init",
            Export::OnEvent => "on-event",
            Export::Snapshot => "snapshot",
            Export::Restore => "restore",
        }
    }
}

/// The host stopped waiting for a call at its deadline (the guest was
/// blocked outside wasm code, in a WASI pollable, where epoch interruption
/// cannot reach it).
#[derive(Debug, thiserror::Error)]
#[error("the call did not return within its deadline")]
pub(crate) struct DeadlineElapsed;

/// The error a memory grow past the cap raises inside wasmtime.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (wanted {desired} bytes)")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

/// What [`classify`] needs to know about the instance besides the error.
pub(crate) struct FaultContext<'a> {
    pub export: Export,
    pub limits: &'a SandboxLimits,
    /// The guest asked for more memory than its cap during this instance's life.
    pub memory_limit_hit: bool,
    /// The bytes one transfer from the guest could carry in this call.
    pub transfer_budget: usize,
    /// What the guest last wrote to stderr (a Rust panic message).
    pub recent_stderr: Option<String>,
}

/// The wording wasmtime uses when a lift exceeds the store's hostcall fuel;
/// the error type itself is private to wasmtime.
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";
/// The wording of wasmtime's component handle limits.
const HANDLE_LIMIT: &str = "cannot allocate another handle";
/// How a wasm backtrace, attached to a trap as context, starts.
const BACKTRACE: &str = "error while executing at wasm backtrace";
/// Longest message a fault carries.
const MAX_MESSAGE: usize = 300;

/// Classifies the error a call (or instantiation) returned. See the module docs.
pub(crate) fn classify(cx: &FaultContext<'_>, error: wasmtime::Error) -> CallError {
    tracing::debug!(export = cx.export.name(), "strategy call failed: {error:?}");
    let guest = |fault| CallError::Guest(fault);
    if error.downcast_ref::<MemoryLimitExceeded>().is_some() || cx.memory_limit_hit {
        return guest(GuestFault::MemoryLimit {
            limit: cx.limits.memory_bytes,
        });
    }
    if error.downcast_ref::<DeadlineElapsed>().is_some() {
        return guest(GuestFault::Deadline {
            limit: cx.limits.call_deadline,
        });
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return guest(match trap {
            wasmtime::Trap::Interrupt => GuestFault::Deadline {
                limit: cx.limits.call_deadline,
            },
            trap => {
                // A Rust panic prints its message to stderr before trapping; name it.
                let message = match &cx.recent_stderr {
                    Some(line) => format!("{trap}: {line}"),
                    None => trap.to_string(),
                };
                GuestFault::Trap {
                    message: clip(&message, MAX_MESSAGE),
                }
            }
        });
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return guest(GuestFault::Exit { code: exit.0 });
    }
    if let Some(e) = error.downcast_ref::<wasmtime::component::ResourceTableError>() {
        return guest(GuestFault::ResourceLimit {
            reason: format!("host resource table: {e}"),
        });
    }
    let message = one_line(&error);
    if message.contains(HANDLE_LIMIT) {
        return guest(GuestFault::ResourceLimit { reason: message });
    }
    if message.contains(FUEL_EXHAUSTED) {
        return guest(GuestFault::InvalidOutput {
            reason: format!(
                "{} passed the host more than {} bytes in one value",
                cx.export.name(),
                cx.transfer_budget
            ),
        });
    }
    if error.downcast_ref::<std::str::Utf8Error>().is_some() {
        return guest(GuestFault::InvalidOutput {
            reason: format!("a string that is not UTF-8 ({message})"),
        });
    }
    match cx.export {
        // Instantiation also fails when the host's instance pool is full.
        Export::Instantiate => CallError::Host(error),
        // A call runs only guest code and the host's in-memory WASI: what fails
        // there, and is none of the above, is a value the host cannot read
        // (an invalid discriminant, a pointer out of bounds, ...).
        _ => guest(GuestFault::InvalidOutput {
            reason: format!("{}: {message}", cx.export.name()),
        }),
    }
}

/// The error's causes on one line, without wasm backtraces, at most a few
/// hundred bytes.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let parts: Vec<String> = error
        .chain()
        .filter_map(|cause| {
            let text = cause.to_string();
            let first = text.lines().next().unwrap_or_default().trim().to_string();
            (!first.is_empty() && !first.starts_with(BACKTRACE)).then_some(first)
        })
        .collect();
    clip(&parts.join(": "), MAX_MESSAGE)
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(limits: &SandboxLimits, export: Export) -> FaultContext<'_> {
        FaultContext {
            export,
            limits,
            memory_limit_hit: false,
            transfer_budget: 1024,
            recent_stderr: None,
        }
    }

    #[test]
    fn exit_is_the_guests_fault() {
        let limits = SandboxLimits::default();
        let e = classify(
            &cx(&limits, Export::OnEvent),
            wasmtime::Error::new(wasmtime_wasi::I32Exit(3)),
        );
        assert!(
            matches!(e, CallError::Guest(GuestFault::Exit { code: 3 })),
            "{e}"
        );
    }

    #[test]
    fn an_elapsed_deadline_and_an_interrupt_are_deadline_faults() {
        let limits = SandboxLimits::default();
        for error in [
            wasmtime::Error::new(DeadlineElapsed),
            wasmtime::Error::new(wasmtime::Trap::Interrupt),
        ] {
            let e = classify(&cx(&limits, Export::OnEvent), error);
            assert!(
                matches!(e, CallError::Guest(GuestFault::Deadline { .. })),
                "{e}"
            );
        }
    }

    #[test]
    fn an_unreadable_value_is_invalid_output_on_one_line() {
        let limits = SandboxLimits::default();
        let error =
            wasmtime::Error::msg("invalid discriminant\nsecond line").context("lifting results");
        let e = classify(&cx(&limits, Export::OnEvent), error);
        let CallError::Guest(fault) = &e else {
            panic!("not a guest fault: {e}")
        };
        assert_eq!(fault.kind(), "invalid-output");
        assert!(!e.to_string().contains('\n'), "{e}");
        let fuel = wasmtime::Error::msg(format!("too much data: {FUEL_EXHAUSTED}"));
        let e = classify(&cx(&limits, Export::Snapshot), fuel);
        assert!(e.to_string().contains("more than 1024 bytes"), "{e}");
    }

    #[test]
    fn an_instantiation_failure_that_is_not_a_trap_is_the_hosts() {
        let limits = SandboxLimits::default();
        let e = classify(
            &cx(&limits, Export::Instantiate),
            wasmtime::Error::msg("maximum concurrent instance limit of 1 reached"),
        );
        assert!(matches!(e, CallError::Host(_)), "{e}");
    }

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
