//! The market WebSocket client against the local server: snapshots, deltas, array frames,
//! keepalive, and the silent-stall watchdog with REST backfill.

use std::time::Duration;

use polybot_polymarket::order::OrderType;
use polybot_polymarket::server::{Fault, FaultPlan};
use polybot_polymarket::types::{LastTrade, MarketEvent, OrderBook, Side, TickSizeChange};
use polybot_polymarket::ws::{BookSource, MarketStream, MarketStreamConfig, StreamMessage};

use crate::util::{MARKET, NO, Sim, YES, start, within};

fn config(sim: &Sim) -> MarketStreamConfig {
    let mut cfg = MarketStreamConfig::new(sim.server.ws_url());
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg
}

/// A book's (bids, asks) as (price, size) pairs, best first.
type Sides = (Vec<(f64, f64)>, Vec<(f64, f64)>);

fn levels(b: &OrderBook) -> Sides {
    (
        b.bids.iter().map(|l| (l.price, l.size)).collect(),
        b.asks.iter().map(|l| (l.price, l.size)).collect(),
    )
}

/// Receives until `pred` accepts a message; returns everything seen up to and including it.
async fn until(
    stream: &mut MarketStream,
    what: &str,
    mut pred: impl FnMut(&StreamMessage) -> bool,
) -> Vec<StreamMessage> {
    within(what, async {
        let mut seen = Vec::new();
        loop {
            let m = stream.recv().await.expect("stream ended");
            let done = pred(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    })
    .await
}

#[tokio::test]
async fn snapshots_then_deltas_keep_the_local_book_current() {
    let sim = start().await;
    sim.publish_default_books();
    let mut stream = MarketStream::spawn(
        config(&sim),
        sim.client.clone(),
        vec![YES.into(), NO.into()],
    );
    // Two assets: the server sends both books as one array frame.
    let mut books = 0;
    until(&mut stream, "both snapshots", |m| {
        if matches!(
            m,
            StreamMessage::Book {
                source: BookSource::Socket,
                ..
            }
        ) {
            books += 1;
        }
        books == 2
    })
    .await;
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );

    // A new book goes out as a price_change diff; the local book follows it.
    sim.feed.publish_book(
        YES,
        MARKET,
        &[(0.49, 10.0), (0.48, 30.0)],
        &[(0.53, 40.0)],
        2_000,
    );
    until(&mut stream, "price change", |m| {
        matches!(m, StreamMessage::PriceChange(_))
    })
    .await;
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );
    assert_eq!(
        stream.book(YES).and_then(|b| b.best_bid()).map(|l| l.price),
        Some(0.49)
    );
}

#[tokio::test]
async fn array_frames_and_unknown_events_are_delivered_in_order() {
    let sim = start().await;
    sim.publish_default_books();
    let mut stream = MarketStream::spawn(config(&sim), sim.client.clone(), vec![YES.into()]);
    until(&mut stream, "snapshot", |m| {
        matches!(m, StreamMessage::Book { .. })
    })
    .await;
    let unknown: serde_json::Value =
        serde_json::json!({"event_type": "new_market", "asset_id": YES});
    sim.feed.publish_raw(&[
        MarketEvent::LastTradePrice(LastTrade {
            asset_id: YES.into(),
            market: MARKET.into(),
            price: 0.5,
            size: 3.0,
            side: Some(Side::Sell),
            fee_rate_bps: Some(0.0),
            timestamp_ms: 3,
        }),
        MarketEvent::TickSizeChange(TickSizeChange {
            asset_id: YES.into(),
            market: MARKET.into(),
            old_tick_size: 0.01,
            new_tick_size: 0.001,
            timestamp_ms: 3,
        }),
        MarketEvent::Unknown {
            event_type: "new_market".into(),
            raw: unknown,
        },
    ]);
    let seen = until(&mut stream, "unknown event", |m| {
        matches!(m, StreamMessage::Other { .. })
    })
    .await;
    let tail: Vec<_> = seen.iter().rev().take(3).rev().collect();
    assert!(matches!(tail[0], StreamMessage::LastTrade(t) if t.price == 0.5));
    assert!(matches!(tail[1], StreamMessage::TickSizeChange(t) if t.new_tick_size == 0.001));
    assert!(
        matches!(tail[2], StreamMessage::Other { event_type, .. } if event_type == "new_market")
    );
    assert_eq!(stream.book(YES).and_then(|b| b.tick_size), Some(0.001));
    assert_eq!(stream.book(YES).and_then(|b| b.last_trade_price), Some(0.5));
}

#[tokio::test]
async fn a_fill_streams_as_one_array_frame_and_the_book_follows() {
    let sim = start().await;
    sim.publish_default_books();
    let mut stream = MarketStream::spawn(config(&sim), sim.client.clone(), vec![YES.into()]);
    until(&mut stream, "snapshot", |m| {
        matches!(m, StreamMessage::Book { .. })
    })
    .await;
    let order = sim.sign("ws-take", Side::Buy, 0.52, 10.0, OrderType::Fok);
    sim.client.post_order(&order).await.expect("post");
    let seen = until(&mut stream, "fill delta", |m| {
        matches!(m, StreamMessage::PriceChange(_))
    })
    .await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, StreamMessage::LastTrade(t) if t.size == 10.0))
    );
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );
    assert_eq!(
        stream.book(YES).and_then(|b| b.best_ask()).map(|l| l.size),
        Some(15.0)
    );
}

#[tokio::test]
async fn silent_stall_is_detected_and_recovered_without_a_gap() {
    let sim = start().await;
    sim.publish_default_books();
    let mut cfg = config(&sim);
    cfg.stall_timeout = Duration::from_millis(300);
    let mut stream = MarketStream::spawn(cfg, sim.client.clone(), vec![YES.into()]);
    until(&mut stream, "snapshot", |m| {
        matches!(m, StreamMessage::Book { .. })
    })
    .await;

    // The socket goes silent (stays open, sends nothing, answers nothing) from its next frame;
    // the book changes meanwhile and the change is never streamed on that socket.
    sim.server
        .set_faults(FaultPlan::times("ws", Fault::WsStall, 1));
    sim.feed.publish_book(
        YES,
        MARKET,
        &[(0.44, 9.0)],
        &[(0.46, 11.0), (0.47, 1.0)],
        5_000,
    );
    let seen = until(&mut stream, "reconnect after stall", |m| {
        matches!(m, StreamMessage::Reconnected { .. })
    })
    .await;
    // The stall really swallowed the change: no delta arrived before the watchdog fired.
    let stalled_at = seen
        .iter()
        .position(|m| matches!(m, StreamMessage::Stalled { silent_for } if *silent_for >= Duration::from_millis(300)))
        .unwrap_or_else(|| panic!("no stall notice: {seen:?}"));
    assert!(
        !seen[..stalled_at]
            .iter()
            .any(|m| matches!(m, StreamMessage::PriceChange(_))),
        "{seen:?}"
    );
    assert_eq!(
        sim.server.faults().rules[0].count,
        Some(0),
        "the stall fault fired"
    );
    assert!(
        seen.iter().any(|m| matches!(m, StreamMessage::Book { source: BookSource::Backfill, book } if book.best_bid().map(|l| l.price) == Some(0.44))),
        "the backfill must bring the change made during the stall: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(StreamMessage::Reconnected { failed, .. }) if failed.is_empty())
    );
    // No gap: the consumer's book is the server's current book.
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );

    // And the new connection streams again.
    sim.feed
        .publish_book(YES, MARKET, &[(0.45, 2.0)], &[(0.46, 11.0)], 6_000);
    until(&mut stream, "delta after recovery", |m| {
        matches!(m, StreamMessage::PriceChange(_))
    })
    .await;
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );
}

#[tokio::test]
async fn missing_pong_is_a_dead_connection() {
    let sim = start().await;
    sim.publish_default_books();
    let mut cfg = config(&sim);
    cfg.ping_interval = Duration::from_millis(50);
    cfg.pong_timeout = Duration::from_millis(200);
    cfg.stall_timeout = Duration::from_secs(60);
    let mut stream = MarketStream::spawn(cfg, sim.client.clone(), vec![YES.into()]);
    until(&mut stream, "snapshot", |m| {
        matches!(m, StreamMessage::Book { .. })
    })
    .await;

    // While PONGs come back the connection stays up: about eight pings' worth, no disconnect.
    let quiet = tokio::time::timeout(Duration::from_millis(400), async {
        loop {
            if let Some(StreamMessage::Disconnected { reason }) = stream.recv().await {
                return reason;
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "disconnected although PONGs arrive: {quiet:?}"
    );

    // A stalled socket stops answering PING too: the keepalive notices.
    sim.server
        .set_faults(FaultPlan::times("ws", Fault::WsStall, 1));
    sim.feed
        .publish_book(YES, MARKET, &[(0.40, 1.0)], &[(0.60, 1.0)], 7_000);
    let seen = until(&mut stream, "disconnect", |m| {
        matches!(m, StreamMessage::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(seen.last(), Some(StreamMessage::Disconnected { reason }) if reason.contains("PONG")),
        "{seen:?}"
    );
    until(&mut stream, "reconnect", |m| {
        matches!(m, StreamMessage::Reconnected { .. })
    })
    .await;
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );
}

#[tokio::test]
async fn dropped_socket_reconnects_and_resubscribes() {
    let sim = start().await;
    sim.publish_default_books();
    let mut stream = MarketStream::spawn(config(&sim), sim.client.clone(), vec![YES.into()]);
    until(&mut stream, "snapshot", |m| {
        matches!(m, StreamMessage::Book { .. })
    })
    .await;
    sim.server
        .set_faults(FaultPlan::times("ws", Fault::DropConnection, 1));
    sim.feed
        .publish_book(YES, MARKET, &[(0.41, 1.0)], &[(0.59, 1.0)], 8_000);
    let seen = until(&mut stream, "reconnect", |m| {
        matches!(m, StreamMessage::Reconnected { .. })
    })
    .await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, StreamMessage::Disconnected { .. })),
        "{seen:?}"
    );
    assert_eq!(
        stream.book(YES).map(|b| levels(&b)),
        sim.feed.book(YES).map(|b| levels(&b))
    );
}
