//! The timers a strategy has set that have not fired yet.
//!
//! The cell owns them, not the instance and not the run loop: they survive
//! every restart of the strategy's instance, and the cell sees every
//! `set-timer` action and every timer event, so it alone keeps the set right
//! and enforces its cap. The run loop only asks which are due. After a host
//! restart the run loop hands back the timers it saved with its host state
//! and found in the journal after it.
//! Never decides what a breach of the cap means: that is the cell's fault policy.

use std::collections::BTreeSet;

use crate::contract::{Action, Event, EventKind};

/// Pending timers as `(due event time in ms, timer id)`, earliest first.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct PendingTimers {
    set: BTreeSet<(u64, u64)>,
}

impl PendingTimers {
    /// Adds timers pending from before this cell started (the run loop's
    /// record of them, from its saved host state and the journal after it).
    pub(crate) fn extend(&mut self, timers: BTreeSet<(u64, u64)>) {
        self.set.extend(timers);
    }

    /// The pending timers, `(due time, id)`.
    pub(crate) fn as_set(&self) -> &BTreeSet<(u64, u64)> {
        &self.set
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// How many timers would be pending after `event` returned `actions`.
    pub(crate) fn len_after(&self, event: &Event, actions: &[Action]) -> usize {
        let fired = fired_by(event).filter(|key| self.set.contains(key));
        let mut added = BTreeSet::new();
        for key in set_by(event, actions) {
            if Some(key) == fired || !self.set.contains(&key) {
                added.insert(key);
            }
        }
        self.set.len() - usize::from(fired.is_some()) + added.len()
    }

    /// Applies a recorded event: the timer it fires is gone, the ones its
    /// actions set are pending.
    pub(crate) fn record(&mut self, event: &Event, actions: &[Action]) {
        record_in(&mut self.set, event, actions);
    }

    /// Removes and returns the timers due at or before `now_ms`, earliest first.
    pub(crate) fn take_due(&mut self, now_ms: u64) -> Vec<(u64, u64)> {
        let later = self.set.split_off(&(now_ms.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.set, later);
        due.into_iter().collect()
    }
}

/// Applies a recorded event to a set of pending timers `(due time, id)`: the
/// timer it fires is gone, the ones its actions set are pending. The run loop
/// uses it to rebuild the set from the journal after a restart.
pub(crate) fn record_in(set: &mut BTreeSet<(u64, u64)>, event: &Event, actions: &[Action]) {
    if let Some(key) = fired_by(event) {
        set.remove(&key);
    }
    set.extend(set_by(event, actions));
}

/// The timer a timer event fires (a timer fires at its due time).
fn fired_by(event: &Event) -> Option<(u64, u64)> {
    match event.kind {
        EventKind::Timer(id) => Some((event.timestamp_ms, id)),
        _ => None,
    }
}

/// The timers `actions` set; one due in the past fires at the event's time.
fn set_by<'a>(event: &'a Event, actions: &'a [Action]) -> impl Iterator<Item = (u64, u64)> + 'a {
    actions.iter().filter_map(|action| match action {
        Action::SetTimer(timer) => Some((timer.at_ms.max(event.timestamp_ms), timer.id)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SetTimer;

    fn event(seq: u64, timestamp_ms: u64, kind: EventKind) -> Event {
        Event {
            seq,
            timestamp_ms,
            kind,
        }
    }

    fn set(id: u64, at_ms: u64) -> Action {
        Action::SetTimer(SetTimer { id, at_ms })
    }

    #[test]
    fn timers_are_due_in_order_and_fire_once() {
        let mut timers = PendingTimers::default();
        let first = event(1, 100, EventKind::Timer(99));
        timers.record(&first, &[set(1, 500), set(2, 300), set(3, 0)]);
        assert_eq!(timers.len(), 3);
        // One set in the past is due at the time of the event that set it.
        assert_eq!(timers.take_due(300), vec![(100, 3), (300, 2)]);
        assert_eq!(timers.take_due(499), vec![]);
        assert_eq!(timers.take_due(500), vec![(500, 1)]);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn len_after_counts_new_timers_and_the_one_that_fires() {
        let mut timers = PendingTimers::default();
        timers.record(&event(1, 100, EventKind::Timer(0)), &[set(1, 200)]);
        let fire = event(2, 200, EventKind::Timer(1));
        assert_eq!(timers.len_after(&fire, &[]), 0);
        assert_eq!(timers.len_after(&fire, &[set(5, 900), set(5, 900)]), 1);
        // Setting again the timer that fires keeps it pending.
        assert_eq!(timers.len_after(&fire, &[set(1, 200), set(5, 900)]), 2);
    }
}
