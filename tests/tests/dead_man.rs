//! The dead-man heartbeat end to end: a live `polybot-host run` whose
//! strategy (the `faulty` fixture with `keep_resting`) keeps one resting buy
//! in each of two markets at the local CLOB. The server's heartbeats then
//! fail; its dead-man switch cancels every resting order. The host tells the
//! strategy of the loss and of the venue's cancels, refuses new orders while
//! heartbeats fail (none reaches the venue), and once a heartbeat succeeds
//! again reconciles and places the strategy's next orders, which rest and
//! are kept alive.
//!
//! Every wait is bounded; what happened is read from the journal (what the
//! strategy saw), the intents the host recorded and the server's own orders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use polybot_host::contract::{EventKind, OrderStatus, VenueHealth};
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{JournalEntry, StateStore};
use polybot_host::venue::polymarket::{HEARTBEAT_BACK, HEARTBEAT_LOST};
use polybot_polymarket::server::{Fault, FaultPlan, FaultRule, SimHandle, SimOptions};
use polybot_tests::checker::{Expect, History, check_and_print};
use polybot_tests::clob::{TOKENS, live_env, on_server, publish_step, server_with, venue_record};
use polybot_tests::guest;

/// One resting buy per market, far below the book so nothing fills.
const CONFIG: &[u8] = b"[strategy]\nkeep_resting = true\nrest_price = 0.05\nrest_size = 5.0\n";
/// Longer than the host's 5 s upkeep round, so heartbeats that succeed keep
/// orders alive.
const DEAD_MAN_AFTER: Duration = Duration::from_secs(7);

async fn store(dir: &Path) -> SqlStore {
    let data = dir.join("data");
    SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
        .await
        .expect("open the run's store")
}

async fn journal(dir: &Path) -> Vec<JournalEntry> {
    store(dir)
        .await
        .entries_after("faulty", 0)
        .await
        .expect("journal")
}

/// The seq of the first venue-status event of `health` whose detail begins
/// with `prefix`.
fn status_seq(journal: &[JournalEntry], health: VenueHealth, prefix: &str) -> Option<u64> {
    journal.iter().find_map(|e| match &e.event.kind {
        EventKind::VenueStatus(s) if s.health == health && s.detail.starts_with(prefix) => {
            Some(e.event.seq)
        }
        _ => None,
    })
}

/// Every order update the strategy was told, by intent: its statuses in order.
fn told(journal: &[JournalEntry]) -> BTreeMap<String, Vec<(u64, OrderStatus, Option<String>)>> {
    let mut by_intent: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in journal {
        if let EventKind::OrderUpdate(u) = &e.event.kind {
            by_intent.entry(u.intent_id.clone()).or_default().push((
                e.event.seq,
                u.status,
                u.reason.clone(),
            ));
        }
    }
    by_intent
}

/// The seq of the event that raised intent `id` (`<seq>.<index>`).
fn raised_at(id: &str) -> u64 {
    id.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an intent id")
}

/// Publishes a step every 100 ms (twenty book events a second) until `ready`
/// holds; fails the test after 90 s.
async fn feed_until<F: std::future::Future<Output = bool>>(
    feed: &polybot_polymarket::server::FeedHandle,
    step: &mut u64,
    what: &str,
    mut ready: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        *step += 1;
        publish_step(feed, *step);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn open_at_server(server: &SimHandle) -> usize {
    server
        .orders()
        .iter()
        .filter(|o| o.status == polybot_polymarket::types::OrderStatus::Live)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_heartbeats_fail_the_venues_cancels_are_told_and_placement_resumes_after_them() {
    // The first heartbeat succeeds, every later one fails until cleared.
    let (server, feed) = server_with(SimOptions {
        heartbeat_timeout: DEAD_MAN_AFTER,
        faults: FaultPlan {
            seed: 0,
            rules: vec![FaultRule {
                endpoint: "POST /v1/heartbeats".into(),
                fault: Fault::ServerError,
                count: None,
                probability: None,
                skip: 1,
            }],
        },
        ..SimOptions::default()
    })
    .await;
    let mut fired = server.dead_man_fired();
    let mut step = 0;
    publish_step(&feed, step);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("faulty.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let log = std::fs::File::create(dir.path().join("host.log")).expect("log file");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
    command
        .env("POLYBOT_LOG", "info")
        .args(["run", "--live", "--strategy"])
        .arg(guest("faulty"))
        .arg("--config")
        .arg(&config)
        .args(["--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    on_server(&mut command, &server);
    command.envs(live_env());
    let mut host = command.spawn().expect("start polybot-host");
    let host_log = || std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default();

    feed_until(
        &feed,
        &mut step,
        "a resting order in each market",
        || async { open_at_server(&server) == TOKENS.len() },
    )
    .await;
    let first: BTreeSet<String> = server.orders().iter().map(|o| o.id.clone()).collect();

    // Heartbeats fail; the venue's switch cancels both resting orders.
    tokio::time::timeout(Duration::from_secs(60), fired.changed())
        .await
        .expect("the dead-man switch fires within 60 s")
        .expect("the server runs");
    assert_eq!(
        open_at_server(&server),
        0,
        "the venue cancelled every order"
    );

    // The strategy is told of both cancels; its new orders meanwhile are
    // refused, and none reaches the venue.
    let d = dir.path();
    feed_until(
        &feed,
        &mut step,
        "the cancels told to the strategy",
        || async {
            let told = told(&journal(d).await);
            told.values()
                .filter(|moves| moves.iter().any(|(_, s, _)| *s == OrderStatus::Cancelled))
                .count()
                >= TOKENS.len()
        },
    )
    .await;
    assert_eq!(
        server.orders().len(),
        first.len(),
        "no order reached the venue while heartbeats failed"
    );

    // Heartbeats return: the host reconciles and places again.
    server.clear_faults();
    feed_until(
        &feed,
        &mut step,
        "new resting orders kept alive",
        || async { open_at_server(&server) == TOKENS.len() },
    )
    .await;
    host.start_kill().expect("stop the host");
    host.wait().await.expect("reap the host");

    let journal = journal(d).await;
    let lost = status_seq(&journal, VenueHealth::Degraded, HEARTBEAT_LOST)
        .unwrap_or_else(|| panic!("the strategy was told the heartbeat failed\n{}", host_log()));
    let back = status_seq(&journal, VenueHealth::Recovered, HEARTBEAT_BACK).unwrap_or_else(|| {
        panic!(
            "the strategy was told the heartbeat is back\n{}",
            host_log()
        )
    });
    assert!(lost < back);
    let told = told(&journal);
    let first_intents: Vec<&String> = told
        .keys()
        .filter(|id| raised_at(id) < lost)
        .collect::<Vec<_>>();
    assert_eq!(first_intents.len(), TOKENS.len(), "{told:?}");
    for id in &first_intents {
        let moves = &told[*id];
        assert!(
            moves
                .iter()
                .any(|(seq, s, _)| *s == OrderStatus::Cancelled && *seq > lost),
            "intent {id}: the venue's cancel was told after the loss: {moves:?}"
        );
    }
    // Every order raised while heartbeats failed was refused with the reason.
    for (id, moves) in told.iter().filter(|(id, _)| {
        let at = raised_at(id);
        at > lost && at < back
    }) {
        assert!(
            moves.iter().any(|(_, s, r)| *s == OrderStatus::Rejected
                && r.as_deref().is_some_and(|r| r.contains("heartbeat"))),
            "intent {id} raised during the loss: {moves:?}"
        );
    }
    // After the return, orders rest again.
    assert!(
        told.iter().any(|(id, moves)| raised_at(id) > back
            && moves.iter().any(|(_, s, _)| *s == OrderStatus::Open)),
        "{told:?}"
    );
    // And the checker agrees with the server's record.
    let store = store(d).await;
    let history = History::read(&store, &["faulty"]).await.expect("history");
    let expect = Expect {
        venue: [("faulty".to_string(), venue_record(&server))].into(),
        host_starts: Some(1),
    };
    check_and_print(&history, &expect).assert_clean();
}
