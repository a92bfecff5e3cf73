//! The store as the executor's [`IntentLog`]: every intent move becomes a
//! row in `intent_transitions` and the intent's row in `intents` follows it;
//! trades reconciliation turned into fills are kept in `exec_trades`.
//!
//! Owns the mapping between [`IntentRecord`]s and the store's rows, and when
//! a record must be durable before the executor goes on: a `sent` record is
//! synced before it returns when orders leave the host (a live venue), so an
//! order is never at the venue without its intent on disk. Never decides a
//! state; never talks to a venue.

use std::collections::HashSet;
use std::sync::Arc;

use super::intent::{Intent, IntentLog, IntentLogError, IntentRecord, IntentState};
use crate::store::{IntentRow, IntentWrite, StateStore, Write};

/// See the module docs.
pub struct StoreIntentLog {
    store: Arc<dyn StateStore>,
    strategy: String,
    /// Sync before a `sent` record returns (orders leave the host).
    sync_on_send: bool,
    trades: HashSet<String>,
}

impl StoreIntentLog {
    /// The log of `strategy` in `store`, with the trade ids already journaled.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn open(
        store: Arc<dyn StateStore>,
        strategy: &str,
        sync_on_send: bool,
    ) -> Result<Self, IntentLogError> {
        let trades = store
            .exec_trades(strategy)
            .await
            .map_err(|e| IntentLogError(e.to_string()))?
            .into_iter()
            .collect();
        Ok(StoreIntentLog {
            store,
            strategy: strategy.to_string(),
            sync_on_send,
            trades,
        })
    }
}

impl StoreIntentLog {
    /// A log that reads no trade ids (a venue that is never reconciled);
    /// `sent` records are not synced (orders never leave the host).
    pub fn without_trades(store: Arc<dyn StateStore>, strategy: &str) -> Self {
        StoreIntentLog {
            store,
            strategy: strategy.to_string(),
            sync_on_send: false,
            trades: HashSet::new(),
        }
    }
}

/// The store's form of a record.
pub fn to_write(r: &IntentRecord) -> IntentWrite {
    IntentWrite {
        intent_id: r.intent_id.clone(),
        step: r.step,
        from: r.from.map(|s| s.as_str().to_string()),
        to: r.to.as_str().to_string(),
        filled: r.filled_size,
        remaining: r.remaining_size,
        reason: r.reason.clone(),
        at_ms: r.at_ms,
        order: r.order.clone(),
        venue_ref: r.venue_ref.clone(),
    }
}

/// The intent a stored row describes; `None` for a row this host cannot read
/// (an unknown state or side).
pub fn from_row(row: &IntentRow) -> Option<Intent> {
    Some(Intent {
        strategy: row.strategy.clone(),
        id: row.intent_id.clone(),
        order: row.order()?,
        state: IntentState::parse(&row.state)?,
        filled: row.filled,
        reason: row.reason.clone(),
        created_ms: row.created_at_ms,
        venue_ref: row.venue_ref.clone(),
        steps: row.step,
    })
}

#[async_trait::async_trait]
impl IntentLog for StoreIntentLog {
    async fn append(&mut self, record: &IntentRecord) -> Result<(), IntentLogError> {
        let write = Write::Intent {
            strategy: record.strategy.clone(),
            intent: Box::new(to_write(record)),
        };
        let err = |e: crate::store::StoreError| IntentLogError(e.to_string());
        self.store.write(write).await.map_err(err)?;
        if self.sync_on_send && record.to == IntentState::Sent {
            self.store.sync().await.map_err(err)?;
        }
        Ok(())
    }

    async fn record_trade(
        &mut self,
        strategy: &str,
        trade_id: &str,
    ) -> Result<bool, IntentLogError> {
        if strategy == self.strategy && !self.trades.insert(trade_id.to_string()) {
            return Ok(false);
        }
        let write = Write::ExecTrade {
            strategy: strategy.to_string(),
            trade_id: trade_id.to_string(),
        };
        self.store
            .write(write)
            .await
            .map_err(|e| IntentLogError(e.to_string()))?;
        Ok(true)
    }

    async fn open_intents(&self, strategy: &str) -> Result<Vec<Intent>, IntentLogError> {
        let rows = self
            .store
            .intents(Some(strategy))
            .await
            .map_err(|e| IntentLogError(e.to_string()))?;
        let mut open = Vec::new();
        for row in &rows {
            let state = IntentState::parse(&row.state);
            if state.is_some_and(IntentState::is_terminal) {
                continue;
            }
            open.push(from_row(row).ok_or_else(|| {
                IntentLogError(format!(
                    "intent {} of {strategy} cannot be read back (state `{}`, side `{}`, type `{}`)",
                    row.intent_id, row.state, row.side, row.order_type
                ))
            })?);
        }
        Ok(open)
    }

    async fn filled_intents_since(
        &self,
        strategy: &str,
        since_ms: u64,
    ) -> Result<Vec<Intent>, IntentLogError> {
        let rows = self
            .store
            .intents(Some(strategy))
            .await
            .map_err(|e| IntentLogError(e.to_string()))?;
        Ok(rows
            .iter()
            .filter(|r| {
                r.filled > 0.0
                    && r.created_at_ms >= since_ms
                    && IntentState::parse(&r.state).is_some_and(IntentState::is_terminal)
            })
            .filter_map(from_row)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{OrderType, PlaceOrder, Side};
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn records_round_trip_and_a_replayed_record_changes_nothing() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let mut log = StoreIntentLog::open(store.clone(), "s", false)
            .await
            .expect("open");
        let order = PlaceOrder {
            market: "m".into(),
            side: Side::Sell,
            price: 0.4,
            size: 10.0,
            order_type: OrderType::Fak,
        };
        let (mut i, first) = Intent::new("s", "1.0", order.clone(), 5);
        log.append(&first).await.expect("append");
        let sent = i.transition(IntentState::Sent, 0.0, None, 6).expect("t");
        log.append(&sent.record).await.expect("append");
        let unknown = i
            .transition(IntentState::Unknown, 0.0, Some("lost".into()), 6)
            .expect("t");
        log.append(&unknown.record).await.expect("append");
        // A replay writes the first two again: nothing moves back.
        log.append(&first).await.expect("append");
        log.append(&sent.record).await.expect("append");
        let open = log.open_intents("s").await.expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].state, IntentState::Unknown);
        assert_eq!(open[0].order, order);
        assert_eq!(open[0].steps, 2);
        let rows = store.intents(None).await.expect("rows");
        assert_eq!(rows[0].reason.as_deref(), Some("lost"));

        assert!(log.record_trade("s", "t1").await.expect("t"));
        assert!(!log.record_trade("s", "t1").await.expect("t"));
        let again = StoreIntentLog::open(store, "s", false).await.expect("open");
        assert!(again.trades.contains("t1"), "kept across a restart");
    }
}
