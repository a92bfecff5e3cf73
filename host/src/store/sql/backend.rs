//! The SQL each database runs. One implementation, stamped out for SQLite and
//! PostgreSQL by `sql_backend!`: the schema (see `migrations/`) keeps times as
//! integer milliseconds in both, so the statements are the same text, with
//! `$N` placeholders that both drivers accept.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::{QueryBuilder, Row};

use crate::lease::{Holder, LeaseRecord, LeaseRequest};
use crate::store::{
    Checkpoint, HaltRecord, HeartbeatRecord, HostState, IntentRow, IntentWrite, JournalEntry,
    KEPT_CHECKPOINTS, KEPT_HOST_STATES, OrderRecord, StoreError, StrategyStatus, SystemEvent,
    TradeRecord, Write, codec,
};

/// A database failure, classified: transient ones (connection lost, server
/// shutting down, busy) send the store to its local-file fallback.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub transient: bool,
}

impl From<sqlx::Error> for BackendError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // PostgreSQL: class 08 connection exception, 57P0x shutdown,
                // 53xxx insufficient resources. SQLite (extended codes: the
                // primary one is the low byte, e.g. 778 is an I/O error in
                // write): 5 busy, 6 locked, 10 I/O error, 13 full, 14 cannot
                // open.
                match code.parse::<i32>() {
                    Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14),
                    Err(_) => {
                        code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
                    }
                }
            }),
            _ => false,
        };
        BackendError {
            message: e.to_string(),
            transient,
        }
    }
}

impl From<BackendError> for StoreError {
    fn from(e: BackendError) -> Self {
        StoreError::new("database", e.message)
    }
}

/// What the store needs from a database.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// e.g. `sqlite data/polybot.db`.
    fn describe(&self) -> String;
    /// Applies the schema migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Commits a group of writes in one transaction. Idempotent.
    async fn commit(&self, writes: &[Write]) -> Result<(), BackendError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), BackendError>;
    /// Closes every connection, waiting for those in use.
    async fn close(&self);
    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError>;
    async fn entries_after(
        &self,
        strategy: &str,
        after: u64,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// At most `limit` journal entries after seq `after`, in order.
    async fn journal_page(
        &self,
        strategy: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError>;
    /// Kept host states, newest first.
    async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError>;
    async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError>;
    async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError>;
    async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError>;
    async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError>;
    /// Intents as they stand, of one strategy or all, in creation order.
    async fn intents(&self, strategy: Option<&str>) -> Result<Vec<IntentRow>, StoreError>;
    async fn intent_transitions(&self, strategy: &str) -> Result<Vec<IntentWrite>, StoreError>;
    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError>;
    async fn halt(&self, strategy: &str) -> Result<Option<HaltRecord>, StoreError>;
    async fn heartbeats(&self) -> Result<Vec<HeartbeatRecord>, StoreError>;
    /// Takes `request.strategy`'s lease if it is free, expired, or (with
    /// `request.same_dir_is_dead`) held from this host and data directory:
    /// the new token, or `None` when someone else holds it.
    async fn acquire_lease(&self, request: &LeaseRequest) -> Result<Option<u64>, BackendError>;
    /// Extends a lease held with `token` to `expires_at_ms`; `false` when the
    /// lease now carries another token (taken over).
    async fn renew_lease(
        &self,
        strategy: &str,
        token: u64,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, BackendError>;
    /// Lets a lease held with `token` lapse now.
    async fn release_lease(&self, strategy: &str, token: u64) -> Result<(), BackendError>;
    /// Every lease row, by strategy name.
    async fn leases(&self) -> Result<Vec<LeaseRecord>, BackendError>;
}

/// Rows per multi-row INSERT: well under both databases' parameter limits.
const ROWS_PER_INSERT: usize = 500;

fn read_err(action: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::new(action, e)
}

/// Journal entries per page when reading the journal back.
const JOURNAL_PAGE: i64 = 10_000;

macro_rules! sql_backend {
    ($name:ident, $db:ty, $pool:ty, journal_page: $journal_page:expr, journal_rows: $journal_rows:expr) => {
        /// A connected database; see the module docs.
        pub struct $name {
            pool: $pool,
            describe: String,
            /// Strategy name → row id, filled after commits that created them.
            ids: Mutex<HashMap<String, i64>>,
        }

        impl $name {
            fn from_pool(pool: $pool, describe: String) -> Self {
                $name { pool, describe, ids: Mutex::new(HashMap::new()) }
            }

            /// Decodes the entries in (`from`, `to`] row by row: pages that
            /// hold entries written as JSON by earlier versions, and the
            /// error that names an entry that does not decode.
            async fn decode_rows(&self, strategy: &str, id: i64, from: i64, to: i64) -> Result<Vec<JournalEntry>, StoreError> {
                let rows = sqlx::query($journal_rows)
                    .bind(id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(read_err("read the journal"))?;
                let mut entries = Vec::with_capacity(rows.len());
                for row in rows {
                    let seq: i64 = row.get(0);
                    let bytes: Vec<u8> = row.get(1);
                    let entry = codec::decode_entry(&bytes).map_err(|e| {
                        StoreError::new(format!("read {strategy}'s journal entry {seq}"), format!("corrupt entry: {e}"))
                    })?;
                    entries.push(entry);
                }
                Ok(entries)
            }

            /// The idempotent insert of one order row.
            fn insert_order(id: i64, o: &OrderRecord) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments<'_>> {
                sqlx::query(
                    "INSERT INTO orders (strategy_id, intent_id, seq, market, side, price, size, \
                     order_type, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (strategy_id, intent_id) DO NOTHING",
                )
                .bind(id)
                .bind(&o.intent_id)
                .bind(o.seq as i64)
                .bind(&o.market)
                .bind(&o.side)
                .bind(o.price)
                .bind(o.size)
                .bind(&o.order_type)
                .bind(o.created_at_ms as i64)
            }

            /// Up to `limit` journal entries after seq `from`, in seq order.
            async fn read_page(&self, strategy: &str, id: i64, from: i64, limit: i64) -> Result<Vec<JournalEntry>, StoreError> {
                // A page of entries comes back as one concatenation of
                // self-delimiting binary entries, built by the database:
                // per-row fetching was most of a restart's time.
                let row = sqlx::query($journal_page)
                    .bind(id)
                    .bind(from)
                    .bind(limit)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(read_err("read the journal"))?;
                let (Some(page), Some(last)) = (row.get::<Option<Vec<u8>>, _>(0), row.get::<Option<i64>, _>(1)) else {
                    return Ok(Vec::new());
                };
                let mut decoded = match codec::decode_entries(&page) {
                    Ok(decoded) => decoded,
                    // Entries written as JSON, or a corrupt one to name.
                    Err(_) => self.decode_rows(strategy, id, from, last).await?,
                };
                // Aggregation order is the database's; seq order is ours.
                decoded.sort_by_key(|e| e.event.seq);
                Ok(decoded)
            }

            fn cached_id(&self, strategy: &str) -> Option<i64> {
                self.ids.lock().ok()?.get(strategy).copied()
            }

            async fn strategy_id(&self, strategy: &str) -> Result<Option<i64>, StoreError> {
                if let Some(id) = self.cached_id(strategy) {
                    return Ok(Some(id));
                }
                let row = sqlx::query("SELECT id FROM strategies WHERE name = $1")
                    .bind(strategy)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(read_err("look up a strategy"))?;
                Ok(row.map(|r| r.get::<i64, _>(0)))
            }

            async fn commit_group(&self, writes: &[Write]) -> Result<(), sqlx::Error> {
                let mut conn = self.pool.acquire().await?;
                let result = self.commit_on(&mut conn, writes).await;
                if result.is_err() {
                    // A commit that failed (a full disk, say) can leave its
                    // transaction, and the write lock, open on the connection:
                    // close it rather than hand it back to the pool.
                    conn.close_on_drop();
                }
                result
            }

            async fn commit_on(
                &self,
                conn: &mut sqlx::pool::PoolConnection<$db>,
                writes: &[Write],
            ) -> Result<(), sqlx::Error> {
                use sqlx::Acquire;
                let mut tx = conn.begin().await?;
                let mut ids: HashMap<String, i64> = HashMap::new();
                for write in writes {
                    let name = match write {
                        Write::Journal { strategy, .. }
                        | Write::Checkpoint { strategy, .. }
                        | Write::Order { strategy, .. }
                        | Write::Trade { strategy, .. }
                        | Write::StrategyState { strategy, .. }
                        | Write::HostState { strategy, .. }
                        | Write::Intent { strategy, .. }
                        | Write::ExecTrade { strategy, .. } => strategy,
                        Write::SystemEvent(_) | Write::Halt(_) | Write::Heartbeat(_) => continue,
                    };
                    if ids.contains_key(name) {
                        continue;
                    }
                    let id = match self.cached_id(name) {
                        Some(id) => id,
                        None => {
                            let now = crate::store::wall_clock_ms() as i64;
                            sqlx::query(
                                "INSERT INTO strategies (name, created_at_ms, updated_at_ms) VALUES ($1, $2, $2) \
                                 ON CONFLICT (name) DO NOTHING",
                            )
                            .bind(name)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query("SELECT id FROM strategies WHERE name = $1")
                                .bind(name)
                                .fetch_one(&mut *tx)
                                .await?
                                .get::<i64, _>(0)
                        }
                    };
                    ids.insert(name.clone(), id);
                }

                let journal: Vec<(i64, &JournalEntry)> = writes
                    .iter()
                    .filter_map(|w| match w {
                        Write::Journal { strategy, entry } => Some((ids[strategy], entry)),
                        _ => None,
                    })
                    .collect();
                for chunk in journal.chunks(ROWS_PER_INSERT) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO journal (strategy_id, seq, event_time_ms, entry) ",
                    );
                    insert.push_values(chunk, |mut row, (id, entry)| {
                        row.push_bind(*id)
                            .push_bind(entry.event.seq as i64)
                            .push_bind(entry.event.timestamp_ms as i64)
                            .push_bind(codec::encode_entry(entry));
                    });
                    insert.push(" ON CONFLICT (strategy_id, seq) DO NOTHING");
                    // Only the full-size statement is kept prepared: every other
                    // row count is a different statement, and caching each one
                    // (up to the connection's cache size) made memory climb
                    // through a long run.
                    let full = chunk.len() == ROWS_PER_INSERT;
                    insert.build().persistent(full).execute(&mut *tx).await?;
                }

                // An order row goes in with the journal entry that places it,
                // so a journaled order is never without its row; the runner's
                // own record of it is then a no-op.
                let now = crate::store::wall_clock_ms();
                let placed: Vec<(i64, OrderRecord)> = journal
                    .iter()
                    .flat_map(|(id, entry)| OrderRecord::placed_by(entry, now).into_iter().map(move |o| (*id, o)))
                    .collect();
                for (id, o) in &placed {
                    Self::insert_order(*id, o).execute(&mut *tx).await?;
                }

                for write in writes {
                    match write {
                        Write::Journal { .. } => {}
                        Write::Checkpoint { strategy, checkpoint: c } => {
                            let id = ids[strategy];
                            sqlx::query(
                                "INSERT INTO checkpoints (strategy_id, seq, event_time_ms, state_version, \
                                 module_digest, state, checksum, created_at_ms) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (strategy_id, seq) DO NOTHING",
                            )
                            .bind(id)
                            .bind(c.seq as i64)
                            .bind(c.event_time_ms as i64)
                            .bind(c.state_version as i32)
                            .bind(&c.module_digest)
                            .bind(&c.state)
                            .bind(&c.checksum)
                            .bind(c.created_at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query(
                                "DELETE FROM checkpoints WHERE strategy_id = $1 AND seq NOT IN \
                                 (SELECT seq FROM checkpoints WHERE strategy_id = $1 ORDER BY seq DESC LIMIT $2)",
                            )
                            .bind(id)
                            .bind(KEPT_CHECKPOINTS as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::Order { strategy, order: o } => {
                            Self::insert_order(ids[strategy], o).execute(&mut *tx).await?;
                        }
                        Write::Trade { strategy, trade: t } => {
                            sqlx::query(
                                "INSERT INTO trades (strategy_id, seq, intent_id, market, side, price, size, fee, \
                                 pnl, executed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                                 ON CONFLICT (strategy_id, seq) DO NOTHING",
                            )
                            .bind(ids[strategy])
                            .bind(t.seq as i64)
                            .bind(&t.intent_id)
                            .bind(&t.market)
                            .bind(&t.side)
                            .bind(t.price)
                            .bind(t.size)
                            .bind(t.fee)
                            .bind(t.pnl)
                            .bind(t.executed_at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::SystemEvent(e) => {
                            sqlx::query(
                                "INSERT INTO system_events (timestamp_ms, event_type, component, message, dedup_key) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
                            )
                            .bind(e.timestamp_ms as i64)
                            .bind(&e.event_type)
                            .bind(&e.component)
                            .bind(&e.message)
                            .bind(&e.id)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::HostState { strategy, state: h } => {
                            let id = ids[strategy];
                            sqlx::query(
                                "INSERT INTO host_states (strategy_id, seq, state, checksum, created_at_ms) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (strategy_id, seq) DO NOTHING",
                            )
                            .bind(id)
                            .bind(h.seq as i64)
                            .bind(&h.bytes)
                            .bind(&h.checksum)
                            .bind(h.created_at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query(
                                "DELETE FROM host_states WHERE strategy_id = $1 AND seq NOT IN \
                                 (SELECT seq FROM host_states WHERE strategy_id = $1 ORDER BY seq DESC LIMIT $2)",
                            )
                            .bind(id)
                            .bind(KEPT_HOST_STATES as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::Intent { strategy, intent: w } => {
                            let id = ids[strategy];
                            if let Some(order) = &w.order {
                                let r = IntentRow::first(strategy, w, order);
                                sqlx::query(
                                    "INSERT INTO intents (strategy_id, intent_id, market, side, price, size, \
                                     order_type, state, filled, reason, venue_ref, step, created_at_ms, updated_at_ms) \
                                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
                                     ON CONFLICT (strategy_id, intent_id) DO NOTHING",
                                )
                                .bind(id)
                                .bind(&r.intent_id)
                                .bind(&r.market)
                                .bind(&r.side)
                                .bind(r.price)
                                .bind(r.size)
                                .bind(&r.order_type)
                                .bind(&r.state)
                                .bind(r.filled)
                                .bind(&r.reason)
                                .bind(&r.venue_ref)
                                .bind(i64::from(r.step))
                                .bind(r.created_at_ms as i64)
                                .execute(&mut *tx)
                                .await?;
                            } else {
                                sqlx::query(
                                    "UPDATE intents SET state = $3, filled = $4, reason = $5, \
                                     venue_ref = COALESCE($6, venue_ref), step = $7, updated_at_ms = $8 \
                                     WHERE strategy_id = $1 AND intent_id = $2 AND step < $7",
                                )
                                .bind(id)
                                .bind(&w.intent_id)
                                .bind(&w.to)
                                .bind(w.filled)
                                .bind(&w.reason)
                                .bind(&w.venue_ref)
                                .bind(i64::from(w.step))
                                .bind(w.at_ms as i64)
                                .execute(&mut *tx)
                                .await?;
                            }
                            sqlx::query(
                                "INSERT INTO intent_transitions (strategy_id, intent_id, step, from_state, \
                                 to_state, filled, remaining, reason, at_ms) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                                 ON CONFLICT (strategy_id, intent_id, step) DO NOTHING",
                            )
                            .bind(id)
                            .bind(&w.intent_id)
                            .bind(i64::from(w.step))
                            .bind(&w.from)
                            .bind(&w.to)
                            .bind(w.filled)
                            .bind(w.remaining)
                            .bind(&w.reason)
                            .bind(w.at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::ExecTrade { strategy, trade_id } => {
                            sqlx::query(
                                "INSERT INTO exec_trades (strategy_id, trade_id) VALUES ($1, $2) \
                                 ON CONFLICT (strategy_id, trade_id) DO NOTHING",
                            )
                            .bind(ids[strategy])
                            .bind(trade_id)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::Halt(h) => {
                            sqlx::query(
                                "INSERT INTO halts (strategy, halted, reason, at_ms) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (strategy) DO UPDATE SET halted = excluded.halted, \
                                 reason = excluded.reason, at_ms = excluded.at_ms",
                            )
                            .bind(&h.strategy)
                            .bind(h.halted)
                            .bind(&h.reason)
                            .bind(h.at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::Heartbeat(h) => {
                            sqlx::query(
                                "INSERT INTO heartbeats (strategy, host, at_ms, body) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (strategy) DO UPDATE SET host = excluded.host, \
                                 at_ms = excluded.at_ms, body = excluded.body",
                            )
                            .bind(&h.strategy)
                            .bind(&h.host)
                            .bind(h.at_ms as i64)
                            .bind(h.body.to_string())
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::StrategyState { strategy, module_digest, state, restarts, at_ms } => {
                            sqlx::query(
                                "UPDATE strategies SET state = $2, restarts = $3, module_digest = $4, \
                                 updated_at_ms = $5 WHERE id = $1",
                            )
                            .bind(ids[strategy])
                            .bind(state)
                            .bind(*restarts as i64)
                            .bind(module_digest)
                            .bind(*at_ms as i64)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                tx.commit().await?;
                if let Ok(mut cached) = self.ids.lock() {
                    cached.extend(ids);
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Backend for $name {
            fn describe(&self) -> String {
                self.describe.clone()
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                self.migrator()
                    .run(&self.pool)
                    .await
                    .map_err(|e| StoreError::new(format!("migrate {}", self.describe), e))
            }

            async fn commit(&self, writes: &[Write]) -> Result<(), BackendError> {
                self.commit_group(writes).await.map_err(BackendError::from)
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn ping(&self) -> Result<(), BackendError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(0) };
                let row = sqlx::query("SELECT MAX(seq) FROM journal WHERE strategy_id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(read_err("read the journal"))?;
                Ok(row.get::<Option<i64>, _>(0).unwrap_or(0) as u64)
            }

            async fn entries_after(&self, strategy: &str, after: u64) -> Result<Vec<JournalEntry>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let mut entries: Vec<JournalEntry> = Vec::new();
                let mut from = after as i64;
                loop {
                    let mut page = self.read_page(strategy, id, from, JOURNAL_PAGE).await?;
                    let Some(last) = page.last().map(|e| e.event.seq as i64) else { break };
                    let full = page.len() as i64 >= JOURNAL_PAGE;
                    entries.append(&mut page);
                    if !full {
                        break;
                    }
                    from = last;
                }
                Ok(entries)
            }

            async fn journal_page(&self, strategy: &str, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                self.read_page(strategy, id, after as i64, limit).await
            }

            async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query(
                    "SELECT seq, state, checksum, created_at_ms FROM host_states \
                     WHERE strategy_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(id)
                .bind(KEPT_HOST_STATES as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read host states"))?;
                Ok(rows
                    .iter()
                    .map(|row| HostState {
                        seq: row.get::<i64, _>(0) as u64,
                        bytes: row.get(1),
                        checksum: row.get(2),
                        created_at_ms: row.get::<i64, _>(3) as u64,
                    })
                    .collect())
            }

            async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query(
                    "SELECT seq, event_time_ms, state_version, module_digest, state, checksum, created_at_ms \
                     FROM checkpoints WHERE strategy_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(id)
                .bind(KEPT_CHECKPOINTS as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read checkpoints"))?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let sum: Vec<u8> = row.get(5);
                        let mut checksum = [0u8; 32];
                        if sum.len() == 32 {
                            checksum.copy_from_slice(&sum);
                        }
                        Checkpoint {
                            seq: row.get::<i64, _>(0) as u64,
                            event_time_ms: row.get::<i64, _>(1) as u64,
                            state_version: row.get::<i32, _>(2) as u32,
                            module_digest: row.get(3),
                            state: row.get(4),
                            checksum,
                            created_at_ms: row.get::<i64, _>(6) as u64,
                        }
                    })
                    .collect())
            }

            async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError> {
                let rows = sqlx::query(
                    "SELECT timestamp_ms, event_type, component, message, dedup_key FROM \
                     (SELECT * FROM system_events ORDER BY id DESC LIMIT $1) recent ORDER BY id",
                )
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read system events"))?;
                Ok(rows
                    .iter()
                    .map(|row| SystemEvent {
                        timestamp_ms: row.get::<i64, _>(0) as u64,
                        event_type: row.get(1),
                        component: row.get(2),
                        message: row.get(3),
                        id: row.get(4),
                    })
                    .collect())
            }

            async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError> {
                let rows = sqlx::query(
                    "SELECT s.name, s.state, s.restarts, s.updated_at_ms, \
                       (SELECT MAX(seq) FROM journal j WHERE j.strategy_id = s.id), \
                       (SELECT MAX(seq) FROM checkpoints c WHERE c.strategy_id = s.id), \
                       (SELECT MAX(created_at_ms) FROM checkpoints c WHERE c.strategy_id = s.id), \
                       (SELECT COUNT(*) FROM trades t WHERE t.strategy_id = s.id), \
                       (SELECT SUM(pnl) FROM trades t WHERE t.strategy_id = s.id) \
                     FROM strategies s ORDER BY s.name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read strategy status"))?;
                Ok(rows
                    .iter()
                    .map(|row| StrategyStatus {
                        name: row.get(0),
                        state: row.get(1),
                        restarts: row.get::<i64, _>(2) as u64,
                        updated_at: row.get::<i64, _>(3) as u64,
                        last_seq: row.get::<Option<i64>, _>(4).unwrap_or(0) as u64,
                        last_checkpoint_seq: row.get::<Option<i64>, _>(5).map(|v| v as u64),
                        last_checkpoint_at: row.get::<Option<i64>, _>(6).map(|v| v as u64),
                        trades: row.get::<i64, _>(7) as u64,
                        pnl: row.get::<Option<f64>, _>(8).unwrap_or(0.0),
                    })
                    .collect())
            }

            async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query(
                    "SELECT intent_id, seq, market, side, price, size, order_type, created_at_ms \
                     FROM orders WHERE strategy_id = $1 ORDER BY seq, intent_id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read orders"))?;
                Ok(rows
                    .iter()
                    .map(|row| OrderRecord {
                        intent_id: row.get(0),
                        seq: row.get::<i64, _>(1) as u64,
                        market: row.get(2),
                        side: row.get(3),
                        price: row.get(4),
                        size: row.get(5),
                        order_type: row.get(6),
                        created_at_ms: row.get::<i64, _>(7) as u64,
                    })
                    .collect())
            }

            async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query(
                    "SELECT seq, intent_id, market, side, price, size, fee, pnl, executed_at_ms \
                     FROM trades WHERE strategy_id = $1 ORDER BY seq",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read trades"))?;
                Ok(rows
                    .iter()
                    .map(|row| TradeRecord {
                        seq: row.get::<i64, _>(0) as u64,
                        intent_id: row.get(1),
                        market: row.get(2),
                        side: row.get(3),
                        price: row.get(4),
                        size: row.get(5),
                        fee: row.get(6),
                        pnl: row.get(7),
                        executed_at_ms: row.get::<i64, _>(8) as u64,
                    })
                    .collect())
            }

            async fn intents(&self, strategy: Option<&str>) -> Result<Vec<IntentRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT s.name, i.intent_id, i.market, i.side, i.price, i.size, i.order_type, i.state, \
                     i.filled, i.reason, i.venue_ref, i.step, i.created_at_ms, i.updated_at_ms \
                     FROM intents i JOIN strategies s ON s.id = i.strategy_id \
                     WHERE $1 IS NULL OR s.name = $1 ORDER BY i.id",
                )
                .bind(strategy)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read intents"))?;
                Ok(rows
                    .iter()
                    .map(|row| IntentRow {
                        strategy: row.get(0),
                        intent_id: row.get(1),
                        market: row.get(2),
                        side: row.get(3),
                        price: row.get(4),
                        size: row.get(5),
                        order_type: row.get(6),
                        state: row.get(7),
                        filled: row.get(8),
                        reason: row.get(9),
                        venue_ref: row.get(10),
                        step: row.get::<i64, _>(11) as u32,
                        created_at_ms: row.get::<i64, _>(12) as u64,
                        updated_at_ms: row.get::<i64, _>(13) as u64,
                    })
                    .collect())
            }

            async fn intent_transitions(&self, strategy: &str) -> Result<Vec<IntentWrite>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query(
                    "SELECT intent_id, step, from_state, to_state, filled, remaining, reason, at_ms \
                     FROM intent_transitions WHERE strategy_id = $1 ORDER BY intent_id, step",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err("read intent transitions"))?;
                Ok(rows
                    .iter()
                    .map(|row| IntentWrite {
                        intent_id: row.get(0),
                        step: row.get::<i64, _>(1) as u32,
                        from: row.get(2),
                        to: row.get(3),
                        filled: row.get(4),
                        remaining: row.get(5),
                        reason: row.get(6),
                        at_ms: row.get::<i64, _>(7) as u64,
                        order: None,
                        venue_ref: None,
                    })
                    .collect())
            }

            async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError> {
                let Some(id) = self.strategy_id(strategy).await? else { return Ok(Vec::new()) };
                let rows = sqlx::query("SELECT trade_id FROM exec_trades WHERE strategy_id = $1")
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(read_err("read reconciled trades"))?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            }

            async fn halt(&self, strategy: &str) -> Result<Option<HaltRecord>, StoreError> {
                let row = sqlx::query("SELECT strategy, halted, reason, at_ms FROM halts WHERE strategy = $1")
                    .bind(strategy)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(read_err("read halts"))?;
                Ok(row.map(|row| HaltRecord {
                    strategy: row.get(0),
                    halted: row.get(1),
                    reason: row.get(2),
                    at_ms: row.get::<i64, _>(3) as u64,
                }))
            }

            async fn heartbeats(&self) -> Result<Vec<HeartbeatRecord>, StoreError> {
                let rows = sqlx::query("SELECT strategy, host, at_ms, body FROM heartbeats ORDER BY strategy")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(read_err("read heartbeats"))?;
                rows.iter()
                    .map(|row| {
                        let body: String = row.get(3);
                        Ok(HeartbeatRecord {
                            strategy: row.get(0),
                            host: row.get(1),
                            at_ms: row.get::<i64, _>(2) as u64,
                            body: serde_json::from_str(&body)
                                .map_err(|e| StoreError::new("read heartbeats", e))?,
                        })
                    })
                    .collect()
            }

            async fn acquire_lease(&self, r: &LeaseRequest) -> Result<Option<u64>, BackendError> {
                let row = sqlx::query(
                    "INSERT INTO leases (strategy, token, holder_host, holder_pid, holder_dir, \
                       acquired_at_ms, renewed_at_ms, expires_at_ms) \
                     VALUES ($1, 1, $2, $3, $4, $5, $5, $6) \
                     ON CONFLICT (strategy) DO UPDATE SET token = leases.token + 1, \
                       holder_host = excluded.holder_host, holder_pid = excluded.holder_pid, \
                       holder_dir = excluded.holder_dir, acquired_at_ms = excluded.acquired_at_ms, \
                       renewed_at_ms = excluded.renewed_at_ms, expires_at_ms = excluded.expires_at_ms \
                     WHERE leases.expires_at_ms <= $5 \
                        OR ($7 AND leases.holder_host = $2 AND leases.holder_dir = $4) \
                     RETURNING token",
                )
                .bind(&r.strategy)
                .bind(&r.holder.host)
                .bind(i64::from(r.holder.pid))
                .bind(&r.holder.data_dir)
                .bind(r.holder.since_ms as i64)
                .bind(r.expires_at_ms as i64)
                .bind(r.same_dir_is_dead)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| row.get::<i64, _>(0) as u64))
            }

            async fn renew_lease(
                &self,
                strategy: &str,
                token: u64,
                now_ms: u64,
                expires_at_ms: u64,
            ) -> Result<bool, BackendError> {
                let done = sqlx::query(
                    "UPDATE leases SET renewed_at_ms = $1, expires_at_ms = $2 \
                     WHERE strategy = $3 AND token = $4",
                )
                .bind(now_ms as i64)
                .bind(expires_at_ms as i64)
                .bind(strategy)
                .bind(token as i64)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(&self, strategy: &str, token: u64) -> Result<(), BackendError> {
                sqlx::query("UPDATE leases SET expires_at_ms = 0 WHERE strategy = $1 AND token = $2")
                    .bind(strategy)
                    .bind(token as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn leases(&self) -> Result<Vec<LeaseRecord>, BackendError> {
                let rows = sqlx::query(
                    "SELECT strategy, token, holder_host, holder_pid, holder_dir, acquired_at_ms, \
                       renewed_at_ms, expires_at_ms FROM leases ORDER BY strategy",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| LeaseRecord {
                        strategy: row.get(0),
                        token: row.get::<i64, _>(1) as u64,
                        holder: Holder {
                            host: row.get(2),
                            pid: row.get::<i64, _>(3) as u32,
                            data_dir: row.get(4),
                            since_ms: row.get::<i64, _>(5) as u64,
                        },
                        renewed_at_ms: row.get::<i64, _>(6) as u64,
                        expires_at_ms: row.get::<i64, _>(7) as u64,
                    })
                    .collect())
            }
        }
    };
}

// A page of the journal after seq $2: the entries concatenated, the last seq
// and the count; and the entries in (`$2`, `$3`] one row each.
sql_backend!(
    SqliteBackend,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    journal_page: "SELECT CAST(group_concat(entry, '') AS BLOB), MAX(seq), COUNT(*) FROM \
                   (SELECT seq, entry FROM journal WHERE strategy_id = $1 AND seq > $2 ORDER BY seq LIMIT $3)",
    journal_rows: "SELECT seq, CAST(entry AS BLOB) FROM journal WHERE strategy_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
);
sql_backend!(
    PostgresBackend,
    sqlx::Postgres,
    sqlx::PgPool,
    journal_page: "SELECT string_agg(entry, ''::bytea ORDER BY seq), MAX(seq), COUNT(*) FROM \
                   (SELECT seq, entry FROM journal WHERE strategy_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) AS page",
    journal_rows: "SELECT seq, entry FROM journal WHERE strategy_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
);

impl SqliteBackend {
    /// Opens (creating) a SQLite file in WAL mode with `synchronous=FULL`.
    ///
    /// # Errors
    /// The file cannot be created or opened, naming it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let action = || format!("open SQLite database {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::new(action(), e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::new(action(), e))?;
        Ok(Self::from_pool(pool, format!("sqlite {}", path.display())))
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/sqlite")
    }
}

impl PostgresBackend {
    /// Connects to PostgreSQL.
    ///
    /// # Errors
    /// The URL does not parse or the server cannot be reached, naming it
    /// (without its password).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let describe = super::StoreLocation::Postgres(url.to_string()).describe();
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::new(
                format!("parse database URL {describe}"),
                crate::redact::scrub(&e.to_string(), url),
            )
        })?;
        // One direct connection first: its error says why (refused, unknown
        // host, bad password), where the pool would only say it timed out.
        {
            use sqlx::Connection;
            let connection = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::postgres::PgConnection::connect_with(&options),
            )
            .await
            .map_err(|_| StoreError::new(format!("connect to {describe}"), "no answer within 5 s"))?
            .map_err(|e| {
                StoreError::new(
                    format!("connect to {describe}"),
                    crate::redact::scrub(&e.to_string(), url),
                )
            })?;
            let _ = connection.close().await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::new(
                    format!("connect to {describe}"),
                    crate::redact::scrub(&e.to_string(), url),
                )
            })?;
        Ok(Self::from_pool(pool, describe))
    }

    /// A pool that connects on first use, for a database that does not
    /// answer yet: the store starts in an outage over it.
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn lazy(url: &str) -> Result<Self, StoreError> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let describe = super::StoreLocation::Postgres(url.to_string()).describe();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::new(format!("parse database URL {describe}"), e))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self::from_pool(pool, describe))
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate!("../migrations/postgres")
    }
}
