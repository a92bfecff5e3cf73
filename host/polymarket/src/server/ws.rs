//! The local server's market WebSocket (`/ws/market`).
//!
//! Owns one connection's life: wait for the subscribe message, send the subscribed books
//! (one object for one asset, an array frame for several), then forward the market frames that
//! concern the subscription; answer text `PING` with `PONG`. Book snapshots are taken and the
//! broadcast subscribed under the state lock, so a subscriber sees no gap and no duplicate.
//!
//! Faults: before each data frame the plan is asked with endpoint `ws`. `ws_stall` makes the
//! connection go silent for good while the socket stays open (the known field failure);
//! `drop_connection` closes it abruptly.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::broadcast;

use super::Shared;
use super::faults::Fault;
use super::state::Frame;
use crate::types::MarketEvent;

pub(crate) async fn upgrade(State(s): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(s, socket))
}

/// What to do with a data frame after consulting the fault plan.
enum Gate {
    Send,
    Stall,
    Drop,
}

fn gate(s: &Shared) -> Gate {
    match s.faults().pick("WS", "/ws/market").1 {
        Some(Fault::WsStall) => Gate::Stall,
        Some(Fault::DropConnection) => Gate::Drop,
        _ => Gate::Send,
    }
}

/// Parses a subscribe/unsubscribe message: `(assets, is_unsubscribe)`.
fn subscription(text: &str) -> Option<(Vec<String>, bool)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let assets = v
        .get("assets_ids")?
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let unsub = v.get("operation").and_then(Value::as_str) == Some("unsubscribe");
    Some((assets, unsub))
}

/// Books of `assets` as one frame, and a broadcast receiver that starts right after them.
fn snapshot(s: &Shared, assets: &[String]) -> (Option<Frame>, broadcast::Receiver<Arc<Frame>>) {
    let st = s.state();
    let rx = s.events.subscribe();
    let events: Vec<MarketEvent> = assets
        .iter()
        .filter_map(|a| st.books.get(a).cloned().map(MarketEvent::Book))
        .collect();
    ((!events.is_empty()).then(|| Frame::of(&events)), rx)
}

async fn connection(s: Arc<Shared>, mut socket: WebSocket) {
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut rx: Option<broadcast::Receiver<Arc<Frame>>> = None;
    let mut stalled = false;
    loop {
        let next_event = async {
            match rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => return,
                    _ => continue,
                };
                if stalled {
                    // Silent: read and discard, keep the socket open.
                    continue;
                }
                if text.trim() == "PING" {
                    if socket.send(Message::Text("PONG".into())).await.is_err() {
                        return;
                    }
                    continue;
                }
                let Some((assets, unsub)) = subscription(&text) else { continue };
                if unsub {
                    for a in &assets {
                        subscribed.remove(a);
                    }
                    continue;
                }
                let before = subscribed.len();
                if before == 0 && !assets.is_empty() {
                    s.ws_subscribers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                subscribed.extend(assets);
                if subscribed.len() == before {
                    continue;
                }
                // Re-snapshot every subscribed asset and start a fresh receiver after it: the
                // snapshot covers whatever the old receiver still held, so nothing is lost.
                let all: Vec<String> = subscribed.iter().cloned().collect();
                let (frame, new_rx) = snapshot(&s, &all);
                rx = Some(new_rx);
                if let Some(f) = frame {
                    match gate(&s) {
                        Gate::Send => {
                            if socket.send(Message::Text(f.text.into())).await.is_err() {
                                return;
                            }
                        }
                        Gate::Stall => stalled = true,
                        Gate::Drop => return,
                    }
                }
            }
            ev = next_event => {
                let frame = match ev {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow to keep up: resynchronise with fresh books, as a venue would.
                        let assets: Vec<String> = subscribed.iter().cloned().collect();
                        let (frame, new_rx) = snapshot(&s, &assets);
                        rx = Some(new_rx);
                        match frame {
                            Some(f) => Arc::new(f),
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if stalled || !frame.assets.iter().any(|a| subscribed.contains(a)) {
                    continue;
                }
                match gate(&s) {
                    Gate::Send => {
                        if socket.send(Message::Text(frame.text.clone().into())).await.is_err() {
                            return;
                        }
                    }
                    Gate::Stall => stalled = true,
                    Gate::Drop => return,
                }
            }
        }
    }
}
