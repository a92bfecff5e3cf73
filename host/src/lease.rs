//! Leases: one host drives a strategy at a time.
//!
//! A host holds two claims on each strategy it runs, taken before anything
//! about the strategy is written:
//!
//! - a **lock file**, `DIR/leases/<strategy>.lock`, locked with the OS's
//!   exclusive file lock ([`std::fs::File::try_lock`]) and holding the holder's
//!   identity. The OS drops the lock when the process dies, however it dies,
//!   so a second host on the same data directory is refused at once, and a
//!   host restarted after `kill -9` takes over at once;
//! - a **lease row** in the database (`leases`), with the holder (host name,
//!   pid, data directory, since when), an expiry renewed every third of the
//!   TTL by a background task, and a **fencing token** that grows on every
//!   take-over. It covers hosts that share one PostgreSQL database from
//!   different data directories or machines: another host may take the
//!   strategy only once the lease has expired — or at once when it holds the
//!   lock file of the data directory the row names, which proves the old
//!   holder dead.
//!
//! A renewal that finds another token means the strategy was taken over: the
//! lease reports itself lost ([`Lease::lost`]), writes a `lease-lost` system
//! event, fences the strategy's writes ([`Lease::fence`]: nothing more is
//! journaled, so no further order leaves the host) and the host must stop
//! driving the strategy. A renewal that cannot
//! reach the database is retried (with a `lease-renewal-failed` system event)
//! and does not stop the strategy: during a database outage the host keeps
//! running on its local backlog, and the token check on the next successful
//! renewal tells whether someone else took over meanwhile.
//!
//! Each [`Lease`] covers one strategy, so a host running many strategies
//! takes one lease for each. Lease times are the hosts' wall clocks: hosts
//! sharing a database need clocks closer than the TTL.
//!
//! This module never decides what a strategy does; it only says whether this
//! host may drive it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

mod fence;
mod lock_file;
pub use fence::FencedStore;
pub use lock_file::LockFile;

use crate::store::sql::{Backend, BackendError};
use crate::store::{StateStore, SystemEvent, Write, wall_clock_ms};

/// How long a lease lasts without renewal, unless `[lease] ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Who holds (or asks for) a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The machine's host name.
    pub host: String,
    pub pid: u32,
    /// The holder's data directory, absolute.
    pub data_dir: String,
    /// When it took the lease, wall time in ms since the Unix epoch.
    pub since_ms: u64,
}

impl Holder {
    /// This process, driving strategies from `data_dir`, from now.
    pub fn this_process(data_dir: &Path) -> Holder {
        Holder {
            host: host_name(),
            pid: std::process::id(),
            data_dir: absolute(data_dir).display().to_string(),
            since_ms: wall_clock_ms(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = std::time::UNIX_EPOCH + Duration::from_millis(self.since_ms);
        write!(
            f,
            "host {} pid {} (data dir {}) since {}",
            self.host,
            self.pid,
            self.data_dir,
            humantime::format_rfc3339_seconds(since)
        )
    }
}

/// A request for a strategy's lease row.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub strategy: String,
    pub holder: Holder,
    pub expires_at_ms: u64,
    /// The caller holds the lock file of its data directory, so a row naming
    /// this host and directory belongs to a dead process.
    pub same_dir_is_dead: bool,
}

/// A lease row as the database holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaseRecord {
    pub strategy: String,
    pub token: u64,
    pub holder: Holder,
    pub renewed_at_ms: u64,
    pub expires_at_ms: u64,
}

impl LeaseRecord {
    /// Whether the lease is still in force at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

/// Why a lease cannot be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another host drives the strategy.
    #[error("strategy `{strategy}` is already running: held by {holder}{}", expiry(*.expires_at_ms))]
    Held {
        strategy: String,
        holder: Holder,
        /// When the database lease lapses (`None`: held by the lock file).
        expires_at_ms: Option<u64>,
    },
    /// The lock file cannot be created or locked.
    #[error("lock file {path}: {message}")]
    LockFile { path: String, message: String },
    /// The database refused the lease query.
    #[error("lease of strategy `{strategy}`: {message}")]
    Database { strategy: String, message: String },
}

fn expiry(expires_at_ms: Option<u64>) -> String {
    match expires_at_ms {
        Some(at) => format!(
            "; the lease expires in {} unless renewed",
            humantime::format_duration(Duration::from_secs(
                at.saturating_sub(wall_clock_ms()).div_ceil(1000)
            ))
        ),
        None => String::new(),
    }
}

/// The lease was taken over while this host held it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lost the lease of strategy `{strategy}`: {taken_by}; stopped driving it")]
pub struct LeaseLost {
    pub strategy: String,
    /// Who holds it now, as far as the database says.
    pub taken_by: String,
}

/// A strategy's lease, held: the lock file and the database row, renewed in
/// the background until [`Lease::release`] or the process ends.
pub struct Lease {
    strategy: String,
    /// 0 while the lease is provisional (taken in a database outage on the
    /// strength of the lock file alone) until the database confirms it.
    token: Arc<AtomicU64>,
    request: LeaseRequest,
    holder: Holder,
    backend: Arc<dyn Backend>,
    lost: watch::Receiver<Option<LeaseLost>>,
    renewal: Option<tokio::task::JoinHandle<()>>,
    _lock: LockFile,
}

impl Lease {
    /// Takes `strategy`'s lease for `holder`: the lock file under `data_dir`
    /// (unless `lock` already holds it), then the database row.
    ///
    /// # Errors
    /// [`LeaseError::Held`] naming the holder when another live host drives
    /// the strategy; database and file errors otherwise.
    pub async fn acquire(
        backend: Arc<dyn Backend>,
        strategy: &str,
        data_dir: &Path,
        holder: Holder,
        ttl: Duration,
        lock: Option<LockFile>,
    ) -> Result<Lease, LeaseError> {
        let db_error = |e: BackendError| LeaseError::Database {
            strategy: strategy.to_string(),
            message: e.message,
        };
        let request = LeaseRequest {
            strategy: strategy.to_string(),
            holder: holder.clone(),
            expires_at_ms: holder.since_ms + ttl.as_millis() as u64,
            same_dir_is_dead: lock.is_some(),
        };
        let Some(token) = backend.acquire_lease(&request).await.map_err(db_error)? else {
            let record = backend
                .leases()
                .await
                .map_err(db_error)?
                .into_iter()
                .find(|r| r.strategy == strategy);
            return Err(match record {
                Some(r) => LeaseError::Held {
                    strategy: strategy.to_string(),
                    holder: r.holder,
                    expires_at_ms: Some(r.expires_at_ms),
                },
                None => LeaseError::Database {
                    strategy: strategy.to_string(),
                    message: "the lease was refused but has no row".into(),
                },
            });
        };
        let lock = match lock {
            Some(lock) => lock,
            None => match LockFile::acquire(data_dir, strategy, &holder) {
                Ok(lock) => lock,
                Err(e) => {
                    let _ = backend.release_lease(strategy, token).await;
                    return Err(e);
                }
            },
        };
        tracing::info!(strategy, token, "lease taken");
        let (_, lost) = watch::channel(None);
        Ok(Lease {
            strategy: strategy.to_string(),
            token: Arc::new(AtomicU64::new(token)),
            request,
            holder,
            backend,
            lost,
            renewal: None,
            _lock: lock,
        })
    }

    /// Takes `strategy`'s lease while its database does not answer, on the
    /// strength of the lock file alone: the data directory reached the
    /// database before, and no other process of this directory holds it.
    /// The lease is provisional (token 0) until the renewal reaches the
    /// database and takes the row; if another host holds the row then, the
    /// lease is lost at once (see [`Lease::lost`]).
    pub fn provisional(
        backend: Arc<dyn Backend>,
        strategy: &str,
        holder: Holder,
        ttl: Duration,
        lock: LockFile,
    ) -> Lease {
        tracing::warn!(
            strategy,
            "the database does not answer: driving the strategy on its lock file until the lease row can be taken"
        );
        let (_, lost) = watch::channel(None);
        Lease {
            strategy: strategy.to_string(),
            token: Arc::new(AtomicU64::new(0)),
            request: LeaseRequest {
                strategy: strategy.to_string(),
                holder: holder.clone(),
                expires_at_ms: holder.since_ms + ttl.as_millis() as u64,
                same_dir_is_dead: true,
            },
            holder,
            backend,
            lost,
            renewal: None,
            _lock: lock,
        }
    }

    /// The fencing token: higher than every earlier holder's (0 while the
    /// lease is provisional).
    pub fn token(&self) -> u64 {
        self.token.load(Ordering::Relaxed)
    }

    /// Who holds it (this process).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Starts renewing the lease every third of `ttl`; faults and a loss are
    /// recorded as system events in `store`.
    pub fn keep_renewed(&mut self, ttl: Duration, store: Arc<dyn StateStore>) {
        let (tx, rx) = watch::channel(None);
        self.lost = rx;
        let renewer = Renewer {
            strategy: self.strategy.clone(),
            token: self.token.clone(),
            request: self.request.clone(),
            ttl,
            backend: self.backend.clone(),
            store,
        };
        self.renewal = Some(tokio::spawn(renewer.run(tx)));
    }

    /// Resolves once the lease has been lost (taken over); pending forever
    /// while it is held.
    pub fn lost(&self) -> impl Future<Output = LeaseLost> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            loop {
                if let Some(l) = lost.borrow_and_update().clone() {
                    return l;
                }
                if lost.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// `store` as the strategy's cell must see it: its writes for this
    /// strategy are refused once the lease is lost (see [`FencedStore`]).
    /// Call after [`Lease::keep_renewed`].
    pub fn fence(&self, store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        Arc::new(FencedStore::new(
            store,
            self.strategy.clone(),
            self.lost.clone(),
        ))
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> Option<LeaseLost> {
        self.lost.borrow().clone()
    }

    /// Stops renewing and lets the lease lapse now, so the next host takes
    /// it at once (a no-op in the database when it was already lost).
    pub async fn release(mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        let token = self.token();
        if token == 0 {
            return;
        }
        if let Err(e) = self.backend.release_lease(&self.strategy, token).await {
            tracing::warn!(
                strategy = %self.strategy,
                "could not release the lease; it lapses on its own: {e}"
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }
}

/// The background renewal of one lease.
struct Renewer {
    strategy: String,
    token: Arc<AtomicU64>,
    /// How to take the row while the lease is provisional.
    request: LeaseRequest,
    ttl: Duration,
    backend: Arc<dyn Backend>,
    store: Arc<dyn StateStore>,
}

impl Renewer {
    async fn run(self, lost: watch::Sender<Option<LeaseLost>>) {
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut failing = false;
        loop {
            every.tick().await;
            let now = wall_clock_ms();
            let expires = now + self.ttl.as_millis() as u64;
            let token = self.token.load(Ordering::Relaxed);
            let renewed = if token == 0 {
                self.confirm(expires).await
            } else {
                self.backend
                    .renew_lease(&self.strategy, token, now, expires)
                    .await
            };
            match renewed {
                Ok(true) => {
                    if failing {
                        failing = false;
                        self.record("lease-renewed", "the lease is renewed again".into())
                            .await;
                    }
                }
                Ok(false) => {
                    let taken_by = match self.backend.leases().await {
                        Ok(all) => all
                            .into_iter()
                            .find(|r| r.strategy == self.strategy)
                            .map(|r| format!("now held by {} (token {})", r.holder, r.token))
                            .unwrap_or_else(|| "its row is gone".into()),
                        Err(e) => format!("taken over (holder unknown: {e})"),
                    };
                    let loss = LeaseLost {
                        strategy: self.strategy.clone(),
                        taken_by,
                    };
                    tracing::error!("{loss}");
                    self.record("lease-lost", loss.to_string()).await;
                    let _ = lost.send(Some(loss));
                    return;
                }
                Err(e) => {
                    tracing::warn!(strategy = %self.strategy, "cannot renew the lease: {e}");
                    if !failing {
                        failing = true;
                        self.record(
                            "lease-renewal-failed",
                            format!("cannot renew the lease (token {token}): {e}; retrying"),
                        )
                        .await;
                    }
                }
            }
        }
    }

    /// Takes the row of a provisional lease: `Ok(true)` once taken (the
    /// token is set and recorded), `Ok(false)` when another host holds it.
    async fn confirm(&self, expires_at_ms: u64) -> Result<bool, BackendError> {
        let request = LeaseRequest {
            expires_at_ms,
            ..self.request.clone()
        };
        match self.backend.acquire_lease(&request).await? {
            Some(token) => {
                self.token.store(token, Ordering::Relaxed);
                tracing::info!(strategy = %self.strategy, token, "lease confirmed");
                self.record(
                    "lease-confirmed",
                    format!("the database answers again: lease taken with token {token}"),
                )
                .await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn record(&self, event_type: &str, message: String) {
        let event = SystemEvent {
            timestamp_ms: wall_clock_ms(),
            event_type: event_type.into(),
            component: format!("lease/{}", self.strategy),
            message,
            id: String::new(),
        };
        if let Err(e) = self.store.write(Write::SystemEvent(event)).await {
            tracing::error!(strategy = %self.strategy, "cannot record a lease event: {e}");
        }
    }
}

/// The machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::SqliteBackend;

    fn holder(dir: &Path, pid: u32) -> Holder {
        Holder {
            pid,
            ..Holder::this_process(dir)
        }
    }

    async fn backend(dir: &Path) -> Arc<dyn Backend> {
        let b = SqliteBackend::open(&dir.join("polybot.db")).await.unwrap();
        b.migrate().await.unwrap();
        Arc::new(b)
    }

    #[test]
    fn a_locked_file_names_its_holder_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = holder(dir.path(), 11);
        let lock = LockFile::acquire(dir.path(), "s", &first).unwrap();
        match LockFile::acquire(dir.path(), "s", &holder(dir.path(), 12)) {
            Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, first),
            other => panic!("expected held, got {other:?}"),
        }
        // Another strategy in the same directory has its own lock.
        LockFile::acquire(dir.path(), "other", &first).unwrap();
        drop(lock);
        LockFile::acquire(dir.path(), "s", &holder(dir.path(), 12)).unwrap();
    }

    #[tokio::test]
    async fn the_row_is_taken_over_only_when_expired_or_proven_dead() {
        let dir = tempfile::tempdir().unwrap();
        let db = backend(dir.path()).await;
        let now = wall_clock_ms();
        let ask = |pid, dead, dir: &str| LeaseRequest {
            strategy: "s".into(),
            holder: Holder {
                host: "h".into(),
                pid,
                data_dir: dir.into(),
                since_ms: now,
            },
            expires_at_ms: now + 60_000,
            same_dir_is_dead: dead,
        };
        assert_eq!(
            db.acquire_lease(&ask(1, false, "/a")).await.unwrap(),
            Some(1)
        );
        // Held and live: refused, whether from another dir or without proof.
        assert_eq!(db.acquire_lease(&ask(2, true, "/b")).await.unwrap(), None);
        assert_eq!(db.acquire_lease(&ask(2, false, "/a")).await.unwrap(), None);
        // Same host and dir, with the lock file proving the holder dead: taken.
        assert_eq!(
            db.acquire_lease(&ask(2, true, "/a")).await.unwrap(),
            Some(2)
        );
        // The old holder's renewal finds another token.
        assert!(!db.renew_lease("s", 1, now, now + 1).await.unwrap());
        assert!(db.renew_lease("s", 2, now, now + 60_000).await.unwrap());
        // Released: free for anyone, with a new token.
        db.release_lease("s", 2).await.unwrap();
        assert_eq!(
            db.acquire_lease(&ask(3, false, "/b")).await.unwrap(),
            Some(3)
        );
        let rows = db.leases().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].holder.pid, 3);
        assert!(rows[0].is_live(now));
    }

    #[tokio::test]
    async fn a_second_lease_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let db = backend(dir.path()).await;
        let ttl = Duration::from_secs(30);
        let first = Lease::acquire(
            db.clone(),
            "s",
            dir.path(),
            holder(dir.path(), 1),
            ttl,
            None,
        )
        .await
        .unwrap();
        assert_eq!(first.token(), 1);
        let refused = Lease::acquire(
            db.clone(),
            "s",
            other.path(),
            holder(other.path(), 2),
            ttl,
            None,
        )
        .await;
        match refused {
            Err(e @ LeaseError::Held { .. }) => {
                let line = e.to_string();
                assert!(
                    line.contains("pid 1") && line.contains("expires in"),
                    "{line}"
                );
            }
            Err(e) => panic!("expected held, got {e}"),
            Ok(_) => panic!("expected held, got a lease"),
        }
        first.release().await;
        let second = Lease::acquire(db, "s", other.path(), holder(other.path(), 2), ttl, None)
            .await
            .unwrap();
        assert_eq!(second.token(), 2);
    }
}
