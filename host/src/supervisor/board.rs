//! Hot-swap requests and the board where a cell shows how its swaps went.
//!
//! Owns the request shapes (a swap in one of three modes, promote, discard),
//! the probation policy and the shared, read-only-for-others record of the
//! last swap, a running probation and a running shadow. Never swaps anything
//! itself: the cell does (`cell/swap.rs`, `cell/probation.rs`,
//! `cell/shadow.rs`) and writes here; the registry and the API read.

use std::sync::{Arc, Mutex};

use crate::sandbox::StrategyModule;

/// How a new module is brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapMode {
    /// Replace the module at once, for good.
    Direct,
    /// Replace it, and go back to the old one automatically if the new one
    /// faults or diverges within the probation.
    Probation,
    /// Run the new module beside the live one on the same events; its
    /// actions are recorded, never executed, until `promote` or `discard`.
    Shadow,
}

impl std::str::FromStr for SwapMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(SwapMode::Direct),
            "probation" => Ok(SwapMode::Probation),
            "shadow" => Ok(SwapMode::Shadow),
            other => Err(format!("mode `{other}`: one of probation, shadow, direct")),
        }
    }
}

impl std::fmt::Display for SwapMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwapMode::Direct => "direct",
            SwapMode::Probation => "probation",
            SwapMode::Shadow => "shadow",
        })
    }
}

/// Where the outcome of a swap goes back to whoever asked for it (the API
/// waits on it): `Ok` once the module is in, the reason when it was refused
/// or never applied. Dropped unanswered only if the host itself went away.
pub type SwapAnswer = tokio::sync::oneshot::Sender<Result<(), String>>;

/// What a cell is asked to do with modules, before its next event.
pub enum SwapRequest {
    Swap {
        module: StrategyModule,
        mode: SwapMode,
        /// For a shadow: start it from `init` with this configuration (JSON)
        /// and a replay of the journal, instead of from the live state.
        config: Option<String>,
        /// Told the outcome.
        answer: Option<SwapAnswer>,
    },
    /// Swap the shadow's module in (directly) and drop the shadow.
    Promote,
    /// Drop the shadow.
    Discard,
}

/// `[swap]`: when a module on probation is rolled back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbationPolicy {
    /// Faults of the new module tolerated within the probation; one more
    /// rolls it back.
    pub probation_faults: u32,
    /// Events the new module must handle (with no divergence and at most
    /// `probation_faults` faults) to be kept.
    pub probation_events: u64,
}

impl Default for ProbationPolicy {
    fn default() -> Self {
        ProbationPolicy {
            probation_faults: 0,
            probation_events: 200,
        }
    }
}

/// One swap, rollback, promotion or discard, as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SwapRecord {
    /// `swap`, `rollback`, `promote`, `discard`, `refused`, `probation-passed`.
    pub kind: String,
    pub mode: SwapMode,
    /// sha256 of the component bytes of the module running before.
    pub old_digest: String,
    /// sha256 of the component bytes of the module brought in (or dropped).
    pub new_digest: String,
    /// Seq of the last event handled before the change.
    pub at_seq: u64,
    /// Time between the last event handled by the module going out and the
    /// module coming in being ready for the next one (microseconds).
    pub pause_us: Option<u64>,
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// A running probation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbationView {
    pub digest: String,
    pub previous_digest: String,
    pub since_seq: u64,
    pub events: u64,
    pub events_needed: u64,
    pub faults: u32,
    pub faults_allowed: u32,
}

/// A running shadow beside the live module.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShadowView {
    pub digest: String,
    pub live_digest: String,
    /// Seq of the live state the shadow started from.
    pub since_seq: u64,
    /// Events the shadow handled (compared with the live module's actions).
    pub events: u64,
    /// Events on which its actions differed from the live module's.
    pub divergences: u64,
    /// Actions it returned (recorded as `shadow-actions` system events, never sent).
    pub actions: u64,
    /// Orders among them, filled on paper against the books the live module sees.
    pub orders: u64,
    pub paper_fills: u64,
    /// Realised plus unrealised PnL of those paper fills.
    pub would_be_pnl: f64,
}

/// What the board shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SwapStatus {
    pub last_swap: Option<SwapRecord>,
    pub probation: Option<ProbationView>,
    pub shadow: Option<ShadowView>,
}

/// Shared between a cell (which writes) and its readers; also keeps the
/// module the cell runs now, so a restarted strategy starts with it.
#[derive(Clone, Default)]
pub struct SwapBoard(Arc<Mutex<Board>>);

#[derive(Default)]
struct Board {
    status: SwapStatus,
    module: Option<StrategyModule>,
}

impl SwapBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn status(&self) -> SwapStatus {
        self.lock().status.clone()
    }

    /// The module the cell runs since its last swap, rollback or promotion.
    pub fn module(&self) -> Option<StrategyModule> {
        self.lock().module.clone()
    }

    pub(crate) fn set_module(&self, module: &StrategyModule) {
        self.lock().module = Some(module.clone());
    }

    pub(crate) fn record(&self, record: SwapRecord) {
        self.lock().status.last_swap = Some(record);
    }

    pub(crate) fn set_probation(&self, view: Option<ProbationView>) {
        self.lock().status.probation = view;
    }

    pub(crate) fn set_shadow(&self, view: Option<ShadowView>) {
        self.lock().status.shadow = view;
    }

    /// Forgets a probation or shadow that belonged to a cell now gone.
    pub fn clear_running(&self) {
        let mut board = self.lock();
        board.status.probation = None;
        board.status.shadow = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_the_same_names_and_a_bad_one_says_which_exist() {
        for mode in [SwapMode::Direct, SwapMode::Probation, SwapMode::Shadow] {
            assert_eq!(mode.to_string().parse::<SwapMode>(), Ok(mode));
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::Value::String(mode.to_string())
            );
        }
        let error = "sideways".parse::<SwapMode>().unwrap_err();
        assert!(error.contains("probation, shadow, direct"), "{error}");
    }

    #[test]
    fn the_board_keeps_the_last_record_and_forgets_running_ones_on_clear() {
        let board = SwapBoard::default();
        board.record(SwapRecord {
            kind: "swap".into(),
            mode: SwapMode::Probation,
            old_digest: "a".into(),
            new_digest: "b".into(),
            at_seq: 7,
            pause_us: Some(120),
            reason: None,
            at_ms: 1,
        });
        board.set_shadow(Some(ShadowView {
            digest: "c".into(),
            live_digest: "b".into(),
            since_seq: 7,
            events: 0,
            divergences: 0,
            actions: 0,
            orders: 0,
            paper_fills: 0,
            would_be_pnl: 0.0,
        }));
        board.clear_running();
        let status = board.status();
        assert!(status.shadow.is_none() && status.probation.is_none());
        assert_eq!(status.last_swap.unwrap().pause_us, Some(120));
    }
}
