//! The checker's own tests: clean histories pass, and each planted problem
//! (a gap, a duplicated trade, a lost or unknown order, two terminal states,
//! a missing start) is counted and named.

use super::*;
use polybot_host::contract::{Event, Fill, OrderType, PlaceOrder};

fn entry(seq: u64, kind: EventKind, actions: Vec<Action>) -> JournalEntry {
    JournalEntry {
        event: Event {
            seq,
            timestamp_ms: seq,
            kind,
        },
        outcome: Outcome::Handled(actions),
    }
}

fn place() -> Action {
    Action::PlaceOrder(PlaceOrder {
        market: "m".into(),
        side: Side::Buy,
        price: 0.5,
        size: 2.0,
        order_type: OrderType::Fak,
    })
}

fn fill(size: f64) -> EventKind {
    EventKind::Fill(Fill {
        intent_id: "1.0".into(),
        market: "m".into(),
        side: Side::Buy,
        price: 0.5,
        size,
        fee: 0.0,
    })
}

fn trade(seq: u64, size: f64) -> TradeRecord {
    TradeRecord {
        seq,
        intent_id: "1.0".into(),
        market: "m".into(),
        side: "buy".into(),
        price: 0.5,
        size,
        fee: 0.0,
        pnl: 0.0,
        executed_at_ms: seq,
    }
}

fn order() -> OrderRecord {
    OrderRecord::placed(
        "1.0".into(),
        1,
        &PlaceOrder {
            market: "m".into(),
            side: Side::Buy,
            price: 0.5,
            size: 2.0,
            order_type: OrderType::Fak,
        },
        0,
    )
}

/// A clean history: one order, its fill, then the fill's reversal.
fn clean() -> (History, Expect) {
    let s = "s".to_string();
    let mut h = History::default();
    h.journal.insert(
        s.clone(),
        vec![
            entry(1, EventKind::Timer(1), vec![place()]),
            entry(2, fill(2.0), vec![]),
            entry(3, fill(-2.0), vec![]),
        ],
    );
    h.orders.insert(s.clone(), vec![order()]);
    h.trades
        .insert(s.clone(), vec![trade(2, 2.0), trade(3, -2.0)]);
    let mut e = Expect::default();
    e.venue.insert(
        s,
        VenueRecord {
            orders: Some(vec![VenueOrder {
                intent_id: None,
                market: "m".into(),
                side: Side::Buy,
                price: 0.5,
                size: 2.0,
            }]),
            fill_count: Some(0),
            positions: Some(BTreeMap::from([("m".to_string(), 0.0)])),
            cash_change: Some(0.0),
            realized_pnl: Some(0.0),
            ..VenueRecord::default()
        },
    );
    (h, e)
}

#[test]
fn a_clean_history_is_clean() {
    let (h, e) = clean();
    let v = check(&h, &e);
    v.assert_clean();
    assert_eq!(v.tally("orders").recovered, 1);
    assert_eq!(v.tally("fills").recovered, 2);
    assert!(v.skipped.iter().any(|s| s.contains("intents")));
}

#[test]
fn a_gap_in_the_journal_is_lost() {
    let (mut h, e) = clean();
    h.journal.get_mut("s").unwrap().remove(1);
    h.trades.get_mut("s").unwrap().remove(0);
    let v = check(&h, &e);
    assert!(!v.is_clean());
    assert_eq!(v.tally("journal").lost, 1, "{v}");
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("misses 1 seq(s), first 2")),
        "{v}"
    );
}

#[test]
fn a_duplicated_trade_is_counted_and_breaks_the_money() {
    let (mut h, e) = clean();
    h.trades.get_mut("s").unwrap().push(trade(2, 2.0));
    let v = check(&h, &e);
    assert_eq!(v.tally("fills").duplicated, 1, "{v}");
    assert!(
        v.problems.iter().any(|p| p.contains("position in m")),
        "{v}"
    );
    assert!(v.problems.iter().any(|p| p.contains("cash change")), "{v}");
}

#[test]
fn realised_pnl_that_differs_from_the_venues_is_named() {
    let (mut h, e) = clean();
    h.trades.get_mut("s").unwrap()[0].pnl = -0.01;
    let v = check(&h, &e);
    assert!(v.problems.iter().any(|p| p.contains("realised PnL")), "{v}");
}

#[test]
fn orders_lost_duplicated_or_unknown_at_the_venue_are_counted() {
    let (h, mut e) = clean();
    let venue = e.venue.get_mut("s").unwrap();
    let sent = venue.orders.as_ref().unwrap()[0].clone();
    venue.orders = Some(vec![sent.clone(), sent.clone()]);
    assert_eq!(check(&h, &e).tally("venue-orders").duplicated, 1);
    let venue = e.venue.get_mut("s").unwrap();
    venue.orders = Some(vec![VenueOrder { size: 3.0, ..sent }]);
    let t = check(&h, &e).tally("venue-orders");
    assert_eq!((t.lost, t.unknown), (1, 1));
}

#[test]
fn an_order_missing_from_the_orders_table_and_two_terminal_states_are_caught() {
    let (mut h, e) = clean();
    h.orders.get_mut("s").unwrap().clear();
    h.intents = Some(BTreeMap::from([(
        "s".to_string(),
        vec![IntentRecord {
            intent_id: "1.0".into(),
            states: vec![
                "pending".into(),
                "sent".into(),
                "filled".into(),
                "cancelled".into(),
            ],
        }],
    )]));
    let v = check(&h, &e);
    assert_eq!(v.tally("orders").lost, 1);
    assert!(
        v.problems.iter().any(|p| p.contains("2 terminal states")),
        "{v}"
    );
}

#[tokio::test]
async fn it_reads_a_store_and_finds_a_duplicated_trade_and_missing_restarts() {
    use polybot_host::store::Write;
    use polybot_host::store::memory::MemoryStore;
    let (h, e) = clean();
    let store = MemoryStore::new();
    for entry in &h.journal["s"] {
        let w = Write::Journal {
            strategy: "s".into(),
            entry: entry.clone(),
        };
        store.write(w).await.unwrap();
    }
    let w = Write::Order {
        strategy: "s".into(),
        order: order(),
    };
    store.write(w).await.unwrap();
    for t in [trade(2, 2.0), trade(3, -2.0), trade(3, -2.0)] {
        let w = Write::Trade {
            strategy: "s".into(),
            trade: t,
        };
        store.write(w).await.unwrap();
    }
    let read = History::read(&store, &["s"]).await.unwrap();
    assert_eq!(read.journal["s"].len(), 3);
    let e = Expect {
        host_starts: Some(1),
        ..e
    };
    let v = check_and_print(&read, &e);
    assert_eq!(v.tally("fills").duplicated, 1);
    assert_eq!(v.tally("restarts").lost, 1, "no starting event was written");
    assert!(!v.is_clean());
}
