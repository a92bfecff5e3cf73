//! Cancelling an intent's order: through the cancels circuit and rate
//! limit, with retries; a refused cancel is settled by the order's own state
//! (a cancel of an order that already filled is a normal outcome).
//!
//! Part of [`Executor`]; never places an order.

use std::time::Duration;

use tokio::time::Instant;

use super::{ExecError, Executor};
use crate::contract::{EventKind, OrderStatus};
use crate::exec::breaker::{EndpointGroup, Gate};
use crate::exec::intent::IntentState;
use crate::exec::output::{ExecOutput, NoteKind};
use crate::venue::{ErrorClass, ExecutionClient};

impl Executor {
    /// Cancels the order of intent `intent_id`. Cancelling an order that has
    /// already ended (filled, say) is a normal outcome: nothing to do.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn cancel(
        &mut self,
        client: &mut dyn ExecutionClient,
        intent_id: &str,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        if self.state_of(intent_id).is_none() && self.forward_unknown_cancels {
            // A venue whose own record is exact (paper) answers for orders
            // this executor does not hold (an earlier run's, or forgotten).
            match client.cancel(intent_id).await {
                Ok(events) => self.apply_events(events, now_ms, &mut out).await?,
                Err(e) => out.events.push(crate::contract::order_update(
                    intent_id,
                    "",
                    OrderStatus::Rejected,
                    0.0,
                    0.0,
                    Some(e.to_string()),
                )),
            }
            return Ok(out);
        }
        let Some(state) = self.state_of(intent_id) else {
            // The contract's answer to a cancel of a name it never gave.
            out.events.push(crate::contract::order_update(
                intent_id,
                "",
                OrderStatus::Rejected,
                0.0,
                0.0,
                Some("unknown order".into()),
            ));
            return Ok(out);
        };
        if state.is_terminal() {
            return Ok(out);
        }
        let start = Instant::now();
        let max_wait = Duration::from_millis(self.cfg.max_wait_ms);
        let mut backoff = self.backoff();
        loop {
            if self
                .state_of(intent_id)
                .is_some_and(IntentState::is_terminal)
            {
                return Ok(out);
            }
            let mut gate = self.limits.check(EndpointGroup::Cancels);
            if gate == Gate::Go {
                gate = self.breakers[1].permit(Instant::now());
            }
            if let Gate::Wait(d) = gate {
                if start.elapsed() + d > max_wait {
                    out.note(NoteKind::GaveUp, format!("cancel of intent {intent_id} not sent: cancels circuit open or rate limited for longer than {} ms", self.cfg.max_wait_ms));
                    return Ok(out);
                }
                tokio::time::sleep(d).await;
                continue;
            }
            let t0 = Instant::now();
            let result = client.cancel(intent_id).await;
            let took = t0.elapsed();
            let failed = result.as_ref().err().is_some_and(|e| {
                matches!(
                    e.class(),
                    ErrorClass::Retryable | ErrorClass::OutcomeUnknown | ErrorClass::Fatal
                )
            });
            self.record(EndpointGroup::Cancels, failed, took, &mut out);
            match result {
                Ok(events) => {
                    let cancelled = events.iter().any(|e| {
                        matches!(e, EventKind::OrderUpdate(u) if u.intent_id == intent_id && u.status == OrderStatus::Cancelled)
                    });
                    // Fills first; a refused cancel is settled by the order's own state.
                    let (updates, rest): (Vec<_>, Vec<_>) = events
                        .into_iter()
                        .partition(|e| matches!(e, EventKind::OrderUpdate(u) if u.status == OrderStatus::Rejected));
                    self.apply_events(rest, now_ms, &mut out).await?;
                    if !cancelled {
                        let why = updates.iter().find_map(|e| match e {
                            EventKind::OrderUpdate(u) => u.reason.clone(),
                            _ => None,
                        });
                        self.settle_by_lookup(client, intent_id, why, now_ms, &mut out)
                            .await?;
                    }
                    return Ok(out);
                }
                Err(e) => match e.class() {
                    ErrorClass::Retryable | ErrorClass::Halted(_) | ErrorClass::OutcomeUnknown => {
                        match self.delay(&mut backoff, &e, start) {
                            Some(d) => tokio::time::sleep(d).await,
                            None => {
                                out.note(
                                    NoteKind::GaveUp,
                                    format!("cancel of intent {intent_id}: retries exhausted: {e}"),
                                );
                                return Ok(out);
                            }
                        }
                    }
                    ErrorClass::Rejected | ErrorClass::Fatal => {
                        self.settle_by_lookup(
                            client,
                            intent_id,
                            Some(e.to_string()),
                            now_ms,
                            &mut out,
                        )
                        .await?;
                        return Ok(out);
                    }
                },
            }
        }
    }

    /// After a refused cancel: the order's true state decides (filled is a
    /// normal outcome); if it is still open, operators are told why.
    pub(super) async fn settle_by_lookup(
        &mut self,
        client: &mut dyn ExecutionClient,
        id: &str,
        why: Option<String>,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        match self.lookup(client, id, out).await {
            Ok(Some(u)) => {
                self.apply_found(id, &u, now_ms, out).await?;
                if !self.state_of(id).is_some_and(IntentState::is_terminal) {
                    out.note(
                        NoteKind::GaveUp,
                        format!("cancel of intent {id} refused: {}", why.unwrap_or_default()),
                    );
                }
            }
            Ok(None) => {
                let state = self.state_of(id);
                if matches!(
                    state,
                    Some(IntentState::Pending | IntentState::Sent | IntentState::Unknown)
                ) {
                    self.move_to(
                        id,
                        IntentState::Rejected,
                        0.0,
                        Some("never reached the venue".into()),
                        now_ms,
                        out,
                    )
                    .await?;
                } else {
                    out.note(
                        NoteKind::Stale,
                        format!("cancel of intent {id}: the venue has no record of it"),
                    );
                }
            }
            Err(e) => out.note(
                NoteKind::Unknown,
                format!("cancel of intent {id}: lookup failed: {e}"),
            ),
        }
        Ok(())
    }
}
