//! What an executor call produces: events for the strategy and notes for
//! operators.
//!
//! Owns [`ExecOutput`] and the kinds of system note. Never decides anything:
//! the executor fills it, the run loop journals the events and writes the
//! notes as system events.

use crate::contract::{EventKind, OrderUpdate};

/// What kind of thing an operator is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A risk limit refused an order.
    Risk,
    /// A circuit breaker changed state.
    Breaker,
    /// The venue entered or left a window (425, 503).
    Window,
    /// An order's outcome is not known yet.
    Unknown,
    /// An order was refused after retries or waits.
    GaveUp,
    /// The venue holds an order no intent knows.
    UnknownOrder,
    /// Reconciliation changed an intent or found missed fills.
    Reconciled,
    /// Venue information that contradicts what is recorded (ignored).
    Stale,
    /// An operator halted or resumed the strategy's placement.
    Halted,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Risk => "exec-risk",
            NoteKind::Breaker => "exec-breaker",
            NoteKind::Window => "exec-window",
            NoteKind::Unknown => "exec-unknown",
            NoteKind::GaveUp => "exec-gave-up",
            NoteKind::UnknownOrder => "exec-unknown-order",
            NoteKind::Reconciled => "exec-reconciled",
            NoteKind::Stale => "exec-stale",
            NoteKind::Halted => "exec-halted",
        }
    }
}

/// A system event for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemNote {
    pub kind: NoteKind,
    pub detail: String,
}

/// What one executor call produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExecOutput {
    /// For the strategy, in order: fills, order updates, venue status.
    pub events: Vec<EventKind>,
    /// For operators (system events).
    pub notes: Vec<SystemNote>,
}

impl ExecOutput {
    pub(crate) fn note(&mut self, kind: NoteKind, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind = kind.as_str(), "{detail}");
        self.notes.push(SystemNote { kind, detail });
    }

    /// The order updates in this output.
    pub fn updates(&self) -> impl Iterator<Item = &OrderUpdate> {
        self.events.iter().filter_map(|e| match e {
            EventKind::OrderUpdate(u) => Some(u),
            _ => None,
        })
    }
}
