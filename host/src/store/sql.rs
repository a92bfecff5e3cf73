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
//! the resync are recorded as system events.
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

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use backend::{Backend, BackendError, PostgresBackend, SqliteBackend};

use super::files::{Backlog, FileCheckpoints};
use super::{
    Checkpoint, HostState, JournalEntry, KEPT_CHECKPOINTS, OrderRecord, StateStore, StoreError,
    StrategyStatus, SystemEvent, TradeRecord, Write, wall_clock_ms,
};

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 8192;
/// How long the database may be away before a retry, at most.
const MAX_RETRY: Duration = Duration::from_secs(5);

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
                format!("open store `{text}`"),
                "unknown scheme; use postgres://… or sqlite:PATH",
            ));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(text)))
    }

    /// A description safe to log: no password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("sqlite {}", path.display()),
            StoreLocation::Postgres(url) => format!("postgres {}", redact(url)),
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

enum Command {
    Write(Write),
    Sync(oneshot::Sender<Result<(), StoreError>>),
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
    instance: String,
    counter: AtomicU64,
    location: StoreLocation,
    outage: watch::Receiver<bool>,
}

impl SqlStore {
    /// Opens (creating if needed) the store, applies migrations, and replays
    /// any backlog left by an earlier outage.
    ///
    /// # Errors
    /// The database cannot be reached or migrated, or the data directory is
    /// not writable — each named.
    pub async fn open(location: StoreLocation, data_dir: &Path) -> Result<SqlStore, StoreError> {
        let backend: Arc<dyn Backend> = match &location {
            StoreLocation::Sqlite(path) => {
                check_writable(data_dir)?;
                Arc::new(SqliteBackend::open(path).await?)
            }
            StoreLocation::Postgres(url) => {
                // Reach the database before creating anything locally.
                let backend = PostgresBackend::connect(url).await?;
                check_writable(data_dir)?;
                Arc::new(backend)
            }
        };
        Self::with_backend(backend, location, data_dir).await
    }

    /// Opens the store over an already connected backend.
    ///
    /// # Errors
    /// Migrations or the backlog replay fail.
    pub async fn with_backend(
        backend: Arc<dyn Backend>,
        location: StoreLocation,
        data_dir: &Path,
    ) -> Result<SqlStore, StoreError> {
        backend.migrate().await?;
        let mut backlog = Backlog::open(data_dir);
        if !backlog.is_empty() {
            let (batches, writes) = resync(backend.as_ref(), &mut backlog)
                .await
                .map_err(|e| StoreError::new("replay the local backlog into the database", e))?;
            tracing::info!(
                batches,
                writes,
                "replayed the local backlog into the database"
            );
        }
        let (tx, rx) = mpsc::channel(65_536);
        let (outage_tx, outage) = watch::channel(false);
        tokio::spawn(writer(backend.clone(), rx, backlog, outage_tx));
        Ok(SqlStore {
            tx,
            backend,
            cache: Mutex::new(HashMap::new()),
            files: FileCheckpoints::new(data_dir),
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

    /// Loads a strategy's recovery reads into the cache on first use.
    async fn ensure_cached(&self, strategy: &str) -> Result<(), StoreError> {
        if self.lock()?.contains_key(strategy) {
            return Ok(());
        }
        let last_seq = self.backend.last_seq(strategy).await?;
        let mut checkpoints = self.backend.checkpoints(strategy).await?;
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
        let tail = self.backend.entries_after(strategy, from).await?.into();
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
        self.ensure_cached(strategy).await?;
        {
            let cache = self.lock()?;
            if let Some(c) = cache.get(strategy) {
                let tail_from = c.tail.front().map_or(c.last_seq, |e| e.event.seq - 1);
                if after >= tail_from {
                    return Ok(c
                        .tail
                        .iter()
                        .filter(|e| e.event.seq > after)
                        .cloned()
                        .collect());
                }
            }
        }
        // Older than the cached tail: read the database, after flushing to it.
        self.sync().await?;
        self.backend.entries_after(strategy, after).await
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
        // Older than the cached tail: read the database, after flushing to it.
        self.sync().await?;
        self.backend.journal_page(strategy, after, limit).await
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
}

/// The single writer: group commits, and the backlog while the database is away.
async fn writer(
    backend: Arc<dyn Backend>,
    mut rx: mpsc::Receiver<Command>,
    mut backlog: Backlog,
    outage_flag: watch::Sender<bool>,
) {
    let mut outage: Option<Outage> = None;
    loop {
        let command = match &mut outage {
            None => rx.recv().await,
            Some(o) => {
                // Retry on schedule even while writes keep arriving.
                if tokio::time::Instant::now() >= o.next_retry {
                    if try_resync(backend.as_ref(), &mut backlog, o).await {
                        outage = None;
                        outage_flag.send_replace(false);
                    }
                    continue;
                }
                let next_retry = o.next_retry;
                tokio::select! {
                    command = rx.recv() => command,
                    () = tokio::time::sleep_until(next_retry) => continue,
                }
            }
        };
        let Some(first) = command else { break };
        let mut writes = Vec::new();
        let mut syncs = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(w) => writes.push(w),
                Command::Sync(s) => syncs.push(s),
            }
            if writes.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }

        let result = if writes.is_empty() {
            Ok(())
        } else if outage.is_some() {
            backlog.append(&writes)
        } else {
            match backend.commit(&writes).await {
                Ok(()) => Ok(()),
                Err(e) if e.transient => {
                    tracing::error!(store = %backend.describe(), "database unreachable, writing to local files: {e}");
                    let mut o = Outage::new();
                    writes.push(store_event(
                        "store-unreachable",
                        format!(
                            "{} unreachable ({e}); journal and checkpoints go to local files",
                            backend.describe()
                        ),
                    ));
                    let appended = backlog.append(&writes);
                    o.batches += 1;
                    outage = Some(o);
                    outage_flag.send_replace(true);
                    appended
                }
                Err(e) => Err(StoreError::new(
                    format!("commit to {}", backend.describe()),
                    e,
                )),
            }
        };
        if let Some(o) = &mut outage
            && result.is_ok()
        {
            o.writes += writes.len();
        }
        if let Err(e) = &result {
            tracing::error!("store write failed: {e}");
        }
        for sync in syncs {
            let _ = sync.send(result.clone());
        }
    }
}

/// An ongoing database outage.
struct Outage {
    since: std::time::Instant,
    retry_in: Duration,
    next_retry: tokio::time::Instant,
    batches: usize,
    writes: usize,
}

impl Outage {
    fn new() -> Self {
        let retry_in = Duration::from_millis(100);
        Outage {
            since: std::time::Instant::now(),
            retry_in,
            next_retry: tokio::time::Instant::now() + retry_in,
            batches: 0,
            writes: 0,
        }
    }

    fn retry_later(&mut self) {
        self.retry_in = (self.retry_in * 2).min(MAX_RETRY);
        self.next_retry = tokio::time::Instant::now() + self.retry_in;
    }
}

/// Tries to replay the backlog; true when the database is caught up.
async fn try_resync(backend: &dyn Backend, backlog: &mut Backlog, outage: &mut Outage) -> bool {
    if backend.ping().await.is_err() {
        outage.retry_later();
        return false;
    }
    match resync(backend, backlog).await {
        Ok((batches, writes)) => {
            let message = format!(
                "{} reachable again after {:.1} s; resynced {batches} batches ({writes} writes) from local files",
                backend.describe(),
                outage.since.elapsed().as_secs_f64()
            );
            tracing::info!("{message}");
            if let Err(e) = backend
                .commit(&[store_event("store-resynced", message)])
                .await
            {
                tracing::warn!("cannot record the resync: {e}");
            }
            true
        }
        Err(e) => {
            tracing::warn!("resync interrupted, will retry: {e}");
            outage.retry_later();
            false
        }
    }
}

/// Writes per database transaction when replaying the backlog: a long
/// outage leaves one small batch per group commit, and joining them is what
/// lets a five-minute backlog resync in seconds. The writes are idempotent
/// and kept in order, so a join commits the same rows as the batches would.
const RESYNC_WRITES: usize = 4096;

/// Replays every backlog batch into the database, oldest first, removing
/// batches once committed. Returns (batches, writes).
async fn resync(
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

fn store_event(event_type: &str, message: String) -> Write {
    let now = wall_clock_ms();
    Write::SystemEvent(SystemEvent {
        timestamp_ms: now,
        event_type: event_type.to_string(),
        component: "store".into(),
        message,
        id: format!("store-{event_type}-{now}-{}", std::process::id()),
    })
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
