//! The Polymarket venue end to end: `polybot-host run --venue polymarket` as a
//! process against the local CLOB server (`SimServer`, in this test process on
//! 127.0.0.1, port 0), in paper mode, through WebSocket faults, and live with
//! a restart; and the venue in-process, live, answering lookups and open
//! orders from the server's records.
//!
//! Nothing here contacts Polymarket. The feed publishes a zig-zagging book for
//! two tokens on a short cadence so the momentum strategy trades quickly; every
//! wait on the host is bounded by a timeout, and what the host did is read
//! back from its JSON report, its store, and the server's own records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use polybot_host::contract::{self, EventKind, OrderStatus, VenueHealth};
use polybot_host::store::StateStore;
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::venue::Venue;
use polybot_host::venue::polymarket::TRADE_FAILED;
use polybot_host::venue::polymarket::{Execution, LiveConfig, PolymarketConfig, PolymarketVenue};
use polybot_polymarket::auth::{Credentials, Secret};
use polybot_polymarket::order::{OrderIntent, OrderSigner, OrderType};
use polybot_polymarket::server::{Fault, FaultPlan, FaultRule, SimCredentials, SimHandle};
use polybot_polymarket::types::Side;
use polybot_tests::checker::{Expect, History, check_and_print};
use polybot_tests::clob::{
    KEY, TOKENS, live_env, on_server, publish_step, server, start_feed, venue_record,
};
use polybot_tests::guest;

/// Longest a host run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Momentum trading on every small trend, with no cooldown.
const CONFIG: &[u8] = b"[strategy]\nlookback = 3\nthreshold = 0.01\ncooldown_ms = 0\n";

/// `polybot-host run` on the local server, paper unless `extra` says otherwise.
async fn run_host(
    server: &SimHandle,
    dir: &Path,
    events: u64,
    extra: &[&str],
    env: &[(&str, String)],
) -> Output {
    let mut command = host_command(server, dir, "momentum", CONFIG, events, extra, env);
    match tokio::time::timeout(RUN_TIMEOUT, command.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host run did not finish within {RUN_TIMEOUT:?}"),
    }
}

/// The command of a `polybot-host run` of guest `strategy` with `config` on
/// the local server, stopping at seq `events`; killed when dropped.
fn host_command(
    server: &SimHandle,
    dir: &Path,
    strategy: &str,
    config_toml: &[u8],
    events: u64,
    extra: &[&str],
    env: &[(&str, String)],
) -> tokio::process::Command {
    let config = dir.join(format!("{strategy}.toml"));
    std::fs::write(&config, config_toml).expect("write config");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
    command
        .env("POLYBOT_LOG", "warn")
        .args(["run", "--strategy"])
        .arg(guest(strategy))
        .arg("--config")
        .arg(&config)
        .args(["--events", &events.to_string(), "--json", "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .kill_on_drop(true);
    on_server(&mut command, server);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// The JSON report of a run that must have succeeded.
fn report(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON report on stdout");
    json["report"].clone()
}

async fn store(dir: &Path) -> SqlStore {
    let data = dir.join("data");
    SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
        .await
        .expect("open the run's store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_trading_on_the_local_clob_fills_orders() {
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");

    let report = report(&run_host(&server, dir.path(), 300, &["--paper"], &[]).await);
    assert_eq!(report["stop"], "event-limit", "{report}");
    // The limit is checked between ticks, so the last tick may carry a few more.
    assert!(
        report["events"].as_u64().expect("events") >= 300,
        "{report}"
    );
    assert!(report["orders"].as_u64().expect("orders") > 0, "{report}");
    assert!(report["fills"].as_u64().expect("fills") > 0, "{report}");
    assert!(
        report["portfolio"]["volume"].as_f64().expect("volume") > 0.0,
        "{report}"
    );
    // Paper means paper: nothing reached the venue.
    assert!(server.orders().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_and_a_dropped_feed_are_reported_and_the_run_completes() {
    // Counted in data frames sent by the server: a stall after 20 (the socket
    // stays open and goes silent), a cut connection 40 frames after that.
    let rule = |fault, skip| FaultRule {
        endpoint: "ws".into(),
        fault,
        count: Some(1),
        probability: None,
        skip,
    };
    let plan = FaultPlan {
        seed: 1,
        rules: vec![rule(Fault::WsStall, 20), rule(Fault::DropConnection, 60)],
    };
    let (server, feed) = server(plan).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");

    let output = run_host(&server, dir.path(), 400, &["--stall-timeout", "1s"], &[]).await;
    let report = report(&output);
    assert_eq!(report["stop"], "event-limit", "{report}");
    assert!(
        server.faults().rules.iter().all(|r| r.count == Some(0)),
        "both faults fired: {:?}",
        server.faults()
    );

    let journal = store(dir.path())
        .await
        .entries_after("momentum", 0)
        .await
        .expect("journal");
    let statuses: Vec<_> = journal
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::VenueStatus(s) => Some((s.health, s.detail.clone())),
            _ => None,
        })
        .collect();
    let degraded = |needle: &str| {
        statuses
            .iter()
            .any(|(h, d)| *h == VenueHealth::Degraded && d.contains(needle))
    };
    assert!(degraded("silent"), "no stall in {statuses:?}");
    assert!(degraded("disconnected"), "no disconnect in {statuses:?}");
    let recovered = statuses
        .iter()
        .filter(|(h, _)| *h == VenueHealth::Recovered)
        .count();
    assert!(recovered >= 2, "{statuses:?}");
    // Books kept coming after the second recovery.
    let last_status = journal
        .iter()
        .rposition(|e| matches!(e.event.kind, EventKind::VenueStatus(_)))
        .expect("a status event");
    assert!(
        journal[last_status..]
            .iter()
            .any(|e| matches!(e.event.kind, EventKind::Book(_))),
        "no market data after the last recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_orders_carry_precomputed_hashes_and_a_restart_posts_none_twice() {
    // A no-op rule whose remaining count tells how many `POST /order` requests arrived.
    const POSTS: u32 = 1_000_000;
    let (server, feed) = server(FaultPlan::times(
        "POST /order",
        Fault::Latency { ms: 0 },
        POSTS,
    ))
    .await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = SimCredentials::test();
    let signer = OrderSigner::from_private_key(KEY).expect("test key");
    let env = [
        ("POLYMARKET_API_KEY", creds.api_key.clone()),
        ("POLYMARKET_API_SECRET", creds.secret.clone()),
        ("POLYMARKET_API_PASSPHRASE", creds.passphrase.clone()),
        ("POLYMARKET_ADDRESS", signer.address().to_checksum(None)),
        ("POLYMARKET_PRIVATE_KEY", KEY.to_string()),
    ];

    let first = report(&run_host(&server, dir.path(), 150, &["--live"], &env).await);
    assert!(first["orders"].as_u64().expect("orders") > 0, "{first}");
    assert!(first["fills"].as_u64().expect("fills") > 0, "{first}");
    // Started again on the same data: continues live after the journal.
    let second = report(&run_host(&server, dir.path(), 300, &["--live"], &env).await);
    assert_eq!(second["resumed_at_seq"], first["last_seq"]);
    assert!(second["orders"].as_u64().expect("orders") > 0, "{second}");

    // Every intent the host recorded, signed here the same way: its hash is
    // the id the server knows the order by.
    let store = store(dir.path()).await;
    let intents = store.orders("momentum").await.expect("orders");
    let times: HashMap<u64, u64> = store
        .entries_after("momentum", 0)
        .await
        .expect("journal")
        .iter()
        .map(|e| (e.event.seq, e.event.timestamp_ms))
        .collect();
    let expected: BTreeSet<String> = intents
        .iter()
        .map(|o| {
            let intent = OrderIntent {
                strategy: "momentum".into(),
                intent_id: o.intent_id.clone(),
                token_id: o.market.clone(),
                side: if o.side == "buy" {
                    Side::Buy
                } else {
                    Side::Sell
                },
                price: o.price,
                size: o.size,
                tick_size: 0.01,
                neg_risk: false,
                timestamp_ms: times[&o.seq],
                order_type: match o.order_type.as_str() {
                    "gtc" => OrderType::Gtc,
                    "fok" => OrderType::Fok,
                    _ => OrderType::Fak,
                },
                expiration: 0,
                post_only: false,
            };
            signer
                .sign(&intent, &creds.api_key)
                .expect("sign")
                .order_hash
        })
        .collect();
    let on_server: Vec<String> = server.orders().into_iter().map(|o| o.id).collect();
    let unique: BTreeSet<String> = on_server.iter().cloned().collect();
    assert_eq!(unique.len(), on_server.len(), "duplicate order ids");
    assert_eq!(unique, expected);
    assert_eq!(on_server.len(), intents.len());
    // One request per intent, across both runs: nothing was posted twice.
    let left = server.faults().rules[0].count.expect("count");
    assert_eq!((POSTS - left) as usize, intents.len());

    // The history checker agrees, against the server's own record; two starts.
    let history = History::read(&store, &["momentum"]).await.expect("history");
    check_and_print(&history, &expect_server(&server, 2)).assert_clean();
}

/// The server's record, for the one strategy of a `run`.
fn expect_server(server: &SimHandle, host_starts: u64) -> Expect {
    Expect {
        venue: [("momentum".to_string(), venue_record(server))].into(),
        host_starts: Some(host_starts),
    }
}

/// A trade that ends `FAILED` after its fill was journaled: the strategy
/// hears of the reversal (a negative fill in its journal), the `trades`
/// table gets a reversal row, and position and cash from `trades` equal the
/// server's record without the failed trade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_trade_is_reversed_for_the_strategy_in_trades_and_in_the_money() {
    let (server, feed) = server(FaultPlan::default()).await;
    let server = std::sync::Arc::new(server);
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = SimCredentials::test();
    let signer = OrderSigner::from_private_key(KEY).expect("test key");
    let env = [
        ("POLYMARKET_API_KEY", creds.api_key.clone()),
        ("POLYMARKET_API_SECRET", creds.secret.clone()),
        ("POLYMARKET_API_PASSPHRASE", creds.passphrase.clone()),
        ("POLYMARKET_ADDRESS", signer.address().to_checksum(None)),
        ("POLYMARKET_PRIVATE_KEY", KEY.to_string()),
    ];
    // Fails the first trade once it exists, confirms every other.
    let settle = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut failed: Option<String> = None;
            loop {
                for t in server.trades() {
                    if t.status.as_deref() != Some("MATCHED") {
                        continue;
                    }
                    let to = if failed.is_none() {
                        failed = Some(t.id.clone());
                        "FAILED"
                    } else {
                        "CONFIRMED"
                    };
                    server.set_trade_status(&t.id, "MINED");
                    server.set_trade_status(&t.id, to);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // About 15 s of feed: time for the host's settlement rounds (every 5 s).
    let output = run_host(&server, dir.path(), 3000, &["--live"], &env).await;
    settle.abort();
    let run = report(&output);

    let store = store(dir.path()).await;
    let journal = store.entries_after("momentum", 0).await.expect("journal");
    let reversals: Vec<(u64, contract::Fill)> = journal
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::Fill(f) if f.size < 0.0 => Some((e.event.seq, f.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reversals.len(), 1, "one failed trade, one reversal: {run}");
    let (seq, reversal) = &reversals[0];
    let original = journal
        .iter()
        .find_map(|e| match &e.event.kind {
            EventKind::Fill(f) if f.intent_id == reversal.intent_id && f.size > 0.0 => Some(f),
            _ => None,
        })
        .expect("the reversed fill was journaled before");
    assert_eq!(
        (original.side, original.market.as_str()),
        (reversal.side, reversal.market.as_str())
    );
    // The strategy was told why, right after.
    let told = journal.iter().any(|e| {
        e.event.seq > *seq
            && matches!(&e.event.kind, EventKind::OrderUpdate(u)
                if u.intent_id == reversal.intent_id
                    && u.reason.as_deref().is_some_and(|r| r.starts_with(TRADE_FAILED)))
    });
    assert!(told, "no order update about the failed trade");
    let trades = store.trades("momentum").await.expect("trades");
    let row = trades
        .iter()
        .find(|t| t.seq == *seq)
        .expect("a reversal row in trades");
    assert_eq!(row.size, reversal.size);
    assert!(row.size < 0.0);

    // Position and cash from `trades` are the server's without the failed
    // trade; every fill has one row; no order twice.
    let history = History::read(&store, &["momentum"]).await.expect("history");
    check_and_print(&history, &expect_server(&server, 1)).assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_clob_is_one_error_line_and_exit_2() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
    command
        .env("POLYBOT_LOG", "warn")
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .args(["--venue", "polymarket", "--market", TOKENS[0]])
        .args(["--clob-url", &format!("http://127.0.0.1:{port}")])
        .args(["--ws-url", &format!("ws://127.0.0.1:{port}/ws/market")])
        .args(["--gamma-url", &format!("http://127.0.0.1:{port}/gamma")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .kill_on_drop(true);
    let output = match tokio::time::timeout(RUN_TIMEOUT, command.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host run did not finish within {RUN_TIMEOUT:?}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("GET /ok"), "{}", errors[0]);
    assert!(!dir.path().join("data").exists(), "nothing is written");
}

/// Waits for `fut`, failing the test after a bounded time.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_lookups_and_open_orders_are_the_venues() {
    let (server, feed) = server(FaultPlan::default()).await;
    // One book that stays put: asks 0.31 × 100 and 0.32 × 200 on the first token.
    publish_step(&feed, 0);
    let creds = server.credentials();
    let signer = OrderSigner::from_private_key(KEY).expect("test key");
    let cfg = PolymarketConfig {
        clob_url: server.base_url(),
        ws_url: server.ws_url(),
        gamma_url: server.gamma_url(),
        tokens: vec![TOKENS[0].into()],
        stall_timeout: Duration::from_secs(30),
        execution: Execution::Live(LiveConfig {
            strategy: "lookups".into(),
            credentials: Credentials {
                api_key: creds.api_key.clone(),
                secret: Secret::new(creds.secret.clone()),
                passphrase: Secret::new(creds.passphrase.clone()),
                address: signer.address().to_checksum(None),
                private_key: Some(Secret::new(KEY)),
            },
        }),
    };
    let mut venue = within("connect", PolymarketVenue::connect(cfg))
        .await
        .expect("connect");
    within("the first book", venue.next_tick())
        .await
        .expect("tick")
        .expect("feed");

    let order = |price: f64, size: f64, order_type| contract::PlaceOrder {
        market: TOKENS[0].into(),
        side: contract::Side::Buy,
        price,
        size,
        order_type,
    };
    let place = [
        // Rests untouched.
        ("1.0", order(0.20, 10.0, contract::OrderType::Gtc)),
        // Takes the 100 at 0.31, rests 50.
        ("2.0", order(0.31, 150.0, contract::OrderType::Gtc)),
        // Filled from the 0.32 level.
        ("3.0", order(0.32, 20.0, contract::OrderType::Fak)),
        // Below the minimum size: refused by the venue.
        ("4.0", order(0.20, 0.5, contract::OrderType::Gtc)),
    ];
    for (id, o) in &place {
        venue.place_order(id, o).await.expect("place");
    }

    async fn lookup(venue: &mut PolymarketVenue, id: &str) -> Option<(OrderStatus, f64, f64)> {
        venue
            .lookup_order(id)
            .await
            .expect("lookup")
            .map(|u| (u.status, u.filled_size, u.remaining_size))
    }
    let v = &mut venue;
    assert_eq!(lookup(v, "1.0").await, Some((OrderStatus::Open, 0.0, 10.0)));
    assert_eq!(
        lookup(v, "2.0").await,
        Some((OrderStatus::PartiallyFilled, 100.0, 50.0))
    );
    assert_eq!(
        lookup(v, "3.0").await,
        Some((OrderStatus::Filled, 20.0, 0.0))
    );
    assert_eq!(lookup(v, "never").await, None, "never placed");

    // The refusal is remembered, since the venue keeps no record of it.
    let refused = venue.lookup_order("4.0").await.expect("lookup");
    let refused = refused.expect("placed, then refused");
    assert_eq!(refused.status, OrderStatus::Rejected);
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("MIN_SIZE"),
        "{refused:?}"
    );

    // The venue's own record agrees with the lookup.
    let hash = venue.order_hash("2.0").expect("hash");
    let on_server = server
        .orders()
        .into_iter()
        .find(|o| o.id == hash)
        .expect("on the server");
    assert_eq!(on_server.size_matched, 100.0);
    let found = venue
        .lookup_order("2.0")
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(found.market, TOKENS[0]);

    let open_ids = |open: &[contract::OrderUpdate]| {
        let mut ids: Vec<(String, OrderStatus)> = open
            .iter()
            .map(|u| (u.intent_id.clone(), u.status))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        ids
    };
    let open = venue.open_orders().await.expect("open orders");
    assert_eq!(
        open_ids(&open),
        vec![
            ("1.0".to_string(), OrderStatus::Open),
            ("2.0".to_string(), OrderStatus::PartiallyFilled)
        ]
    );

    // Cancelled: no longer open, and looked up as cancelled.
    venue.cancel_order("1.0").await.expect("cancel");
    let cancelled = venue
        .lookup_order("1.0")
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        (cancelled.filled_size, cancelled.remaining_size),
        (0.0, 10.0)
    );
    let open = venue.open_orders().await.expect("open orders");
    assert_eq!(
        open_ids(&open),
        vec![("2.0".to_string(), OrderStatus::PartiallyFilled)]
    );
}

/// Waits until `ready` holds, polling every 50 ms; fails the test after 60 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The journal's last seq, read from the run's store.
async fn last_seq(dir: &Path, strategy: &str) -> u64 {
    store(dir)
        .await
        .entries_after(strategy, 0)
        .await
        .expect("journal")
        .last()
        .map_or(0, |e| e.event.seq)
}

/// kill -9 of a live run while it trades; the restarted run reconciles and
/// its ledger continues: every `trades` row's PnL is what one ledger booking
/// every journaled fill in order gives (a ledger restarted empty would book
/// the sells after the restart as uncovered, at zero cost), the run's fill
/// counter counts the fills of every run, and the server's record, the
/// orders, the trades and the journal agree (missed fills told once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_live_run_restarts_with_its_ledger_and_pnl() {
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = live_env();
    let mut child = host_command(
        &server,
        dir.path(),
        "momentum",
        CONFIG,
        1_000_000,
        &["--live"],
        &env,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start polybot-host");
    // Bought and sold on the server: a position to carry over.
    until("trades of both sides on the server", || async {
        let trades = server.trades();
        trades.len() >= 6
            && trades.iter().any(|t| t.side == Side::Buy)
            && trades.iter().any(|t| t.side == Side::Sell)
    })
    .await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap the killed host");
    let killed_at = last_seq(dir.path(), "momentum").await;
    assert!(killed_at > 0);

    let second = report(&run_host(&server, dir.path(), killed_at + 400, &["--live"], &env).await);
    assert_eq!(
        second["resumed_at_seq"].as_u64(),
        Some(killed_at),
        "{second}"
    );
    // The event limit may stop it between an order's fill at the venue and
    // that fill's event: a third start, halted (so it fills nothing new),
    // for one event, tells it.
    let stopped_at = last_seq(dir.path(), "momentum").await;
    let halt = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"))
        .args(["halt", "--strategy", "momentum", "--data-dir"])
        .arg(dir.path().join("data"))
        .output();
    let halt = tokio::time::timeout(RUN_TIMEOUT, halt)
        .await
        .expect("halt in time")
        .expect("run polybot-host halt");
    assert!(halt.status.success(), "{halt:?}");
    let third = report(&run_host(&server, dir.path(), stopped_at + 1, &["--live"], &env).await);

    let store = store(dir.path()).await;
    let journal = store.entries_after("momentum", 0).await.expect("journal");
    let mut ledger = polybot_host::ledger::Ledger::default();
    let booked: BTreeMap<u64, f64> = journal
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::Fill(f) => Some((e.event.seq, ledger.apply(f).realized_pnl)),
            _ => None,
        })
        .collect();
    assert_eq!(
        third["fills"].as_u64(),
        Some(booked.len() as u64),
        "the fill counter continues: {second} {third}"
    );
    let rows = store.trades("momentum").await.expect("trades");
    for row in &rows {
        let want = booked.get(&row.seq).copied();
        assert!(
            want.is_some_and(|w| (w - row.pnl).abs() < 1e-9),
            "trade at seq {} booked PnL {} where the journal's ledger gives {want:?}",
            row.seq,
            row.pnl
        );
    }
    assert!(
        rows.iter().any(|r| r.seq > killed_at && r.side == "sell"),
        "a sell after the restart, booked against the carried position: {second}"
    );
    let uncovered = store
        .system_events(100_000)
        .await
        .expect("system events")
        .into_iter()
        .filter(|e| e.event_type == "ledger-uncovered")
        .count();
    assert_eq!(uncovered, 0, "no sell exceeded the carried position");

    let history = History::read(&store, &["momentum"]).await.expect("history");
    // Cash is left out: a fill missed while the host was down is told at the
    // order's price when the venue's trade of it is not found, which can
    // differ from the trade's price (a known gap).
    let mut expect = expect_server(&server, 3);
    for venue in expect.venue.values_mut() {
        venue.cash_change = None;
    }
    check_and_print(&history, &expect).assert_clean();
}

/// kill -9 of a run whose strategy has timers pending; the restarted run
/// fires the timers the killed one set, rebuilt from the host state of an
/// earlier clean run and the journal after it, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_on_polymarket_fires_its_pending_timers_after_the_restart() {
    const FAULTY: &[u8] = b"[strategy]\ntimers_per_event = 1\ntimer_delay_ms = 1500\n";
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    // A short clean run first: the store exists, and a host state at its end.
    let mut first = host_command(&server, dir.path(), "faulty", FAULTY, 20, &[], &[]);
    let output = match tokio::time::timeout(RUN_TIMEOUT, first.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host run did not finish within {RUN_TIMEOUT:?}"),
    };
    report(&output);
    let mut child = host_command(&server, dir.path(), "faulty", FAULTY, 1_000_000, &[], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start polybot-host");
    until("events journaled", || async {
        last_seq(dir.path(), "faulty").await >= 150
    })
    .await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap the killed host");
    let killed_at = last_seq(dir.path(), "faulty").await;

    let mut second = host_command(
        &server,
        dir.path(),
        "faulty",
        FAULTY,
        killed_at + 600,
        &[],
        &[],
    );
    let output = match tokio::time::timeout(RUN_TIMEOUT, second.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host run did not finish within {RUN_TIMEOUT:?}"),
    };
    let second = report(&output);
    assert_eq!(
        second["resumed_at_seq"].as_u64(),
        Some(killed_at),
        "{second}"
    );
    let journal = store(dir.path())
        .await
        .entries_after("faulty", 0)
        .await
        .expect("journal");
    // The fixture's timer ids are `<seq that set it> * 1000`.
    let carried: Vec<u64> = journal
        .iter()
        .filter(|e| e.event.seq > killed_at)
        .filter_map(|e| match e.event.kind {
            EventKind::Timer(id) if id / 1000 <= killed_at => Some(id),
            _ => None,
        })
        .collect();
    assert!(
        !carried.is_empty(),
        "no timer set before the kill fired after the restart: {second}"
    );
    let unique: BTreeSet<u64> = carried.iter().copied().collect();
    assert_eq!(unique.len(), carried.len(), "a timer fired twice");
}

/// `max_position` holds across a kill -9 of a live run: the restarted risk
/// gate counts the position carried from the journal, so the shares bought
/// in a market never exceed the limit (a gate restarted at zero would let
/// the strategy, which wants far more, buy the limit again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_position_holds_across_a_kill_of_a_live_run() {
    const LIMITED: &[u8] = b"[strategy]\nlookback = 3\nthreshold = 0.01\ncooldown_ms = 0\n\
        max_position = 1000.0\n\n[risk]\nmax_position = 30.0\n";
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let env = live_env();
    let mut child = host_command(
        &server,
        dir.path(),
        "momentum",
        LIMITED,
        1_000_000,
        &["--live"],
        &env,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start polybot-host");
    until("a position of 20 in a market", || async {
        let mut held: HashMap<String, f64> = HashMap::new();
        for t in server.trades() {
            let signed = if t.side == Side::Buy { t.size } else { -t.size };
            *held.entry(t.asset_id.clone()).or_default() += signed;
        }
        held.values().any(|&p| p >= 20.0)
    })
    .await;
    child.start_kill().expect("kill -9");
    child.wait().await.expect("reap the killed host");
    let killed_at = last_seq(dir.path(), "momentum").await;

    let mut second = host_command(
        &server,
        dir.path(),
        "momentum",
        LIMITED,
        killed_at + 400,
        &["--live"],
        &env,
    );
    let output = match tokio::time::timeout(RUN_TIMEOUT, second.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host run did not finish within {RUN_TIMEOUT:?}"),
    };
    let second = report(&output);
    let journal = store(dir.path())
        .await
        .entries_after("momentum", 0)
        .await
        .expect("journal");
    let mut held: HashMap<String, f64> = HashMap::new();
    let mut most = 0.0_f64;
    for e in &journal {
        if let EventKind::Fill(f) = &e.event.kind {
            let signed = match f.side {
                contract::Side::Buy => f.size,
                contract::Side::Sell => -f.size,
            };
            let p = held.entry(f.market.clone()).or_default();
            *p += signed;
            most = most.max(*p);
        }
    }
    assert!(
        most <= 30.0 + 1e-9,
        "a position of {most} despite max_position 30: {second}"
    );
    let refused_after_restart = store(dir.path())
        .await
        .intent_transitions("momentum")
        .await
        .expect("intents")
        .iter()
        .any(|m| {
            m.intent_id
                .split('.')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                > Some(killed_at)
                && m.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("max_position"))
        });
    assert!(
        refused_after_restart,
        "the restarted gate refused nothing: {second}"
    );
}

/// `polybot-host status --json` of a data directory, read while a host may run.
async fn fleet_status(dir: &Path) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"))
        .args(["status", "--json", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .await
        .expect("run status");
    if !output.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

fn standing(status: &serde_json::Value, name: &str) -> (u64, u64) {
    status["strategies"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .map_or((0, 0), |s| {
            (
                s["last_seq"].as_u64().unwrap_or(0),
                s["trades"].as_u64().unwrap_or(0),
            )
        })
}

/// `polybot-host serve` of a fleet file on the local server; killed when dropped.
fn serve_command(dir: &Path, file: &Path, env: &[(&str, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
    command
        .env("POLYBOT_LOG", "warn")
        .args(["serve", "--json", "--no-http", "--config"])
        .arg(file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        // A file: nobody reads the log while the host runs.
        .stderr(std::fs::File::create(dir.join("serve.log")).expect("log file"))
        .kill_on_drop(true);
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Two strategies on the same markets in one `serve`, one paper and one
/// live: one market WebSocket subscription for both, both trade, and after
/// kill -9 the same file resumes both (their journals go on from where they
/// were, gap-free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shares_one_feed_between_two_strategies_and_resumes_both_after_sigkill() {
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints = format!(
        "polymarket = {{ clob_url = \"{}\", ws_url = \"{}\", gamma_url = \"{}\"",
        server.base_url(),
        server.ws_url(),
        server.gamma_url()
    );
    let mut text = String::new();
    for (name, lookback, live) in [("pm-paper", 3, false), ("pm-live", 4, true)] {
        text.push_str(&format!(
            "[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\nvenue = \"polymarket\"\nmarkets = [\"{}\", \"{}\"]\nconfig = {{ lookback = {lookback}, threshold = 0.01, cooldown_ms = 0 }}\n{endpoints}, live = {live} }}\n\n",
            guest("momentum").display(),
            TOKENS[0],
            TOKENS[1],
        ));
    }
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, text).expect("write the fleet file");
    let env = live_env();

    let mut first = serve_command(dir.path(), &file, &env)
        .spawn()
        .expect("start serve");
    until("both strategies trade", || async {
        let status = fleet_status(dir.path()).await;
        let (paper_seq, paper_trades) = standing(&status, "pm-paper");
        let (live_seq, live_trades) = standing(&status, "pm-live");
        paper_seq > 50 && live_seq > 50 && paper_trades > 0 && live_trades > 0
    })
    .await;
    assert_eq!(
        server.ws_subscribers(),
        1,
        "two strategies on one host share one market WebSocket"
    );
    assert!(
        !server.trades().is_empty(),
        "the live strategy's orders reached the CLOB"
    );
    first.start_kill().expect("kill -9");
    first.wait().await.expect("reap the killed host");
    let killed = fleet_status(dir.path()).await;
    let killed_at = [
        standing(&killed, "pm-paper").0,
        standing(&killed, "pm-live").0,
    ];

    let second = serve_command(dir.path(), &file, &env)
        .spawn()
        .expect("restart serve");
    until("both strategies go on after the restart", || async {
        let status = fleet_status(dir.path()).await;
        standing(&status, "pm-paper").0 > killed_at[0] + 30
            && standing(&status, "pm-live").0 > killed_at[1] + 30
    })
    .await;
    assert_eq!(server.ws_subscribers(), 2, "one more host, one more feed");
    let pid = second.id().expect("pid").to_string();
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("send SIGTERM");
    assert!(term.success());
    let output = within("serve to stop", second.wait_with_output())
        .await
        .expect("serve output");
    assert!(
        output.status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON report on stdout");
    for s in report["strategies"].as_array().expect("strategies") {
        assert_eq!(s["state"], "stopped", "{s}");
    }
    let store = store(dir.path()).await;
    for name in ["pm-paper", "pm-live"] {
        let journal = store.entries_after(name, 0).await.expect("journal");
        assert!(
            journal
                .iter()
                .enumerate()
                .all(|(i, e)| e.event.seq == i as u64 + 1),
            "{name}: the journal goes on gap-free across the kill"
        );
        assert!(journal.len() as u64 > killed_at[usize::from(name == "pm-live")] + 30);
    }
}
