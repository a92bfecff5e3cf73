//! The local CLOB server as the suites use it: starting it, a market that
//! moves by itself, the environment of a live run, and the server's own
//! record of orders and trades in the history checker's terms.
//!
//! Nothing here contacts Polymarket: the server runs in the test process on
//! 127.0.0.1 with an ephemeral port.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use polybot_host::contract;
use polybot_polymarket::order::OrderSigner;
use polybot_polymarket::server::{
    FaultPlan, FeedHandle, SimCredentials, SimHandle, SimOptions, SimServer,
};
use polybot_polymarket::types::Side;
use tokio::task::JoinHandle;

use crate::checker::{VenueOrder, VenueRecord};

/// Outcome token ids (the server, like the venue, wants decimal ids).
pub const TOKENS: [&str; 2] = ["1001", "1002"];
pub const CONDITION: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";
/// Hardhat's first well-known test key; holds nothing anywhere.
pub const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Starts the server with `faults` and otherwise default options.
///
/// # Panics
/// When the server cannot start.
pub async fn server(faults: FaultPlan) -> (SimHandle, FeedHandle) {
    server_with(SimOptions {
        faults,
        ..SimOptions::default()
    })
    .await
}

/// Starts the server with `options`.
///
/// # Panics
/// When the server cannot start.
pub async fn server_with(options: SimOptions) -> (SimHandle, FeedHandle) {
    SimServer::start("127.0.0.1:0".parse().expect("address"), options)
        .await
        .expect("start the local CLOB server")
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Publishes step `step` of the feed at `ts_ms`: each token's mid walks up 20
/// cents and back down, one cent a step (tokens out of phase), two levels a
/// side.
pub fn publish_step_at(feed: &FeedHandle, step: u64, ts_ms: u64) {
    publish_tokens_at(feed, &TOKENS, step, ts_ms);
}

/// [`publish_step_at`] for any decimal token ids: each its own market (a
/// condition id derived from the token), out of phase with the one before.
pub fn publish_tokens_at(feed: &FeedHandle, tokens: &[&str], step: u64, ts_ms: u64) {
    publish_held_at(feed, tokens, step, 1, ts_ms);
}

/// [`publish_tokens_at`] with each price held for `hold` steps: the mid moves
/// a cent every `hold` steps, so an order sent on a move has `hold` steps of
/// wall time to reach the server before the price it saw is gone.
pub fn publish_held_at(feed: &FeedHandle, tokens: &[&str], step: u64, hold: u64, ts_ms: u64) {
    let moves = step / hold.max(1);
    for (i, token) in tokens.iter().enumerate() {
        let phase = (moves + 7 * i as u64) % 40;
        let mid = 30 + if phase < 20 { phase } else { 40 - phase };
        let cents = |c: u64| c as f64 / 100.0;
        feed.publish_book(
            token,
            &condition_of(token),
            &[(cents(mid - 1), 100.0), (cents(mid - 2), 200.0)],
            &[(cents(mid + 1), 100.0), (cents(mid + 2), 200.0)],
            ts_ms,
        );
    }
}

/// The condition id a token's market goes by: [`CONDITION`] for [`TOKENS`],
/// the token's digits as a 32-byte hex id otherwise.
pub fn condition_of(token: &str) -> String {
    if TOKENS.contains(&token) {
        CONDITION.to_string()
    } else {
        format!("0x{token:0>64}")
    }
}

/// [`publish_step_at`] stamped with the wall clock.
pub fn publish_step(feed: &FeedHandle, step: u64) {
    publish_step_at(feed, step, wall_ms());
}

/// The market moving on its own; stops when dropped.
pub struct Feed(JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes the first books now (the host checks them at start), then a
/// step every 10 ms.
pub fn start_feed(feed: FeedHandle) -> Feed {
    publish_step(&feed, 0);
    Feed(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        for step in 1.. {
            every.tick().await;
            publish_step(&feed, step);
        }
    }))
}

/// The environment of a live run against the local server.
///
/// # Panics
/// Never: the key is a constant.
pub fn live_env() -> [(&'static str, String); 5] {
    let creds = SimCredentials::test();
    let signer = OrderSigner::from_private_key(KEY).expect("test key");
    [
        ("POLYMARKET_API_KEY", creds.api_key.clone()),
        ("POLYMARKET_API_SECRET", creds.secret.clone()),
        ("POLYMARKET_API_PASSPHRASE", creds.passphrase.clone()),
        ("POLYMARKET_ADDRESS", signer.address().to_checksum(None)),
        ("POLYMARKET_PRIVATE_KEY", KEY.to_string()),
    ]
}

/// The server's record as the history checker takes it: every order it
/// received, and the shares and cash of the trades of those orders that did
/// not fail to settle.
pub fn venue_record(server: &SimHandle) -> VenueRecord {
    venue_record_where(server, |_| true)
}

/// [`venue_record`] of the orders on `tokens` only: one strategy's share of
/// a server that several strategies, each on its own tokens, trade on.
pub fn venue_record_of(server: &SimHandle, tokens: &[&str]) -> VenueRecord {
    venue_record_where(server, |asset| tokens.contains(&asset))
}

fn venue_record_where(server: &SimHandle, keep: impl Fn(&str) -> bool) -> VenueRecord {
    let orders: Vec<_> = server
        .orders()
        .into_iter()
        .filter(|o| keep(&o.asset_id))
        .collect();
    let ours: HashMap<&str, &polybot_polymarket::types::OpenOrder> =
        orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let side = |s: Side| match s {
        Side::Buy => contract::Side::Buy,
        Side::Sell => contract::Side::Sell,
    };
    let mut positions: BTreeMap<String, f64> = BTreeMap::new();
    let mut cash = 0.0;
    for t in server.trades() {
        if t.status.as_deref() == Some("FAILED") {
            continue;
        }
        let mut legs = Vec::new();
        if let Some(o) = t.taker_order_id.as_deref().and_then(|h| ours.get(h)) {
            legs.push((o.side, t.price, t.size));
        }
        for m in &t.maker_orders {
            if let Some(o) = ours.get(m.order_id.as_str()) {
                legs.push((
                    o.side,
                    m.price.unwrap_or(t.price),
                    m.matched_amount.unwrap_or(t.size),
                ));
            }
        }
        for (s, price, size) in legs {
            let signed = if s == Side::Buy { size } else { -size };
            *positions.entry(t.asset_id.clone()).or_default() += signed;
            cash -= signed * price;
        }
    }
    VenueRecord {
        orders: Some(
            orders
                .iter()
                .map(|o| VenueOrder {
                    intent_id: None,
                    market: o.asset_id.clone(),
                    side: side(o.side),
                    price: o.price,
                    size: o.original_size,
                })
                .collect(),
        ),
        positions: Some(positions),
        cash_change: Some(cash),
        ..VenueRecord::default()
    }
}

/// Points a `polybot-host run` at `server`: the Polymarket venue on its
/// endpoints, both tokens as markets, and no `POLYMARKET_*` variable leaking
/// in from the test's environment (a live run adds [`live_env`]).
pub fn on_server(command: &mut tokio::process::Command, server: &SimHandle) {
    command
        .args(["--venue", "polymarket"])
        .args(["--clob-url", &server.base_url()])
        .args(["--ws-url", &server.ws_url()])
        .args(["--gamma-url", &server.gamma_url()]);
    for token in TOKENS {
        command.args(["--market", token]);
    }
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
        command.env_remove(name);
    }
}
