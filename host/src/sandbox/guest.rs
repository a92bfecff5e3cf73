//! What a strategy instance's `Store` holds: its WASI context (no files, no
//! network, no environment, frozen clocks, fixed randomness), its memory
//! limiter, and its log routing.
//!
//! Strategies must be deterministic for replay to be exact, so the WASI clocks
//! read as the Unix epoch and WASI randomness is a fixed byte pattern: a
//! strategy that reaches for them gets the same answer every time instead of
//! silently diverging on replay. Its stdout and stderr, and the `host.log`
//! import, go into the host's `tracing` log tagged with the strategy's name.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use crate::contract::{LogLevel, polybot::strategy};

/// The data inside each strategy's wasmtime `Store`.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    log: LogTarget,
}

impl GuestState {
    pub(crate) fn new(log: LogTarget, memory_bytes: usize) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(LogStream {
                target: log.clone(),
                stream: "stdout",
                line: Vec::new(),
            })
            .stderr(LogStream {
                target: log.clone(),
                stream: "stderr",
                line: Vec::new(),
            })
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random(Deterministic::new(vec![0x5a, 0xa5, 0x3c, 0xc3]))
            .insecure_random_seed(0)
            .build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_bytes,
                hit: None,
            },
            log,
        }
    }

    /// What the guest last wrote to stderr, a Rust panic message included.
    pub(crate) fn recent_stderr(&self) -> Option<String> {
        let lines = self.log.recent_stderr.lock().ok()?;
        let text: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("note: run with"))
            .collect();
        (!text.is_empty()).then(|| text.join(" "))
    }
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

/// Where a strategy's log lines go: the host's log, under the strategy's name.
#[derive(Clone)]
pub struct LogTarget {
    strategy: Arc<str>,
    max_line: usize,
    recent_stderr: Arc<Mutex<VecDeque<String>>>,
}

/// How many recent stderr lines are kept to explain a trap.
const RECENT_STDERR_LINES: usize = 3;

impl LogTarget {
    pub fn new(strategy: &str, max_line: usize) -> Self {
        LogTarget {
            strategy: strategy.into(),
            max_line,
            recent_stderr: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn emit(&self, level: LogLevel, stream: &str, message: &str) {
        let message = truncate(message, self.max_line);
        let strategy = &*self.strategy;
        match level {
            LogLevel::Trace => tracing::trace!(strategy, stream, "{message}"),
            LogLevel::Debug => tracing::debug!(strategy, stream, "{message}"),
            LogLevel::Info => tracing::info!(strategy, stream, "{message}"),
            LogLevel::Warn => tracing::warn!(strategy, stream, "{message}"),
            LogLevel::Error => tracing::error!(strategy, stream, "{message}"),
        }
    }
}

fn truncate(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Turns a guest's stdout or stderr byte stream into log lines.
#[derive(Clone)]
struct LogStream {
    target: LogTarget,
    stream: &'static str,
    line: Vec<u8>,
}

impl LogStream {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_line();
            } else if self.line.len() < self.target.max_line {
                self.line.push(b);
            }
        }
    }

    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        let level = if self.stream == "stderr" {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        self.target.emit(level, self.stream, &text);
        if self.stream == "stderr"
            && let Ok(mut recent) = self.target.recent_stderr.lock()
        {
            if recent.len() == RECENT_STDERR_LINES {
                recent.pop_front();
            }
            recent.push_back(text);
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.flush_line();
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
}

/// The error a memory grow past the cap raises inside wasmtime.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (wanted {desired} bytes)")]
pub(crate) struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
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
