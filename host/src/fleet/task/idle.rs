//! A strategy's task while no cell runs: paused, ended by itself, or
//! stopping. Owns what the task does with requests then — a restart or
//! resume starts it again, a swap changes the module of the next start (or
//! is refused, for a shadow), requests still queued at the end are answered
//! and recorded. Never runs the strategy.

use super::{Control, SwapAnswer, SwapMode, Task, system_event};
use crate::sandbox::StrategyModule;

impl Task {
    /// After the run ended by itself: the reason of a restart request, or
    /// `None` once asked to stop.
    pub(super) async fn wait_after_end(&mut self) -> Option<String> {
        loop {
            match self.control.recv().await {
                Some(Control::Restart { reason, .. }) => return Some(reason),
                Some(Control::Swap {
                    module,
                    mode,
                    answer,
                    ..
                }) => self.swap_while_idle(module, mode, answer).await,
                Some(Control::Promote | Control::Discard) => self.nothing_to_do().await,
                Some(Control::Pause | Control::Resume | Control::Stuck { .. }) => {}
                Some(Control::Stop) | None => return None,
            }
        }
    }

    /// A swap while no cell runs: the module is used from the next start;
    /// probation and shadow need a running strategy and are refused.
    async fn swap_while_idle(
        &mut self,
        module: StrategyModule,
        mode: SwapMode,
        answer: Option<SwapAnswer>,
    ) {
        let message = if mode == SwapMode::Shadow {
            let message = format!(
                "shadow of module {} refused: the strategy is not running",
                module.digest()
            );
            if let Some(answer) = answer {
                let _ = answer.send(Err(message.clone()));
            }
            message
        } else {
            let message = format!(
                "module {} replaces {} from the next start ({mode} asked; the strategy is not \
                 running, so there is no probation)",
                module.digest(),
                self.module.digest()
            );
            self.module = module;
            self.slot.swap.set_module(&self.module);
            if let Some(answer) = answer {
                let _ = answer.send(Ok(()));
            }
            message
        };
        let kind = if mode == SwapMode::Shadow {
            "hot-swap-refused"
        } else {
            "hot-swap"
        };
        system_event(self.system.as_ref(), &self.entry.name, kind, message).await;
    }

    async fn nothing_to_do(&self) {
        system_event(
            self.system.as_ref(),
            &self.entry.name,
            "hot-swap-refused",
            "no shadow runs (the strategy is not running): nothing to promote or discard".into(),
        )
        .await;
    }

    /// While paused: the reason to start again and whether it is a restart
    /// (rather than a resume), or `None` once asked to stop.
    pub(super) async fn wait_paused(&mut self) -> Option<(String, bool)> {
        loop {
            match self.control.recv().await {
                Some(Control::Resume) => return Some(("resumed on request".into(), false)),
                Some(Control::Restart { reason, .. }) => return Some((reason, true)),
                Some(Control::Swap {
                    module,
                    mode,
                    answer,
                    ..
                }) => self.swap_while_idle(module, mode, answer).await,
                Some(Control::Promote | Control::Discard) => self.nothing_to_do().await,
                Some(Control::Pause | Control::Stuck { .. }) => {}
                Some(Control::Stop) | None => return None,
            }
        }
    }

    /// Answers the requests still queued when the task ends (a swap, a
    /// promotion or discard has no strategy to act on any more) and records
    /// each as a system event.
    pub(super) async fn refuse_queued_controls(&mut self) {
        let reason = "the strategy stopped before the request was acted on";
        while let Ok(control) = self.control.try_recv() {
            let message = match control {
                Control::Swap { module, answer, .. } => {
                    if let Some(answer) = answer {
                        let _ = answer.send(Err(reason.to_string()));
                    }
                    format!("swap to module {} refused: {reason}", module.digest())
                }
                Control::Promote => format!("promote of the shadow refused: {reason}"),
                Control::Discard => format!("discard of the shadow refused: {reason}"),
                _ => continue,
            };
            system_event(
                self.system.as_ref(),
                &self.entry.name,
                "hot-swap-refused",
                message,
            )
            .await;
        }
    }
}
