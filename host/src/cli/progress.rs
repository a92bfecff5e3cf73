//! The live progress line shown on a terminal during `run`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::runner::RunCounters;

pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts redrawing the line from `counters` a few times a second.
    pub fn start(counters: Arc<RunCounters>, total: Option<u64>) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} events  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} events  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let line = bar.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                line.set_position(counters.events.load(Ordering::Relaxed));
                line.set_message(format!(
                    "orders {}  fills {}  pnl {:+.2}  restarts {}  quarantined {}",
                    counters.orders.load(Ordering::Relaxed),
                    counters.fills.load(Ordering::Relaxed),
                    counters.pnl(),
                    counters.restarts.load(Ordering::Relaxed),
                    counters.quarantined.load(Ordering::Relaxed),
                ));
            }
        });
        Progress { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
