//! A strategy's log: its stdout, stderr and `host.log` lines, into the host's
//! `tracing` log tagged with the strategy's name.
//!
//! Bounded two ways: a line longer than `max_log_line` bytes is cut, and at
//! most `max_log_lines_per_sec` lines a second (a token bucket holding one
//! second's worth) are written; the rest are dropped and counted, and the
//! count is written as one warning when lines flow again or the instance goes
//! away, so a flood is visible without flooding. What a strategy logs never
//! reaches the strategy's state, so dropping lines cannot change its behaviour.
//! The last few stderr lines are kept regardless, to explain a trap.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::contract::LogLevel;

/// How many recent stderr lines are kept to explain a trap.
const RECENT_STDERR_LINES: usize = 3;

/// Where a strategy's log lines go: the host's log, under the strategy's name.
#[derive(Clone)]
pub struct LogTarget {
    strategy: Arc<str>,
    max_line: usize,
    recent_stderr: Arc<Mutex<VecDeque<String>>>,
    budget: Arc<Mutex<LineBudget>>,
}

/// A token bucket of log lines.
struct LineBudget {
    per_sec: u32,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl LineBudget {
    /// Takes a token if there is one; counts a dropped line if not.
    fn admit(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.per_sec);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl LogTarget {
    /// A log for `strategy`: lines cut at `max_line` bytes, at most
    /// `lines_per_sec` lines a second.
    pub fn new(strategy: &str, max_line: usize, lines_per_sec: u32) -> Self {
        LogTarget {
            strategy: strategy.into(),
            max_line,
            recent_stderr: Arc::new(Mutex::new(VecDeque::new())),
            budget: Arc::new(Mutex::new(LineBudget {
                per_sec: lines_per_sec,
                tokens: f64::from(lines_per_sec),
                refilled: Instant::now(),
                dropped: 0,
            })),
        }
    }

    /// Writes one line, if the budget allows.
    pub(crate) fn emit(&self, level: LogLevel, stream: &str, message: &str) {
        let dropped = match self.budget.lock() {
            Ok(mut budget) => {
                if !budget.admit(Instant::now()) {
                    return;
                }
                std::mem::take(&mut budget.dropped)
            }
            Err(_) => 0,
        };
        self.report_dropped(dropped);
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

    /// Writes the count of dropped lines not yet reported.
    pub(crate) fn flush_dropped(&self) {
        let dropped = match self.budget.lock() {
            Ok(mut budget) => std::mem::take(&mut budget.dropped),
            Err(_) => 0,
        };
        self.report_dropped(dropped);
    }

    fn report_dropped(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        let per_sec = self.budget.lock().map(|b| b.per_sec).unwrap_or_default();
        tracing::warn!(
            strategy = &*self.strategy,
            dropped,
            "dropped {dropped} log lines from the strategy (limit {per_sec} lines/s)"
        );
    }

    /// What the guest last wrote to stderr, a Rust panic message included.
    pub(crate) fn recent_stderr(&self) -> Option<String> {
        let lines = self.recent_stderr.lock().ok()?;
        let text: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("note: run with"))
            .collect();
        (!text.is_empty()).then(|| text.join(" "))
    }

    fn remember_stderr(&self, line: &str) {
        if let Ok(mut recent) = self.recent_stderr.lock() {
            if recent.len() == RECENT_STDERR_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
    }

    /// A WASI stdout or stderr stream writing into this log.
    pub(crate) fn stream(&self, stream: &'static str) -> LogStream {
        LogStream {
            target: self.clone(),
            stream,
            line: Vec::new(),
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
pub(crate) struct LogStream {
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
            self.target.remember_stderr(&text);
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        self.target.emit(level, self.stream, &text);
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
        Ok(4096)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_admits_a_seconds_worth_then_refills() {
        let start = Instant::now();
        let mut budget = LineBudget {
            per_sec: 10,
            tokens: 10.0,
            refilled: start,
            dropped: 0,
        };
        let admitted = (0..25).filter(|_| budget.admit(start)).count();
        assert_eq!(admitted, 10);
        assert_eq!(budget.dropped, 15);
        // Half a second later, five more.
        let later = start + Duration::from_millis(500);
        let admitted = (0..25).filter(|_| budget.admit(later)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn stderr_lines_are_kept_even_when_dropped_from_the_log() {
        let target = LogTarget::new("t", 16, 0);
        let mut stream = target.stream("stderr");
        stream.push(b"panicked at 'boom' with a long tail\n");
        assert_eq!(target.recent_stderr().as_deref(), Some("panicked at 'boo"));
    }
}
