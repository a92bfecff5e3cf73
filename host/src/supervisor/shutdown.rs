//! The request to stop a run: raised once (by Ctrl-C, SIGTERM or a test) and
//! seen by everything that may be waiting — the run loop between events, a
//! cell in backoff or in the middle of a recovery.
//!
//! Owns only the flag and its wake-up; what stopping means is decided by
//! whoever checks it.

use std::sync::Arc;

use tokio::sync::watch;

/// A cloneable stop request. All clones see the same request.
#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            flag: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Asks everything holding a clone to stop.
    pub fn request(&self) {
        self.flag.send_replace(true);
    }

    /// Whether a stop has been requested.
    pub fn is_requested(&self) -> bool {
        *self.flag.borrow()
    }

    /// Resolves once a stop has been requested (at once if it already was).
    pub async fn requested(&self) {
        let mut receiver = self.flag.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_request() {
        let shutdown = Shutdown::new();
        let waiter = shutdown.clone();
        let waiting = tokio::spawn(async move { waiter.requested().await });
        assert!(!shutdown.is_requested());
        shutdown.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiter woke up")
            .expect("the waiter ran");
        assert!(shutdown.clone().is_requested());
    }
}
