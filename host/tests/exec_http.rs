//! The executor against the local Polymarket server over real HTTP, with
//! fault plans: a 429 storm, a lost acknowledgement, a 60 % burst of 5xx, a
//! 425 window and a cancel-only window. Each checks the set property: the
//! server's orders are exactly the intents (none lost, none twice), and every
//! intent ends terminal.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use polybot_host::contract::{EventKind, OrderStatus, OrderType, PlaceOrder, Side, VenueHealth};
use polybot_host::exec::{
    BreakerConfig, ExecConfig, ExecOutput, Executor, Intent, IntentLog, IntentState,
    MemoryIntentLog, RetryConfig, RiskConfig,
};
use polybot_host::venue::Venue;
use polybot_host::venue::polymarket::{
    Execution, HEARTBEAT_LOST, LiveConfig, PolymarketConfig, PolymarketVenue,
};
use polybot_polymarket::auth::{Credentials, Secret};
use polybot_polymarket::order::OrderSigner;
use polybot_polymarket::server::{
    Fault, FaultPlan, FaultRule, FeedHandle, SimHandle, SimOptions, SimServer,
};

/// Hardhat's first well-known test key; holds nothing anywhere.
const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const YES: &str = "1001";

type SharedLog = MemoryIntentLog;

async fn within<T>(what: &str, secs: u64, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}

struct Rig {
    server: SimHandle,
    _feed: FeedHandle,
    venue: PolymarketVenue,
    exec: Executor,
    log: SharedLog,
}

fn config() -> ExecConfig {
    ExecConfig {
        retry: RetryConfig {
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
            max_attempts: 100,
            max_elapsed_ms: 60_000,
        },
        breaker: BreakerConfig {
            window_size: 10,
            minimum_calls: 4,
            open_ms: 300,
            half_open_calls: 2,
            ..BreakerConfig::default()
        },
        windows: polybot_host::exec::WindowConfig {
            too_early_probe_ms: 100,
            halted_probe_ms: 100,
            post_only_ms: 1_000,
        },
        max_wait_ms: 60_000,
        ..ExecConfig::default()
    }
}

async fn rig(cfg: ExecConfig) -> Rig {
    rig_with(cfg, SimOptions::default()).await
}

async fn rig_with(cfg: ExecConfig, opts: SimOptions) -> Rig {
    let (server, feed) = SimServer::start("127.0.0.1:0".parse().expect("addr"), opts)
        .await
        .expect("local server");
    feed.publish_book(YES, "0xc1", &[(0.48, 30.0)], &[(0.52, 25.0)], 1_000);
    let venue = connect(&server).await;
    let log = SharedLog::default();
    let exec = Executor::new(
        "exec-test",
        "polymarket",
        cfg,
        RiskConfig::default(),
        Box::new(log.clone()),
    );
    Rig {
        server,
        _feed: feed,
        venue,
        exec,
        log,
    }
}

/// The live venue, as a run connects it.
async fn connect(server: &SimHandle) -> PolymarketVenue {
    let c = server.credentials();
    let credentials = Credentials {
        api_key: c.api_key.clone(),
        secret: Secret::new(c.secret.clone()),
        passphrase: Secret::new(c.passphrase.clone()),
        address: OrderSigner::from_private_key(KEY)
            .expect("key")
            .address()
            .to_checksum(None),
        private_key: Some(Secret::new(KEY)),
    };
    within(
        "connect",
        10,
        PolymarketVenue::connect(PolymarketConfig {
            clob_url: server.base_url(),
            ws_url: server.ws_url(),
            gamma_url: server.gamma_url(),
            tokens: vec![YES.into()],
            stall_timeout: Duration::from_secs(30),
            execution: Execution::Live(LiveConfig {
                strategy: "exec-test".into(),
                credentials,
            }),
        }),
    )
    .await
    .expect("connect")
}

fn resting(size: f64) -> PlaceOrder {
    PlaceOrder {
        market: YES.into(),
        side: Side::Buy,
        price: 0.40,
        size,
        order_type: OrderType::Gtc,
    }
}

fn healths(outs: &[ExecOutput]) -> Vec<VenueHealth> {
    outs.iter()
        .flat_map(|o| o.events.iter())
        .filter_map(|e| match e {
            EventKind::VenueStatus(s) => Some(s.health),
            _ => None,
        })
        .collect()
}

impl Rig {
    async fn submit_all(&mut self, n: usize) -> Vec<ExecOutput> {
        let mut outs = Vec::new();
        for i in 0..n {
            let id = format!("{}.0", i + 1);
            let out = within(
                "submit",
                60,
                self.exec
                    .submit(&mut self.venue, &id, resting(5.0), 1_000 + i as u64),
            )
            .await
            .expect("submit");
            outs.push(out);
        }
        outs
    }

    /// Cancels every resting intent with faults cleared, then checks the set
    /// property: server orders == intents' order hashes, every intent terminal.
    async fn finish_and_check(&mut self, n: usize) {
        self.server.clear_faults();
        for i in 0..n {
            let id = format!("{}.0", i + 1);
            within("cancel", 30, self.exec.cancel(&mut self.venue, &id, 9_000))
                .await
                .expect("cancel");
        }
        let intents: HashSet<String> = (0..n)
            .filter_map(|i| self.venue.order_hash(&format!("{}.0", i + 1)))
            .collect();
        let orders = self.server.orders();
        let at_server: HashSet<String> = orders.iter().map(|o| o.id.clone()).collect();
        assert_eq!(
            orders.len(),
            n,
            "one order per intent at the server (none twice)"
        );
        assert_eq!(at_server, intents, "none lost, none unknown");
        let states = self.log.states();
        assert_eq!(states.len(), n);
        for (id, s) in &states {
            assert!(s.is_terminal(), "intent {id} ended {s}");
        }
        let open = self.log.open_intents("exec-test").await.expect("open");
        assert!(open.is_empty(), "{open:?}");
    }
}

#[tokio::test]
async fn a_429_storm_opens_the_breaker_pauses_placement_and_resumes_by_itself() {
    let mut rig = rig(config()).await;
    rig.server.set_faults(FaultPlan::times(
        "POST /order",
        Fault::RateLimited {
            retry_after_s: None,
        },
        25,
    ));
    let outs = rig.submit_all(12).await;
    for (i, o) in outs.iter().enumerate() {
        let last = o.updates().last().map(|u| u.status);
        assert_eq!(last, Some(OrderStatus::Open), "intent {}: {o:?}", i + 1);
    }
    let h = healths(&outs);
    assert!(h.contains(&VenueHealth::CircuitOpen), "{h:?}");
    assert_eq!(h.last(), Some(&VenueHealth::Recovered), "{h:?}");
    assert_eq!(
        rig.server.faults().rules[0].count,
        Some(0),
        "the storm was spent"
    );
    rig.finish_and_check(12).await;
}

#[tokio::test]
async fn a_lost_acknowledgement_is_resolved_by_lookup_and_never_sent_twice() {
    let mut rig = rig(config()).await;
    rig.server
        .set_faults(FaultPlan::times("POST /order", Fault::LoseResponse, 1));
    let outs = rig.submit_all(1).await;
    assert_eq!(
        outs[0].updates().map(|u| u.status).collect::<Vec<_>>(),
        [OrderStatus::Open]
    );
    assert_eq!(
        rig.log.path("1.0"),
        [
            IntentState::Pending,
            IntentState::Sent,
            IntentState::Unknown,
            IntentState::Acknowledged
        ]
    );
    assert_eq!(rig.server.orders().len(), 1);
    rig.finish_and_check(1).await;
}

#[tokio::test]
async fn sixty_percent_5xx_loses_nothing_and_duplicates_nothing() {
    let mut cfg = config();
    // A 60 % failure rate keeps tripping a 50 % breaker; let the probes decide.
    cfg.breaker.failure_rate_threshold = 0.9;
    let mut rig = rig(cfg).await;
    rig.server.set_faults(FaultPlan {
        seed: 42,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::ServerError,
            count: None,
            probability: Some(0.6),
            skip: 0,
        }],
    });
    let outs = rig.submit_all(15).await;
    for o in &outs {
        assert_eq!(
            o.updates().last().map(|u| u.status),
            Some(OrderStatus::Open),
            "{o:?}"
        );
    }
    rig.finish_and_check(15).await;
}

#[tokio::test]
async fn a_425_window_pauses_placement_and_post_only_follows() {
    let mut rig = rig(config()).await;
    rig.server
        .set_faults(FaultPlan::times("POST /order", Fault::TooEarly, 6));
    let mut outs = rig.submit_all(3).await;
    let h = healths(&outs);
    assert_eq!(h.first(), Some(&VenueHealth::Degraded), "{h:?}");
    assert!(h.contains(&VenueHealth::Recovered), "{h:?}");
    // In the post-only minutes a taker is refused with the reason, not sent.
    let taker = PlaceOrder {
        order_type: OrderType::Fak,
        price: 0.52,
        ..resting(1.0)
    };
    let out = rig
        .exec
        .submit(&mut rig.venue, "4.0", taker, 2_000)
        .await
        .expect("taker");
    let u = out.updates().last().cloned().expect("update");
    assert_eq!(u.status, OrderStatus::Rejected);
    assert!(u.reason.unwrap_or_default().contains("only resting orders"));
    outs.push(out);
    assert_eq!(rig.server.orders().len(), 3);
    // 4.0 never reached the server; the other three rest and are cancelled.
    rig.server.clear_faults();
    for id in ["1.0", "2.0", "3.0"] {
        rig.exec
            .cancel(&mut rig.venue, id, 3_000)
            .await
            .expect("cancel");
    }
    for (id, s) in rig.log.states() {
        assert!(s.is_terminal(), "{id} {s}");
    }
}

#[tokio::test]
async fn cancel_only_holds_new_orders_while_cancels_still_go() {
    let mut rig = rig(config()).await;
    rig.submit_all(2).await;
    rig.server.set_faults(FaultPlan::times(
        "POST /order",
        Fault::Unavailable { cancel_only: true },
        4,
    ));
    let venue = &mut rig.venue;
    let exec = &mut rig.exec;
    // A new order waits out the window while the cancel goes through.
    let out = within(
        "batch",
        30,
        exec.run_batch(
            venue,
            vec![("3.0".into(), resting(5.0))],
            vec!["1.0".into()],
            2_000,
        ),
    )
    .await
    .expect("batch");
    let statuses: Vec<_> = out
        .updates()
        .map(|u| (u.intent_id.clone(), u.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("1.0".to_string(), OrderStatus::Cancelled),
            ("3.0".to_string(), OrderStatus::Open)
        ]
    );
    let h: Vec<_> = healths(std::slice::from_ref(&out));
    assert_eq!(h, [VenueHealth::Degraded, VenueHealth::Recovered]);
    rig.finish_and_check(3).await;
}

#[tokio::test]
async fn a_restart_reconciles_resting_orders_missed_fills_and_unsent_intents() {
    let mut rig = rig(config()).await;
    rig.submit_all(3).await;
    let hashes: Vec<String> = ["1.0", "2.0", "3.0"]
        .iter()
        .map(|id| rig.venue.order_hash(id).expect("hash"))
        .collect();
    // Durable, then the host stopped before sending it.
    let (_, pending) = Intent::new("exec-test", "4.0", resting(5.0), 1_500);
    rig.log.clone().append(&pending).await.expect("append");
    // The host goes away; meanwhile 1.0 fills in full and 2.0 in part.
    let Rig {
        server,
        _feed,
        venue,
        exec,
        log,
    } = rig;
    drop(exec);
    drop(venue);
    server.fill_resting(&hashes[0], 5.0).expect("fill 1.0");
    server.fill_resting(&hashes[1], 2.0).expect("fill 2.0");

    let mut venue = connect(&server).await;
    let mut exec = Executor::new(
        "exec-test",
        "polymarket",
        config(),
        RiskConfig::default(),
        Box::new(log.clone()),
    );
    assert_eq!(exec.load().await.expect("load"), 4);
    let out = within("reconcile", 30, exec.reconcile(&mut venue, 0, 5_000))
        .await
        .expect("reconcile");
    let mut fills: Vec<(String, f64)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            EventKind::Fill(f) => Some((f.intent_id.clone(), f.size)),
            _ => None,
        })
        .collect();
    fills.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fills,
        [("1.0".to_string(), 5.0), ("2.0".to_string(), 2.0)],
        "{out:?}"
    );
    let state = |id: &str| exec.intent(id).map(|i| i.state);
    assert_eq!(state("1.0"), Some(IntentState::Filled));
    assert_eq!(state("2.0"), Some(IntentState::PartiallyFilled));
    assert_eq!(state("3.0"), Some(IntentState::Acknowledged));
    assert_eq!(state("4.0"), Some(IntentState::Rejected), "never sent");
    assert_eq!(server.orders().len(), 3, "nothing re-sent");
    // Reconciling again journals no fill twice.
    let again = exec.reconcile(&mut venue, 0, 6_000).await.expect("again");
    assert!(
        !again.events.iter().any(|e| matches!(e, EventKind::Fill(_))),
        "{again:?}"
    );
    // The adopted orders are managed: they cancel like any other.
    for id in ["2.0", "3.0"] {
        let out = exec.cancel(&mut venue, id, 7_000).await.expect("cancel");
        assert_eq!(
            out.updates().last().map(|u| u.status),
            Some(OrderStatus::Cancelled),
            "{out:?}"
        );
    }
    for (id, s) in log.states() {
        assert!(s.is_terminal(), "{id} {s}");
    }
}

#[tokio::test]
async fn a_rate_limit_warning_pauses_new_orders() {
    let mut rig = rig(config()).await;
    rig.server
        .set_faults(FaultPlan::times("POST /order", Fault::RateLimitWarning, 1));
    let outs = rig.submit_all(2).await;
    assert!(
        outs[0]
            .notes
            .iter()
            .any(|n| n.detail.contains("rate limit")),
        "{:?}",
        outs[0].notes
    );
    assert_eq!(
        outs[1].updates().last().map(|u| u.status),
        Some(OrderStatus::Open)
    );
    rig.finish_and_check(2).await;
}

#[tokio::test]
async fn heartbeat_loss_holds_placement_reconciles_and_the_strategy_sees_the_cancels() {
    let opts = SimOptions {
        heartbeat_timeout: Duration::from_millis(300),
        ..SimOptions::default()
    };
    let mut rig = rig_with(config(), opts).await;
    rig.submit_all(2).await;
    // The venue's upkeep sends one heartbeat for the resting orders; the
    // heartbeats then stop, and the venue's dead-man switch cancels them.
    rig.server.set_faults(FaultPlan {
        seed: 0,
        rules: vec![FaultRule {
            endpoint: "POST /v1/heartbeats".into(),
            fault: Fault::ServerError,
            count: None,
            probability: None,
            skip: 1,
        }],
    });
    let mut fired = rig.server.dead_man_fired();
    within("the dead-man switch", 30, fired.changed())
        .await
        .expect("fired");
    // The venue tells of the failed heartbeat as a venue-status event.
    let seen = within("the heartbeat status", 30, async {
        loop {
            let tick = rig.venue.next_tick().await.expect("tick").expect("feed");
            if let Some(s) = tick.events.iter().find_map(|e| match e {
                EventKind::VenueStatus(s) if s.detail.starts_with(HEARTBEAT_LOST) => {
                    Some(s.clone())
                }
                _ => None,
            }) {
                break s;
            }
        }
    })
    .await;
    assert_eq!(seen.health, VenueHealth::Degraded);
    let out = rig.exec.heartbeat_lost(3_000).await.expect("lost");
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, EventKind::VenueStatus(s) if s.health == VenueHealth::Degraded))
    );
    assert_eq!(
        rig.exec.intent("1.0").map(|i| i.state),
        Some(IntentState::Unknown)
    );
    let out = within(
        "reconcile",
        30,
        rig.exec.reconcile(&mut rig.venue, 0, 4_000),
    )
    .await
    .expect("reconcile");
    let cancelled: Vec<_> = out
        .updates()
        .filter(|u| u.status == OrderStatus::Cancelled)
        .map(|u| u.intent_id.clone())
        .collect();
    assert_eq!(
        cancelled,
        ["1.0", "2.0"],
        "the strategy sees the venue's cancels"
    );
    assert_eq!(
        healths(std::slice::from_ref(&out)).last(),
        Some(&VenueHealth::Recovered)
    );
    // Placement resumes after reconciliation.
    rig.server.clear_faults();
    let out = rig
        .exec
        .submit(&mut rig.venue, "3.0", resting(5.0), 5_000)
        .await
        .expect("submit");
    assert_eq!(
        out.updates().last().map(|u| u.status),
        Some(OrderStatus::Open)
    );
    rig.finish_and_check(3).await;
}
