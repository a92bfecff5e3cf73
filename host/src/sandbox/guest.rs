//! What a strategy instance's `Store` holds: its WASI context (no files, no
//! network, no environment, frozen clocks, fixed randomness), its memory
//! limiter, its log, and the clock of the call in progress.
//!
//! Strategies must be deterministic for replay to be exact, so the WASI clocks
//! read as the Unix epoch and WASI randomness is a fixed byte pattern: a
//! strategy that reaches for them gets the same answer every time instead of
//! silently diverging on replay. A strategy that sleeps or waits on a WASI
//! pollable waits in real time; the call's deadline (enforced by the
//! instance, see `instance.rs`) ends the wait. Host resources it may hold at
//! once are capped ([`MAX_HOST_RESOURCES`]), so it cannot grow the host's
//! tables without bound.

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::fault::MemoryLimitExceeded;
use super::log::LogTarget;
use crate::contract::{LogLevel, polybot::strategy};

/// Most WASI resources (streams, pollables) a strategy may hold at once, and
/// most component handles. A strategy needs a handful.
pub(crate) const MAX_HOST_RESOURCES: usize = 4096;

/// The data inside each strategy's wasmtime `Store`.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: LogTarget,
    call: CallClock,
}

impl GuestState {
    pub(crate) fn new(log: LogTarget, memory_bytes: usize, deadline: Duration) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(log.stream("stdout"))
            .stderr(log.stream("stderr"))
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random_seed(0)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        GuestState {
            wasi,
            table,
            limiter: MemoryLimiter {
                limit: memory_bytes,
                hit: None,
                granted: 0,
            },
            log,
            call: CallClock {
                deadline,
                started: None,
            },
        }
    }

    /// Marks the start of a call: its deadline runs from now.
    pub(crate) fn begin_call(&mut self) {
        self.call.started = Some(Instant::now());
    }

    /// What to do when the epoch deadline is reached while guest code runs:
    /// yield to the async runtime (so one busy strategy cannot hold a worker
    /// thread) and go on for another tick, or interrupt once the call's
    /// deadline of wall time is spent.
    pub(crate) fn on_epoch_deadline(&self) -> UpdateDeadline {
        match self.call.started {
            Some(started) if started.elapsed() < self.call.deadline => UpdateDeadline::Yield(1),
            _ => UpdateDeadline::Interrupt,
        }
    }
}

impl Drop for GuestState {
    fn drop(&mut self) {
        self.log.flush_dropped();
    }
}

/// When the call in progress started, and how long it may take.
struct CallClock {
    deadline: Duration,
    started: Option<Instant>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl strategy::types::Host for GuestState {}

impl strategy::host::Host for GuestState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.emit(level, "log", &message);
    }
}

/// WASI clocks for a strategy: always the Unix epoch. Time comes from events.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Caps an instance's linear memory and remembers when the cap was hit, so a
/// failed call can be classified as a memory-limit fault rather than a trap.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) hit: Option<usize>,
    /// Bytes of linear memory granted so far (the instance's size).
    pub(crate) granted: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = Some(desired);
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }
            .into());
        }
        self.granted = self.granted.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a strategy needs few. Cap them too.
        Ok(desired <= 100_000)
    }
}
