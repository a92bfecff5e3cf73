//! A seeded, deterministic simulated market of binary-outcome tokens.
//!
//! [`SimMarket`] owns the fair value of each simulated market, the books it
//! quotes around that value and the trade prints it invents. The same
//! [`SimConfig`] (seed included) always produces the same event sequence, so a
//! run against it can be replayed exactly.
//!
//! Its whole state can be taken out ([`SimMarket::state`]) and put back into
//! a market built from the same configuration ([`SimMarket::restore`]), which
//! then continues with exactly the events the original would have produced.
//!
//! It does not execute anyone's orders (that is [`super::paper::PaperExchange`])
//! and has no notion of wall-clock time or pacing (that is
//! [`super::simulated::SimVenue`]): time here is event time only.

use rand::rngs::ChaCha12Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::contract::{Book, EventKind, Level, Side, TradePrint};

/// Prices live on a grid of 0.01; the book is built in whole ticks (cents) so
/// the float prices it publishes are always the nearest f64 to a tick.
const TICKS_PER_UNIT: i64 = 100;
/// Fair value is kept away from 0 and 1 so there is always room for a tick on
/// each side of it and the logit stays finite.
const MIN_FAIR: f64 = 0.02;
const MAX_FAIR: f64 = 0.98;
/// AR(1) coefficient of the drift: close to 1 so trends last tens of updates
/// (about `1 / (1 - DRIFT_PERSISTENCE)`) before fading.
const DRIFT_PERSISTENCE: f64 = 0.98;
/// Std-dev of the drift's innovations relative to `volatility`. With the
/// persistence above, the drift's stationary std-dev is about half the noise,
/// which over a trend's lifetime dominates the noise: momentum is findable.
const DRIFT_SHOCK_SCALE: f64 = 0.1;
/// Whole-share size range of each quoted level.
const MIN_LEVEL_SIZE: u64 = 50;
const MAX_LEVEL_SIZE: u64 = 500;

/// How the simulated market behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Seed of the only source of randomness.
    pub seed: u64,
    /// Market ids, updated round-robin.
    pub markets: Vec<String>,
    /// Event time between two steps, in milliseconds.
    pub tick_ms: u64,
    /// Event time before the first step, in milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// Per-update standard deviation of the fair value in logit space.
    pub volatility: f64,
    /// Chance that a step also prints a trade.
    pub trade_probability: f64,
    /// Price levels quoted on each side.
    pub depth: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            markets: vec!["sim-0".into(), "sim-1".into(), "sim-2".into()],
            tick_ms: 200,
            // 2026-01-01T00:00Z
            start_ms: 1_767_225_600_000,
            volatility: 0.03,
            trade_probability: 0.3,
            depth: 5,
        }
    }
}

/// One market's hidden state and its current public book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MarketState {
    /// Fair value in logit space.
    logit: f64,
    /// Slowly mean-reverting drift added to `logit` each update.
    drift: f64,
    book: Book,
}

/// A deterministic simulated market; see the module docs.
#[derive(Debug, PartialEq)]
pub struct SimMarket {
    cfg: SimConfig,
    /// ChaCha12 by name (what `StdRng` is today, named so the stream and its
    /// saved position stay valid whatever `rand` makes standard later).
    rng: ChaCha12Rng,
    /// Second Box–Muller variate, kept so no randomness is thrown away.
    spare_normal: Option<f64>,
    now_ms: u64,
    /// Index of the market the next step updates.
    next: usize,
    states: Vec<MarketState>,
}

impl SimMarket {
    /// Builds the market and an initial book for every market id, so
    /// [`SimMarket::book`] answers before the first step.
    pub fn new(cfg: SimConfig) -> Self {
        let mut sim = Self {
            rng: ChaCha12Rng::seed_from_u64(cfg.seed),
            spare_normal: None,
            now_ms: cfg.start_ms,
            next: 0,
            states: Vec::with_capacity(cfg.markets.len()),
            cfg,
        };
        for i in 0..sim.cfg.markets.len() {
            // Start somewhere unremarkable so early books are not pinned to an edge.
            let fair = sim.rng.random_range(0.3..0.7);
            let logit = logit(fair);
            let book = sim.quote(i, fair);
            sim.states.push(MarketState {
                logit,
                drift: 0.0,
                book,
            });
        }
        sim
    }

    /// Advances event time by one tick and updates the next market in
    /// round-robin order. Returns the new event time, that market's book and,
    /// sometimes, a trade printed at its touch.
    pub fn step(&mut self) -> (u64, Vec<EventKind>) {
        self.now_ms = self.now_ms.saturating_add(self.cfg.tick_ms);
        if self.states.is_empty() {
            return (self.now_ms, Vec::new());
        }
        let i = self.next;
        self.next = (self.next + 1) % self.states.len();

        let fair = self.evolve(i);
        let book = self.quote(i, fair);
        let trade = self.maybe_trade(&book);
        self.states[i].book = book.clone();

        let mut events = vec![EventKind::Book(book)];
        events.extend(trade.map(EventKind::Trade));
        (self.now_ms, events)
    }

    /// Everything needed to continue this market exactly where it is.
    pub fn state(&self) -> SimMarketState {
        SimMarketState {
            cfg: self.cfg.clone(),
            rng: self.rng.serialize_state().to_vec(),
            spare_normal: self.spare_normal,
            now_ms: self.now_ms,
            next: self.next as u64,
            states: self.states.clone(),
        }
    }

    /// Puts back a state taken by [`SimMarket::state`].
    ///
    /// # Errors
    /// The state belongs to a market of another configuration (seed, markets,
    /// timing or shape), or is malformed; the market is then unchanged.
    pub fn restore(&mut self, state: SimMarketState) -> Result<(), String> {
        if state.cfg != self.cfg {
            return Err(format!(
                "saved for another simulated market ({:?}, this one is {:?})",
                state.cfg, self.cfg
            ));
        }
        let rng: [u8; 49] = state.rng.as_slice().try_into().map_err(|_| {
            format!(
                "random generator state has {} bytes, not 49",
                state.rng.len()
            )
        })?;
        if state.states.len() != self.cfg.markets.len()
            || state.next >= (self.cfg.markets.len().max(1) as u64)
        {
            return Err(format!(
                "{} market states (next {}) for {} markets",
                state.states.len(),
                state.next,
                self.cfg.markets.len()
            ));
        }
        self.rng = ChaCha12Rng::deserialize_state(&rng);
        self.spare_normal = state.spare_normal;
        self.now_ms = state.now_ms;
        self.next = state.next as usize;
        self.states = state.states;
        Ok(())
    }

    /// Event time of the last step (`start_ms` before the first).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The current book of `market`, or `None` for an unknown market.
    pub fn book(&self, market: &str) -> Option<&Book> {
        let i = self.cfg.markets.iter().position(|m| m == market)?;
        self.states.get(i).map(|s| &s.book)
    }

    /// The simulated market ids.
    pub fn markets(&self) -> &[String] {
        &self.cfg.markets
    }

    /// Moves market `i`'s fair value one update and returns it as a probability.
    fn evolve(&mut self, i: usize) -> f64 {
        let vol = self.cfg.volatility;
        let drift_shock = self.normal() * vol * DRIFT_SHOCK_SCALE;
        let noise = self.normal() * vol;
        let state = &mut self.states[i];
        state.drift = DRIFT_PERSISTENCE * state.drift + drift_shock;
        state.logit += state.drift + noise;

        let (lo, hi) = (logit(MIN_FAIR), logit(MAX_FAIR));
        if state.logit < lo || state.logit > hi {
            state.logit = state.logit.clamp(lo, hi);
            // A trend running into an edge would otherwise keep the price pinned
            // there for as long as the drift takes to decay.
            state.drift = 0.0;
        }
        logistic(state.logit)
    }

    /// Builds a book for market `i` with the touch on ticks around `fair`.
    fn quote(&mut self, i: usize, fair: f64) -> Book {
        let fair = fair.clamp(MIN_FAIR, MAX_FAIR);
        let fair_ticks = fair * TICKS_PER_UNIT as f64;
        // A spread of one tick straddles the fair value; a spread of two is
        // centred on its nearest tick. Either way bid >= 1 and ask <= 99 because
        // the fair value is within [2, 98] ticks.
        let (best_bid, best_ask) = if self.rng.random_bool(0.5) {
            let bid = (fair_ticks.floor() as i64).min(TICKS_PER_UNIT - 2);
            (bid, bid + 1)
        } else {
            let centre = fair_ticks.round() as i64;
            (centre - 1, centre + 1)
        };
        let best_bid = best_bid.max(1);
        let best_ask = best_ask.clamp(best_bid + 1, TICKS_PER_UNIT - 1);

        let depth = self.cfg.depth as i64;
        // Levels that would fall on 0 or 1 are dropped rather than quoted.
        let bids = (0..depth)
            .map(|k| best_bid - k)
            .take_while(|&t| t >= 1)
            .map(|t| self.level(t))
            .collect();
        let asks = (0..depth)
            .map(|k| best_ask + k)
            .take_while(|&t| t < TICKS_PER_UNIT)
            .map(|t| self.level(t))
            .collect();
        Book {
            market: self.cfg.markets[i].clone(),
            bids,
            asks,
        }
    }

    fn level(&mut self, ticks: i64) -> Level {
        Level {
            price: ticks as f64 / TICKS_PER_UNIT as f64,
            size: self.rng.random_range(MIN_LEVEL_SIZE..=MAX_LEVEL_SIZE) as f64,
        }
    }

    /// With `trade_probability`, a trade at the touch of `book` by a random aggressor.
    fn maybe_trade(&mut self, book: &Book) -> Option<TradePrint> {
        let p = self.cfg.trade_probability;
        // random_bool rejects probabilities outside [0, 1]; a misconfigured
        // probability is clamped instead of panicking mid-run.
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        if !self.rng.random_bool(p) {
            return None;
        }
        let side = if self.rng.random_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        // A buyer lifts the ask, a seller hits the bid.
        let touch = match side {
            Side::Buy => book.asks.first(),
            Side::Sell => book.bids.first(),
        }?;
        let max = (touch.size as u64).max(1);
        let size = self.rng.random_range(1..=max) as f64;
        Some(TradePrint {
            market: book.market.clone(),
            price: touch.price,
            size: size.min(touch.size),
            side,
        })
    }

    /// A standard normal variate by the Box–Muller transform.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // `random::<f64>()` is in [0, 1); 1 - u is in (0, 1], so ln never sees 0.
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// A [`SimMarket`]'s state, for saving; see [`SimMarket::state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimMarketState {
    /// The configuration it ran, so it is never put into another market.
    cfg: SimConfig,
    /// The random generator's seed, stream and position.
    rng: Vec<u8>,
    spare_normal: Option<f64>,
    now_ms: u64,
    next: u64,
    states: Vec<MarketState>,
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: SimConfig, steps: usize) -> Vec<(u64, Vec<EventKind>)> {
        let mut sim = SimMarket::new(cfg);
        (0..steps).map(|_| sim.step()).collect()
    }

    fn on_tick(price: f64) -> bool {
        let t = price * TICKS_PER_UNIT as f64;
        (t - t.round()).abs() < 1e-9
    }

    #[test]
    fn same_seed_gives_identical_events() {
        let a = run(SimConfig::default(), 2_000);
        let b = run(SimConfig::default(), 2_000);
        assert_eq!(a, b);
    }

    #[test]
    fn the_generator_is_the_standard_one() {
        // Journals written before the generator was named must still replay:
        // ChaCha12 seeded the same way gives StdRng's stream.
        use rand::rngs::StdRng;
        let mut standard = StdRng::seed_from_u64(42);
        let mut named = ChaCha12Rng::seed_from_u64(42);
        for _ in 0..1_000 {
            assert_eq!(standard.random::<u64>(), named.random::<u64>());
        }
    }

    #[test]
    fn a_restored_market_continues_exactly() {
        let cfg = SimConfig::default();
        let mut original = SimMarket::new(cfg.clone());
        // An odd number of steps leaves a spare normal variate and a
        // part-used block of the generator behind.
        for _ in 0..1_001 {
            original.step();
        }
        let saved = original.state();
        let mut restored = SimMarket::new(cfg.clone());
        restored.restore(saved.clone()).unwrap();
        assert_eq!(restored, original);
        for _ in 0..5_000 {
            assert_eq!(restored.step(), original.step());
        }

        let mut other = SimMarket::new(SimConfig { seed: 7, ..cfg });
        let before = other.state();
        let err = other.restore(saved).unwrap_err();
        assert!(err.contains("another simulated market"), "{err}");
        assert_eq!(other.state(), before, "a refused state changes nothing");
    }

    #[test]
    fn different_seed_gives_different_events() {
        let a = run(SimConfig::default(), 200);
        let b = run(
            SimConfig {
                seed: 43,
                ..SimConfig::default()
            },
            200,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn time_advances_and_markets_round_robin() {
        let cfg = SimConfig::default();
        let mut sim = SimMarket::new(cfg.clone());
        assert_eq!(sim.now_ms(), cfg.start_ms);
        for n in 1..=7u64 {
            let (ts, events) = sim.step();
            assert_eq!(ts, cfg.start_ms + n * cfg.tick_ms);
            assert_eq!(sim.now_ms(), ts);
            let EventKind::Book(book) = &events[0] else {
                panic!("first event of a step must be a book, got {:?}", events[0]);
            };
            let expected = &cfg.markets[((n - 1) % 3) as usize];
            assert_eq!(&book.market, expected);
            assert_eq!(sim.book(expected), Some(book));
        }
        assert!(sim.book("nope").is_none());
        assert_eq!(sim.markets(), cfg.markets.as_slice());
    }

    #[test]
    fn books_are_sane_over_100k_steps() {
        let cfg = SimConfig {
            // Higher volatility drives prices into the edges, where quoting is hardest.
            volatility: 0.3,
            ..SimConfig::default()
        };
        let depth = cfg.depth;
        let mut sim = SimMarket::new(cfg);
        let mut trades = 0usize;
        let mut min_mid: f64 = 1.0;
        let mut max_mid: f64 = 0.0;
        for _ in 0..100_000 {
            let (_, events) = sim.step();
            let EventKind::Book(book) = &events[0] else {
                panic!("first event of a step must be a book");
            };
            let (bid, ask) = (book.best_bid().unwrap(), book.best_ask().unwrap());
            assert!(bid < ask, "crossed or locked book {book:?}");
            let spread_ticks = ((ask - bid) * 100.0).round() as i64;
            assert!(
                (1..=2).contains(&spread_ticks),
                "spread {spread_ticks} in {book:?}"
            );
            assert!(!book.bids.is_empty() && book.bids.len() <= depth);
            assert!(!book.asks.is_empty() && book.asks.len() <= depth);
            for w in book.bids.windows(2) {
                assert!(w[0].price > w[1].price, "bids not best first {book:?}");
            }
            for w in book.asks.windows(2) {
                assert!(w[0].price < w[1].price, "asks not best first {book:?}");
            }
            for l in book.bids.iter().chain(&book.asks) {
                assert!(
                    l.price > 0.0 && l.price < 1.0,
                    "price out of (0,1) {book:?}"
                );
                assert!(on_tick(l.price), "off-tick price {}", l.price);
                assert!((50.0..=500.0).contains(&l.size) && l.size.fract() == 0.0);
            }
            let mid = book.mid().unwrap();
            min_mid = min_mid.min(mid);
            max_mid = max_mid.max(mid);
            if let Some(EventKind::Trade(t)) = events.get(1) {
                trades += 1;
                let touch = match t.side {
                    Side::Buy => &book.asks[0],
                    Side::Sell => &book.bids[0],
                };
                assert_eq!(t.price, touch.price);
                assert!(t.size >= 1.0 && t.size <= touch.size);
            }
        }
        // About 30% of steps print a trade.
        assert!((25_000..35_000).contains(&trades), "{trades} trades");
        // The walk must actually reach the edges for this test to mean anything.
        assert!(
            min_mid < 0.05 && max_mid > 0.95,
            "mid range {min_mid}..{max_mid}"
        );
    }

    #[test]
    fn fair_value_trends() {
        // Momentum needs positively autocorrelated moves of the fair value.
        let cfg = SimConfig {
            markets: vec!["only".into()],
            ..SimConfig::default()
        };
        let mut sim = SimMarket::new(cfg);
        let mut prev_logit = sim.states[0].logit;
        let mut prev_move = 0.0;
        let (mut same, mut total) = (0u32, 0u32);
        for _ in 0..20_000 {
            sim.step();
            let logit = sim.states[0].logit;
            let mv = logit - prev_logit;
            if prev_move != 0.0 && mv != 0.0 {
                total += 1;
                same += u32::from((mv > 0.0) == (prev_move > 0.0));
            }
            prev_logit = logit;
            prev_move = mv;
        }
        let frac = f64::from(same) / f64::from(total);
        assert!(
            frac > 0.53,
            "consecutive moves agree only {frac:.3} of the time"
        );
    }

    #[test]
    fn no_markets_only_advances_time() {
        let mut sim = SimMarket::new(SimConfig {
            markets: Vec::new(),
            ..SimConfig::default()
        });
        let (ts, events) = sim.step();
        assert_eq!(ts, SimConfig::default().start_ms + 200);
        assert!(events.is_empty());
    }
}
