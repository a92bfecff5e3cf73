//! Resuming a run: the host state saved beside the strategy's checkpoints,
//! and catching a fresh venue up with the journal after it.
//!
//! The cell restores the *strategy* from its own checkpoints. This module
//! restores what the host holds around it — the venue's market and paper
//! account, pending timers, the fill ledger, the executor's state and the
//! run's counters — from
//! the newest intact [`HostState`] at or before the journal's end, then hands
//! the runner the journal entries after that state, read a page at a time
//! ([`CatchUp`]), to drive the venue through. So a restart costs the events
//! since the last host state, not the whole history. With no usable host
//! state (a data directory written before host states existed, or every kept
//! one corrupt or refused — each refusal a system event) the venue is driven
//! from seq 1, as it always could be.
//!
//! Catching up is never paced: the venue runs as fast as it can until the
//! journal is exhausted and pacing starts with the first live event. A long
//! catch-up logs its progress.
//!
//! The runner saves a host state at a tick boundary every
//! [`HOST_STATE_EVERY`] events and when a run ends cleanly ([`save`]).
//!
//! It never asks the strategy anything and never decides how live events are
//! handled: that is the runner's loop.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::contract::{Action, EventKind, Side};
use crate::ledger::Ledger;
use crate::store::{HostState, JournalEntry, Outcome, StateStore, StoreError, SystemEvent, Write};
use crate::supervisor::Cell;
use crate::venue::Venue;

/// Events between two host states, at the first tick boundary after.
pub const HOST_STATE_EVERY: u64 = 1000;
/// Journal entries read from the store at a time while catching up.
const PAGE: usize = 1000;
/// A catch-up logs its progress this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Version of the encoding below; a host state of another is not used (the
/// venue is then caught up from an older state or the journal's start).
/// 2: the runner's ledger is the one [`Ledger`] (cash, fees, realised PnL).
/// 3: the executor's state is kept too.
const FORMAT: u32 = 3;

/// Where the venue stands when a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VenueStart {
    /// Built for this run. If the strategy's journal holds events, a venue
    /// that replays history is first caught up with it (see the module docs);
    /// any other continues live after the journal's end.
    Fresh,
    /// Already at the journal's end (it went through those events in this
    /// process): the run continues live.
    AtJournalEnd,
}

/// How a run caught its venue up with the journal.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CatchUpReport {
    /// Seq of the host state the venue was restored from; 0 when it was
    /// driven from the journal's start.
    pub from_seq: u64,
    /// The journal's end when the run started.
    pub to_seq: u64,
    /// Journal entries read and driven through.
    pub entries: u64,
    /// Wall time from the start of the catch-up to its end.
    pub wall_ms: u64,
}

/// The runner's own state between two ticks, besides the venue: what a host
/// state holds for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct RunState {
    pub timers: BTreeSet<(u64, u64)>,
    pub ledger: Ledger,
    pub orders: u64,
    pub cancels: u64,
    pub fills: u64,
    pub first_event_ms: Option<u64>,
    /// The executor's state and the event-time day of its `pnl_today`.
    pub exec: Option<(crate::exec::ExecSnapshot, u64)>,
    /// Live restart: event time of the first journal entry folded in after
    /// the host state (intents created since have their fills counted in
    /// `exec`'s `told`). Never saved.
    #[serde(skip)]
    pub rebuilt_from_ms: Option<u64>,
    /// Live restart: the journal's last entry (seq, event time, actions)
    /// when it came after the host state. Its actions may never have been
    /// carried out (the run stopped between journaling it and recording its
    /// intents); the run settles them first. Never saved.
    #[serde(skip)]
    pub last_entry: Option<(u64, u64, Vec<Action>)>,
}

/// A host state's bytes, decoded.
#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    seq: u64,
    run: RunState,
    venue: Vec<u8>,
}

/// The journal entries a fresh venue is driven through, read a page at a time.
pub(super) struct CatchUp {
    store: Option<Arc<dyn StateStore>>,
    strategy: String,
    /// Seq of the last entry fetched from the store.
    fetched: u64,
    page: VecDeque<JournalEntry>,
    report: CatchUpReport,
    started: Instant,
    logged: Instant,
}

impl CatchUp {
    /// Nothing to catch up with.
    fn nothing() -> Self {
        CatchUp {
            store: None,
            strategy: String::new(),
            fetched: 0,
            page: VecDeque::new(),
            report: CatchUpReport::default(),
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// Whether every entry up to the journal's end has been handed out.
    pub fn is_done(&self) -> bool {
        self.page.is_empty() && self.fetched >= self.report.to_seq
    }

    /// Whether this run catches up at all.
    pub fn is_needed(&self) -> bool {
        self.store.is_some()
    }

    /// The next journal entry to drive the venue through, `None` once caught up.
    ///
    /// # Errors
    /// The store cannot be read, or the journal ends before the seq it had
    /// when the run started.
    pub async fn next(&mut self) -> Result<Option<JournalEntry>, StoreError> {
        if self.page.is_empty() && self.fetched < self.report.to_seq {
            let Some(store) = &self.store else {
                return Ok(None);
            };
            let page = store
                .journal_page(&self.strategy, self.fetched, PAGE)
                .await?;
            let page: VecDeque<JournalEntry> = page
                .into_iter()
                .take_while(|e| e.event.seq <= self.report.to_seq)
                .collect();
            if let Some(first) = page.front()
                && first.event.seq != self.fetched + 1
            {
                return Err(StoreError::new(
                    format!("catch up with {}'s journal", self.strategy),
                    format!(
                        "the journal skips from seq {} to {}",
                        self.fetched, first.event.seq
                    ),
                ));
            }
            match page.back() {
                Some(last) => self.fetched = last.event.seq,
                None => {
                    return Err(StoreError::new(
                        format!("catch up with {}'s journal", self.strategy),
                        format!(
                            "the journal ends at seq {} but held {} when the run started",
                            self.fetched, self.report.to_seq
                        ),
                    ));
                }
            }
            self.page = page;
            if self.logged.elapsed() >= PROGRESS_EVERY {
                self.logged = Instant::now();
                let done = self.fetched - self.report.from_seq;
                tracing::info!(
                    strategy = %self.strategy,
                    seq = self.fetched,
                    of = self.report.to_seq,
                    rate = (done as f64 / self.started.elapsed().as_secs_f64().max(1e-3)) as u64,
                    "catching up with the journal"
                );
            }
        }
        let entry = self.page.pop_front();
        if entry.is_some() {
            self.report.entries += 1;
        }
        Ok(entry)
    }

    /// What the catch-up did so far.
    pub fn report(&self) -> CatchUpReport {
        CatchUpReport {
            wall_ms: self.started.elapsed().as_millis() as u64,
            ..self.report.clone()
        }
    }
}

/// Brings a run to where its journal ends: restores the newest usable host
/// state into `venue` and returns the runner's state from it (fresh when
/// none), with the journal entries after it to drive the venue through. The
/// venue runs unpaced until they are all handed out.
pub(super) async fn prepare<V: Venue>(
    cell: &mut Cell,
    venue: &mut V,
    start: VenueStart,
) -> (CatchUp, RunState) {
    let end = cell.last_seq();
    if start == VenueStart::AtJournalEnd || end == 0 {
        return (CatchUp::nothing(), RunState::default());
    }
    if !venue.replays_history() {
        tracing::info!(
            strategy = %cell.name(),
            venue = venue.name(),
            "the venue keeps its own state; continuing live after seq {end}"
        );
        return (CatchUp::nothing(), rebuild_live(cell, end).await);
    }
    let started = Instant::now();
    let (from, run) = match restore_newest(cell, venue, end).await {
        Some((seq, run)) => (seq, run),
        None => (0, RunState::default()),
    };
    tracing::info!(
        strategy = %cell.name(),
        from_seq = from,
        to_seq = end,
        "catching the venue up with the journal"
    );
    venue.set_catching_up(true);
    let catch_up = CatchUp {
        store: Some(cell.store().clone()),
        strategy: cell.name().to_string(),
        fetched: from,
        page: VecDeque::new(),
        report: CatchUpReport {
            from_seq: from,
            to_seq: end,
            entries: 0,
            wall_ms: 0,
        },
        started,
        logged: Instant::now(),
    };
    (catch_up, run)
}

/// The host's own state for a venue that keeps its own (live): it is never
/// driven through the journal, but the runner's state around it is rebuilt —
/// the newest usable host state (its venue part unused), then the journal
/// after it folded in ([`RunState::take_in`]). A journal that cannot be read
/// is a system event; the run then continues from what was rebuilt so far.
async fn rebuild_live(cell: &mut Cell, end: u64) -> RunState {
    let (mut fetched, mut run) = match newest_run_state(cell, end).await {
        Some((seq, run)) => (seq, run),
        None => (0, RunState::default()),
    };
    let from = fetched;
    while fetched < end {
        let page = match cell.store().journal_page(cell.name(), fetched, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                system_event(
                    cell,
                    "host-state-rejected",
                    format!(
                        "cannot read the journal after seq {fetched} ({e}); timers, ledger and \
                         counters continue from seq {fetched}"
                    ),
                )
                .await;
                break;
            }
        };
        let Some(last) = page.last().map(|e| e.event.seq) else {
            break;
        };
        for entry in page.iter().take_while(|e| e.event.seq <= end) {
            run.rebuilt_from_ms.get_or_insert(entry.event.timestamp_ms);
            run.take_in(entry);
            if entry.event.seq == end
                && let Outcome::Handled(actions) = &entry.outcome
            {
                run.last_entry = Some((end, entry.event.timestamp_ms, actions.clone()));
            }
        }
        fetched = last.max(fetched + 1);
    }
    tracing::info!(
        strategy = %cell.name(),
        from_seq = from,
        to_seq = end,
        timers = run.timers.len(),
        fills = run.fills,
        "rebuilt the host's timers, ledger and counters from the journal"
    );
    run
}

impl RunState {
    /// Folds in one journal entry the way the run loop took it in: its fill
    /// booked in the ledger (positions and the day's PnL of the risk gate
    /// follow, and the shares told per intent), its orders and cancels counted, its timers set or fired.
    pub(super) fn take_in(&mut self, entry: &JournalEntry) {
        let at = entry.event.timestamp_ms;
        self.first_event_ms.get_or_insert(at);
        let actions: &[Action] = match &entry.outcome {
            Outcome::Handled(actions) => actions,
            Outcome::Quarantined { .. } => &[],
        };
        crate::supervisor::record_timers(&mut self.timers, &entry.event, actions);
        for action in actions {
            match action {
                Action::PlaceOrder(_) => self.orders += 1,
                Action::CancelOrder(_) => self.cancels += 1,
                Action::SetTimer(_) => {}
            }
        }
        if let EventKind::Fill(fill) = &entry.event.kind {
            self.fills += 1;
            let booked = self.ledger.apply(fill);
            let (exec, day) = self.exec.get_or_insert_with(Default::default);
            let signed = match fill.side {
                Side::Buy => fill.size,
                Side::Sell => -fill.size,
            };
            match exec.positions.iter_mut().find(|(m, _)| *m == fill.market) {
                Some((_, p)) => *p += signed,
                None => exec.positions.push((fill.market.clone(), signed)),
            }
            // Told to the strategy: reconciliation must not fill it again,
            // whatever the intent's last recorded move says.
            match exec.told.iter_mut().find(|(id, _)| *id == fill.intent_id) {
                Some((_, n)) => *n += fill.size,
                None => exec.told.push((fill.intent_id.clone(), fill.size)),
            }
            if fill.size < 0.0 {
                match exec
                    .reversed
                    .iter_mut()
                    .find(|(id, _)| *id == fill.intent_id)
                {
                    Some((_, n)) => *n -= fill.size,
                    None => exec.reversed.push((fill.intent_id.clone(), -fill.size)),
                }
            }
            let today = at / 86_400_000;
            if today != *day {
                *day = today;
                exec.pnl_today = 0.0;
            }
            exec.pnl_today += booked.realized_pnl;
        }
    }
}

/// The runner's state from the newest host state at or before `end` that is
/// intact and decodes (a live run's venue keeps its own state: its part is
/// not used), with its seq.
async fn newest_run_state(cell: &mut Cell, end: u64) -> Option<(u64, RunState)> {
    let states = cell.store().host_states(cell.name()).await.ok()?;
    states
        .into_iter()
        .filter(|s| s.seq <= end)
        .find_map(|s| decode(&s).ok())
        .map(|saved| (saved.seq, saved.run))
}

/// Restores the newest host state at or before `end` that is intact, decodes
/// and that the venue accepts; returns its seq and the runner's state. Every
/// state passed over is reported as a system event.
async fn restore_newest<V: Venue>(
    cell: &mut Cell,
    venue: &mut V,
    end: u64,
) -> Option<(u64, RunState)> {
    let states = match cell.store().host_states(cell.name()).await {
        Ok(states) => states,
        Err(e) => {
            system_event(
                cell,
                "host-state-rejected",
                format!("cannot read host states ({e}); catching the venue up from seq 1"),
            )
            .await;
            return None;
        }
    };
    if states.is_empty() {
        tracing::info!(strategy = %cell.name(), "no host state kept; catching the venue up from seq 1");
        return None;
    }
    // A state past the journal's end belongs to events lost in a crash.
    for state in states.into_iter().filter(|s| s.seq <= end) {
        match decode(&state).and_then(|saved| {
            venue
                .restore_state(&saved.venue)
                .map_err(|e| e.to_string())?;
            Ok(saved)
        }) {
            Ok(saved) => return Some((saved.seq, saved.run)),
            Err(reason) => {
                system_event(
                    cell,
                    "host-state-rejected",
                    format!(
                        "host state at seq {} cannot be used: {reason}; trying an older one",
                        state.seq
                    ),
                )
                .await;
            }
        }
    }
    system_event(
        cell,
        "host-state-rejected",
        "no usable host state; catching the venue up from seq 1".into(),
    )
    .await;
    None
}

fn decode(state: &HostState) -> Result<Saved, String> {
    if !state.is_intact() {
        return Err("it fails its checksum".into());
    }
    // The format leads, so an older layout is named as such, not as garbage.
    let (format, _) = postcard::take_from_bytes::<u32>(&state.bytes).map_err(|e| format!("{e}"))?;
    if format != FORMAT {
        return Err(format!(
            "it is in format {format}, this host reads {FORMAT}"
        ));
    }
    let saved: Saved = postcard::from_bytes(&state.bytes).map_err(|e| format!("{e}"))?;
    if saved.seq != state.seq {
        return Err(format!("it says seq {} inside", saved.seq));
    }
    Ok(saved)
}

/// Saves a host state for the journal as it stands: the caller is at a tick
/// boundary, with the venue and `run` having taken in every event up to
/// `cell.last_seq()`. Returns whether one was written.
pub(super) async fn save<V: Venue>(cell: &mut Cell, venue: &V, run: RunState) -> bool {
    // A venue that keeps its own state saves none: the runner's part is
    // still kept, for `rebuild_live`.
    let venue_bytes = match venue.save_state() {
        Some(bytes) => bytes,
        None if !venue.replays_history() => Vec::new(),
        None => return false,
    };
    let seq = cell.last_seq();
    let saved = Saved {
        format: FORMAT,
        seq,
        run,
        venue: venue_bytes,
    };
    let bytes = match postcard::to_allocvec(&saved) {
        Ok(bytes) => bytes,
        Err(e) => {
            system_event(
                cell,
                "host-state-failed",
                format!("cannot encode the host state at seq {seq}: {e}"),
            )
            .await;
            return false;
        }
    };
    let size = bytes.len();
    let write = Write::HostState {
        strategy: cell.name().to_string(),
        state: HostState::new(seq, bytes),
    };
    match cell.store().write(write).await {
        Ok(()) => {
            tracing::debug!(strategy = %cell.name(), seq, bytes = size, "host state saved");
            true
        }
        Err(e) => {
            // The next save retries; a resume then starts from an older one.
            system_event(
                cell,
                "host-state-failed",
                format!("cannot save the host state at seq {seq}: {e}"),
            )
            .await;
            false
        }
    }
}

pub(super) async fn system_event(cell: &mut Cell, event_type: &str, message: String) {
    tracing::warn!(strategy = %cell.name(), "{message}");
    let event = SystemEvent {
        timestamp_ms: crate::store::wall_clock_ms(),
        event_type: event_type.to_string(),
        component: format!("runner/{}", cell.name()),
        message,
        id: String::new(),
    };
    if let Err(e) = cell.store().write(Write::SystemEvent(event)).await {
        tracing::warn!(strategy = %cell.name(), "cannot keep system event: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Event, Fill, SetTimer};

    fn entry(seq: u64, timestamp_ms: u64, kind: EventKind, actions: Vec<Action>) -> JournalEntry {
        JournalEntry {
            event: Event {
                seq,
                timestamp_ms,
                kind,
            },
            outcome: Outcome::Handled(actions),
        }
    }

    fn fill(intent: &str, side: Side, price: f64, size: f64) -> EventKind {
        EventKind::Fill(Fill {
            intent_id: intent.into(),
            market: "m".into(),
            side,
            price,
            size,
            fee: 0.0,
        })
    }

    /// What a live restart rebuilds from the journal: timers set and fired,
    /// the ledger with its realised PnL, the risk gate's position and day's
    /// PnL, the shares told per intent, and the counters.
    #[test]
    fn the_journal_folds_into_timers_ledger_exposure_and_counters() {
        let day = 86_400_000;
        let set = |id, at_ms| Action::SetTimer(SetTimer { id, at_ms });
        let mut run = RunState::default();
        for e in [
            entry(
                1,
                day + 1,
                EventKind::Timer(0),
                vec![set(1, day + 50), set(2, day + 10)],
            ),
            entry(2, day + 10, EventKind::Timer(2), vec![]),
            entry(3, day + 20, fill("1.0", Side::Buy, 0.40, 10.0), vec![]),
            // Yesterday's PnL does not count today.
            entry(
                4,
                2 * day + 1,
                fill("2.0", Side::Sell, 0.50, 4.0),
                vec![set(3, 0)],
            ),
            entry(5, 2 * day + 2, fill("2.0", Side::Sell, 0.45, 2.0), vec![]),
        ] {
            run.take_in(&e);
        }
        assert_eq!(
            run.timers,
            [(day + 50, 1), (2 * day + 1, 3)].into(),
            "timer 2 fired; one set in the past is due at once"
        );
        assert_eq!(run.fills, 3);
        assert_eq!(run.first_event_ms, Some(day + 1));
        assert!((run.ledger.position("m") - 4.0).abs() < 1e-9);
        assert!((run.ledger.realized_pnl() - (4.0 * 0.10 + 2.0 * 0.05)).abs() < 1e-9);
        let (exec, on_day) = run.exec.expect("exposure");
        assert_eq!(on_day, 2);
        assert_eq!(exec.positions, [("m".to_string(), 4.0)]);
        assert!((exec.pnl_today - 0.5).abs() < 1e-9);
        assert_eq!(
            exec.told,
            [("1.0".to_string(), 10.0), ("2.0".to_string(), 6.0)]
        );
    }

    /// A trade that failed to settle: its reversal takes the shares told
    /// back, and is kept as shares reversed, which the intent's recorded
    /// matched size still counts.
    #[test]
    fn a_reversal_folds_into_the_shares_reversed_per_intent() {
        let mut run = RunState::default();
        for e in [
            entry(1, 1, fill("1.0", Side::Buy, 0.40, 10.0), vec![]),
            entry(2, 2, fill("1.0", Side::Buy, 0.40, -10.0), vec![]),
        ] {
            run.take_in(&e);
        }
        let (exec, _) = run.exec.expect("exposure");
        assert_eq!(exec.told, [("1.0".to_string(), 0.0)]);
        assert_eq!(exec.reversed, [("1.0".to_string(), 10.0)]);
    }

    /// A host state written before the one ledger (format 1, whose ledger
    /// was a map of (position, average cost)) is refused by name, so the
    /// venue is caught up from an older state or the journal's start.
    #[test]
    fn a_host_state_of_the_old_format_is_refused_by_name() {
        #[derive(Serialize)]
        struct RunStateV1 {
            timers: BTreeSet<(u64, u64)>,
            ledger: std::collections::HashMap<String, (f64, f64)>,
            orders: u64,
            cancels: u64,
            fills: u64,
            first_event_ms: Option<u64>,
        }
        #[derive(Serialize)]
        struct SavedV1 {
            format: u32,
            seq: u64,
            run: RunStateV1,
            venue: Vec<u8>,
        }
        let old = SavedV1 {
            format: 1,
            seq: 7,
            run: RunStateV1 {
                timers: BTreeSet::new(),
                ledger: [("m".to_string(), (10.0, 0.4))].into(),
                orders: 1,
                cancels: 0,
                fills: 1,
                first_event_ms: Some(1),
            },
            venue: vec![1, 2, 3],
        };
        let state = HostState::new(7, postcard::to_allocvec(&old).unwrap());
        let err = decode(&state).err().expect("refused");
        assert!(err.contains("format 1"), "{err}");

        let mut run = RunState::default();
        run.ledger
            .book("m", crate::contract::Side::Buy, 0.4, 10.0, 0.0);
        let new = Saved {
            format: FORMAT,
            seq: 7,
            run: run.clone(),
            venue: vec![1, 2, 3],
        };
        let state = HostState::new(7, postcard::to_allocvec(&new).unwrap());
        assert_eq!(decode(&state).expect("read").run, run);
    }
}
