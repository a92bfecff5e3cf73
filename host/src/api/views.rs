//! The `/api/strategies` body kept ready: a task of the server serializes
//! the registry's views every [`REFRESH`], and requests are answered with
//! those bytes, so a request costs no serialization and takes no lock of a
//! strategy, however many run.
//!
//! Owns the cached body and its refresh; never changes the registry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;

use crate::fleet::Registry;

/// How often the body is rebuilt (how stale a listing may be).
pub const REFRESH: Duration = Duration::from_millis(250);

/// The serialized `{"strategies": [...]}`.
#[derive(Default)]
pub struct Views {
    body: RwLock<Bytes>,
}

impl Views {
    /// The body now.
    pub fn body(&self) -> Bytes {
        self.body
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the body from the registry.
    pub fn refresh(&self, registry: &Registry) {
        let body = serde_json::json!({ "strategies": registry.snapshot() }).to_string();
        *self
            .body
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Bytes::from(body);
    }

    /// Keeps the body current until dropped (the first refresh is now).
    pub async fn keep_current(self: Arc<Self>, registry: Arc<Registry>) {
        let mut every = tokio::time::interval(REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.refresh(&registry);
        }
    }
}
