//! Hot swap: replacing a running strategy's module with a new build.
//!
//! Owns only the hand-over (checkpoint with the old module, bring the new one
//! up from it, or keep the old one if that fails); never touches the journal.

use super::{Cell, CellState, SwapError};
use crate::sandbox::StrategyModule;

impl Cell {
    /// Replaces the strategy's module while it runs (a hot swap).
    ///
    /// The current state is checkpointed with the old module, then a new
    /// instance of `module` restores that checkpoint and replays anything
    /// after it. A new version that cannot read the old state rebuilds it by
    /// replaying the journal from the start. If the new module cannot be
    /// brought up at all, the old one is restored and the swap is refused;
    /// either way the outcome is kept as a system event.
    ///
    /// # Errors
    /// [`SwapError`] when the new module could not take over; the old module
    /// keeps running.
    pub async fn swap_module(&mut self, module: StrategyModule) -> Result<(), SwapError> {
        self.check_not_fatal()
            .map_err(|e| SwapError::Refused(e.to_string()))?;
        if self.instance.is_some()
            && let Err(fault) = self.take_checkpoint(self.last_event_time_ms).await
        {
            let reason = format!("checkpoint before the swap failed: {fault}");
            self.checkpoint_failed(fault, "checkpoint before a hot swap")
                .await;
            return Err(SwapError::Refused(reason));
        }
        self.store
            .sync()
            .await
            .map_err(|e| SwapError::Refused(e.to_string()))?;

        let describe = async {
            let mut probe = module.instantiate(&self.name).await?;
            probe.describe().await
        };
        let info = describe
            .await
            .map_err(|e| SwapError::Refused(format!("{}: {e}", module.path().display())))?;
        let old_module = std::mem::replace(&mut self.module, module);
        let old_info = std::mem::replace(&mut self.info, info);
        let old_instance = self.instance.take();
        let old_swapped_at = std::mem::replace(&mut self.swapped_at_seq, self.last_seq);
        self.set_state(CellState::Recovering).await;
        match self.recover(self.last_seq).await {
            Ok(()) => {
                drop(old_instance);
                let message = format!(
                    "{} {} ({}) replaced {} {} ({})",
                    self.info.name,
                    self.info.version,
                    &self.module.digest()[..12],
                    old_info.name,
                    old_info.version,
                    &old_module.digest()[..12]
                );
                tracing::info!(strategy = %self.name, "hot swap: {message}");
                self.system_event("hot-swap", message).await;
                self.set_state(CellState::Running).await;
                Ok(())
            }
            Err(e) => {
                let reason = format!("{}: {e}", self.module.path().display());
                self.module = old_module;
                self.info = old_info;
                self.instance = old_instance;
                self.swapped_at_seq = old_swapped_at;
                tracing::warn!(strategy = %self.name, "hot swap refused: {reason}");
                self.system_event("hot-swap-refused", reason.clone()).await;
                self.set_state(CellState::Running).await;
                Err(SwapError::Refused(reason))
            }
        }
    }
}
