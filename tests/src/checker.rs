//! The history checker: judges what a run left behind — the host's store and
//! the venue's own record — and prints its counts, as Jepsen's set checker
//! does: acknowledged, recovered, lost (must be 0), duplicated (must be 0).
//!
//! What it checks, per strategy:
//! - **journal**: every seq from 1 to the last exactly once, no gaps;
//! - **intents**: every order intent the journal raised is in the `orders`
//!   table exactly once, and no row there is unknown to the journal; when an
//!   intents table is given ([`History::intents`]), each intent has exactly
//!   one terminal state (skipped, with a printed note, when the store has no
//!   intents table);
//! - **venue orders**: the orders the venue received are the orders sent,
//!   none twice, none unknown to the host;
//! - **fills**: every fill event of the journal has exactly one `trades`
//!   row, and every row has its fill event (a reversal is a fill with a
//!   negative size, recorded as its own row);
//! - **money**: net shares per market, the change in cash and the realised
//!   PnL summed from `trades` equal the venue's, when the venue states them;
//! - **restarts**: at least as many `starting` system events as the harness
//!   started the host.
//!
//! It reads through the host's own store API ([`History::read`]) and never
//! writes. The venue's record ([`VenueRecord`]) comes from the suite: the
//! local CLOB server's order and trade log, or the simulated venue's report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use polybot_host::contract::{Action, EventKind, Side};
use polybot_host::store::{
    JournalEntry, OrderRecord, Outcome, StateStore, StoreError, SystemEvent, TradeRecord,
};

/// Amounts closer than this are equal.
const EPS: f64 = 1e-6;

/// One intent's recorded states, from an intents table.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentRecord {
    pub intent_id: String,
    /// Every state it was recorded in, oldest first.
    pub states: Vec<String>,
}

/// The host's side of the history, per strategy.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub journal: BTreeMap<String, Vec<JournalEntry>>,
    pub orders: BTreeMap<String, Vec<OrderRecord>>,
    pub trades: BTreeMap<String, Vec<TradeRecord>>,
    /// `None` when the store keeps no intents table.
    pub intents: Option<BTreeMap<String, Vec<IntentRecord>>>,
    /// Per strategy: recorded orders the host never sent (see
    /// `never_sent`), from the store's intent moves. The venue is not
    /// expected to know them.
    pub never_sent: BTreeMap<String, BTreeSet<String>>,
    pub system_events: Vec<SystemEvent>,
}

impl History {
    /// Reads the history of `strategies` from `store`.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn read(store: &dyn StateStore, strategies: &[&str]) -> Result<History, StoreError> {
        let mut history = History::default();
        for &s in strategies {
            let mut journal = Vec::new();
            loop {
                let after = journal.last().map_or(0, |e: &JournalEntry| e.event.seq);
                let page = store.journal_page(s, after, 1000).await?;
                if page.is_empty() {
                    break;
                }
                journal.extend(page);
            }
            history.journal.insert(s.to_string(), journal);
            let orders = store.orders(s).await?;
            history.never_sent.insert(
                s.to_string(),
                never_sent(&orders, &store.intent_transitions(s).await?),
            );
            history.orders.insert(s.to_string(), orders);
            history.trades.insert(s.to_string(), store.trades(s).await?);
        }
        history.system_events = store.system_events(usize::MAX >> 1).await?;
        Ok(history)
    }
}

impl History {
    /// [`History::read`], plus each intent's recorded states from the
    /// store's intent moves, so every intent is checked for exactly one
    /// terminal state.
    ///
    /// # Errors
    /// The store cannot be read.
    pub async fn read_with_intents(
        store: &dyn StateStore,
        strategies: &[&str],
    ) -> Result<History, StoreError> {
        let mut history = History::read(store, strategies).await?;
        let mut all = BTreeMap::new();
        for &s in strategies {
            let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for m in store.intent_transitions(s).await? {
                by_id.entry(m.intent_id).or_default().push(m.to);
            }
            all.insert(
                s.to_string(),
                by_id
                    .into_iter()
                    .map(|(intent_id, states)| IntentRecord { intent_id, states })
                    .collect(),
            );
        }
        history.intents = Some(all);
        Ok(history)
    }
}

/// Orders the host never sent: their intent has no recorded move (the host
/// stopped between recording the order and making the intent durable, which
/// precedes every send), or its moves end `rejected` without the venue ever
/// having acknowledged or filled it.
fn never_sent(
    orders: &[OrderRecord],
    moves: &[polybot_host::store::IntentWrite],
) -> BTreeSet<String> {
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in moves {
        seen.entry(m.intent_id.as_str())
            .or_default()
            .push(m.to.as_str());
    }
    orders
        .iter()
        .filter(|o| match seen.get(o.intent_id.as_str()) {
            None => true,
            Some(states) => {
                states.last() == Some(&"rejected")
                    && !states.iter().any(|s| {
                        matches!(
                            *s,
                            "acknowledged" | "partially-filled" | "filled" | "cancelled"
                        )
                    })
            }
        })
        .map(|o| o.intent_id.clone())
        .collect()
}

/// An order as the venue recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct VenueOrder {
    /// The host's intent id, when the venue knows it (paper, simulated);
    /// otherwise orders are matched by market, side, price and size.
    pub intent_id: Option<String>,
    pub market: String,
    pub side: Side,
    pub price: f64,
    pub size: f64,
}

/// The venue's own record of one strategy's orders and money.
#[derive(Debug, Clone, Default)]
pub struct VenueRecord {
    /// Every order the venue received, once each as it recorded them; `None`
    /// when the venue states only a count ([`VenueRecord::order_count`]).
    pub orders: Option<Vec<VenueOrder>>,
    /// Orders received, when only a count is known.
    pub order_count: Option<u64>,
    /// Fills the venue made (reversed ones excluded), when known.
    pub fill_count: Option<u64>,
    /// Net shares held per market at the venue, when known.
    pub positions: Option<BTreeMap<String, f64>>,
    /// Change of cash over the run at the venue, when known.
    pub cash_change: Option<f64>,
    /// Realised PnL of the venue's account (paper), when known: the sum of
    /// `trades.pnl` must equal it, since both are booked by the one ledger.
    pub realized_pnl: Option<f64>,
}

/// Counts for one aspect of the history, set-checker style.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Items the host acknowledged (journaled, recorded).
    pub acknowledged: u64,
    /// Of those, found where they must be.
    pub recovered: u64,
    /// Missing where they must be. Must be 0.
    pub lost: u64,
    /// Present more than once. Must be 0.
    pub duplicated: u64,
    /// Present but never acknowledged. Must be 0.
    pub unknown: u64,
}

impl Tally {
    fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unknown == 0
    }
}

/// The checker's judgement: counts per aspect, and every problem found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Aspect (`journal`, `orders`, `venue-orders`, `fills`, …) → counts.
    pub tallies: BTreeMap<String, Tally>,
    /// One line per problem.
    pub problems: Vec<String>,
    /// Checks that could not run, and why.
    pub skipped: Vec<String>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.tallies.values().all(Tally::is_clean)
    }

    /// The counts of `aspect` (all zero when it was not checked).
    pub fn tally(&self, aspect: &str) -> Tally {
        self.tallies.get(aspect).cloned().unwrap_or_default()
    }

    /// Panics with the whole table unless the history is clean.
    pub fn assert_clean(&self) {
        assert!(
            self.is_clean(),
            "the history checker found problems:\n{self}"
        );
    }

    fn add(&mut self, aspect: &str, t: Tally) {
        let e = self.tallies.entry(aspect.to_string()).or_default();
        e.acknowledged += t.acknowledged;
        e.recovered += t.recovered;
        e.lost += t.lost;
        e.duplicated += t.duplicated;
        e.unknown += t.unknown;
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>12} {:>10} {:>6} {:>10} {:>8}",
            "history", "acknowledged", "recovered", "lost", "duplicated", "unknown"
        )?;
        for (aspect, t) in &self.tallies {
            writeln!(
                f,
                "{aspect:<14} {:>12} {:>10} {:>6} {:>10} {:>8}",
                t.acknowledged, t.recovered, t.lost, t.duplicated, t.unknown
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped: {s}")?;
        }
        for p in &self.problems {
            writeln!(f, "PROBLEM: {p}")?;
        }
        write!(
            f,
            "verdict: {}",
            if self.is_clean() {
                "clean"
            } else {
                "NOT clean"
            }
        )
    }
}

/// What the harness knows beyond the store: the venue's record per strategy
/// and how many times it started the host.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub venue: BTreeMap<String, VenueRecord>,
    /// Host starts the harness made (each must show as a `starting` system
    /// event of every strategy); `None` skips the check.
    pub host_starts: Option<u64>,
}

/// Judges `history` against `expect`; prints nothing (see [`check_and_print`]).
pub fn check(history: &History, expect: &Expect) -> Verdict {
    let mut v = Verdict::default();
    for (strategy, journal) in &history.journal {
        check_journal(&mut v, strategy, journal);
        let raised = raised_intents(journal);
        let orders = history.orders.get(strategy).map_or(&[][..], Vec::as_slice);
        check_orders(&mut v, strategy, &raised, orders);
        match &history.intents {
            Some(intents) => check_intents(
                &mut v,
                strategy,
                &raised,
                intents.get(strategy).map_or(&[][..], Vec::as_slice),
            ),
            None => v.skipped.push(format!(
                "{strategy}: intents in one terminal state (this store keeps no intents table)"
            )),
        }
        let trades = history.trades.get(strategy).map_or(&[][..], Vec::as_slice);
        check_fills(&mut v, strategy, journal, trades);
        match expect.venue.get(strategy) {
            Some(venue) => {
                let never_sent = history.never_sent.get(strategy);
                let sent: Vec<OrderRecord> = orders
                    .iter()
                    .filter(|o| !never_sent.is_some_and(|n| n.contains(&o.intent_id)))
                    .cloned()
                    .collect();
                if sent.len() < orders.len() {
                    v.skipped.push(format!(
                        "{strategy}: {} recorded orders never reached the venue (settled as rejected)",
                        orders.len() - sent.len()
                    ));
                }
                check_venue(&mut v, strategy, &sent, trades, venue);
            }
            None => v
                .skipped
                .push(format!("{strategy}: the venue's record (none given)")),
        }
        if let Some(starts) = expect.host_starts {
            let seen = history
                .system_events
                .iter()
                .filter(|e| {
                    e.event_type == "state-change" && e.message == format!("{strategy} starting")
                })
                .count() as u64;
            v.add(
                "restarts",
                Tally {
                    acknowledged: starts,
                    recovered: seen.min(starts),
                    lost: starts.saturating_sub(seen),
                    ..Tally::default()
                },
            );
        }
    }
    v
}

/// [`check`], then prints the table to stderr.
pub fn check_and_print(history: &History, expect: &Expect) -> Verdict {
    let v = check(history, expect);
    eprintln!("{v}");
    v
}

fn check_journal(v: &mut Verdict, strategy: &str, journal: &[JournalEntry]) {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for e in journal {
        *seen.entry(e.event.seq).or_default() += 1;
    }
    let last = seen.keys().next_back().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=last).filter(|s| !seen.contains_key(s)).collect();
    let duplicated: u64 = seen.values().map(|n| n - 1).sum();
    if !missing.is_empty() {
        v.problems.push(format!(
            "{strategy}: journal misses {} seq(s), first {}",
            missing.len(),
            missing[0]
        ));
    }
    if duplicated > 0 {
        v.problems.push(format!(
            "{strategy}: journal holds {duplicated} repeated seq(s)"
        ));
    }
    v.add(
        "journal",
        Tally {
            acknowledged: last,
            recovered: seen.len() as u64,
            lost: missing.len() as u64,
            duplicated,
            unknown: 0,
        },
    );
}

/// The order intents the journal raised, by id, in journal order.
fn raised_intents(journal: &[JournalEntry]) -> Vec<String> {
    journal
        .iter()
        .flat_map(|e| match &e.outcome {
            Outcome::Handled(actions) => {
                polybot_host::supervisor::plan(e.event.seq, actions.clone())
                    .into_iter()
                    .filter(|p| matches!(p.action, Action::PlaceOrder(_)))
                    .map(|p| p.intent_id)
                    .collect()
            }
            Outcome::Quarantined { .. } => Vec::new(),
        })
        .collect()
}

/// Counts `ids` against the acknowledged set `raised`.
fn tally_ids<'a>(
    raised: &[String],
    ids: impl IntoIterator<Item = &'a str>,
) -> (Tally, Vec<String>) {
    let acknowledged: BTreeSet<&str> = raised.iter().map(String::as_str).collect();
    let mut count: HashMap<&str, u64> = HashMap::new();
    for id in ids {
        *count.entry(id).or_default() += 1;
    }
    let mut problems = Vec::new();
    let mut t = Tally {
        acknowledged: acknowledged.len() as u64,
        ..Tally::default()
    };
    for id in &acknowledged {
        match count.get(id) {
            Some(_) => t.recovered += 1,
            None => {
                t.lost += 1;
                problems.push(format!("intent {id} missing"));
            }
        }
    }
    for (id, n) in &count {
        if *n > 1 {
            t.duplicated += n - 1;
            problems.push(format!("intent {id} present {n} times"));
        }
        if !acknowledged.contains(id) {
            t.unknown += 1;
            problems.push(format!("intent {id} unknown to the journal"));
        }
    }
    problems.sort();
    (t, problems)
}

fn check_orders(v: &mut Verdict, strategy: &str, raised: &[String], orders: &[OrderRecord]) {
    let (t, problems) = tally_ids(raised, orders.iter().map(|o| o.intent_id.as_str()));
    v.problems.extend(
        problems
            .into_iter()
            .map(|p| format!("{strategy}: orders table: {p}")),
    );
    v.add("orders", t);
}

fn check_intents(v: &mut Verdict, strategy: &str, raised: &[String], intents: &[IntentRecord]) {
    let (t, problems) = tally_ids(raised, intents.iter().map(|i| i.intent_id.as_str()));
    v.problems.extend(
        problems
            .into_iter()
            .map(|p| format!("{strategy}: intents: {p}")),
    );
    v.add("intents", t);
    const TERMINAL: [&str; 3] = ["filled", "cancelled", "rejected"];
    for i in intents {
        let terminal = i
            .states
            .iter()
            .filter(|s| TERMINAL.contains(&s.as_str()))
            .count();
        if terminal != 1 {
            v.problems.push(format!(
                "{strategy}: intent {} reached {terminal} terminal states ({})",
                i.intent_id,
                i.states.join(" → ")
            ));
        }
    }
}

fn check_fills(v: &mut Verdict, strategy: &str, journal: &[JournalEntry], trades: &[TradeRecord]) {
    let fills: BTreeSet<u64> = journal
        .iter()
        .filter(|e| matches!(e.event.kind, EventKind::Fill(_)))
        .map(|e| e.event.seq)
        .collect();
    let mut rows: BTreeMap<u64, u64> = BTreeMap::new();
    for t in trades {
        *rows.entry(t.seq).or_default() += 1;
    }
    let mut t = Tally {
        acknowledged: fills.len() as u64,
        ..Tally::default()
    };
    for seq in &fills {
        if rows.contains_key(seq) {
            t.recovered += 1;
        } else {
            t.lost += 1;
            v.problems.push(format!(
                "{strategy}: the fill at seq {seq} has no trades row"
            ));
        }
    }
    for (seq, n) in &rows {
        if *n > 1 {
            t.duplicated += n - 1;
            v.problems.push(format!(
                "{strategy}: the fill at seq {seq} is in trades {n} times"
            ));
        }
        if !fills.contains(seq) {
            t.unknown += 1;
            v.problems.push(format!(
                "{strategy}: trades row at seq {seq} is no fill of the journal"
            ));
        }
    }
    v.add("fills", t);
}

fn side_of(text: &str) -> Side {
    if text == "sell" {
        Side::Sell
    } else {
        Side::Buy
    }
}

fn check_venue(
    v: &mut Verdict,
    strategy: &str,
    orders: &[OrderRecord],
    trades: &[TradeRecord],
    venue: &VenueRecord,
) {
    match (&venue.orders, venue.order_count) {
        (Some(at_venue), _) => {
            let mut t = Tally {
                acknowledged: orders.len() as u64,
                ..Tally::default()
            };
            // Each venue order matched to one sent order: by intent id when
            // the venue knows it, else by what the order says.
            let mut unmatched: Vec<&OrderRecord> = orders.iter().collect();
            let mut matched_ids: HashMap<String, u64> = HashMap::new();
            for o in at_venue {
                let pos = unmatched.iter().position(|s| match &o.intent_id {
                    Some(id) => &s.intent_id == id,
                    None => {
                        s.market == o.market
                            && side_of(&s.side) == o.side
                            && (s.price - o.price).abs() < EPS
                            && (s.size - o.size).abs() < EPS
                    }
                });
                match pos {
                    Some(i) => {
                        let s = unmatched.remove(i);
                        *matched_ids.entry(s.intent_id.clone()).or_default() += 1;
                        t.recovered += 1;
                    }
                    None => {
                        let again = o
                            .intent_id
                            .as_ref()
                            .is_some_and(|id| matched_ids.contains_key(id))
                            || orders.iter().any(|s| {
                                s.market == o.market
                                    && side_of(&s.side) == o.side
                                    && (s.price - o.price).abs() < EPS
                                    && (s.size - o.size).abs() < EPS
                            });
                        if again {
                            t.duplicated += 1;
                            v.problems
                                .push(format!("{strategy}: the venue holds an order twice: {o:?}"));
                        } else {
                            t.unknown += 1;
                            v.problems.push(format!(
                                "{strategy}: the venue holds an order the host never sent: {o:?}"
                            ));
                        }
                    }
                }
            }
            for s in unmatched {
                t.lost += 1;
                v.problems.push(format!(
                    "{strategy}: order {} was sent but the venue has no record of it",
                    s.intent_id
                ));
            }
            v.add("venue-orders", t);
        }
        (None, Some(n)) => {
            let sent = orders.len() as u64;
            if n != sent {
                v.problems.push(format!(
                    "{strategy}: the venue received {n} orders, the host recorded {sent}"
                ));
            }
            v.add(
                "venue-orders",
                Tally {
                    acknowledged: sent,
                    recovered: n.min(sent),
                    lost: sent.saturating_sub(n),
                    duplicated: n.saturating_sub(sent),
                    unknown: 0,
                },
            );
        }
        (None, None) => v
            .skipped
            .push(format!("{strategy}: orders at the venue (not given)")),
    }

    // Money: net shares and cash from the trades table.
    let mut shares: BTreeMap<String, f64> = BTreeMap::new();
    let mut cash = 0.0;
    let mut net_fills: i64 = 0;
    for t in trades {
        let signed = match side_of(&t.side) {
            Side::Buy => t.size,
            Side::Sell => -t.size,
        };
        *shares.entry(t.market.clone()).or_default() += signed;
        cash += -signed * t.price - t.fee;
        net_fills += if t.size < 0.0 { -1 } else { 1 };
    }
    if let Some(n) = venue.fill_count
        && net_fills != n as i64
    {
        v.problems.push(format!(
            "{strategy}: the venue made {n} fills, trades nets {net_fills}"
        ));
    }
    if let Some(positions) = &venue.positions {
        let markets: BTreeSet<&String> = positions.keys().chain(shares.keys()).collect();
        for m in markets {
            let ours = shares.get(m).copied().unwrap_or(0.0);
            let theirs = positions.get(m).copied().unwrap_or(0.0);
            if (ours - theirs).abs() > EPS {
                v.problems.push(format!(
                    "{strategy}: position in {m}: trades say {ours}, the venue {theirs}"
                ));
            }
        }
    }
    let pnl: f64 = trades.iter().map(|t| t.pnl).sum();
    if let Some(theirs) = venue.realized_pnl
        && (pnl - theirs).abs() > 1e-4
    {
        v.problems.push(format!(
            "{strategy}: realised PnL: trades say {pnl:.6}, the venue {theirs:.6}"
        ));
    }
    if let Some(theirs) = venue.cash_change
        && (cash - theirs).abs() > 1e-4
    {
        v.problems.push(format!(
            "{strategy}: cash change: trades say {cash:.6}, the venue {theirs:.6}"
        ));
    }
}

#[cfg(test)]
mod tests;
