//! Shadow: a module swapped in with [`SwapMode::Shadow`] runs beside the
//! live one, from the live state at the moment it started (or, given a
//! configuration of its own, from `init` with it and a replay of the
//! journal, its replayed actions ignored), on the same events. Nothing it returns leaves the host: its actions are recorded as
//! `shadow-actions` system events (durable, with the seq they answer), and
//! its orders are filled on paper ([`PaperExchange`], one ledger) against
//! the books the live module sees, which gives its would-be PnL. The timers
//! it sets are not kept (it sees the live module's timer events).
//!
//! `promote` hands the live state over to the shadow's module (a direct
//! swap); `discard` drops the shadow. A shadow that faults is discarded,
//! with the reason. Each start, promotion and discard is a system event with
//! both module digests.
//!
//! Owns the shadow instance and its paper account only; never journals,
//! never sends, never touches the live instance but to snapshot it once.

use serde_json::json;

use super::swap::describe;
use super::{Cell, SwapError};
use crate::contract::{Action, Event, EventKind, intent_id};
use crate::sandbox::{Instance, StrategyModule};
use crate::supervisor::board::{ShadowView, SwapMode};
use crate::venue::paper::{PaperConfig, PaperExchange};

/// The shadow module, its instance and its paper account.
pub(super) struct Shadow {
    pub module: StrategyModule,
    instance: Instance,
    paper: PaperExchange,
    since_seq: u64,
    events: u64,
    /// Events on which its actions differed from the live module's.
    differing: u64,
    actions: u64,
    orders: u64,
}

impl Cell {
    /// Starts `module` as a shadow from the live state.
    pub(super) async fn start_shadow(
        &mut self,
        module: StrategyModule,
        config: Option<String>,
    ) -> Result<(), SwapError> {
        let refuse = |reason: String| SwapError::Refused(reason);
        if let Some(config) = config {
            return match self.shadow_from_init(&module, &config).await {
                Ok(instance) => {
                    let from = "from init with its own configuration and a replay";
                    self.shadow_started(module, instance, from).await;
                    self.shadow_catch_up().await;
                    Ok(())
                }
                Err(reason) => {
                    self.refused(&module, SwapMode::Shadow, reason.clone())
                        .await;
                    Err(refuse(reason))
                }
            };
        }
        let Some(live) = self.instance.as_mut() else {
            let reason = "the live module is being recovered; try again".to_string();
            self.refused(&module, SwapMode::Shadow, reason.clone())
                .await;
            return Err(refuse(reason));
        };
        let state = match live.snapshot().await {
            Ok(state) => state,
            Err(e) => {
                // A faulted instance is never entered again; the next event
                // brings the live module up from its checkpoint and journal.
                self.instance = None;
                let reason = format!("the live module's snapshot failed: {e}");
                self.refused(&module, SwapMode::Shadow, reason.clone())
                    .await;
                return Err(refuse(reason));
            }
        };
        let restored = match describe(&module, &self.name).await {
            Ok((mut instance, _)) => {
                match instance.restore(&state, self.info.state_version).await {
                    Ok(Ok(())) => Ok(instance),
                    Ok(Err(reason)) => Err(format!("it refused the live state: {reason}")),
                    Err(e) => Err(format!("restoring the live state: {e}")),
                }
            }
            Err(reason) => Err(reason),
        };
        let instance = match restored {
            Ok(instance) => instance,
            Err(reason) => {
                self.refused(&module, SwapMode::Shadow, reason.clone())
                    .await;
                return Err(refuse(reason));
            }
        };
        self.shadow_started(module, instance, "from the live state")
            .await;
        Ok(())
    }

    /// A shadow instance of `module` built from `init(config)` and a replay
    /// of the journal up to the live module's last event.
    async fn shadow_from_init(
        &mut self,
        module: &StrategyModule,
        config: &str,
    ) -> Result<Instance, String> {
        let (mut instance, _) = describe(module, &self.name).await?;
        match instance.init(config).await {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(reason)) => Err(format!("init refused the configuration: {reason}")),
            Err(e) => Err(format!("init: {e}")),
        }
    }

    /// Replays the journal into a shadow started from `init`, its orders
    /// filled on paper as they would have been; a fault discards it.
    async fn shadow_catch_up(&mut self) {
        let entries = match self.store.entries_after(&self.name, 0).await {
            Ok(entries) => entries,
            Err(e) => {
                let reason = format!("reading the journal to catch the shadow up: {e}");
                let _ = self.discard(Some(reason)).await;
                return;
            }
        };
        let upto = self.last_seq;
        for entry in &entries {
            if entry.event.seq > upto || self.shadow.is_none() {
                return;
            }
            if matches!(entry.outcome, crate::store::Outcome::Handled(_)) {
                self.shadow_feed(&entry.event, None).await;
            }
        }
    }

    async fn shadow_started(&mut self, module: StrategyModule, instance: Instance, from: &str) {
        let message = format!(
            "module {} runs as a shadow of module {} from seq {} ({from}); its actions are \
             recorded, not sent",
            module.digest(),
            self.module.digest(),
            self.last_seq
        );
        tracing::info!(strategy = %self.name, "{message}");
        self.system_event("swap-shadow-started", message).await;
        self.board.record(crate::supervisor::board::SwapRecord {
            kind: "shadow".into(),
            mode: SwapMode::Shadow,
            old_digest: self.module.digest(),
            new_digest: module.digest(),
            at_seq: self.last_seq,
            pause_us: None,
            reason: None,
            at_ms: crate::store::wall_clock_ms(),
        });
        self.shadow = Some(Shadow {
            module,
            instance,
            paper: PaperExchange::new(PaperConfig::default()),
            since_seq: self.last_seq,
            events: 0,
            differing: 0,
            actions: 0,
            orders: 0,
        });
        self.show_shadow();
    }

    fn show_shadow(&self) {
        let view = self.shadow.as_ref().map(|s| {
            let summary = s.paper.summary();
            ShadowView {
                digest: s.module.digest(),
                live_digest: self.module.digest(),
                since_seq: s.since_seq,
                events: s.events,
                divergences: s.differing,
                actions: s.actions,
                orders: s.orders,
                paper_fills: summary.fills,
                would_be_pnl: summary.total_pnl(),
            }
        });
        self.board.set_shadow(view);
    }

    /// Hands the event the live module just handled to the shadow (but for
    /// the live module's own order updates and fills: the shadow gets those
    /// of its paper orders instead), records what it would have done and
    /// fills its orders on paper.
    /// `live` are the actions the live module returned for it; an event on
    /// which the shadow's differ counts as a divergence of the shadow.
    pub(super) async fn shadow_step(&mut self, event: &Event, live: &[Action]) {
        self.shadow_feed(event, Some(live)).await;
    }

    /// [`Cell::shadow_step`]; a catch-up replay (no `live` actions) counts
    /// and records nothing.
    async fn shadow_feed(&mut self, event: &Event, live: Option<&[Action]>) {
        let record = live.is_some();
        let Some(shadow) = self.shadow.as_mut() else {
            return;
        };
        if matches!(event.kind, EventKind::OrderUpdate(_) | EventKind::Fill(_)) {
            return;
        }
        let mut pending = std::collections::VecDeque::new();
        if let EventKind::Book(book) = &event.kind {
            pending.extend(shadow.paper.on_book(book));
        }
        let mut recorded = Vec::new();
        let mut next = Some(event.clone());
        // The paper account's answers are handed back at the same seq and
        // time; a bound keeps a strategy that answers every fill with an
        // order from looping.
        let mut rounds = 0;
        while let Some(event) = next.take() {
            rounds += 1;
            let actions = match shadow.instance.on_event(&event).await {
                Ok(actions) => actions,
                Err(e) => {
                    let reason = format!("the shadow faulted on event {}: {e}", event.seq);
                    let _ = self.discard(Some(reason)).await;
                    return;
                }
            };
            if rounds == 1 && live.is_some_and(|live| live != actions.as_slice()) {
                shadow.differing += 1;
            }
            for (index, action) in actions.into_iter().enumerate() {
                match &action {
                    Action::PlaceOrder(order) => {
                        shadow.orders += 1;
                        pending.extend(shadow.paper.place(&intent_id(event.seq, index), order));
                    }
                    Action::CancelOrder(id) => pending.extend(shadow.paper.cancel(id)),
                    Action::SetTimer(_) => {}
                }
                shadow.actions += 1;
                recorded.push(action);
            }
            if rounds < 64 {
                next = pending.pop_front().map(|kind| Event {
                    seq: event.seq,
                    timestamp_ms: event.timestamp_ms,
                    kind,
                });
            }
        }
        if !record {
            return;
        }
        shadow.events += 1;
        if !recorded.is_empty() {
            let message = json!({
                "seq": event.seq,
                "digest": shadow.module.digest(),
                "actions": recorded,
            })
            .to_string();
            self.system_event("shadow-actions", message).await;
        }
        self.show_shadow();
    }

    /// Swaps the shadow's module in for good (from the live state, as a
    /// direct swap) and drops the shadow.
    ///
    /// # Errors
    /// [`SwapError`] when no shadow runs or the hand-over failed (the shadow
    /// is dropped either way; the live module keeps running on a failure).
    pub async fn promote(&mut self) -> Result<(), SwapError> {
        let Some(shadow) = self.shadow.take() else {
            let reason = "no shadow runs: nothing to promote".to_string();
            self.system_event("hot-swap-refused", reason.clone()).await;
            return Err(SwapError::Refused(reason));
        };
        self.show_shadow();
        let Shadow {
            module,
            instance,
            paper,
            events,
            ..
        } = shadow;
        drop(instance);
        let pnl = paper.summary().total_pnl();
        let old_digest = self.module.digest();
        let replaced = self.hand_over(module, SwapMode::Direct).await?;
        let message = format!(
            "module {} promoted from shadow after {events} events (would-be PnL {pnl:.4}), replacing \
             module {old_digest}; swap pause {} us",
            self.module.digest(),
            replaced.pause_us
        );
        tracing::info!(strategy = %self.name, "{message}");
        self.system_event("swap-promoted", message).await;
        self.note_swap(
            "promote",
            SwapMode::Shadow,
            &old_digest,
            Some(replaced.pause_us),
            None,
        );
        Ok(())
    }

    /// Drops the shadow, saying why (`None`: on request).
    ///
    /// # Errors
    /// [`SwapError`] when no shadow runs.
    pub async fn discard(&mut self, reason: Option<String>) -> Result<(), SwapError> {
        let Some(shadow) = self.shadow.take() else {
            let reason = "no shadow runs: nothing to discard".to_string();
            self.system_event("hot-swap-refused", reason.clone()).await;
            return Err(SwapError::Refused(reason));
        };
        self.show_shadow();
        let why = reason.clone().unwrap_or_else(|| "on request".into());
        let message = format!(
            "shadow module {} discarded after {} events ({} actions, would-be PnL {:.4}), {why}; \
             module {} stays live",
            shadow.module.digest(),
            shadow.events,
            shadow.actions,
            shadow.paper.summary().total_pnl(),
            self.module.digest()
        );
        tracing::info!(strategy = %self.name, "{message}");
        self.system_event("swap-discarded", message).await;
        self.board.record(crate::supervisor::board::SwapRecord {
            kind: "discard".into(),
            mode: SwapMode::Shadow,
            old_digest: self.module.digest(),
            new_digest: shadow.module.digest(),
            at_seq: self.last_seq,
            pause_us: None,
            reason,
            at_ms: crate::store::wall_clock_ms(),
        });
        Ok(())
    }
}
