//! Durable state: the journal of events, checkpoints, host states, orders,
//! trades, order intents, operator halts and system events, behind one
//! [`StateStore`] trait.
//!
//! Implementations: [`memory::MemoryStore`] (one process, for tests and
//! benchmarks), [`sql::SqlStore`] over SQLite (the embedded default, a file in
//! the data directory) or PostgreSQL, and [`files`] for the atomic-write
//! checkpoint copies and the local backlog used while a database is away.
//!
//! The journal invariant: an event is journaled, with its seq and the outcome
//! the strategy gave it, and [`StateStore::sync`] has returned, *before* any of
//! its effects leave the host. Writes are buffered and committed in groups, so
//! only effects wait for a commit, not every event.

pub mod codec;
pub mod files;
pub mod memory;
pub mod mirror;
pub mod sql;

use sha2::{Digest, Sha256};

use crate::contract::{Action, Event, PlaceOrder, Side};

/// Implements [`StateStore`] for a store that wraps another and changes only
/// its writes: the given items (its `write`) are used as written; `sync`,
/// `close` and every read go to the field named `$inner` unchanged. So a read
/// added to the trait is forwarded by every wrapper with one edit.
macro_rules! forward_store_reads {
    ($ty:ty, $inner:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::StateStore for $ty {
        $($own)*
        async fn sync(&self) -> Result<(), $crate::store::StoreError> {
            self.$inner.sync().await
        }
        async fn close(&self) -> Result<(), $crate::store::StoreError> {
            self.$inner.close().await
        }
        async fn entries_after(
            &self,
            strategy: &str,
            after: u64,
        ) -> Result<Vec<$crate::store::JournalEntry>, $crate::store::StoreError> {
            self.$inner.entries_after(strategy, after).await
        }
        async fn journal_page(
            &self,
            strategy: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<$crate::store::JournalEntry>, $crate::store::StoreError> {
            self.$inner.journal_page(strategy, after, limit).await
        }
        async fn host_states(
            &self,
            strategy: &str,
        ) -> Result<Vec<$crate::store::HostState>, $crate::store::StoreError> {
            self.$inner.host_states(strategy).await
        }
        async fn last_seq(&self, strategy: &str) -> Result<u64, $crate::store::StoreError> {
            self.$inner.last_seq(strategy).await
        }
        async fn checkpoints(
            &self,
            strategy: &str,
        ) -> Result<Vec<$crate::store::Checkpoint>, $crate::store::StoreError> {
            self.$inner.checkpoints(strategy).await
        }
        async fn system_events(
            &self,
            limit: usize,
        ) -> Result<Vec<$crate::store::SystemEvent>, $crate::store::StoreError> {
            self.$inner.system_events(limit).await
        }
        async fn status(
            &self,
        ) -> Result<Vec<$crate::store::StrategyStatus>, $crate::store::StoreError> {
            self.$inner.status().await
        }
        async fn orders(
            &self,
            strategy: &str,
        ) -> Result<Vec<$crate::store::OrderRecord>, $crate::store::StoreError> {
            self.$inner.orders(strategy).await
        }
        async fn trades(
            &self,
            strategy: &str,
        ) -> Result<Vec<$crate::store::TradeRecord>, $crate::store::StoreError> {
            self.$inner.trades(strategy).await
        }
        async fn intents(
            &self,
            strategy: Option<&str>,
        ) -> Result<Vec<$crate::store::IntentRow>, $crate::store::StoreError> {
            self.$inner.intents(strategy).await
        }
        async fn intent_transitions(
            &self,
            strategy: &str,
        ) -> Result<Vec<$crate::store::IntentWrite>, $crate::store::StoreError> {
            self.$inner.intent_transitions(strategy).await
        }
        async fn exec_trades(
            &self,
            strategy: &str,
        ) -> Result<Vec<String>, $crate::store::StoreError> {
            self.$inner.exec_trades(strategy).await
        }
        async fn halt(
            &self,
            strategy: &str,
        ) -> Result<Option<$crate::store::HaltRecord>, $crate::store::StoreError> {
            self.$inner.halt(strategy).await
        }
        async fn heartbeats(
            &self,
        ) -> Result<Vec<$crate::store::HeartbeatRecord>, $crate::store::StoreError> {
            self.$inner.heartbeats().await
        }
        }
    };
}
pub(crate) use forward_store_reads;

/// What became of a journaled event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
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
    /// Wall time it was taken, ms since the Unix epoch.
    pub created_at_ms: u64,
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
            created_at_ms: wall_clock_ms(),
        }
    }

    /// Whether the state still matches its checksum.
    pub fn is_intact(&self) -> bool {
        <[u8; 32]>::from(Sha256::digest(&self.state)) == self.checksum
    }
}

/// Something worth keeping a record of: state changes, faults, quarantines.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SystemEvent {
    /// Wall time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// e.g. `state-change`, `fault`, `quarantine`, `divergence`, `checkpoint-rejected`.
    pub event_type: String,
    /// Which part: `supervisor/<strategy>`, `store`, …
    pub component: String,
    pub message: String,
    /// Identity for de-duplication when a backlog is resynced; filled in by
    /// the store when empty.
    #[serde(default)]
    pub id: String,
}

/// An order intent as sent (or about to be sent) to the venue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrderRecord {
    pub intent_id: String,
    pub seq: u64,
    pub market: String,
    pub side: String,
    pub price: f64,
    pub size: f64,
    pub order_type: String,
    pub created_at_ms: u64,
}

impl OrderRecord {
    /// The record of order `intent_id`, placed by event `seq`.
    pub fn placed(intent_id: String, seq: u64, order: &PlaceOrder, created_at_ms: u64) -> Self {
        OrderRecord {
            intent_id,
            seq,
            market: order.market.clone(),
            side: match order.side {
                Side::Buy => "buy",
                Side::Sell => "sell",
            }
            .to_string(),
            price: order.price,
            size: order.size,
            order_type: format!("{:?}", order.order_type).to_lowercase(),
            created_at_ms,
        }
    }

    /// The orders a journal entry places, in action order.
    pub fn placed_by(entry: &JournalEntry, created_at_ms: u64) -> Vec<OrderRecord> {
        let Outcome::Handled(actions) = &entry.outcome else {
            return Vec::new();
        };
        actions
            .iter()
            .enumerate()
            .filter_map(|(index, action)| match action {
                Action::PlaceOrder(order) => Some(OrderRecord::placed(
                    crate::contract::intent_id(entry.event.seq, index),
                    entry.event.seq,
                    order,
                    created_at_ms,
                )),
                _ => None,
            })
            .collect()
    }
}

/// A fill, with the profit it realised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TradeRecord {
    /// Journal seq of the fill event.
    pub seq: u64,
    pub intent_id: String,
    pub market: String,
    pub side: String,
    pub price: f64,
    pub size: f64,
    pub fee: f64,
    pub pnl: f64,
    pub executed_at_ms: u64,
}

/// One move of an order intent, as the store keeps it (the execution layer's
/// `IntentRecord`, with states by name). The first move (`step` 0) carries
/// the order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntentWrite {
    pub intent_id: String,
    pub step: u32,
    pub from: Option<String>,
    pub to: String,
    pub filled: f64,
    pub remaining: f64,
    pub reason: Option<String>,
    /// Event time of the move, ms since the Unix epoch.
    pub at_ms: u64,
    pub order: Option<PlaceOrder>,
    pub venue_ref: Option<String>,
}

/// An order intent as it stands now, as `polybot-host orders` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IntentRow {
    pub strategy: String,
    pub intent_id: String,
    pub market: String,
    pub side: String,
    pub price: f64,
    pub size: f64,
    pub order_type: String,
    pub state: String,
    pub filled: f64,
    pub reason: Option<String>,
    pub venue_ref: Option<String>,
    /// Moves recorded (the last one's step).
    pub step: u32,
    /// Event time it was created and last moved, ms since the Unix epoch.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl IntentRow {
    /// The order, rebuilt from its columns.
    pub fn order(&self) -> Option<PlaceOrder> {
        use crate::contract::OrderType;
        Some(PlaceOrder {
            market: self.market.clone(),
            side: match self.side.as_str() {
                "buy" => Side::Buy,
                "sell" => Side::Sell,
                _ => return None,
            },
            price: self.price,
            size: self.size,
            order_type: match self.order_type.trim_start_matches("ordertype::") {
                "gtc" => OrderType::Gtc,
                "fak" => OrderType::Fak,
                "fok" => OrderType::Fok,
                _ => return None,
            },
        })
    }

    /// The first row of an intent, from its first move.
    pub fn first(strategy: &str, w: &IntentWrite, order: &PlaceOrder) -> IntentRow {
        let o = OrderRecord::placed(w.intent_id.clone(), 0, order, w.at_ms);
        IntentRow {
            strategy: strategy.to_string(),
            intent_id: w.intent_id.clone(),
            market: o.market,
            side: o.side,
            price: o.price,
            size: o.size,
            order_type: order_type_name(order.order_type).to_string(),
            state: w.to.clone(),
            filled: w.filled,
            reason: w.reason.clone(),
            venue_ref: w.venue_ref.clone(),
            step: w.step,
            created_at_ms: w.at_ms,
            updated_at_ms: w.at_ms,
        }
    }

    /// Applies a later move (a move not newer than the row changes nothing).
    pub fn apply(&mut self, w: &IntentWrite) {
        if w.step <= self.step {
            return;
        }
        self.step = w.step;
        self.state = w.to.clone();
        self.filled = w.filled;
        self.reason = w.reason.clone();
        if w.venue_ref.is_some() {
            self.venue_ref = w.venue_ref.clone();
        }
        self.updated_at_ms = w.at_ms;
    }
}

/// `gtc`, `fak` or `fok`.
fn order_type_name(t: crate::contract::OrderType) -> &'static str {
    use crate::contract::OrderType;
    match t {
        OrderType::Gtc => "gtc",
        OrderType::Fak => "fak",
        OrderType::Fok => "fok",
    }
}

/// An operator's halt of a strategy's placement (`polybot-host halt`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HaltRecord {
    pub strategy: String,
    pub halted: bool,
    pub reason: String,
    /// Wall time it was set, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A strategy's newest heartbeat as its host wrote it to the store (the
/// host's view of it: state, events/s, waiting events, stuck or not), so
/// `status` can tell how it stood, and how long ago, while the host is down.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatRecord {
    pub strategy: String,
    /// The host that wrote it.
    pub host: String,
    /// Wall time it was written, ms since the Unix epoch.
    pub at_ms: u64,
    /// The heartbeat's fields (see `fleet::heartbeat`), kept as JSON text
    /// in the backlog's binary encoding (which cannot decode a
    /// self-describing value).
    #[serde(with = "json_text")]
    pub body: serde_json::Value,
}

/// A JSON value encoded as its text.
mod json_text {
    pub fn serialize<S: serde::Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<serde_json::Value, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// One strategy's standing, as `polybot-host status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategyStatus {
    pub name: String,
    pub state: String,
    pub restarts: u64,
    pub last_seq: u64,
    pub last_checkpoint_seq: Option<u64>,
    /// Wall time of the newest checkpoint, ms since the Unix epoch.
    pub last_checkpoint_at: Option<u64>,
    pub trades: u64,
    pub pnl: f64,
    pub updated_at: u64,
}

/// A write buffered for the next group commit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Write {
    Journal {
        strategy: String,
        entry: JournalEntry,
    },
    Checkpoint {
        strategy: String,
        checkpoint: CheckpointFile,
    },
    Order {
        strategy: String,
        order: OrderRecord,
    },
    Trade {
        strategy: String,
        trade: TradeRecord,
    },
    SystemEvent(SystemEvent),
    StrategyState {
        strategy: String,
        module_digest: String,
        state: String,
        restarts: u64,
        at_ms: u64,
    },
    /// The host's own state for a strategy (see [`HostState`]); the newest
    /// [`KEPT_HOST_STATES`] are kept.
    HostState {
        strategy: String,
        state: HostState,
    },
    /// One move of an order intent; written again (a replay) it changes nothing.
    Intent {
        strategy: String,
        intent: Box<IntentWrite>,
    },
    /// A venue trade turned into a fill by reconciliation (deduplication key).
    ExecTrade {
        strategy: String,
        trade_id: String,
    },
    /// An operator halted or resumed a strategy's placement.
    Halt(HaltRecord),
    /// A strategy's newest heartbeat (replaces the one before).
    Heartbeat(HeartbeatRecord),
}

/// What the host itself must remember about a strategy's run to resume it
/// from seq `seq` instead of from the journal's start: the venue's market
/// and paper account, pending timers, the fill ledger and counters. Opaque
/// bytes here; the runner encodes and decodes them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    /// Seq of the last journaled event the state includes.
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, checked before the state is used.
    pub checksum: Vec<u8>,
    /// Wall time it was taken, ms since the Unix epoch.
    pub created_at_ms: u64,
}

impl HostState {
    pub fn new(seq: u64, bytes: Vec<u8>) -> Self {
        let checksum = Sha256::digest(&bytes).to_vec();
        HostState {
            seq,
            bytes,
            checksum,
            created_at_ms: wall_clock_ms(),
        }
    }

    /// Whether the bytes still match their checksum.
    pub fn is_intact(&self) -> bool {
        Sha256::digest(&self.bytes).as_slice() == self.checksum.as_slice()
    }
}

/// A checkpoint in a form that serialises (for the local backlog).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointFile {
    pub seq: u64,
    pub event_time_ms: u64,
    pub state_version: u32,
    pub module_digest: String,
    #[serde(with = "codec::bytes")]
    pub state: Vec<u8>,
    #[serde(with = "codec::bytes")]
    pub checksum: Vec<u8>,
    pub created_at_ms: u64,
}

impl From<&Checkpoint> for CheckpointFile {
    fn from(c: &Checkpoint) -> Self {
        CheckpointFile {
            seq: c.seq,
            event_time_ms: c.event_time_ms,
            state_version: c.state_version,
            module_digest: c.module_digest.clone(),
            state: c.state.clone(),
            checksum: c.checksum.to_vec(),
            created_at_ms: c.created_at_ms,
        }
    }
}

impl From<Checkpoint> for CheckpointFile {
    /// As `From<&Checkpoint>`, moving the state instead of copying it.
    fn from(c: Checkpoint) -> Self {
        CheckpointFile {
            seq: c.seq,
            event_time_ms: c.event_time_ms,
            state_version: c.state_version,
            module_digest: c.module_digest,
            state: c.state,
            checksum: c.checksum.to_vec(),
            created_at_ms: c.created_at_ms,
        }
    }
}

impl From<CheckpointFile> for Checkpoint {
    fn from(c: CheckpointFile) -> Self {
        let mut checksum = [0u8; 32];
        if c.checksum.len() == 32 {
            checksum.copy_from_slice(&c.checksum);
        }
        Checkpoint {
            seq: c.seq,
            event_time_ms: c.event_time_ms,
            state_version: c.state_version,
            module_digest: c.module_digest,
            state: c.state,
            checksum,
            created_at_ms: c.created_at_ms,
        }
    }
}

/// A store failure, naming what was being done.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {action}: {message}")]
pub struct StoreError {
    pub action: String,
    pub message: String,
}

impl StoreError {
    pub fn new(action: impl Into<String>, message: impl std::fmt::Display) -> Self {
        StoreError {
            action: action.into(),
            message: message.to_string(),
        }
    }
}

/// How many checkpoints per strategy are kept.
pub const KEPT_CHECKPOINTS: usize = 3;

/// How many host states per strategy are kept.
pub const KEPT_HOST_STATES: usize = 3;

/// Where strategies' durable state lives. Writes are buffered; [`Self::sync`]
/// waits until everything written before it is durable.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Buffers a write for the next group commit.
    async fn write(&self, write: Write) -> Result<(), StoreError>;

    /// Waits until every write buffered so far is durable.
    async fn sync(&self) -> Result<(), StoreError>;

    /// Makes everything durable and lets go of the database (connections
    /// closed, SQLite's log folded back), so another process can use it at
    /// once. Nothing may be written after.
    async fn close(&self) -> Result<(), StoreError> {
        self.sync().await
    }

    /// Journal entries of `strategy` with seq greater than `after`, in order.
    async fn entries_after(
        &self,
        strategy: &str,
        after: u64,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    /// At most `limit` journal entries of `strategy` with seq greater than
    /// `after`, in order: the journal read a page at a time, so a long
    /// journal is never held in memory whole.
    async fn journal_page(
        &self,
        strategy: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    /// Kept host states of `strategy`, newest first (see [`HostState`]).
    async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError>;

    /// The seq of `strategy`'s last journaled event (0 if none).
    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError>;

    /// Kept checkpoints of `strategy`, newest first.
    async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// System events, oldest first, at most `limit` of the newest.
    async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError>;

    /// Every strategy's standing.
    async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError>;

    /// Order intents of `strategy`, in intent order.
    async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError>;

    /// Fills of `strategy`, in journal order.
    async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError>;

    /// Order intents as they stand, of `strategy` or of every strategy, in
    /// creation order.
    async fn intents(&self, strategy: Option<&str>) -> Result<Vec<IntentRow>, StoreError>;

    /// Every recorded move of `strategy`'s intents, by intent id, then step.
    async fn intent_transitions(&self, strategy: &str) -> Result<Vec<IntentWrite>, StoreError>;

    /// Venue trade ids reconciliation has turned into fills for `strategy`.
    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError>;

    /// The operator's halt of `strategy`, if one was ever set.
    async fn halt(&self, strategy: &str) -> Result<Option<HaltRecord>, StoreError>;

    /// Every strategy's newest heartbeat, by strategy name.
    async fn heartbeats(&self) -> Result<Vec<HeartbeatRecord>, StoreError>;
}

/// Wall time now, in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
