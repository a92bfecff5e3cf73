//! Deterministic simulation of the host in one process: the real run loop
//! (`runner::run_with`), the real execution layer and a real strategy
//! component, on tokio's paused clock, against the simulated venue and the
//! memory store, with seeded faults around both and seeded crashes.
//!
//! The venue is modelled as a live exchange that outlives the host: one
//! [`SimVenue`] (market plus paper account) survives every crash, while the
//! host's side (cell, run, executor) is dropped at an arbitrary await point
//! and started again on the same store, as a `kill -9` and a restart would.
//! Because the venue does not replay history ([`Venue::replays_history`] is
//! `false` through [`FaultyVenue`]), a restart reconciles with it exactly as a
//! live run does.
//!
//! Faults, all drawn from one seed ([`Rng`]):
//! - venue: every [`VenueError`] class on place, cancel, lookup and open
//!   orders (retryable 429/5xx, rejected, outcome unknown before sending,
//!   425 and cancel-only windows, fatal-free), **lost responses** (the order
//!   reaches the paper exchange, the answer is dropped; its order updates and
//!   fills arrive with the next tick, as a user stream would bring them), and
//!   market-data errors;
//! - store ([`FaultyStore`]): failed and slow commits (`sync`), and outages
//!   (a run of failed commits);
//! - crashes: the run future dropped at a seeded venue call, before or after
//!   the venue acted on it.
//!
//! Limit of the model: the memory store makes a write durable at once, so a
//! crash never loses writes that were not yet committed, and a failed commit
//! only reports failure. Skipping a commit before an order is therefore not
//! visible here (the SIGKILL suites on SQLite and PostgreSQL cover that).
//!
//! Owns only the harness; never changes what the host does. Every seed is
//! judged by [`crate::checker`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use polybot_host::contract::{EventKind, OrderUpdate, PlaceOrder};
use polybot_host::store::memory::MemoryStore;
use polybot_host::store::{
    Checkpoint, HaltRecord, HostState, IntentRow, IntentWrite, JournalEntry, OrderRecord,
    StateStore, StoreError, StrategyStatus, SystemEvent, TradeRecord, Write,
};
use polybot_host::venue::simulated::SimVenue;
use polybot_host::venue::{
    Halt, MarketTick, PortfolioSummary, Unknown, Venue, VenueError, VenueTrade,
};
use tokio::sync::Notify;

/// SplitMix64: small, seedable, the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct Injected(Mutex<BTreeMap<&'static str, u64>>);

impl Injected {
    pub fn add(&self, kind: &'static str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// How often the store fails.
#[derive(Debug, Clone, Copy)]
pub struct StoreFaults {
    /// Chance a commit fails.
    pub fail: f64,
    /// Chance a commit takes `slow` of (paused) time.
    pub slow_chance: f64,
    pub slow: Duration,
    /// Chance a failed commit starts an outage of up to this many commits.
    pub outage_chance: f64,
    pub outage_len: u32,
}

/// What a [`FaultyStore`] does with a checkpoint write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointWrites {
    #[default]
    Keep,
    /// Refused with an error.
    Refuse,
    /// Never finishes (the process is gone mid-write).
    Stall,
}

/// A [`MemoryStore`] whose commits fail, stall and go away on a seeded
/// schedule, and whose checkpoint writes can be refused or stalled on
/// demand. Reads are never faulted (the checker reads through it too).
pub struct FaultyStore {
    inner: MemoryStore,
    rng: Mutex<(Rng, u32)>,
    faults: Mutex<Option<StoreFaults>>,
    checkpoints: Mutex<CheckpointWrites>,
    pub injected: Arc<Injected>,
}

impl FaultyStore {
    pub fn new(seed: u64, faults: StoreFaults, injected: Arc<Injected>) -> Self {
        FaultyStore {
            inner: MemoryStore::new(),
            rng: Mutex::new((Rng::new(seed), 0)),
            faults: Mutex::new(Some(faults)),
            checkpoints: Mutex::new(CheckpointWrites::Keep),
            injected,
        }
    }

    /// What checkpoint writes do from now on.
    pub fn set_checkpoint_writes(&self, what: CheckpointWrites) {
        if let Ok(mut c) = self.checkpoints.lock() {
            *c = what;
        }
    }

    /// No more faults from now on (for reading the history back).
    pub fn heal(&self) {
        if let Ok(mut f) = self.faults.lock() {
            *f = None;
        }
    }

    /// What the next commit does: `Some(delay)` and whether it fails.
    fn roll(&self) -> (Option<Duration>, bool) {
        let Some(f) = self.faults.lock().ok().and_then(|f| *f) else {
            return (None, false);
        };
        let Ok(mut g) = self.rng.lock() else {
            return (None, false);
        };
        let (rng, outage_left) = &mut *g;
        if *outage_left > 0 {
            *outage_left -= 1;
            self.injected.add("store-outage-commit");
            return (None, true);
        }
        let delay = rng.chance(f.slow_chance).then_some(f.slow);
        if delay.is_some() {
            self.injected.add("store-slow-commit");
        }
        if rng.chance(f.fail) {
            self.injected.add("store-failed-commit");
            if rng.chance(f.outage_chance) {
                self.injected.add("store-outage");
                *outage_left = 1 + rng.below(u64::from(f.outage_len.max(1))) as u32;
            }
            return (delay, true);
        }
        (delay, false)
    }
}

#[async_trait::async_trait]
impl StateStore for FaultyStore {
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        if matches!(write, Write::Checkpoint { .. }) {
            let what = self.checkpoints.lock().map(|c| *c).unwrap_or_default();
            match what {
                CheckpointWrites::Keep => {}
                CheckpointWrites::Refuse => {
                    self.injected.add("checkpoint-refused");
                    return Err(StoreError::new("checkpoint", "injected: refused"));
                }
                CheckpointWrites::Stall => {
                    self.injected.add("checkpoint-stalled");
                    std::future::pending::<()>().await;
                }
            }
        }
        self.inner.write(write).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (delay, fail) = self.roll();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if fail {
            return Err(StoreError::new("commit", "injected: database unavailable"));
        }
        self.inner.sync().await
    }

    async fn entries_after(
        &self,
        strategy: &str,
        after: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.entries_after(strategy, after).await
    }

    async fn journal_page(
        &self,
        strategy: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.journal_page(strategy, after, limit).await
    }

    async fn host_states(&self, strategy: &str) -> Result<Vec<HostState>, StoreError> {
        self.inner.host_states(strategy).await
    }

    async fn last_seq(&self, strategy: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(strategy).await
    }

    async fn checkpoints(&self, strategy: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.checkpoints(strategy).await
    }

    async fn system_events(&self, limit: usize) -> Result<Vec<SystemEvent>, StoreError> {
        self.inner.system_events(limit).await
    }

    async fn status(&self) -> Result<Vec<StrategyStatus>, StoreError> {
        self.inner.status().await
    }

    async fn orders(&self, strategy: &str) -> Result<Vec<OrderRecord>, StoreError> {
        self.inner.orders(strategy).await
    }

    async fn trades(&self, strategy: &str) -> Result<Vec<TradeRecord>, StoreError> {
        self.inner.trades(strategy).await
    }

    async fn intents(&self, strategy: Option<&str>) -> Result<Vec<IntentRow>, StoreError> {
        self.inner.intents(strategy).await
    }

    async fn intent_transitions(&self, strategy: &str) -> Result<Vec<IntentWrite>, StoreError> {
        self.inner.intent_transitions(strategy).await
    }

    async fn exec_trades(&self, strategy: &str) -> Result<Vec<String>, StoreError> {
        self.inner.exec_trades(strategy).await
    }

    async fn halt(&self, strategy: &str) -> Result<Option<HaltRecord>, StoreError> {
        self.inner.halt(strategy).await
    }

    async fn heartbeats(&self) -> Result<Vec<polybot_host::store::HeartbeatRecord>, StoreError> {
        self.inner.heartbeats().await
    }
}

/// How often the venue fails, per request.
#[derive(Debug, Clone, Copy)]
pub struct VenueFaults {
    /// Chance a request fails with some error class.
    pub error: f64,
    /// Chance a placed order's answer is lost after the venue took it.
    pub lost_response: f64,
    /// Chance a tick of market data fails.
    pub feed_error: f64,
}

/// What the exchange (outliving every host run) saw.
#[derive(Debug, Default, Clone)]
pub struct ExchangeLog {
    /// Intent ids in the order the paper exchange received them (a resend of
    /// the same id is listed again).
    pub received: Vec<String>,
    /// Order updates and fills of answers that were lost (or of a host that
    /// died before reading them), delivered ahead of the next tick: what a
    /// user stream brings. Outlives the host run, as the exchange does.
    pub stream: Vec<EventKind>,
}

/// The venue as one host run sees it: the surviving [`SimVenue`] behind
/// seeded faults, and the crash trigger. See the module docs.
pub struct FaultyVenue<'a> {
    venue: &'a mut SimVenue,
    log: &'a mut ExchangeLog,
    rng: Rng,
    faults: VenueFaults,
    /// Venue calls left before the crash, and whether it lands after the
    /// call took effect.
    crash: Option<(u64, bool)>,
    crashed: Arc<Notify>,
    injected: Arc<Injected>,
}

impl<'a> FaultyVenue<'a> {
    pub fn new(
        venue: &'a mut SimVenue,
        log: &'a mut ExchangeLog,
        seed: u64,
        faults: VenueFaults,
        crash: Option<(u64, bool)>,
        crashed: Arc<Notify>,
        injected: Arc<Injected>,
    ) -> Self {
        FaultyVenue {
            venue,
            log,
            rng: Rng::new(seed),
            faults,
            crash,
            crashed,
            injected,
        }
    }

    /// Counts a venue call toward the crash; `Some(after)` when this call crashes.
    fn crash_due(&mut self) -> Option<bool> {
        let (left, after) = self.crash.as_mut()?;
        if *left == 0 {
            let after = *after;
            self.crash = None;
            return Some(after);
        }
        *left -= 1;
        None
    }

    async fn die(&self) -> ! {
        self.injected.add("crash");
        self.crashed.notify_one();
        std::future::pending::<()>().await;
        unreachable!("a pending future never resolves")
    }

    /// A seeded error of some class, or `None`.
    fn error(&mut self, placing: bool) -> Option<VenueError> {
        if !self.rng.chance(self.faults.error) {
            return None;
        }
        let venue = "sim".to_string();
        Some(match self.rng.below(if placing { 6 } else { 3 }) {
            0 => {
                self.injected.add("venue-429");
                VenueError::Retryable {
                    venue,
                    message: "injected 429 Too Many Requests".into(),
                    retry_after: Some(Duration::from_millis(500)),
                }
            }
            1 => {
                self.injected.add("venue-5xx");
                VenueError::Retryable {
                    venue,
                    message: "injected 502 Bad Gateway".into(),
                    retry_after: None,
                }
            }
            2 => {
                self.injected.add("venue-timeout-unsent");
                VenueError::OutcomeUnknown {
                    venue,
                    cause: Unknown::Timeout,
                    message: "injected timeout before the request left".into(),
                }
            }
            3 => {
                self.injected.add("venue-425");
                VenueError::Halted {
                    venue,
                    halt: Halt::TooEarly,
                    message: "injected 425".into(),
                }
            }
            4 => {
                self.injected.add("venue-cancel-only");
                VenueError::Halted {
                    venue,
                    halt: Halt::CancelOnly,
                    message: "injected cancel-only".into(),
                }
            }
            _ => {
                self.injected.add("venue-rejected");
                VenueError::Rejected {
                    venue,
                    reason: "injected 400 invalid order".into(),
                    code: Some("INVALID_ORDER".into()),
                }
            }
        })
    }
}

impl Venue for FaultyVenue<'_> {
    fn name(&self) -> &str {
        "sim"
    }

    async fn next_tick(&mut self) -> Result<Option<MarketTick>, VenueError> {
        if let Some(after) = self.crash_due() {
            if after {
                let _ = self.venue.next_tick().await;
            }
            self.die().await;
        }
        if self.rng.chance(self.faults.feed_error) {
            self.injected.add("feed-error");
            return Err(VenueError::unavailable("sim", "injected market-data drop"));
        }
        let mut tick = self.venue.next_tick().await?;
        if let Some(tick) = tick.as_mut()
            && !self.log.stream.is_empty()
        {
            let mut events = std::mem::take(&mut self.log.stream);
            events.append(&mut tick.events);
            tick.events = events;
        }
        Ok(tick)
    }

    async fn place_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError> {
        if let Some(after) = self.crash_due() {
            if after {
                self.log.received.push(intent_id.to_string());
                let events = self.venue.place_order(intent_id, order).await?;
                self.log.stream.extend(events);
            }
            self.die().await;
        }
        if let Some(e) = self.error(true) {
            return Err(e);
        }
        self.log.received.push(intent_id.to_string());
        let events = self.venue.place_order(intent_id, order).await?;
        if self.rng.chance(self.faults.lost_response) {
            self.injected.add("venue-lost-response");
            self.log.stream.extend(events);
            return Err(VenueError::OutcomeUnknown {
                venue: "sim".into(),
                cause: Unknown::LostResponse,
                message: "injected: the answer was lost".into(),
            });
        }
        Ok(events)
    }

    async fn cancel_order(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        if let Some(after) = self.crash_due() {
            if after {
                let events = self.venue.cancel_order(intent_id).await?;
                self.log.stream.extend(events);
            }
            self.die().await;
        }
        if let Some(e) = self.error(false) {
            return Err(e);
        }
        self.venue.cancel_order(intent_id).await
    }

    async fn open_orders(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        if let Some(e) = self.error(false) {
            return Err(e);
        }
        self.venue.open_orders().await
    }

    async fn lookup_order(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        if let Some(e) = self.error(false) {
            return Err(e);
        }
        self.venue.lookup_order(intent_id).await
    }

    fn portfolio(&self) -> PortfolioSummary {
        self.venue.portfolio()
    }

    async fn trades_since(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        if let Some(e) = self.error(false) {
            return Err(e);
        }
        self.venue.trades_since(since_ms).await
    }
}

/// Ids in `ids` seen more than once.
pub fn repeated(ids: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|id| !seen.insert(id.as_str()))
        .cloned()
        .collect()
}
