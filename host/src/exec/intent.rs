//! The intent lifecycle: one order a strategy asked for, from the moment it
//! exists to its one terminal state.
//!
//! Owns the states (`pending → sent → acknowledged → partially-filled →
//! filled | cancelled | rejected`, plus `unknown` while an outcome is not
//! known), which moves between them are legal, and what each move yields: an
//! [`IntentRecord`] to persist and, for states a strategy can see, the
//! `order-update` it must get. Owns the [`IntentLog`] trait the executor writes
//! through and an in-memory log for tests.
//!
//! Never talks to a venue, never decides retries: the executor drives the
//! machine; this module only refuses what cannot happen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::contract::{OrderStatus, OrderUpdate, PlaceOrder};

/// Where an intent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntentState {
    /// Recorded; not sent yet.
    Pending,
    /// Sent at least once; no answer yet.
    Sent,
    /// The venue holds it (open on the book).
    Acknowledged,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
    /// A request that may have reached the venue got no answer: the order
    /// may or may not exist until it is looked up.
    Unknown,
}

impl IntentState {
    /// Every state, in the order of [`IntentState::index`].
    pub const ALL: [IntentState; 8] = [
        IntentState::Pending,
        IntentState::Sent,
        IntentState::Acknowledged,
        IntentState::PartiallyFilled,
        IntentState::Filled,
        IntentState::Cancelled,
        IntentState::Rejected,
        IntentState::Unknown,
    ];

    /// Where this state is in [`IntentState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            IntentState::Filled | IntentState::Cancelled | IntentState::Rejected
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntentState::Pending => "pending",
            IntentState::Sent => "sent",
            IntentState::Acknowledged => "acknowledged",
            IntentState::PartiallyFilled => "partially-filled",
            IntentState::Filled => "filled",
            IntentState::Cancelled => "cancelled",
            IntentState::Rejected => "rejected",
            IntentState::Unknown => "unknown",
        }
    }

    /// The state named `text` (as [`IntentState::as_str`] writes it).
    pub fn parse(text: &str) -> Option<IntentState> {
        use IntentState::*;
        [
            Pending,
            Sent,
            Acknowledged,
            PartiallyFilled,
            Filled,
            Cancelled,
            Rejected,
            Unknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether `self → to` is a legal move. Staying put is legal only for
    /// `partially-filled` (another partial fill) and `unknown`.
    pub fn can_become(self, to: IntentState) -> bool {
        use IntentState::*;
        match (self, to) {
            (Pending, Sent | Rejected) => true,
            (
                Sent,
                Sent | Acknowledged | PartiallyFilled | Filled | Cancelled | Rejected | Unknown,
            ) => true,
            // Looked up: whatever the venue says, or absent and sent again.
            (
                Unknown,
                Unknown | Sent | Acknowledged | PartiallyFilled | Filled | Cancelled | Rejected,
            ) => true,
            (Acknowledged, PartiallyFilled | Filled | Cancelled | Unknown) => true,
            (PartiallyFilled, PartiallyFilled | Filled | Cancelled | Unknown) => true,
            _ => false,
        }
    }

    /// The contract status a strategy is told for this state, if any.
    pub fn contract_status(self) -> Option<OrderStatus> {
        match self {
            IntentState::Acknowledged => Some(OrderStatus::Open),
            IntentState::PartiallyFilled => Some(OrderStatus::PartiallyFilled),
            IntentState::Filled => Some(OrderStatus::Filled),
            IntentState::Cancelled => Some(OrderStatus::Cancelled),
            IntentState::Rejected => Some(OrderStatus::Rejected),
            IntentState::Pending | IntentState::Sent | IntentState::Unknown => None,
        }
    }

    /// The state a venue's order status means.
    pub fn from_contract(status: OrderStatus) -> IntentState {
        match status {
            OrderStatus::Open => IntentState::Acknowledged,
            OrderStatus::PartiallyFilled => IntentState::PartiallyFilled,
            OrderStatus::Filled => IntentState::Filled,
            OrderStatus::Cancelled => IntentState::Cancelled,
            OrderStatus::Rejected => IntentState::Rejected,
        }
    }
}

impl std::fmt::Display for IntentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One move of one intent, as persisted. The first record of an intent
/// (`from == None`) carries the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub strategy: String,
    pub intent_id: String,
    pub from: Option<IntentState>,
    pub to: IntentState,
    pub filled_size: f64,
    pub remaining_size: f64,
    pub reason: Option<String>,
    /// Event time of the move, milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<PlaceOrder>,
    /// The venue's reference to the order (Polymarket: its hash), known
    /// before it is sent; what a restart looks the order up by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue_ref: Option<String>,
    /// The move's number within its intent (0: the first record), so a
    /// record written again (a replay) is recognised as the same one.
    #[serde(default)]
    pub step: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("intent {intent_id}: {from} → {to} is not a legal transition")]
pub struct IllegalTransition {
    pub intent_id: String,
    pub from: IntentState,
    pub to: IntentState,
}

/// What a legal move yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: IntentRecord,
    /// The order update the strategy gets, for states it can see.
    pub update: Option<OrderUpdate>,
}

/// One order a strategy asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub strategy: String,
    pub id: String,
    pub order: PlaceOrder,
    pub state: IntentState,
    /// Shares filled so far.
    pub filled: f64,
    pub reason: Option<String>,
    pub created_ms: u64,
    /// The venue's reference to the order, once prepared.
    pub venue_ref: Option<String>,
    /// Moves recorded so far (the last record's step).
    pub steps: u32,
}

impl Intent {
    /// A new, `pending` intent and its first record.
    pub fn new(strategy: &str, id: &str, order: PlaceOrder, now_ms: u64) -> (Intent, IntentRecord) {
        let intent = Intent {
            strategy: strategy.to_string(),
            id: id.to_string(),
            state: IntentState::Pending,
            filled: 0.0,
            reason: None,
            created_ms: now_ms,
            venue_ref: None,
            steps: 0,
            order,
        };
        let record = IntentRecord {
            strategy: intent.strategy.clone(),
            intent_id: intent.id.clone(),
            from: None,
            to: IntentState::Pending,
            filled_size: 0.0,
            remaining_size: intent.order.size,
            reason: None,
            at_ms: now_ms,
            order: Some(intent.order.clone()),
            venue_ref: None,
            step: 0,
        };
        (intent, record)
    }

    pub fn remaining(&self) -> f64 {
        let r = self.order.size - self.filled;
        if r.abs() < 1e-9 { 0.0 } else { r.max(0.0) }
    }

    /// Moves to `to` with `filled` shares filled in all.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the move cannot happen (out of a terminal
    /// state, back to pending, …); the intent is unchanged.
    pub fn transition(
        &mut self,
        to: IntentState,
        filled: f64,
        reason: Option<String>,
        now_ms: u64,
    ) -> Result<Transition, IllegalTransition> {
        if !self.state.can_become(to) {
            return Err(IllegalTransition {
                intent_id: self.id.clone(),
                from: self.state,
                to,
            });
        }
        let from = self.state;
        self.state = to;
        self.steps += 1;
        self.filled = self.filled.max(filled);
        self.reason = reason.clone();
        let record = IntentRecord {
            strategy: self.strategy.clone(),
            intent_id: self.id.clone(),
            from: Some(from),
            to,
            filled_size: self.filled,
            remaining_size: self.remaining(),
            reason: reason.clone(),
            at_ms: now_ms,
            order: None,
            venue_ref: self.venue_ref.clone(),
            step: self.steps,
        };
        let update = to.contract_status().map(|status| OrderUpdate {
            intent_id: self.id.clone(),
            market: self.order.market.clone(),
            status,
            filled_size: self.filled,
            remaining_size: if to == IntentState::Filled {
                0.0
            } else {
                self.remaining()
            },
            reason,
        });
        Ok(Transition { record, update })
    }
}

/// Failure to persist an intent record.
#[derive(Debug, thiserror::Error)]
#[error("intent log: {0}")]
pub struct IntentLogError(pub String);

/// Where the executor persists intents and the trade ids it has journaled.
/// An intent is durable (its first record appended) before its order is sent.
#[async_trait::async_trait]
pub trait IntentLog: Send + Sync {
    async fn append(&mut self, record: &IntentRecord) -> Result<(), IntentLogError>;
    /// Records that trade `trade_id` was turned into a fill; `false` if it
    /// already was (the fill must not be journaled again).
    async fn record_trade(
        &mut self,
        strategy: &str,
        trade_id: &str,
    ) -> Result<bool, IntentLogError>;
    /// The intents of `strategy` not yet in a terminal state, rebuilt from
    /// their records.
    async fn open_intents(&self, strategy: &str) -> Result<Vec<Intent>, IntentLogError>;

    /// The strategy's terminal intents that filled something and were
    /// created at or after event time `since_ms` (a live restart checks them
    /// against the fills its journal told).
    async fn filled_intents_since(
        &self,
        strategy: &str,
        since_ms: u64,
    ) -> Result<Vec<Intent>, IntentLogError>;
}

/// An [`IntentLog`] in memory (tests and benchmarks). Clones share one log,
/// so a test can keep a handle and read what the executor wrote.
#[derive(Debug, Default, Clone)]
pub struct MemoryIntentLog(Arc<Mutex<MemoryInner>>);

#[derive(Debug, Default)]
struct MemoryInner {
    records: Vec<IntentRecord>,
    trades: HashSet<(String, String)>,
}

impl MemoryIntentLog {
    fn inner(&self) -> MutexGuard<'_, MemoryInner> {
        // A panic elsewhere mid-push leaves the records as they were.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<IntentRecord> {
        self.inner().records.clone()
    }

    /// Every intent's latest state, by intent id.
    pub fn states(&self) -> HashMap<String, IntentState> {
        self.inner()
            .records
            .iter()
            .map(|r| (r.intent_id.clone(), r.to))
            .collect()
    }

    /// The states intent `id` went through.
    pub fn path(&self, id: &str) -> Vec<IntentState> {
        self.inner()
            .records
            .iter()
            .filter(|r| r.intent_id == id)
            .map(|r| r.to)
            .collect()
    }
}

#[async_trait::async_trait]
impl IntentLog for MemoryIntentLog {
    async fn append(&mut self, record: &IntentRecord) -> Result<(), IntentLogError> {
        self.inner().records.push(record.clone());
        Ok(())
    }

    async fn record_trade(
        &mut self,
        strategy: &str,
        trade_id: &str,
    ) -> Result<bool, IntentLogError> {
        Ok(self
            .inner()
            .trades
            .insert((strategy.to_string(), trade_id.to_string())))
    }

    async fn open_intents(&self, strategy: &str) -> Result<Vec<Intent>, IntentLogError> {
        Ok(self
            .all_intents(strategy)
            .into_iter()
            .filter(|i| !i.state.is_terminal())
            .collect())
    }

    async fn filled_intents_since(
        &self,
        strategy: &str,
        since_ms: u64,
    ) -> Result<Vec<Intent>, IntentLogError> {
        Ok(self
            .all_intents(strategy)
            .into_iter()
            .filter(|i| i.state.is_terminal() && i.filled > 0.0 && i.created_ms >= since_ms)
            .collect())
    }
}

impl MemoryIntentLog {
    /// Every intent of `strategy` as its records leave it, oldest first.
    fn all_intents(&self, strategy: &str) -> Vec<Intent> {
        let records = self.records();
        let mut by_id: HashMap<&str, Intent> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for r in records.iter().filter(|r| r.strategy == strategy) {
            if let Some(o) = &r.order {
                order.push(&r.intent_id);
                by_id.insert(
                    &r.intent_id,
                    Intent {
                        strategy: r.strategy.clone(),
                        id: r.intent_id.clone(),
                        order: o.clone(),
                        state: r.to,
                        filled: r.filled_size,
                        reason: r.reason.clone(),
                        created_ms: r.at_ms,
                        venue_ref: r.venue_ref.clone(),
                        steps: r.step,
                    },
                );
            } else if let Some(i) = by_id.get_mut(r.intent_id.as_str()) {
                i.state = r.to;
                i.filled = r.filled_size;
                i.reason = r.reason.clone();
                i.steps = r.step;
                if r.venue_ref.is_some() {
                    i.venue_ref = r.venue_ref.clone();
                }
            }
        }
        order
            .into_iter()
            .filter_map(|id| by_id.remove(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{OrderType, Side};

    fn order() -> PlaceOrder {
        PlaceOrder {
            market: "m".into(),
            side: Side::Buy,
            price: 0.4,
            size: 10.0,
            order_type: OrderType::Gtc,
        }
    }

    #[test]
    fn the_happy_path_yields_records_and_updates() {
        let (mut i, first) = Intent::new("s", "1.0", order(), 5);
        assert_eq!((first.from, first.to), (None, IntentState::Pending));
        assert!(first.order.is_some());
        let t = i.transition(IntentState::Sent, 0.0, None, 6).expect("sent");
        assert!(t.update.is_none(), "sent is not shown to the strategy");
        let t = i
            .transition(IntentState::Acknowledged, 0.0, None, 7)
            .expect("ack");
        assert_eq!(t.update.expect("update").status, OrderStatus::Open);
        let t = i
            .transition(IntentState::PartiallyFilled, 4.0, None, 8)
            .expect("partial");
        let u = t.update.expect("update");
        assert_eq!((u.filled_size, u.remaining_size), (4.0, 6.0));
        i.transition(IntentState::PartiallyFilled, 6.0, None, 9)
            .expect("more");
        let t = i
            .transition(IntentState::Filled, 10.0, None, 10)
            .expect("filled");
        assert_eq!(t.record.remaining_size, 0.0);
        assert_eq!(t.update.expect("update").status, OrderStatus::Filled);
    }

    #[test]
    fn illegal_moves_are_refused_and_change_nothing() {
        let (mut i, _) = Intent::new("s", "1.0", order(), 0);
        assert!(
            i.transition(IntentState::Filled, 10.0, None, 1).is_err(),
            "pending cannot fill"
        );
        assert!(
            i.transition(IntentState::Acknowledged, 0.0, None, 1)
                .is_err()
        );
        i.transition(IntentState::Rejected, 0.0, Some("risk".into()), 1)
            .expect("refused before sending");
        for to in [
            IntentState::Sent,
            IntentState::Acknowledged,
            IntentState::Filled,
            IntentState::Cancelled,
            IntentState::Rejected,
            IntentState::Unknown,
            IntentState::Pending,
        ] {
            let e = i.transition(to, 0.0, None, 2).expect_err("terminal");
            assert_eq!(e.from, IntentState::Rejected);
        }
        assert_eq!(i.state, IntentState::Rejected);
    }

    #[test]
    fn every_path_ends_in_exactly_one_terminal_state() {
        use IntentState::*;
        let all = [
            Pending,
            Sent,
            Acknowledged,
            PartiallyFilled,
            Filled,
            Cancelled,
            Rejected,
            Unknown,
        ];
        for s in all {
            if s.is_terminal() {
                assert!(all.iter().all(|&t| !s.can_become(t)), "{s} is final");
            } else {
                assert!(all.iter().any(|&t| t.is_terminal() && s.can_become(t)) || s == Pending);
                assert!(!s.can_become(Pending));
            }
        }
        assert!(Pending.can_become(Rejected));
    }

    #[tokio::test]
    async fn the_memory_log_rebuilds_open_intents() {
        let mut log = MemoryIntentLog::default();
        let (mut a, r) = Intent::new("s", "1.0", order(), 0);
        log.append(&r).await.expect("append");
        let (mut b, r) = Intent::new("s", "2.0", order(), 0);
        log.append(&r).await.expect("append");
        for t in [
            a.transition(IntentState::Sent, 0.0, None, 1).expect("t"),
            a.transition(IntentState::Unknown, 0.0, None, 2).expect("t"),
            b.transition(IntentState::Rejected, 0.0, None, 1)
                .expect("t"),
        ] {
            log.append(&t.record).await.expect("append");
        }
        let open = log.open_intents("s").await.expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].id.as_str(), open[0].state),
            ("1.0", IntentState::Unknown)
        );
        assert!(log.record_trade("s", "t1").await.expect("t"));
        assert!(
            !log.record_trade("s", "t1").await.expect("t"),
            "deduplicated"
        );
    }
}
