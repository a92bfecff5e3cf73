//! Durable state: the journal of events, checkpoints and system events.
//!
//! Everything the supervisor must not lose goes through the [`StateStore`]
//! trait, so the backing store can change (in memory, SQLite, PostgreSQL,
//! local files) without the supervisor knowing.
//!
//! The journal invariant: an event is appended, with its seq, *before* its
//! effects leave the host, and the actions a strategy returned for it are
//! recorded next to it. Recovery restores a checkpoint and replays the journal
//! after it; the recorded actions tell replay what was already sent.

pub mod memory;

use sha2::{Digest, Sha256};

use crate::contract::{Action, Event};

/// What became of a journaled event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Not handled yet (the host stopped or the strategy faulted before it finished).
    Pending,
    /// Handled; these are the actions the strategy returned.
    Handled(Vec<Action>),
    /// Set aside after it repeatedly made the strategy fault; replay skips it.
    Quarantined { reason: String },
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub event: Event,
    pub outcome: Outcome,
}

/// A strategy's serialised state after the event with seq `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Seq of the last event included in the state (0: right after `init`).
    pub seq: u64,
    /// Event time of that event, in ms since the Unix epoch.
    pub event_time_ms: u64,
    pub state_version: u32,
    /// SHA-256 (hex) of the module that wrote it.
    pub module_digest: String,
    pub state: Vec<u8>,
    /// SHA-256 of `state`, checked before the state is used.
    pub checksum: [u8; 32],
}

impl Checkpoint {
    pub fn new(
        seq: u64,
        event_time_ms: u64,
        state_version: u32,
        module_digest: &str,
        state: Vec<u8>,
    ) -> Self {
        let checksum = Sha256::digest(&state).into();
        Checkpoint {
            seq,
            event_time_ms,
            state_version,
            module_digest: module_digest.to_string(),
            state,
            checksum,
        }
    }

    /// Whether the state still matches its checksum.
    pub fn is_intact(&self) -> bool {
        <[u8; 32]>::from(Sha256::digest(&self.state)) == self.checksum
    }
}

/// Something worth keeping a record of: state changes, faults, quarantines.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SystemEvent {
    /// Wall time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// e.g. `state-change`, `fault`, `quarantine`, `divergence`, `checkpoint-rejected`.
    pub event_type: String,
    /// Which part: `supervisor/<strategy>`.
    pub component: String,
    pub message: String,
}

/// A store failure, naming what was being done.
#[derive(Debug, thiserror::Error)]
#[error("store: {action}: {message}")]
pub struct StoreError {
    pub action: String,
    pub message: String,
}

/// Where a strategy's durable state lives.
pub trait StateStore: Send {
    /// Appends an event to `strategy`'s journal. Seqs must follow on without gaps.
    fn append(&mut self, strategy: &str, event: &Event) -> Result<(), StoreError>;

    /// Records what became of the journaled event `seq`.
    fn record_outcome(
        &mut self,
        strategy: &str,
        seq: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError>;

    /// Journal entries with seq greater than `after`, in order.
    fn entries_after(&self, strategy: &str, after: u64) -> Result<Vec<JournalEntry>, StoreError>;

    /// The seq of the last journaled event (0 if none).
    fn last_seq(&self, strategy: &str) -> Result<u64, StoreError>;

    /// Saves a checkpoint, keeping only the newest few.
    fn save_checkpoint(
        &mut self,
        strategy: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError>;

    /// Kept checkpoints, newest first.
    fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// Keeps a system event.
    fn record_system_event(&mut self, event: &SystemEvent) -> Result<(), StoreError>;

    /// System events, oldest first.
    fn system_events(&self) -> Result<Vec<SystemEvent>, StoreError>;
}

/// Wall time now, in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
