//! The executor's own state as a value, and the operator's halt.
//!
//! Owns [`ExecSnapshot`] (what a host state keeps of the executor, so a
//! replay through a venue that replays history makes the same decisions as
//! the run it replays), the refusals a replay repeats, and the halt flag
//! (`polybot-host halt`): while halted no new order goes out and each is a
//! `rejected` update with the reason.
//!
//! Part of [`Executor`]; never sends an order.

use serde::{Deserialize, Serialize};

use super::{ExecError, Executor};
use crate::exec::breaker::{BreakerState, EndpointGroup};
use crate::exec::intent::{Intent, IntentState};
use crate::exec::output::{ExecOutput, NoteKind};
use crate::venue::ExecutionClient;

/// Terminal intents kept in memory (a cancel of one is answered from there;
/// an older one is answered as an unknown order).
pub const KEPT_FINISHED: usize = 1024;

/// What a host state keeps of an executor; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecSnapshot {
    /// Intents not yet terminal, by id.
    pub open: Vec<Intent>,
    /// Terminal intents, oldest first.
    pub finished: Vec<Intent>,
    /// Shares reported as fills, per open intent.
    pub told: Vec<(String, f64)>,
    /// Shares reversed (trades that failed to settle), per intent: the
    /// venue's matched size still counts them, so a restart must not take
    /// them for fills the strategy was never told.
    #[serde(default)]
    pub reversed: Vec<(String, f64)>,
    /// Signed position per market.
    pub positions: Vec<(String, f64)>,
    pub pnl_today: f64,
    /// Event times counted towards `max_orders_per_minute`.
    pub recent_orders_ms: Vec<u64>,
}

/// What the executor shows of itself to metrics, read every few dozen events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExecFigures {
    /// Intents held (open, and the newest [`KEPT_FINISHED`] terminal ones)
    /// per state, in the order of [`IntentState::ALL`].
    pub intents: [u64; 8],
    /// Breaker per endpoint group (orders, cancels, market data).
    pub breakers: [BreakerState; 3],
    /// Rate-limiter checks answered with a wait.
    pub rate_limit_waits: u64,
    /// Markets with a non-zero position.
    pub open_positions: u64,
}

impl Executor {
    /// Its figures now; see [`ExecFigures`].
    pub fn figures(&self) -> ExecFigures {
        let mut intents = [0; 8];
        for intent in self.intents() {
            intents[intent.state.index()] += 1;
        }
        let open_positions = self.positions.values().filter(|p| p.abs() > 1e-9).count() as u64;
        ExecFigures {
            intents,
            breakers: EndpointGroup::ALL.map(|g| self.breaker_state(g)),
            rate_limit_waits: self.limits.waits(),
            open_positions,
        }
    }

    /// A venue with no remote limits (the simulated one): no client-side
    /// rate limit applies, so nothing waits on the wall clock.
    pub fn without_rate_limits(mut self) -> Self {
        self.limits.turn_off();
        self
    }

    /// A venue whose own record of orders is exact (paper execution): a
    /// cancel of an intent this executor does not hold (placed before it
    /// was built, or forgotten) is the venue's to answer.
    pub fn forwarding_unknown_cancels(mut self) -> Self {
        self.forward_unknown_cancels = true;
        self
    }

    /// The executor's state; see [`ExecSnapshot`].
    pub fn snapshot(&self) -> ExecSnapshot {
        let mut open: Vec<Intent> = self.intents.values().cloned().collect();
        open.sort_by(|a, b| a.id.cmp(&b.id));
        let finished = self
            .finished_order
            .iter()
            .filter_map(|id| self.finished.get(id).cloned())
            .collect();
        let mut told: Vec<(String, f64)> = self
            .told
            .iter()
            .filter(|(id, _)| self.intents.contains_key(*id))
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        told.sort_by(|a, b| a.0.cmp(&b.0));
        let mut positions: Vec<(String, f64)> = self
            .positions
            .iter()
            .map(|(m, p)| (m.clone(), *p))
            .collect();
        positions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut reversed: Vec<(String, f64)> = self
            .reversed
            .iter()
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        reversed.sort_by(|a, b| a.0.cmp(&b.0));
        ExecSnapshot {
            open,
            finished,
            told,
            reversed,
            positions,
            pnl_today: self.pnl_today,
            recent_orders_ms: self.risk.recent(),
        }
    }

    /// Restores a state [`Executor::snapshot`] took (replacing what it knows).
    pub fn restore(&mut self, s: ExecSnapshot) {
        self.intents = s.open.into_iter().map(|i| (i.id.clone(), i)).collect();
        self.finished.clear();
        self.finished_order.clear();
        for i in s.finished {
            self.finish(i);
        }
        self.told = s.told.into_iter().collect();
        self.reversed = s.reversed.into_iter().collect();
        self.positions = s.positions.into_iter().collect();
        self.pnl_today = s.pnl_today;
        self.risk.restore_recent(s.recent_orders_ms);
    }

    /// What a live restart rebuilds from the journal before [`Executor::load`]:
    /// the risk gate's signed positions per market and the day's PnL, and the
    /// shares each intent's fills told the strategy and its reversals took
    /// back (so reconciliation fills none of them again, even when the
    /// intent's last recorded move predates a journaled fill, or records
    /// matched size whose trade failed).
    pub fn restore_exposure(&mut self, s: ExecSnapshot) {
        self.positions = s.positions.into_iter().collect();
        self.pnl_today = s.pnl_today;
        self.told = s.told.into_iter().collect();
        self.reversed = s.reversed.into_iter().collect();
    }

    /// Intents a replay must refuse again, each with the reason it got.
    pub fn set_refusals(&mut self, refusals: impl IntoIterator<Item = (String, String)>) {
        self.refusals = refusals.into_iter().collect();
    }

    /// Keeps a terminal intent, forgetting the oldest beyond [`KEPT_FINISHED`].
    pub(super) fn finish(&mut self, done: Intent) {
        self.finished_order.push_back(done.id.clone());
        self.finished.insert(done.id.clone(), done);
        while self.finished_order.len() > KEPT_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
                self.told.remove(&old);
                self.reversed.remove(&old);
                self.reversal_pending.remove(&old);
            }
        }
    }

    /// The operator's halt, if placement is halted.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// Halts placement with `reason` (each new order is then a `rejected`
    /// update with it) and, with `cancel_resting`, cancels the strategy's
    /// resting orders once.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn halt(
        &mut self,
        client: &mut dyn ExecutionClient,
        reason: &str,
        cancel_resting: bool,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        if self.halted.is_some() {
            return Ok(out);
        }
        self.halted = Some(reason.to_string());
        out.note(
            NoteKind::Halted,
            format!("strategy {}: placement halted: {reason}", self.strategy),
        );
        let mut resting: Vec<String> = self
            .intents
            .values()
            .filter(|i| {
                matches!(
                    i.state,
                    IntentState::Acknowledged | IntentState::PartiallyFilled | IntentState::Unknown
                )
            })
            .map(|i| i.id.clone())
            .collect();
        resting.sort();
        if !cancel_resting {
            resting.clear();
        }
        for id in resting {
            let o = self.cancel(client, &id, now_ms).await?;
            out.events.extend(o.events);
            out.notes.extend(o.notes);
        }
        Ok(out)
    }

    /// Lifts a halt: placement goes on.
    pub fn resume(&mut self) -> ExecOutput {
        let mut out = ExecOutput::default();
        if self.halted.take().is_some() {
            out.note(
                NoteKind::Halted,
                format!("strategy {}: placement resumed", self.strategy),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{OrderStatus, OrderType, PlaceOrder, Side};
    use crate::exec::{ExecConfig, MemoryIntentLog, RiskConfig};
    use crate::venue::simulated::{Pacing, SimVenue};

    fn order() -> PlaceOrder {
        PlaceOrder {
            market: "sim-0".into(),
            side: Side::Buy,
            price: 0.5,
            size: 1.0,
            order_type: OrderType::Fak,
        }
    }

    fn executor(risk: RiskConfig, log: &MemoryIntentLog) -> Executor {
        Executor::new(
            "s",
            "sim",
            ExecConfig::default(),
            risk,
            Box::new(log.clone()),
        )
        .without_rate_limits()
    }

    fn venue() -> SimVenue {
        SimVenue::new(Default::default(), Default::default(), Pacing::Unpaced)
    }

    #[tokio::test]
    async fn a_halt_refuses_with_the_reason_and_resume_lifts_it() {
        let log = MemoryIntentLog::default();
        let mut ex = executor(RiskConfig::default(), &log);
        let mut v = venue();
        let out = ex
            .halt(&mut v, "strategy halted by operator", true, 0)
            .await;
        assert_eq!(out.expect("halt").notes[0].kind, NoteKind::Halted);
        let out = ex.submit(&mut v, "1.0", order(), 1).await.expect("submit");
        let u = out.updates().next().expect("an update");
        assert_eq!(u.status, OrderStatus::Rejected);
        assert_eq!(u.reason.as_deref(), Some("strategy halted by operator"));
        assert_eq!(
            log.path("1.0"),
            [IntentState::Pending, IntentState::Rejected]
        );
        assert_eq!(out.notes[0].kind, NoteKind::Halted);

        assert_eq!(ex.resume().notes.len(), 1);
        ex.submit(&mut v, "2.0", order(), 2).await.expect("submit");
        assert_eq!(log.path("2.0")[1], IntentState::Sent, "sent once resumed");
    }

    #[tokio::test]
    async fn a_restored_snapshot_decides_as_the_executor_it_was_taken_from() {
        let risk = RiskConfig {
            max_orders_per_minute: Some(1),
            ..RiskConfig::default()
        };
        let log = MemoryIntentLog::default();
        let mut first = executor(risk.clone(), &log);
        let mut v = venue();
        first
            .submit(&mut v, "1.0", order(), 0)
            .await
            .expect("submit");
        let snapshot = first.snapshot();

        let mut second = executor(risk, &log);
        second.restore(snapshot.clone());
        assert_eq!(second.snapshot(), snapshot);
        let known = second
            .submit(&mut v, "1.0", order(), 1)
            .await
            .expect("again");
        assert!(
            known.events.is_empty(),
            "a known intent is not submitted twice"
        );
        let out = second
            .submit(&mut v, "2.0", order(), 1_000)
            .await
            .expect("submit");
        let reason = out.updates().next().and_then(|u| u.reason.clone());
        assert!(
            reason.is_some_and(|r| r.contains("max_orders_per_minute")),
            "the minute's count came with the snapshot"
        );
    }

    #[tokio::test]
    async fn a_replay_refuses_again_what_was_refused() {
        let log = MemoryIntentLog::default();
        let mut ex = executor(RiskConfig::default(), &log);
        ex.set_refusals([("1.0".to_string(), "risk: before".to_string())]);
        let out = ex
            .submit(&mut venue(), "1.0", order(), 0)
            .await
            .expect("submit");
        let u = out.updates().next().expect("update");
        assert_eq!(u.reason.as_deref(), Some("risk: before"));
    }
}
