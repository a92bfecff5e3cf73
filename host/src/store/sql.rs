//! The database store: SQLite (embedded default) or PostgreSQL, with group
//! commit and a local-file fallback while the database is away.
//!
//! Writes go through one writer task. It takes everything queued, commits it
//! in one transaction (a *group commit*), and only then answers the
//! [`StateStore::sync`] calls queued behind it — so a strategy's effects wait
//! for one commit shared by many events, not one commit each.
//!
//! When the database stops answering, the writer appends each group to the
//! local [`Backlog`] instead (fsynced files) and keeps acknowledging: strategies
//! keep running. It retries the database with backoff; once it answers, the
//! backlog is replayed into it in order. Every insert is idempotent (`ON
//! CONFLICT DO NOTHING` on natural keys), so a group that reached the database
//! just before the connection dropped is not written twice. The outage and
//! the resync are recorded as system events. A group that can be made durable
//! nowhere is held and retried, and syncs fail rather than acknowledge it
//! (see `sql::writer`).
//!
//! For PostgreSQL the data directory also keeps a local copy of the journal
//! ([`JournalMirror`]) and a marker naming the database once reached, so a
//! host restarted while that database is away resumes from local files
//! instead of refusing to start.
//!
//! Reads that recovery needs — the newest checkpoints and the journal after
//! them — are served from an in-memory tail kept per strategy, so a strategy
//! can recover from a fault while the database is down. Checkpoints are also
//! copied to `<data>/checkpoints/` as the seed design asks.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: a commit is on disk when it
//! returns, surviving power loss as well as a killed process. (`NORMAL` would
//! survive a killed process but may lose the last commits on power loss.)
//! PostgreSQL uses its default `synchronous_commit=on`.

mod backend;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

pub use backend::{Backend, BackendError, PostgresBackend, SqliteBackend};
pub use writer::SYNC_GRACE;

use super::files::{Backlog, FileCheckpoints, write_atomic};
use super::mirror::JournalMirror;
use super::{
    Checkpoint, HostState, JournalEntry, KEPT_CHECKPOINTS, OrderRecord, StateStore, StoreError,
    StrategyStatus, SystemEvent, TradeRecord, Write, wall_clock_ms,
};
use writer::{Command, Writer, resync};

/// The file in the data directory naming the database it has reached.
const REACHED_MARKER: &str = "store-reached";

/// Where the store keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreLocation {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else is
    /// refused unless it is `sqlite:PATH` or a path.
    ///
    /// # Errors
    /// A URL with another scheme, naming it.
    pub fn parse(text: &str, data_dir: &Path) -> Result<Self, StoreError> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(text.to_string()));
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            return Ok(StoreLocation::Sqlite(if path.is_empty() {
                data_dir.join("polybot.db")
            } else {
                PathBuf::from(path)
            }));
        }
        if text.contains("://") {
            return Err(StoreError::new(
                format!("open store `{}`", crate::redact::url(text)),
                "unknown scheme; use postgres://… or sqlite:PATH",
            ));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(text)))
    }

    /// A description safe to log: no password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("sqlite {}", path.display()),
            StoreLocation::Postgres(url) => format!("postgres {}", crate::redact::url(url)),
        }
    }
}

/// Per-strategy reads recovery needs, kept in memory.
#[derive(Default)]
struct StrategyCache {
    /// Journal entries after the oldest kept checkpoint.
    tail: VecDeque<JournalEntry>,
    last_seq: u64,
    /// Newest first.
    checkpoints: Vec<Checkpoint>,
}

/// The database store; see the module docs.
pub struct SqlStore {
    tx: mpsc::Sender<Command>,
    backend: Arc<dyn Backend>,
    cache: Mutex<HashMap<String, StrategyCache>>,
    files: FileCheckpoints,
    /// The local journal copy, kept for a remote database only.
    mirror: Option<JournalMirror>,
    instance: String,
    counter: AtomicU64,
    location: StoreLocation,
    outage: watch::Receiver<bool>,
}

/// What [`SqlStore::connect`] reached.
pub enum Reach {
    /// The database answered and is migrated.
    Online(Arc<dyn Backend>),
    /// The database does not answer, but this data directory reached it
    /// before: open over local files and resync once it answers.
    Offline {
        backend: Arc<dyn Backend>,
        reason: String,
    },
}

impl SqlStore {
    /// Opens (creating if needed) the store, applies migrations, and replays
    /// any backlog left by an earlier outage — before anything is read.
    ///
    /// A PostgreSQL database that does not answer, but that this data
    /// directory has reached before, is opened in an outage: the strategies
    /// resume from the local files and the backlog is resynced once it
    /// answers.
    ///
    /// # Errors
    /// The database cannot be reached (and never was from here) or migrated,
    /// the backlog cannot be replayed, or the data directory is not writable —
    /// each named.
    pub async fn open(location: StoreLocation, data_dir: &Path) -> Result<SqlStore, StoreError> {
        let reach = Self::connect(&location, data_dir).await?;
        Self::open_reached(reach, location, data_dir).await
    }

    /// Reaches the database (migrations applied) without creating anything
    /// in the data directory but the SQLite file itself. A PostgreSQL
    /// database that does not answer, but that this data directory has
    /// reached before, comes back as [`Reach::Offline`].
    ///
    /// # Errors
    /// The database cannot be reached (and never was from here) or migrated.
    pub async fn connect(location: &StoreLocation, data_dir: &Path) -> Result<Reach, StoreError> {
        let backend: Arc<dyn Backend> = match location {
            StoreLocation::Sqlite(path) => {
                check_writable(data_dir)?;
                Arc::new(SqliteBackend::open(path).await?)
            }
            StoreLocation::Postgres(url) => match PostgresBackend::connect(url).await {
                Ok(backend) => Arc::new(backend),
                Err(e) if reached_before(data_dir, location) => {
                    tracing::warn!(
                        "{e}; this data directory has reached it before: resuming from local files"
                    );
                    return Ok(Reach::Offline {
                        backend: Arc::new(PostgresBackend::lazy(url)?),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            },
        };
        backend.migrate().await?;
        Ok(Reach::Online(backend))
    }

    /// Opens the store over what [`SqlStore::connect`] reached: replays any
    /// backlog first, keeps a local journal copy for a remote database, and
    /// in an outage resumes from local files.
    ///
    /// # Errors
    /// The data directory is not writable, or the backlog cannot be replayed.
    pub async fn open_reached(
        reach: Reach,
        location: StoreLocation,
        data_dir: &Path,
    ) -> Result<SqlStore, StoreError> {
        check_writable(data_dir)?;
        let mirror =
            matches!(location, StoreLocation::Postgres(_)).then(|| JournalMirror::new(data_dir));
        match reach {
            Reach::Online(backend) => {
                let remote = mirror.is_some();
                let store = Self::start(backend, location, data_dir, mirror, None).await?;
                if remote {
                    mark_reached(data_dir, &store.location)?;
                }
                Ok(store)
            }
            Reach::Offline { backend, reason } => {
                Self::start(backend, location, data_dir, mirror, Some(reason)).await
            }
        }
    }

    /// The database the store writes to.
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Whether the store started in an outage (and is still in one).
    pub fn is_offline(&self) -> bool {
        *self.outage.borrow()
    }

    /// Opens the store; `offline` (why the database is away) starts it in an
    /// outage, resuming from local files.
    async fn start(
        backend: Arc<dyn Backend>,
        location: StoreLocation,
        data_dir: &Path,
        mirror: Option<JournalMirror>,
        offline: Option<String>,
    ) -> Result<SqlStore, StoreError> {
        let mut backlog = Backlog::open(data_dir);
        if offline.is_none() {
            backend.migrate().await?;
            if !backlog.is_empty() {
                let (batches, writes) =
                    resync(backend.as_ref(), &mut backlog).await.map_err(|e| {
                        StoreError::new("replay the local backlog into the database", e)
                    })?;
                tracing::info!(
                    batches,
                    writes,
                    "replayed the local backlog into the database"
                );
            }
        } else if let Some(mirror) = &mirror {
            complete_copies(mirror, &backlog)?;
        }
        let (tx, rx) = mpsc::channel(65_536);
        let (outage_tx, outage) = watch::channel(false);
        let mut writer = Writer::new(backend.clone(), backlog, mirror.clone(), outage_tx);
        if let Some(reason) = &offline {
            writer.start_offline(reason);
        }
        tokio::spawn(writer.run(rx));
        Ok(SqlStore {
            tx,
            backend,
            cache: Mutex::new(HashMap::new()),
            files: FileCheckpoints::new(data_dir),
            mirror,
            instance: format!("{}-{}", std::process::id(), wall_clock_ms()),
            counter: AtomicU64::new(0),
            location,
            outage,
        })
    }

    /// Where the data lives.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// `true` while the database is unreachable and writes go to local files;
    /// back to `false` once the backlog is resynced.
    pub fn outage(&self) -> watch::Receiver<bool> {
        self.outage.clone()
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, StrategyCache>>, StoreError> {
        self.cache
            .lock()
            .map_err(|_| StoreError::new("lock the store cache", "poisoned"))
    }

    /// Whether reads come from local files: the database is away and there
    /// is a local journal copy to read.
    fn local_reads(&self) -> Option<&JournalMirror> {
        self.mirror.as_ref().filter(|_| *self.outage.borrow())
    }

    /// The whole journal of `strategy` from local files, once every write
    /// queued so far has reached them.
    async fn local_journal(
        &self,
        mirror: &JournalMirror,
        strategy: &str,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.sync().await?;
        mirror.read(strategy)
    }

    /// Loads a strategy's recovery reads into the cache on first use.
    async fn ensure_cached(&self, strategy: &str) -> Result<(), StoreError> {
        if self.lock()?.contains_key(strategy) {
            return Ok(());
        }
        let (last_seq, mut checkpoints, local) = match self.local_reads() {
            Some(mirror) => {
                if !mirror.exists(strategy) && !self.files.load(strategy).0.is_empty() {
                    // It has run before, but its journal is only in the database.
                    return Err(StoreError::new(
                        format!("resume {strategy} from local files"),
                        format!(
                            "no local copy of its journal; it can resume once {} answers",
                            self.location.describe()
                        ),
                    ));
                }
                let journal = self.local_journal(mirror, strategy).await?;
                let last_seq = journal.last().map_or(0, |e| e.event.seq);
                (last_seq, Vec::new(), Some(journal))
            }
            None => {
                let last_seq = self.backend.last_seq(strategy).await?;
                if let Some(mirror) = &self.mirror
                    && mirror.last_seq(strategy) != Some(last_seq)
                {
                    // The copy is behind, ahead or torn: rebuild it.
                    let journal = self.backend.entries_after(strategy, 0).await?;
                    mirror.rewrite(strategy, &journal)?;
                }
                (last_seq, self.backend.checkpoints(strategy).await?, None)
            }
        };
        // Merge in the file copies: they may hold a checkpoint the database lost.
        let (copies, problems) = self.files.load(strategy);
        for problem in problems {
            tracing::warn!(strategy, "unreadable checkpoint copy: {problem}");
        }
        for copy in copies {
            if !checkpoints.iter().any(|c| c.seq == copy.seq) {
                checkpoints.push(copy);
            }
        }
        // A checkpoint past the journal's end belongs to events lost in a crash.
        checkpoints.retain(|c| c.seq <= last_seq);
        checkpoints.sort_by_key(|c| std::cmp::Reverse(c.seq));
        checkpoints.truncate(KEPT_CHECKPOINTS);
        let from = checkpoints.last().map_or(0, |c| c.seq);
        let tail = match local {
            Some(journal) => journal.into_iter().filter(|e| e.event.seq > from).collect(),
            None => self.backend.entries_after(strategy, from).await?.into(),
        };
        self.lock()?
            .entry(strategy.to_string())
            .or_insert(StrategyCache {
                tail,
                last_seq,
                checkpoints,
            });
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| StoreError::new("queue a write", "the store's writer has stopped"))
    }
}

/// Appends to each local journal copy the entries of the backlog it lacks (a
/// process killed between the two writes), so the copy alone is the journal.
fn complete_copies(mirror: &JournalMirror, backlog: &Backlog) -> Result<(), StoreError> {
    let (_, writes) = backlog.oldest(usize::MAX)?;
    let mut by_strategy: HashMap<&str, Vec<&JournalEntry>> = HashMap::new();
    for write in &writes {
        if let Write::Journal { strategy, entry } = write {
            by_strategy.entry(strategy).or_default().push(entry);
        }
    }
    for (strategy, entries) in by_strategy {
        let last = mirror.last_seq(strategy).ok_or_else(|| {
            StoreError::new(
                format!("resume {strategy} from local files"),
                "its local journal copy is torn; wait for the database",
            )
        })?;
        mirror.append(strategy, entries.into_iter().filter(|e| e.event.seq > last))?;
    }
    Ok(())
}

/// Records that this data directory has reached the database (its location,
/// without password).
fn mark_reached(data_dir: &Path, location: &StoreLocation) -> Result<(), StoreError> {
    let path = data_dir.join(REACHED_MARKER);
    let text = location.describe();
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == text) {
        return Ok(());
    }
    write_atomic(&path, format!("{text}\n").as_bytes())
}

fn reached_before(data_dir: &Path, location: &StoreLocation) -> bool {
    std::fs::read_to_string(data_dir.join(REACHED_MARKER))
        .is_ok_and(|t| t.trim() == location.describe())
}

fn check_writable(data_dir: &Path) -> Result<(), StoreError> {
    let action = || format!("use data directory {}", data_dir.display());
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::new(action(), e))?;
    let probe = data_dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok")
        .map_err(|e| StoreError::new(action(), format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for SqlStore {
    async fn write(&self, mut write: Write) -> Result<(), StoreError> {
        match &mut write {
            Write::Journal { strategy, entry } => {
                self.ensure_cached(strategy).await?;
                let mut cache = self.lock()?;
                let c = cache.entry(strategy.clone()).or_default();
                if entry.event.seq != c.last_seq + 1 {
                    return Err(StoreError::new(
                        format!("append to {strategy}'s journal"),
                        format!("seq {} does not follow {}", entry.event.seq, c.last_seq),
                    ));
                }
                c.last_seq = entry.event.seq;
                c.tail.push_back(entry.clone());
            }
            Write::Checkpoint {
                strategy,
                checkpoint,
            } => {
                self.ensure_cached(strategy).await?;
                let copy: Checkpoint = checkpoint.clone().into();
                // The file copy is written before the database row, and
                // synchronously: it is the fallback if the database is away.
                self.files.save(strategy, &copy)?;
                let mut cache = self.lock()?;
                let c = cache.entry(strategy.clone()).or_default();
                c.checkpoints.insert(0, copy);
                c.checkpoints.truncate(KEPT_CHECKPOINTS);
                let oldest = c.checkpoints.last().map_or(0, |k| k.seq);
                while c.tail.front().is_some_and(|e| e.event.seq <= oldest) {
                    c.tail.pop_front();
                }
            }
            Write::SystemEvent(event) if event.id.is_empty() => {
                event.id = format!(
                    "{}-{}",
                    self.instance,
                    self.counter.fetch_add(1, Ordering::Relaxed)
                );
            }
            _ => {}
        }
        self.send(Command::Write(write)).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Sync(tx)).await?;
        rx.await
            .map_err(|_| StoreError::new("sync", "the store's writer has stopped"))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.sync().await?;
        self.backend.close().await;
        Ok(())
    }

    async fn entries_after(
        &self,
        strategy: &str,
        after: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.journal_page(strategy, after, usize::MAX).await
    }

    async fn journal_page(
        &self,
        strategy: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.ensure_cached(strategy).await?;
        {
            let cache = self.lock()?;
            if let Some(c) = cache.get(strategy) {
                let tail_from = c.tail.front().map_or(c.last_seq, |e| e.event.seq - 1);
                if after >= tail_from {
                    return Ok(c
                        .tail
                        .iter()
                        .skip_while(|e| e.event.seq <= after)
                        .take(limit)
                        .cloned()
                        .collect());
                }
            }
        }
        // Older than the cached tail: read the local copy while the database
        // is away, else the database, after flushing to it.
        if let Some(mirror) = self.local_reads() {
            let journal = self.local_journal(mirror, strategy).await?;
            return Ok(journal
                .into_iter()
                .skip_while(|e| e.event.seq <= after)
                .take(limit)
                .collect());
        }
        self.sync().await?;
        if limit == usize::MAX {
            self.backend.entries_after(strategy, after).await
        } else {
            self.backend.journal_page(strategy, after, limit).await
        }
    }

    async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError> {
        self.sync().await?;
        self.backend.host_states(strategy).await
    }

    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
        self.ensure_cached(strategy).await?;
        Ok(self.lock()?.get(strategy).map_or(0, |c| c.last_seq))
    }

    async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.ensure_cached(strategy).await?;
        Ok(self
            .lock()?
            .get(strategy)
            .map(|c| c.checkpoints.clone())
            .unwrap_or_default())
    }

    async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError> {
        self.sync().await?;
        self.backend.system_events(limit).await
    }

    async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError> {
        self.sync().await?;
        self.backend.status().await
    }

    async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError> {
        self.sync().await?;
        self.backend.orders(strategy).await
    }

    async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError> {
        self.sync().await?;
        self.backend.trades(strategy).await
    }

    async fn intents(&self, strategy: Option<&str>) -> Result<Vec<super::IntentRow>, StoreError> {
        self.sync().await?;
        self.backend.intents(strategy).await
    }

    async fn intent_transitions(
        &self,
        strategy: &str,
    ) -> Result<Vec<super::IntentWrite>, StoreError> {
        self.sync().await?;
        self.backend.intent_transitions(strategy).await
    }

    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError> {
        self.sync().await?;
        self.backend.exec_trades(strategy).await
    }

    async fn halt(&self, strategy: &str) -> Result<Option<super::HaltRecord>, StoreError> {
        self.sync().await?;
        self.backend.halt(strategy).await
    }

    async fn heartbeats(&self) -> Result<Vec<super::HeartbeatRecord>, StoreError> {
        self.sync().await?;
        self.backend.heartbeats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_redact() {
        let data = Path::new("data");
        assert_eq!(
            StoreLocation::parse("postgres://u:secret@h/db", data)
                .unwrap()
                .describe(),
            "postgres postgres://u:***@h/db"
        );
        assert_eq!(
            StoreLocation::parse("sqlite:", data).unwrap(),
            StoreLocation::Sqlite(data.join("polybot.db"))
        );
        assert!(
            StoreLocation::parse("mysql://x", data)
                .unwrap_err()
                .to_string()
                .contains("unknown scheme")
        );
    }
}
