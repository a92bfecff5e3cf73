//! Nemesis, live: a seeded schedule of venue-side faults and host kills over
//! `polybot-host serve` trading live through the local CLOB server
//! (`polybot_polymarket::server`, in this process on 127.0.0.1):
//! - `kill -9` of the host, the harness starting it again as systemd would
//!   (each kill is asserted to land while the host runs);
//! - 429 storms, 5xx bursts, a 425 window followed by the post-only window,
//!   503 cancel-only windows and lost responses on `POST /order`;
//! - WebSocket stalls and drops, dead-man heartbeat loss;
//! - a trade the server made turned `FAILED`;
//! - hostile strategies (`faulty` trapping, hogging memory) beside three
//!   momentum strategies, each strategy on its own token so the server's
//!   record splits by strategy.
//!
//! The seed is printed first; `POLYBOT_SOAK_SEED=N` replays the same
//! schedule. `POLYBOT_NEMESIS_LIVE_EVENTS` lengthens the run (default 2500
//! events per strategy; the schedule grows with it). At the end the history
//! checker judges every strategy against the server's own order and trade
//! log; the faults injected are printed by kind.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_polymarket::server::{Fault, FaultPlan, FaultRule, SimHandle};
use polybot_tests::checker::{Expect, History, VenueRecord, check_and_print};
use polybot_tests::clob::{live_env, publish_tokens_at, server, venue_record_of, wall_ms};
use polybot_tests::sim::Rng;
use polybot_tests::{LoggingHost, guest};

/// Momentum strategies and the token each trades.
const MOMENTUM: [(&str, &str); 3] = [
    ("momentum-a", "3001"),
    ("momentum-b", "3002"),
    ("momentum-c", "3003"),
];
/// Hostile strategies; they place no orders, on a token of their own.
const HOSTILE: [&str; 2] = ["faulty-trap", "faulty-hog"];
const HOSTILE_TOKEN: &str = "3009";
const TOKENS: [&str; 4] = ["3001", "3002", "3003", HOSTILE_TOKEN];
/// Bound on one host run, and on a restart being let in.
const RUN_BOUND: Duration = Duration::from_secs(300);
/// A rule count no window uses up: what is left tells how often it fired.
const ALWAYS: u32 = 1_000_000;
/// Longest a fault window stays open waiting for a request to fire on.
const FIRE_BOUND: Duration = Duration::from_secs(15);
/// Market steps: one every this long, stamped with the wall clock.
const STEP: Duration = Duration::from_millis(20);

/// The schedule CI runs; `scripts/soak.sh` draws a new seed each time.
/// (Seed 1796008578123 showed finding F in the README: a trade of an earlier
/// run that failed to settle after a restart was not reversed.)
const CI_SEED: u64 = 1_796_008_514_175;

fn seed() -> u64 {
    std::env::var("POLYBOT_SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("POLYBOT_SOAK_SEED is a number"))
        .unwrap_or(CI_SEED)
}

fn events() -> u64 {
    std::env::var("POLYBOT_NEMESIS_LIVE_EVENTS")
        .ok()
        .map(|s| s.parse().expect("POLYBOT_NEMESIS_LIVE_EVENTS is a number"))
        .unwrap_or(2500)
}

fn fleet(dir: &Path, server: &SimHandle, events: u64) -> std::path::PathBuf {
    let endpoints = format!(
        "polymarket = {{ clob_url = \"{}\", ws_url = \"{}\", gamma_url = \"{}\", \
         stall_timeout = \"1s\", live = true }}\n",
        server.base_url(),
        server.ws_url(),
        server.gamma_url()
    );
    let mut text = String::from(
        "[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 2\n\
         [checkpoint]\nevery_events = 500\n",
    );
    let common = |token: &str| {
        format!("venue = \"polymarket\"\nmarkets = [\"{token}\"]\nevents = {events}\n{endpoints}")
    };
    for (i, (name, token)) in MOMENTUM.iter().enumerate() {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\n{}\
             config = {{ lookback = {}, threshold = 0.01, cooldown_ms = 200 }}\n",
            guest("momentum").display(),
            common(token),
            3 + i
        ));
    }
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{}\"\nmodule = \"{}\"\n{}\
         config = {{ fault = \"panic\", at_seq = [{}, {}, {}] }}\n",
        HOSTILE[0],
        guest("faulty").display(),
        common(HOSTILE_TOKEN),
        events / 5,
        events / 2,
        events * 4 / 5
    ));
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{}\"\nmodule = \"{}\"\n{}\
         sandbox = {{ memory_bytes = 16777216 }}\nconfig = {{ fault = \"hog\", at_seq = [{}] }}\n",
        HOSTILE[1],
        guest("faulty").display(),
        common(HOSTILE_TOKEN),
        events / 3
    ));
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).expect("write the fleet file");
    path
}

/// One step of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    RateLimitStorm,
    ServerErrors,
    TooEarly,
    CancelOnly,
    LostResponses,
    WsStall,
    WsDrop,
    HeartbeatLoss,
    FailedTrade,
}

const KINDS: [Kind; 10] = [
    Kind::Kill,
    Kind::RateLimitStorm,
    Kind::ServerErrors,
    Kind::TooEarly,
    Kind::CancelOnly,
    Kind::LostResponses,
    Kind::WsStall,
    Kind::WsDrop,
    Kind::HeartbeatLoss,
    Kind::FailedTrade,
];

#[derive(Debug, Clone, Copy)]
struct Step {
    /// Quiet time before it.
    gap: Duration,
    kind: Kind,
    /// How long a window stays open.
    length: Duration,
    /// The fault plan's own seed (lost responses fire with a probability).
    seed: u64,
}

/// Every kind once (two kills), in a seeded order with the failed trade in
/// the first half (the host's settlement round must see it), then more
/// seeded steps as the run grows.
fn schedule(rng: &mut Rng, events: u64) -> Vec<Step> {
    let mut kinds: Vec<Kind> = KINDS.to_vec();
    kinds.push(Kind::Kill);
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let failed = kinds
        .iter()
        .position(|k| *k == Kind::FailedTrade)
        .expect("in the list");
    let early = rng.below(kinds.len() as u64 / 2) as usize;
    kinds.swap(failed, early);
    let extra = (events / 500).saturating_sub(kinds.len() as u64);
    for _ in 0..extra {
        kinds.push(KINDS[rng.below(KINDS.len() as u64) as usize]);
    }
    // Longer runs spread the steps out (a run takes at least 20 ms of wall
    // time per event, the market's pace).
    let spread = (events / 5000).max(1);
    kinds
        .into_iter()
        .map(|kind| Step {
            gap: Duration::from_millis((200 + rng.below(600)) * spread),
            kind,
            length: Duration::from_millis(300 + rng.below(1200)),
            seed: rng.next_u64(),
        })
        .collect()
}

/// The rules a window sets on the server.
fn plan(step: &Step) -> FaultPlan {
    let rule = |endpoint: &str, fault: Fault, count: u32, probability: Option<f64>| FaultRule {
        endpoint: endpoint.to_string(),
        fault,
        count: Some(count),
        probability,
        skip: 0,
    };
    let rules = match step.kind {
        Kind::RateLimitStorm => vec![rule(
            "POST /order",
            Fault::RateLimited {
                retry_after_s: step.seed.is_multiple_of(2).then_some(1),
            },
            ALWAYS,
            None,
        )],
        Kind::ServerErrors => vec![rule(
            "*",
            Fault::ServerError,
            3 + (step.seed % 20) as u32,
            None,
        )],
        Kind::TooEarly => vec![rule("POST /order", Fault::TooEarly, ALWAYS, None)],
        Kind::CancelOnly => vec![rule(
            "POST /order",
            Fault::Unavailable { cancel_only: true },
            ALWAYS,
            None,
        )],
        Kind::LostResponses => vec![rule("POST /order", Fault::LoseResponse, ALWAYS, Some(0.5))],
        Kind::WsStall => vec![rule("ws", Fault::WsStall, 1, None)],
        Kind::WsDrop => vec![rule("ws", Fault::DropConnection, 1, None)],
        Kind::HeartbeatLoss => vec![rule(
            "POST /v1/heartbeats",
            Fault::ServerError,
            ALWAYS,
            None,
        )],
        Kind::Kill | Kind::FailedTrade => Vec::new(),
    };
    FaultPlan {
        seed: step.seed,
        rules,
    }
}

/// How many times the server's current plan fired, from what is left of
/// `set`'s counts.
fn fired(set: &FaultPlan, left: &FaultPlan) -> u64 {
    set.rules
        .iter()
        .zip(&left.rules)
        .map(|(a, b)| u64::from(a.count.unwrap_or(0) - b.count.unwrap_or(0)))
        .sum()
}

/// Turns the newest `MATCHED` trade `FAILED`; its id, if there is one.
fn fail_a_trade(server: &SimHandle) -> Option<String> {
    let trade = server
        .trades()
        .into_iter()
        .rev()
        .find(|t| t.status.as_deref() == Some("MATCHED"))?;
    server.set_trade_status(&trade.id, "MINED");
    server.set_trade_status(&trade.id, "FAILED");
    Some(trade.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_schedule_of_venue_faults_and_kills_leaves_a_clean_history_live() {
    let seed = seed();
    eprintln!("live nemesis seed {seed} (replay: POLYBOT_SOAK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let events = events();
    let steps = schedule(&mut rng, events);
    eprintln!(
        "schedule: {:?}",
        steps.iter().map(|s| s.kind).collect::<Vec<_>>()
    );
    let (server, feed) = server(FaultPlan::default()).await;
    // The market moves every STEP, stamped with the wall clock.
    let published = Arc::new(AtomicU64::new(0));
    publish_tokens_at(&feed, &TOKENS, 0, wall_ms());
    let market = {
        let published = published.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STEP);
            for step in 1.. {
                every.tick().await;
                publish_tokens_at(&feed, &TOKENS, step, wall_ms());
                published.store(step, Ordering::Relaxed);
            }
        })
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = fleet(dir.path(), &server, events);
    let env = live_env();
    let command = || {
        let mut c = polybot_tests::host_command!("info");
        c.args(["serve", "--json", "--no-http", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data);
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
            c.env_remove(name);
        }
        for (name, value) in &env {
            c.env(name, value);
        }
        c
    };

    let started = Instant::now();
    let mut starts = 0u64;
    // Faults by kind: (windows opened, requests or frames it fired on).
    let mut injected: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
    let mut failed_trades = Vec::new();
    let mut host = tokio::task::block_in_place(|| LoggingHost::start_fleet(&command, RUN_BOUND));
    starts += 1;
    for step in &steps {
        // The schedule's own timing: when to inject, not a wait for state.
        tokio::time::sleep(step.gap).await;
        assert!(
            host.child.try_wait().expect("poll the host").is_none(),
            "{:?} came after the run ended: lengthen POLYBOT_NEMESIS_LIVE_EVENTS",
            step.kind
        );
        let tally = injected.entry(step.kind).or_default();
        tally.0 += 1;
        match step.kind {
            Kind::Kill => {
                host.child.kill().expect("kill -9");
                host.child.wait().expect("reap");
                tokio::task::block_in_place(|| host.drain_log());
                tally.1 += 1;
                host =
                    tokio::task::block_in_place(|| LoggingHost::start_fleet(&command, RUN_BOUND));
                starts += 1;
            }
            Kind::FailedTrade => {
                if let Some(id) = fail_a_trade(&server) {
                    tally.1 += 1;
                    failed_trades.push(id);
                }
            }
            _ => {
                let set = plan(step);
                server.set_faults(set.clone());
                // Open for its length, and until it fired (bounded): a window
                // no request met would prove nothing. Heartbeats go out only
                // while orders rest, which fill-and-kill orders never do.
                tokio::time::sleep(step.length).await;
                let until = Instant::now() + FIRE_BOUND;
                while step.kind != Kind::HeartbeatLoss
                    && fired(&set, &server.faults()) == 0
                    && Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tally.1 += fired(&set, &server.faults());
                server.clear_faults();
                if step.kind == Kind::TooEarly {
                    // After the engine restarts: orders that would take are refused.
                    server.set_post_only(true);
                    tokio::time::sleep(step.length).await;
                    server.set_post_only(false);
                }
            }
        }
    }
    // The last run goes to the end by itself.
    let status = host.exit_within(RUN_BOUND).await;
    market.abort();
    let log = tokio::task::block_in_place(|| host.drain_log());
    assert!(
        status.success(),
        "the last run exited with {status}: {}",
        log.join("\n")
    );

    let store = SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
        .await
        .expect("open the store");
    let names: Vec<&str> = MOMENTUM
        .iter()
        .map(|(n, _)| *n)
        .chain(HOSTILE.iter().copied())
        .collect();
    let history = History::read_with_intents(&store, &names)
        .await
        .expect("read the history");
    let mut expect = Expect {
        venue: Default::default(),
        host_starts: Some(starts),
    };
    for (name, token) in MOMENTUM {
        expect
            .venue
            .insert(name.to_string(), venue_record_of(&server, &[token]));
    }
    for name in HOSTILE {
        expect.venue.insert(
            name.to_string(),
            VenueRecord {
                orders: Some(Vec::new()),
                ..VenueRecord::default()
            },
        );
    }
    let verdict = check_and_print(&history, &expect);
    eprintln!("faults injected (kind: windows, fired):");
    for (kind, (windows, fired)) in &injected {
        eprintln!("  {kind:?}: {windows}, {fired}");
    }
    let fills: usize = MOMENTUM.iter().map(|(n, _)| history.trades[*n].len()).sum();
    let reversals: usize = MOMENTUM
        .iter()
        .map(|(n, _)| history.trades[*n].iter().filter(|t| t.size < 0.0).count())
        .sum();
    eprintln!(
        "live nemesis seed {seed}: {} steps, {starts} host starts, {} orders at the venue, \
         {fills} momentum fills ({reversals} reversed; failed trades {failed_trades:?}), \
         {} market steps, {:.1?} wall",
        steps.len(),
        server.orders().len(),
        published.load(Ordering::Relaxed),
        started.elapsed()
    );
    if !verdict.is_clean() {
        for (name, token) in MOMENTUM {
            print_fills(&server, &history, name, token);
        }
    }
    verdict.assert_clean();
    assert!(fills > 0, "no fills: the check proves little");
    assert_eq!(
        reversals,
        failed_trades.len(),
        "every trade turned FAILED is reversed once"
    );
    // A run stops at the end of a tick: the fills of its last orders may
    // follow the last event the limit let in.
    for (name, _) in MOMENTUM {
        let handled = history.journal[name].len() as u64;
        assert!(
            (events..events + 20).contains(&handled),
            "{name} handled {handled} events, not {events}"
        );
    }
}

/// Both sides' fills of one strategy, oldest first: the host's `trades` rows
/// (with their intent) and the server's legs of the orders on its token.
fn print_fills(server: &SimHandle, history: &History, name: &str, token: &str) {
    eprintln!("{name}: the host's trades (seq intent side price size):");
    for t in &history.trades[name] {
        eprintln!(
            "  {} {} {} {} {}",
            t.seq, t.intent_id, t.side, t.price, t.size
        );
    }
    // What the host journaled and recorded of each reversed intent.
    for r in history.trades[name].iter().filter(|t| t.size < 0.0) {
        eprintln!(
            "{name}: intent {} (reversed at seq {}):",
            r.intent_id, r.seq
        );
        for e in &history.journal[name] {
            let about = match &e.event.kind {
                polybot_host::contract::EventKind::Fill(f) => f.intent_id == r.intent_id,
                polybot_host::contract::EventKind::OrderUpdate(u) => u.intent_id == r.intent_id,
                _ => false,
            };
            if about {
                eprintln!("  journal {} {:?}", e.event.seq, e.event.kind);
            }
        }
        let states = history
            .intents
            .as_ref()
            .and_then(|all| all[name].iter().find(|i| i.intent_id == r.intent_id))
            .map(|i| i.states.clone());
        eprintln!("  intent states {states:?}");
    }
    let orders: BTreeMap<String, _> = server
        .orders()
        .into_iter()
        .filter(|o| o.asset_id == token)
        .map(|o| (o.id.clone(), o))
        .collect();
    eprintln!("{name}: the server's trades on {token} (id status order side price size):");
    for t in server.trades() {
        if let Some(o) = t.taker_order_id.as_ref().and_then(|h| orders.get(h)) {
            eprintln!(
                "  {} {:?} {} {:?} {} {}",
                t.id,
                t.status,
                &o.id[..10.min(o.id.len())],
                o.side,
                t.price,
                t.size
            );
        }
    }
}
