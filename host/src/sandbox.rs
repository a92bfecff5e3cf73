//! The sandbox: wasmtime engine, strategy modules and their instances.
//!
//! One [`Sandbox`] owns the wasmtime [`Engine`] (epoch interruption on, pooling
//! instance allocator) and the [`Linker`] with WASI p2 and the `host` import.
//! [`Sandbox::load`] turns a `.wasm` file into a [`StrategyModule`]: it checks
//! the file is a component that implements the `polybot:strategy` world, and
//! keeps compiled code in an on-disk cache so a restart does not recompile.
//! [`StrategyModule::instantiate`] makes an [`Instance`]: a fresh wasmtime
//! `Store` with its own memory cap, per-call deadline, output limits and
//! captured stdio.
//!
//! The sandbox decides nothing. A call either returns output that passed the
//! limits of [`SandboxLimits`], or fails with a typed [`GuestFault`] (the
//! strategy's doing: trap, deadline, memory cap, invalid or oversize output,
//! exit, resource limit) or a host error; what to do about it is the
//! supervisor's business.
//!
//! Invariant: a failed call poisons an instance — it refuses every further
//! call — so an `Instance` that returned an error must be dropped, never reused.

mod fault;
mod guest;
mod instance;
mod log;
mod module;
mod output;

pub use fault::{CallError, GuestFault};
pub use instance::Instance;
pub use log::LogTarget;
pub use module::{LoadError, StrategyModule};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::contract::Strategy;
use guest::GuestState;

/// Resource limits every strategy instance runs under: the `[sandbox]` table
/// of the config file. Every guest output the host accepts is bounded by one
/// of these (see `sandbox/output.rs` for the rules).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall time one call into a strategy may take, whatever it waits on.
    #[serde(with = "humantime_serde_compat")]
    pub call_deadline: Duration,
    /// Most actions one `on-event` call may return.
    pub max_actions_per_event: usize,
    /// Longest market id or cancel id an action may carry, in bytes.
    pub max_id_bytes: usize,
    /// Most data one `on-event` call may return (each action counted as the
    /// host's in-memory size plus its strings), and most any single value the
    /// strategy passes the host during that call (a log line, a stdout write)
    /// may carry. Checked before the host copies it.
    pub max_output_bytes: usize,
    /// Largest snapshot a strategy may return, in bytes.
    pub max_snapshot_bytes: usize,
    /// Longest log line a strategy may emit; longer lines are cut.
    pub max_log_line: usize,
    /// Most log lines (stdout, stderr and `host.log` together) a strategy may
    /// write per second; the rest are dropped and counted in one warning.
    pub max_log_lines_per_sec: u32,
    /// Most strategy instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 << 20,
            call_deadline: Duration::from_millis(100),
            max_actions_per_event: 64,
            max_id_bytes: 256,
            max_output_bytes: 64 << 10,
            max_snapshot_bytes: 16 << 20,
            max_log_line: 4096,
            max_log_lines_per_sec: 100,
            max_instances: 64,
        }
    }
}

impl SandboxLimits {
    /// Checks the limits make sense; the error names the `[sandbox]` key.
    ///
    /// # Errors
    /// A one-line description of the first limit out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.memory_bytes < (1 << 20) {
            return Err(format!(
                "[sandbox] memory_bytes of {} is below the 1 MiB minimum",
                self.memory_bytes
            ));
        }
        if self.call_deadline < EPOCH_TICK {
            return Err(format!(
                "[sandbox] call_deadline of {:?} is shorter than the {:?} epoch tick",
                self.call_deadline, EPOCH_TICK
            ));
        }
        let at_least = [
            ("max_actions_per_event", self.max_actions_per_event, 1),
            ("max_id_bytes", self.max_id_bytes, 16),
            ("max_output_bytes", self.max_output_bytes, 4096),
            ("max_snapshot_bytes", self.max_snapshot_bytes, 1024),
            ("max_log_line", self.max_log_line, 80),
        ];
        for (key, value, min) in at_least {
            if value < min {
                return Err(format!("[sandbox] {key} must be at least {min}"));
            }
        }
        if self.max_instances == 0 {
            return Err("[sandbox] max_instances must be at least 1".into());
        }
        Ok(())
    }
}

/// Serde adapter for durations written like `100ms` or `2s` in config files.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// How often the epoch ticker advances the engine's epoch. A running call
/// yields to the async runtime once per tick, and its deadline is enforced to
/// within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The multi-thread runtime builder strategies run on (`worker_threads` and
/// the rest left to the caller). A CPU-heavy call is polled in slices of one
/// [`EPOCH_TICK`]; tokio looks for I/O and timers only every 61 scheduler
/// ticks by default, so a light strategy's event (a WebSocket message, a
/// timer) could wait 61 slices of its neighbours' CPU (~120 ms) before its
/// task was even woken. Here the drivers are polled at every tick, which
/// costs one non-blocking poll per slice.
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.event_interval(1).enable_all();
    builder
}

/// The engine, linker and limits shared by every strategy of a host.
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    limits: SandboxLimits,
    cache_dir: Option<PathBuf>,
    _ticker: EpochTicker,
}

impl Sandbox {
    /// Builds the engine and linker. `cache_dir`, when given, holds compiled
    /// modules; it is created only when the first module is saved there.
    ///
    /// # Errors
    /// When wasmtime cannot set up the engine (for instance, the pooling
    /// allocator cannot reserve its memory).
    pub fn new(limits: SandboxLimits, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        limits.check().map_err(anyhow::Error::msg)?;
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances.max(1);
        pool.total_component_instances(instances)
            // A wasip2 component holds a handful of core instances, memories and tables.
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 16)
            .max_memories_per_component(4)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Strategy::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;

        let ticker = EpochTicker::start(&engine)?;
        Ok(Sandbox {
            engine,
            linker: Arc::new(linker),
            limits,
            cache_dir,
            _ticker: ticker,
        })
    }

    /// The limits instances run under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads and checks a strategy component from a file.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file and what is wrong with it.
    pub fn load(&self, path: &Path) -> Result<StrategyModule, LoadError> {
        module::load(self, path, self.limits.clone())
    }

    /// As [`Sandbox::load`], with the module's instances running under
    /// `limits` instead of the sandbox's own (one strategy's overrides). The
    /// memory cap cannot exceed the sandbox's: the pool is sized by it, so
    /// it is capped there.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file and what is wrong with it.
    pub fn load_with(
        &self,
        path: &Path,
        mut limits: SandboxLimits,
    ) -> Result<StrategyModule, LoadError> {
        limits.memory_bytes = limits.memory_bytes.min(self.limits.memory_bytes);
        limits.max_instances = self.limits.max_instances;
        module::load(self, path, limits)
    }
}

/// A background thread advancing the engine's epoch every [`EPOCH_TICK`]; it
/// ends by itself once the engine is gone.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> anyhow::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("polybot-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_pass_and_a_limit_out_of_range_names_its_key() {
        assert_eq!(SandboxLimits::default().check(), Ok(()));
        let tiny = SandboxLimits {
            max_output_bytes: 10,
            ..SandboxLimits::default()
        };
        let e = tiny.check().unwrap_err();
        assert!(e.contains("[sandbox] max_output_bytes"), "{e}");
        let fast = SandboxLimits {
            call_deadline: Duration::from_millis(1),
            ..SandboxLimits::default()
        };
        assert!(fast.check().unwrap_err().contains("call_deadline"));
    }
}
