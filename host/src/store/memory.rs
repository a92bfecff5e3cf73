//! An in-memory [`StateStore`]: plain collections behind a mutex. It makes
//! recovery from a strategy fault exact within one host process; it does not
//! survive the process. Used by tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    Checkpoint, HaltRecord, HeartbeatRecord, HostState, IntentRow, IntentWrite, JournalEntry,
    KEPT_CHECKPOINTS, KEPT_HOST_STATES, OrderRecord, StateStore, StoreError, StrategyStatus,
    SystemEvent, TradeRecord, Write,
};

#[derive(Default)]
struct Inner {
    journals: HashMap<String, Vec<JournalEntry>>,
    checkpoints: HashMap<String, Vec<Checkpoint>>,
    orders: HashMap<String, Vec<OrderRecord>>,
    trades: HashMap<String, Vec<TradeRecord>>,
    states: HashMap<String, (String, u64, u64)>,
    /// Newest first.
    host_states: HashMap<String, Vec<HostState>>,
    system_events: Vec<SystemEvent>,
    /// Intents in creation order, with every move kept.
    intents: Vec<IntentRow>,
    transitions: Vec<(String, IntentWrite)>,
    exec_trades: HashMap<String, Vec<String>>,
    halts: HashMap<String, HaltRecord>,
    heartbeats: std::collections::BTreeMap<String, HeartbeatRecord>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::new("lock the memory store", "poisoned"))
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match write {
            Write::Journal { strategy, entry } => {
                let journal = inner.journals.entry(strategy.clone()).or_default();
                let expected = journal.last().map_or(1, |e| e.event.seq + 1);
                if entry.event.seq != expected {
                    return Err(StoreError::new(
                        format!("append to {strategy}'s journal"),
                        format!("seq {} does not follow {}", entry.event.seq, expected - 1),
                    ));
                }
                journal.push(entry);
            }
            Write::Checkpoint {
                strategy,
                checkpoint,
            } => {
                let kept = inner.checkpoints.entry(strategy).or_default();
                kept.insert(0, checkpoint.into());
                kept.truncate(KEPT_CHECKPOINTS);
            }
            Write::Order { strategy, order } => {
                inner.orders.entry(strategy).or_default().push(order)
            }
            Write::Trade { strategy, trade } => {
                inner.trades.entry(strategy).or_default().push(trade)
            }
            Write::SystemEvent(event) => inner.system_events.push(event),
            Write::StrategyState {
                strategy,
                state,
                restarts,
                at_ms,
                ..
            } => {
                inner.states.insert(strategy, (state, restarts, at_ms));
            }
            Write::HostState { strategy, state } => {
                let kept = inner.host_states.entry(strategy).or_default();
                kept.retain(|k| k.seq != state.seq);
                kept.push(state);
                kept.sort_by_key(|k| std::cmp::Reverse(k.seq));
                kept.truncate(KEPT_HOST_STATES);
            }
            Write::Intent { strategy, intent } => {
                let known = inner.transitions.iter().any(|(s, t)| {
                    *s == strategy && t.intent_id == intent.intent_id && t.step == intent.step
                });
                if known {
                    return Ok(());
                }
                let at = inner
                    .intents
                    .iter()
                    .position(|r| r.strategy == strategy && r.intent_id == intent.intent_id);
                match (at, &intent.order) {
                    (Some(at), _) => inner.intents[at].apply(&intent),
                    (None, Some(order)) => {
                        let row = IntentRow::first(&strategy, &intent, order);
                        inner.intents.push(row);
                    }
                    (None, None) => {}
                }
                inner.transitions.push((strategy, *intent));
            }
            Write::ExecTrade { strategy, trade_id } => {
                let seen = inner.exec_trades.entry(strategy).or_default();
                if !seen.contains(&trade_id) {
                    seen.push(trade_id);
                }
            }
            Write::Halt(h) => {
                inner.halts.insert(h.strategy.clone(), h);
            }
            Write::Heartbeat(h) => {
                inner.heartbeats.insert(h.strategy.clone(), h);
            }
        }
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
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
        let inner = self.lock()?;
        let journal = inner
            .journals
            .get(strategy)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let start = journal.partition_point(|e| e.event.seq <= after);
        let end = start.saturating_add(limit).min(journal.len());
        Ok(journal[start..end].to_vec())
    }

    async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError> {
        Ok(self
            .lock()?
            .host_states
            .get(strategy)
            .cloned()
            .unwrap_or_default())
    }

    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .journals
            .get(strategy)
            .and_then(|j| j.last())
            .map_or(0, |e| e.event.seq))
    }

    async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self
            .lock()?
            .checkpoints
            .get(strategy)
            .cloned()
            .unwrap_or_default())
    }

    async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError> {
        let inner = self.lock()?;
        let start = inner.system_events.len().saturating_sub(limit);
        Ok(inner.system_events[start..].to_vec())
    }

    async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError> {
        let inner = self.lock()?;
        let mut names: Vec<&String> = inner.states.keys().collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let (state, restarts, at) = inner.states[name].clone();
                let newest = inner.checkpoints.get(name).and_then(|c| c.first());
                let trades = inner.trades.get(name).map(Vec::as_slice).unwrap_or(&[]);
                StrategyStatus {
                    name: name.clone(),
                    state,
                    restarts,
                    last_seq: inner
                        .journals
                        .get(name)
                        .and_then(|j| j.last())
                        .map_or(0, |e| e.event.seq),
                    last_checkpoint_seq: newest.map(|c| c.seq),
                    last_checkpoint_at: newest.map(|c| c.created_at_ms),
                    trades: trades.len() as u64,
                    pnl: trades.iter().map(|t| t.pnl).sum(),
                    updated_at: at,
                }
            })
            .collect())
    }

    async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError> {
        Ok(self
            .lock()?
            .orders
            .get(strategy)
            .cloned()
            .unwrap_or_default())
    }

    async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError> {
        Ok(self
            .lock()?
            .trades
            .get(strategy)
            .cloned()
            .unwrap_or_default())
    }

    async fn intents(&self, strategy: Option<&str>) -> Result<Vec<IntentRow>, StoreError> {
        Ok(self
            .lock()?
            .intents
            .iter()
            .filter(|r| strategy.is_none_or(|s| r.strategy == s))
            .cloned()
            .collect())
    }

    async fn intent_transitions(&self, strategy: &str) -> Result<Vec<IntentWrite>, StoreError> {
        let mut moves: Vec<IntentWrite> = self
            .lock()?
            .transitions
            .iter()
            .filter(|(s, _)| s == strategy)
            .map(|(_, t)| t.clone())
            .collect();
        moves.sort_by(|a, b| (&a.intent_id, a.step).cmp(&(&b.intent_id, b.step)));
        Ok(moves)
    }

    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .lock()?
            .exec_trades
            .get(strategy)
            .cloned()
            .unwrap_or_default())
    }

    async fn halt(&self, strategy: &str) -> Result<Option<HaltRecord>, StoreError> {
        Ok(self.lock()?.halts.get(strategy).cloned())
    }

    async fn heartbeats(&self) -> Result<Vec<HeartbeatRecord>, StoreError> {
        Ok(self.lock()?.heartbeats.values().cloned().collect())
    }
}
