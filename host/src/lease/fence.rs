//! A strategy's view of the store, fenced by its lease: once the lease is
//! lost, every write for that strategy (journal, checkpoints, orders, trades,
//! its state) is refused, so the event in hand is never journaled, no order
//! from it leaves the host (orders wait for their event's journal entry), and
//! the new holder's records are not overwritten by the old host stopping.
//! System events still pass: the loss itself must be recorded. Reads pass
//! through. This type never decides when a lease is lost; [`super::Lease`]
//! does.

use std::sync::Arc;

use tokio::sync::watch;

use super::LeaseLost;
use crate::store::{StateStore, StoreError, Write};

/// See the module docs.
pub struct FencedStore {
    inner: Arc<dyn StateStore>,
    strategy: String,
    lost: watch::Receiver<Option<LeaseLost>>,
}

impl FencedStore {
    pub(super) fn new(
        inner: Arc<dyn StateStore>,
        strategy: String,
        lost: watch::Receiver<Option<LeaseLost>>,
    ) -> Self {
        FencedStore {
            inner,
            strategy,
            lost,
        }
    }

    fn fenced(&self, write: &Write) -> Option<StoreError> {
        let strategy = match write {
            // An operator's halt is not the strategy's write.
            Write::SystemEvent(_) | Write::Halt(_) | Write::Heartbeat(_) => return None,
            Write::Journal { strategy, .. }
            | Write::Checkpoint { strategy, .. }
            | Write::Order { strategy, .. }
            | Write::Trade { strategy, .. }
            | Write::HostState { strategy, .. }
            | Write::StrategyState { strategy, .. }
            | Write::Intent { strategy, .. }
            | Write::ExecTrade { strategy, .. } => strategy,
        };
        if *strategy != self.strategy {
            return None;
        }
        self.lost
            .borrow()
            .as_ref()
            .map(|loss| StoreError::new(format!("write for strategy {}", self.strategy), loss))
    }
}

crate::store::forward_store_reads!(FencedStore, inner, {
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        match self.fenced(&write) {
            Some(refused) => Err(refused),
            None => self.inner.write(write).await,
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SystemEvent;
    use crate::store::memory::MemoryStore;

    fn state(strategy: &str) -> Write {
        Write::StrategyState {
            strategy: strategy.into(),
            module_digest: "d".into(),
            state: "running".into(),
            restarts: 0,
            at_ms: 1,
        }
    }

    #[tokio::test]
    async fn writes_for_the_strategy_stop_once_the_lease_is_lost() {
        let (tx, rx) = watch::channel(None);
        let store = FencedStore::new(Arc::new(MemoryStore::new()), "s".into(), rx);
        store.write(state("s")).await.unwrap();
        tx.send_replace(Some(LeaseLost {
            strategy: "s".into(),
            taken_by: "now held by another host".into(),
        }));
        let refused = store.write(state("s")).await.unwrap_err();
        assert!(refused.to_string().contains("lost the lease"), "{refused}");
        // Other strategies and system events still pass.
        store.write(state("other")).await.unwrap();
        let event = SystemEvent {
            timestamp_ms: 1,
            event_type: "lease-lost".into(),
            component: "lease/s".into(),
            message: "lost".into(),
            id: String::new(),
        };
        store.write(Write::SystemEvent(event)).await.unwrap();
        assert_eq!(store.system_events(10).await.unwrap().len(), 1);
    }
}
