//! An in-memory [`StateStore`]: the journal, checkpoints and system events in
//! plain collections. It makes recovery from a strategy fault exact within one
//! host process; it does not survive the process.

use std::collections::HashMap;

use super::{Checkpoint, JournalEntry, Outcome, StateStore, StoreError, SystemEvent};
use crate::contract::Event;

/// How many checkpoints per strategy are kept.
pub const KEPT_CHECKPOINTS: usize = 3;

#[derive(Default)]
pub struct MemoryStore {
    journals: HashMap<String, Vec<JournalEntry>>,
    checkpoints: HashMap<String, Vec<Checkpoint>>,
    system_events: Vec<SystemEvent>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn journal(&self, strategy: &str) -> &[JournalEntry] {
        self.journals
            .get(strategy)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

impl StateStore for MemoryStore {
    fn append(&mut self, strategy: &str, event: &Event) -> Result<(), StoreError> {
        let journal = self.journals.entry(strategy.to_string()).or_default();
        let expected = journal.last().map_or(1, |e| e.event.seq + 1);
        if event.seq != expected {
            return Err(StoreError {
                action: format!("append to {strategy}'s journal"),
                message: format!("seq {} does not follow {}", event.seq, expected - 1),
            });
        }
        journal.push(JournalEntry {
            event: event.clone(),
            outcome: Outcome::Pending,
        });
        Ok(())
    }

    fn record_outcome(
        &mut self,
        strategy: &str,
        seq: u64,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let entry = self
            .journals
            .get_mut(strategy)
            .and_then(|j| {
                let first = j.first()?.event.seq;
                j.get_mut(usize::try_from(seq.checked_sub(first)?).ok()?)
            })
            .filter(|e| e.event.seq == seq)
            .ok_or_else(|| StoreError {
                action: format!("record the outcome of {strategy}'s event {seq}"),
                message: "no such journal entry".into(),
            })?;
        entry.outcome = outcome.clone();
        Ok(())
    }

    fn entries_after(&self, strategy: &str, after: u64) -> Result<Vec<JournalEntry>, StoreError> {
        let journal = self.journal(strategy);
        let start = journal.partition_point(|e| e.event.seq <= after);
        Ok(journal[start..].to_vec())
    }

    fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
        Ok(self.journal(strategy).last().map_or(0, |e| e.event.seq))
    }

    fn save_checkpoint(
        &mut self,
        strategy: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let kept = self.checkpoints.entry(strategy.to_string()).or_default();
        kept.insert(0, checkpoint.clone());
        kept.truncate(KEPT_CHECKPOINTS);
        Ok(())
    }

    fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self.checkpoints.get(strategy).cloned().unwrap_or_default())
    }

    fn record_system_event(&mut self, event: &SystemEvent) -> Result<(), StoreError> {
        self.system_events.push(event.clone());
        Ok(())
    }

    fn system_events(&self) -> Result<Vec<SystemEvent>, StoreError> {
        Ok(self.system_events.clone())
    }
}
