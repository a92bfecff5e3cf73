//! The store's single writer task: group commits, the local backlog while the
//! database is away and its resync, and the writes that could not be made
//! durable anywhere yet.
//!
//! A sync is answered `Ok` only once every write queued before it is durable,
//! in the database or in the backlog. A group that fails both (a full disk
//! under SQLite and the backlog, say) is kept in memory, in order, and retried
//! with backoff; syncs wait for it up to [`SYNC_GRACE`] and then fail, so no
//! order goes out on a write that is not durable, and nothing queued is ever
//! dropped. Failure and recovery are recorded as system events. It never
//! serves reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Backend;
use crate::store::files::Backlog;
use crate::store::mirror::JournalMirror;
use crate::store::{JournalEntry, StoreError, SystemEvent, Write, wall_clock_ms};

/// Most writes taken from the queue at once.
const MAX_GROUP: usize = 8192;
/// How long the database may be away before a retry, at most.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long a sync waits for writes that cannot be made durable yet.
pub const SYNC_GRACE: Duration = Duration::from_secs(10);
/// Writes per database transaction when replaying the backlog: a long
/// outage leaves one small batch per group commit, and joining them is what
/// lets a five-minute backlog resync in seconds. The writes are idempotent
/// and kept in order, so a join commits the same rows as the batches would.
const RESYNC_WRITES: usize = 4096;

pub(super) enum Command {
    Write(Write),
    Sync(oneshot::Sender<Result<(), StoreError>>),
}

/// Retry timing with exponential backoff.
struct Backoff {
    since: std::time::Instant,
    retry_in: Duration,
    next_retry: Instant,
}

impl Backoff {
    fn new() -> Self {
        let retry_in = Duration::from_millis(100);
        Backoff {
            since: std::time::Instant::now(),
            retry_in,
            next_retry: Instant::now() + retry_in,
        }
    }

    fn later(&mut self) {
        self.retry_in = (self.retry_in * 2).min(MAX_RETRY);
        self.next_retry = Instant::now() + self.retry_in;
    }
}

/// Writes are failing to become durable anywhere.
struct Failing {
    error: StoreError,
    backoff: Backoff,
}

pub(super) struct Writer {
    backend: Arc<dyn Backend>,
    backlog: Backlog,
    mirror: Option<JournalMirror>,
    outage_flag: watch::Sender<bool>,
    /// Set while the database is away: writes go to the backlog.
    outage: Option<Backoff>,
    /// Whether this process has applied the migrations (not yet when it
    /// started while the database was away).
    migrated: bool,
    /// Writes taken from the queue that are not durable anywhere yet, in order.
    unsaved: Vec<Write>,
    /// Syncs waiting for `unsaved`, each with the time it gives up.
    waiting: Vec<(oneshot::Sender<Result<(), StoreError>>, Instant)>,
    failing: Option<Failing>,
}

impl Writer {
    pub fn new(
        backend: Arc<dyn Backend>,
        backlog: Backlog,
        mirror: Option<JournalMirror>,
        outage_flag: watch::Sender<bool>,
    ) -> Self {
        Writer {
            backend,
            backlog,
            mirror,
            outage_flag,
            outage: None,
            migrated: true,
            unsaved: Vec::new(),
            waiting: Vec::new(),
            failing: None,
        }
    }

    /// Starts in an outage: the database could not be reached at open.
    pub fn start_offline(&mut self, reason: &str) {
        self.migrated = false;
        self.outage = Some(Backoff::new());
        self.outage_flag.send_replace(true);
        self.unsaved.push(store_event(
            "store-unreachable",
            format!(
                "{} unreachable at start ({reason}); resuming from local files",
                self.backend.describe()
            ),
        ));
    }

    fn next_wake(&self) -> Option<Instant> {
        let failing = self.failing.as_ref().map(|f| f.backoff.next_retry);
        let outage = self.outage.as_ref().map(|o| o.next_retry);
        let deadline = self.waiting.iter().map(|(_, at)| *at).min();
        [failing, outage, deadline].into_iter().flatten().min()
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                command = rx.recv(), if open => match command {
                    Some(command) => Some(command),
                    None => {
                        open = false;
                        None
                    }
                },
                () = sleep_until(wake), if wake.is_some() => None,
                else => break,
            };
            let mut next = first;
            let mut taken = 0;
            while let Some(command) = next.take() {
                match command {
                    Command::Write(w) => {
                        self.unsaved.push(w);
                        taken += 1;
                    }
                    Command::Sync(s) => self.waiting.push((s, Instant::now() + SYNC_GRACE)),
                }
                if taken < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }

            if self
                .outage
                .as_ref()
                .is_some_and(|o| Instant::now() >= o.next_retry)
            {
                self.try_resync().await;
            }
            self.flush().await;
            self.expire_waiting();
            if !open && (self.unsaved.is_empty() || self.failing.is_some()) {
                // Nobody can write or wait any more: the store is gone.
                if !self.unsaved.is_empty() {
                    tracing::error!(
                        writes = self.unsaved.len(),
                        "the store closed with writes that could not be made durable"
                    );
                }
                break;
            }
        }
    }

    /// Makes `unsaved` durable if it is time to try.
    async fn flush(&mut self) {
        if self.unsaved.is_empty() {
            self.answer_waiting(Ok(()));
            return;
        }
        if self
            .failing
            .as_ref()
            .is_some_and(|f| Instant::now() < f.backoff.next_retry)
        {
            return;
        }
        match self.make_durable().await {
            Ok(()) => {
                let written = std::mem::take(&mut self.unsaved);
                self.copy_journal(&written);
                if let Some(failing) = self.failing.take() {
                    let message = format!(
                        "writes are durable again after {:.1} s of failing ({})",
                        failing.backoff.since.elapsed().as_secs_f64(),
                        failing.error
                    );
                    tracing::info!("{message}");
                    self.unsaved
                        .push(store_event("store-write-recovered", message));
                }
                self.answer_waiting(Ok(()));
            }
            Err(error) => match &mut self.failing {
                Some(failing) => {
                    failing.error = error;
                    failing.backoff.later();
                }
                None => {
                    tracing::error!(
                        "writes cannot be made durable, holding them and retrying: {error}"
                    );
                    self.unsaved.push(store_event(
                        "store-write-failed",
                        format!(
                            "writes cannot be made durable, held in memory and retried: {error}"
                        ),
                    ));
                    self.failing = Some(Failing {
                        error,
                        backoff: Backoff::new(),
                    });
                }
            },
        }
    }

    /// Commits `unsaved` to the database, or to the backlog while it is away.
    async fn make_durable(&mut self) -> Result<(), StoreError> {
        if self.outage.is_some() {
            return self.backlog.append(&self.unsaved);
        }
        match self.backend.commit(&self.unsaved).await {
            Ok(()) => Ok(()),
            Err(e) if e.transient => {
                tracing::error!(store = %self.backend.describe(), "database unreachable, writing to local files: {e}");
                self.unsaved.push(store_event(
                    "store-unreachable",
                    format!(
                        "{} unreachable ({e}); journal and checkpoints go to local files",
                        self.backend.describe()
                    ),
                ));
                self.outage = Some(Backoff::new());
                self.outage_flag.send_replace(true);
                self.backlog.append(&self.unsaved)
            }
            Err(e) => Err(StoreError::new(
                format!("commit to {}", self.backend.describe()),
                e,
            )),
        }
    }

    /// Appends the journal entries just made durable to the local copies.
    fn copy_journal(&mut self, written: &[Write]) {
        let Some(mirror) = &self.mirror else { return };
        let mut by_strategy: HashMap<&str, Vec<&JournalEntry>> = HashMap::new();
        for write in written {
            if let Write::Journal { strategy, entry } = write {
                by_strategy.entry(strategy).or_default().push(entry);
            }
        }
        for (strategy, entries) in by_strategy {
            if let Err(e) = mirror.append(strategy, entries) {
                // A partial copy is dropped; it is rebuilt from the database
                // at the next start that reaches it.
                mirror.drop_copy(strategy);
                tracing::warn!(strategy, "local journal copy dropped: {e}");
                self.unsaved.push(store_event(
                    "journal-copy-dropped",
                    format!("{strategy}: local journal copy dropped ({e}); a restart while the database is away cannot resume it until the copy is rebuilt"),
                ));
            }
        }
    }

    fn answer_waiting(&mut self, result: Result<(), StoreError>) {
        for (sync, _) in self.waiting.drain(..) {
            let _ = sync.send(result.clone());
        }
    }

    /// Fails the syncs that have waited too long for failing writes.
    fn expire_waiting(&mut self) {
        let Some(failing) = &self.failing else { return };
        let now = Instant::now();
        let error = StoreError::new(
            "sync",
            format!(
                "not durable after {} s: {}",
                SYNC_GRACE.as_secs(),
                failing.error
            ),
        );
        self.waiting.retain_mut(|(sync, at)| {
            if *at > now {
                return true;
            }
            let (done, _) = oneshot::channel();
            let sync = std::mem::replace(sync, done);
            let _ = sync.send(Err(error.clone()));
            false
        });
    }

    /// Tries to bring the database up to date with the backlog; ends the
    /// outage when it is, and a write to the database has gone through.
    async fn try_resync(&mut self) {
        let Some(outage) = &mut self.outage else {
            return;
        };
        if self.backend.ping().await.is_err() {
            outage.later();
            return;
        }
        if !self.migrated {
            if let Err(e) = self.backend.migrate().await {
                tracing::warn!("database answers but cannot be migrated yet: {e}");
                outage.later();
                return;
            }
            self.migrated = true;
        }
        match resync(self.backend.as_ref(), &mut self.backlog).await {
            Ok((batches, writes)) => {
                let message = format!(
                    "{} reachable again after {:.1} s; resynced {batches} batches ({writes} writes) from local files",
                    self.backend.describe(),
                    outage.since.elapsed().as_secs_f64()
                );
                // The outage ends with a write, not a read: a database that
                // answers but cannot write (a full disk) is still away.
                match self
                    .backend
                    .commit(&[store_event("store-resynced", message.clone())])
                    .await
                {
                    Ok(()) => {
                        tracing::info!("{message}");
                        self.outage = None;
                        self.outage_flag.send_replace(false);
                    }
                    Err(e) => {
                        tracing::warn!("resynced, but the database does not take writes yet: {e}");
                        outage.later();
                    }
                }
            }
            Err(e) => {
                tracing::warn!("resync interrupted, will retry: {e}");
                outage.later();
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Replays every backlog batch into the database, oldest first, removing
/// batches once committed. Returns (batches, writes).
pub(super) async fn resync(
    backend: &dyn Backend,
    backlog: &mut Backlog,
) -> Result<(usize, usize), StoreError> {
    let mut batches = 0;
    let mut writes = 0;
    while !backlog.is_empty() {
        let (count, joined) = backlog.oldest(RESYNC_WRITES)?;
        backend
            .commit(&joined)
            .await
            .map_err(|e| StoreError::new(format!("resync into {}", backend.describe()), e))?;
        backlog.remove_oldest(count)?;
        batches += count;
        writes += joined.len();
    }
    Ok((batches, writes))
}

pub(super) fn store_event(event_type: &str, message: String) -> Write {
    let now = wall_clock_ms();
    Write::SystemEvent(SystemEvent {
        timestamp_ms: now,
        event_type: event_type.to_string(),
        component: "store".into(),
        message,
        id: format!(
            "store-{event_type}-{now}-{}-{}",
            std::process::id(),
            EVENT_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    })
}

static EVENT_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
