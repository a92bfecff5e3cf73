//! Deterministic simulation: hundreds of seeds, each a whole run of the host
//! (real run loop, execution layer and momentum component) on tokio's paused
//! clock against the simulated venue and the memory store, with seeded venue
//! and store faults and crashes (see `polybot_tests::sim`). Every seed is
//! judged by the history checker; some are run twice and must produce the
//! same journal.
//!
//! `POLYBOT_SIM_SEEDS=N` sets how many seeds (default 500);
//! `POLYBOT_SIM_SEED=N` runs exactly that one seed, printing its table.
//! A failing seed is printed with the command that replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use polybot_host::runner::{self, ExecSetup, RunCounters, RunLimits, StopReason, VenueStart};
use polybot_host::sandbox::{SandboxLimits, StrategyModule};
use polybot_host::store::{JournalEntry, StateStore};
use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy, Shutdown};
use polybot_host::venue::paper::PaperConfig;
use polybot_host::venue::sim::SimConfig;
use polybot_host::venue::simulated::{Pacing, SimVenue};
use polybot_tests::checker::{Expect, History, Tally, VenueRecord, check};
use polybot_tests::sim::{
    ExchangeLog, FaultyStore, FaultyVenue, Injected, Rng, StoreFaults, VenueFaults, repeated,
};
use tokio::sync::Notify;

const STRATEGY: &str = "momentum";
const STARTING_CASH: f64 = 10_000.0;
/// Host starts (crashes and fatal stops) after which a seed fails. A store
/// outage of up to 30 failed commits stops each start at its first commit
/// (nothing can be made durable; a supervisor restarts it): several outages
/// in one seed need room.
const MAX_STARTS: u64 = 200;
/// Paused-clock time after which a run counts as hung.
const HANG: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one seed produced.
struct Outcome {
    journal: Vec<JournalEntry>,
    verdict: polybot_tests::checker::Verdict,
    problems: Vec<String>,
    injected: BTreeMap<&'static str, u64>,
    starts: u64,
    fills: usize,
    /// How each host run ended.
    runs: Vec<String>,
    /// Open findings this seed shows (see [`known_findings`]).
    known: BTreeSet<&'static str>,
}

/// Findings the simulation made in the host, all fixed since, recognised by
/// their exact signature so a seed that shows one again names it:
/// - `A-failed-commit-loses-intent`: a commit fails while an event that
///   placed an order is journaled; the run stops, the journal keeps the
///   event, and no later run records, sends or refuses its order (a live
///   restart now settles the last journaled event's orders).
/// - `B-fill-booked-twice`: an order whose answer was lost (or whose host
///   died after sending it) is looked up and its fill handed to the strategy;
///   the venue's own fill event for it is then handed over again (fills are
///   now held against the order's cumulative filled size).
/// - `D-stop-drops-last-fills`: a run that stops in the middle of a tick
///   (event limit, stop request) drops the fills its last batch produced
///   (a run now stops at the end of the tick, and a lookup tells the fill it
///   finds).
fn known_findings(
    history: &History,
    moves: &[polybot_host::store::IntentWrite],
    ends: &BTreeSet<u64>,
) -> BTreeSet<&'static str> {
    let mut found = BTreeSet::new();
    let recorded: BTreeSet<&str> = history.orders[STRATEGY]
        .iter()
        .map(|o| o.intent_id.as_str())
        .collect();
    for e in &history.journal[STRATEGY] {
        if let polybot_host::store::Outcome::Handled(actions) = &e.outcome {
            let places = actions
                .iter()
                .filter(|a| matches!(a, polybot_host::contract::Action::PlaceOrder(_)))
                .count();
            for i in 0..places {
                let id = polybot_host::contract::intent_id(e.event.seq, i);
                if !recorded.contains(id.as_str()) && ends.contains(&e.event.seq) {
                    found.insert("A-failed-commit-loses-intent");
                }
            }
        }
    }
    let mut booked: BTreeMap<&str, f64> = BTreeMap::new();
    for t in &history.trades[STRATEGY] {
        *booked.entry(t.intent_id.as_str()).or_default() += t.size;
    }
    let mut filled: BTreeMap<&str, f64> = BTreeMap::new();
    for m in moves {
        filled.insert(m.intent_id.as_str(), m.filled);
    }
    for (id, f) in &filled {
        let b = booked.get(id).copied().unwrap_or(0.0);
        let seq: u64 = id
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if b > f + 1e-9 {
            found.insert("B-fill-booked-twice");
        } else if b + 1e-9 < *f && ends.iter().any(|&e| e >= seq && e - seq <= 4) {
            found.insert("D-stop-drops-last-fills");
        }
    }
    found
}

fn spec(module: &StrategyModule) -> CellSpec {
    CellSpec {
        name: STRATEGY.into(),
        module: module.clone(),
        config_json: r#"{"lookback":3,"threshold":0.01,"cooldown_ms":0}"#.into(),
        restart: polybot_tests::quick_restarts(5),
        checkpoint: CheckpointPolicy {
            every_events: 200,
            every_event_time: Duration::from_secs(3600),
        },
    }
}

async fn simulate(module: &StrategyModule, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let target = 400 + rng.below(400);
    let injected = Arc::new(Injected::default());
    let store = Arc::new(FaultyStore::new(
        rng.next_u64(),
        StoreFaults {
            fail: 0.01 * rng.below(4) as f64,
            slow_chance: 0.05,
            slow: Duration::from_millis(1 + rng.below(400)),
            outage_chance: 0.3,
            outage_len: 30,
        },
        injected.clone(),
    ));
    let venue_faults = VenueFaults {
        error: 0.03 * rng.below(5) as f64,
        lost_response: 0.02 * rng.below(5) as f64,
        feed_error: 0.01,
    };
    let markets: Vec<String> = vec!["sim-0".into(), "sim-1".into()];
    let mut venue = SimVenue::new(
        SimConfig {
            seed,
            markets: markets.clone(),
            ..SimConfig::default()
        },
        PaperConfig {
            starting_cash: STARTING_CASH,
            fee_bps: 0.0,
        },
        Pacing::Unpaced,
    );
    let mut exchange = ExchangeLog::default();
    let mut crashes = rng.below(4);
    let mut problems = Vec::new();
    let mut starts = 0u64;
    let mut runs = Vec::new();
    // Journal seq at which each host run ended.
    let mut ends = BTreeSet::new();
    let setup = ExecSetup::default();
    let limits = RunLimits {
        max_events: Some(target),
        max_event_time: None,
    };
    loop {
        starts += 1;
        if starts > MAX_STARTS {
            problems.push(format!("no clean end after {MAX_STARTS} host starts"));
            break;
        }
        let shared: Arc<dyn StateStore> = store.clone();
        let mut cell = match Cell::start(spec(module), shared).await {
            Ok(cell) => cell,
            Err(e) => {
                injected.add("host-start-failed");
                tracing_free_note(&mut problems, starts, &e.to_string());
                continue;
            }
        };
        let crashed = Arc::new(Notify::new());
        let crash = (crashes > 0).then(|| (rng.below(300), rng.chance(0.5)));
        let mut faulty = FaultyVenue::new(
            &mut venue,
            &mut exchange,
            rng.next_u64(),
            venue_faults,
            crash,
            crashed.clone(),
            injected.clone(),
        );
        let run = runner::run_with(
            &mut cell,
            &mut faulty,
            VenueStart::Fresh,
            limits,
            Arc::new(RunCounters::default()),
            Shutdown::new(),
            &setup,
        );
        let report = tokio::select! {
            biased;
            () = crashed.notified() => None,
            report = tokio::time::timeout(HANG, run) => Some(report),
        };
        drop(faulty);
        drop(cell);
        ends.insert(store.last_seq(STRATEGY).await.unwrap_or(0));
        runs.push(match &report {
            None => format!(
                "run {starts}: crashed at seq {}",
                store.last_seq(STRATEGY).await.unwrap_or(0)
            ),
            Some(Err(_)) => format!("run {starts}: hung"),
            Some(Ok(r)) => format!(
                "run {starts}: {:?} at seq {} ({:?})",
                r.stop, r.last_seq, r.fatal
            ),
        });
        match report {
            None => crashes -= 1,
            Some(Err(_)) => {
                problems.push(format!("run {starts} hung for {HANG:?} of event-loop time"));
                break;
            }
            Some(Ok(report)) => match report.stop {
                StopReason::EventLimit => break,
                StopReason::Fatal => injected.add("host-fatal-stop"),
                other => {
                    problems.push(format!(
                        "run {starts} stopped with {other:?}: {:?}",
                        report.fatal
                    ));
                    break;
                }
            },
        }
    }

    store.heal();
    let mut history = History::read_with_intents(store.as_ref(), &[STRATEGY])
        .await
        .expect("read the history back");
    let moves = store
        .intent_transitions(STRATEGY)
        .await
        .expect("intent moves");
    let paper = venue.paper();
    let summary = paper.summary();
    let record = VenueRecord {
        orders: None,
        order_count: None,
        fill_count: Some(summary.fills),
        positions: Some(
            markets
                .iter()
                .map(|m| (m.clone(), paper.position(m)))
                .collect(),
        ),
        cash_change: Some(summary.cash - STARTING_CASH),
        realized_pnl: Some(summary.realized_pnl),
    };
    let mut verdict = check(
        &history,
        &Expect {
            venue: [(STRATEGY.to_string(), record)].into(),
            host_starts: Some(starts),
        },
    );
    // Orders at the venue against the host's: none unknown, none sent twice.
    let sent: BTreeSet<String> = history.orders[STRATEGY]
        .iter()
        .map(|o| o.intent_id.clone())
        .collect();
    let received: BTreeSet<String> = exchange.received.iter().cloned().collect();
    let unknown: Vec<&String> = received.difference(&sent).collect();
    let twice = repeated(&exchange.received);
    for id in &unknown {
        verdict.problems.push(format!(
            "the venue received {id}, which the host never recorded"
        ));
    }
    for id in &twice {
        verdict
            .problems
            .push(format!("the venue received {id} more than once"));
    }
    verdict.tallies.insert(
        "venue-received".into(),
        Tally {
            acknowledged: sent.len() as u64,
            recovered: received.intersection(&sent).count() as u64,
            lost: 0,
            duplicated: twice.len() as u64,
            unknown: unknown.len() as u64,
        },
    );
    if std::env::var_os("POLYBOT_SIM_TRACE").is_some() {
        for t in &history.trades[STRATEGY] {
            eprintln!(
                "trade seq {} intent {} {} {} {}@{}",
                t.seq, t.intent_id, t.market, t.side, t.size, t.price
            );
        }
        for m in &moves {
            eprintln!(
                "intent {} step {} {:?} -> {} filled {} ({:?})",
                m.intent_id, m.step, m.from, m.to, m.filled, m.reason
            );
        }
        eprintln!("venue received {:?}", exchange.received);
    }
    let known = known_findings(&history, &moves, &ends);
    let journal = history.journal.remove(STRATEGY).unwrap_or_default();
    Outcome {
        known,
        journal,
        fills: history.trades[STRATEGY].len(),
        verdict,
        problems,
        injected: injected.counts(),
        starts,
        runs,
    }
}

fn tracing_free_note(problems: &mut Vec<String>, start: u64, e: &str) {
    // A start refused by an injected store failure is retried; anything
    // else is a finding.
    if !e.contains("injected") {
        problems.push(format!("start {start}: {e}"));
    }
}

fn run_seed(module: &StrategyModule, seed: u64) -> Outcome {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(simulate(module, seed))
}

/// The checker's problems. Every one fails the seed: the findings
/// [`known_findings`] names are fixed, and a seed showing one again is a
/// regression (its name is printed with the seed).
fn unexplained(v: &polybot_tests::checker::Verdict) -> Vec<String> {
    let mut left = v.problems.clone();
    for (aspect, t) in &v.tallies {
        if t.duplicated > 0 || t.unknown > 0 || t.lost > 0 {
            left.push(format!("{aspect}: {t:?}"));
        }
    }
    left
}

/// Problems of one seed (empty when clean).
fn judge(module: &StrategyModule, seed: u64, twice: bool) -> (Vec<String>, Outcome) {
    let out = run_seed(module, seed);
    let mut problems = out.problems.clone();
    if !unexplained(&out.verdict).is_empty() {
        problems.push(format!("history checker:\n{}", out.verdict));
    }
    if twice {
        let again = run_seed(module, seed);
        if again.journal != out.journal {
            let at = out
                .journal
                .iter()
                .zip(&again.journal)
                .position(|(a, b)| a != b)
                .unwrap_or(out.journal.len().min(again.journal.len()));
            problems.push(format!(
                "not deterministic: two runs of the seed differ at journal entry {at} \
                 ({} vs {} entries)",
                out.journal.len(),
                again.journal.len()
            ));
        }
    }
    (problems, out)
}

#[test]
fn every_seed_passes_the_history_checker() {
    // The call deadline runs on the wall clock, the one input the paused
    // clock does not govern: generous here, so a loaded machine cannot
    // change a seed's outcome (the sandbox suites test the deadline).
    let sandbox = polybot_tests::sandbox(SandboxLimits {
        call_deadline: Duration::from_secs(30),
        ..SandboxLimits::default()
    });
    let module = polybot_tests::load(&sandbox, "momentum");
    let only = std::env::var("POLYBOT_SIM_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("POLYBOT_SIM_SEED must be a number"));
    if std::env::var_os("POLYBOT_SIM_TRACE").is_some() {
        // The host's own log, for reading one seed's story.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,wasmtime=warn,cranelift=warn",
            ))
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Some(seed) = only {
        eprintln!("seed {seed}");
        let (problems, out) = judge(&module, seed, true);
        eprintln!(
            "{}\n{}\nstarts {}, journal {}, fills {}, faults {:?}, finding signatures {:?}",
            out.runs.join("\n"),
            out.verdict,
            out.starts,
            out.journal.len(),
            out.fills,
            out.injected,
            out.known
        );
        assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
        return;
    }
    let count: u64 = std::env::var("POLYBOT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64;
    let results: Vec<(u64, Vec<String>, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let module = module.clone();
                scope.spawn(move || {
                    (0..count)
                        .filter(|s| s % threads == t)
                        .map(|seed| {
                            let (problems, out) = judge(&module, seed, seed % 50 == 0);
                            (seed, problems, out)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("seed thread"))
            .collect()
    });
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut events, mut fills, mut starts) = (0usize, 0usize, 0u64);
    let mut failed = Vec::new();
    let mut known: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for (seed, problems, out) in &results {
        for k in &out.known {
            known.entry(k).or_default().push(*seed);
        }
        for (k, n) in &out.injected {
            *totals.entry(k).or_default() += n;
        }
        events += out.journal.len();
        fills += out.fills;
        starts += out.starts;
        if !problems.is_empty() {
            failed.push(format!(
                "seed {seed} failed (replay: POLYBOT_SIM_SEED={seed} cargo nextest run -p \
                 polybot-tests --test simulation):\n{}",
                problems.join("\n")
            ));
        }
    }
    eprintln!(
        "{count} seeds in {:.1?}: {events} journaled events, {fills} fills, {starts} host \
         starts; faults injected: {totals:?}",
        started.elapsed()
    );
    for (finding, seeds) in &known {
        eprintln!(
            "finding signature {finding}: {} seeds (first: {:?})",
            seeds.len(),
            &seeds[..seeds.len().min(5)]
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
    // The faults must actually have happened.
    for kind in [
        "crash",
        "venue-lost-response",
        "store-slow-commit",
        "venue-429",
    ] {
        assert!(
            totals.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} was injected over {count} seeds"
        );
    }
}
