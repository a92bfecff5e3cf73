//! Market data endpoints: every shape the client reads, served by the local server.

use polybot_polymarket::rest::{ClobError, HistoryQuery};
use polybot_polymarket::server::{MidpointShape, SimOptions};
use polybot_polymarket::types::{Level, Side};

use crate::util::{MARKET, NO, YES, start, start_with};

#[tokio::test]
async fn ok_and_time() {
    let sim = start().await;
    sim.client.ok().await.expect("ok");
    let t = sim.client.server_time().await.expect("time");
    assert!(t > 1_700_000_000, "{t}");
}

#[tokio::test]
async fn book_comes_back_best_first() {
    let sim = start().await;
    sim.publish_default_books();
    let b = sim.client.book(YES).await.expect("book");
    assert_eq!(b.market, MARKET);
    assert_eq!(
        b.bids,
        [
            Level {
                price: 0.48,
                size: 30.0
            },
            Level {
                price: 0.47,
                size: 50.0
            }
        ]
    );
    assert_eq!(
        b.asks,
        [
            Level {
                price: 0.52,
                size: 25.0
            },
            Level {
                price: 0.53,
                size: 40.0
            }
        ]
    );
    assert_eq!(b.tick_size, Some(0.01));
    let both = sim
        .client
        .books(&[YES.to_string(), NO.to_string()])
        .await
        .expect("books");
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].asset_id, NO);
}

#[tokio::test]
async fn unknown_and_invalid_tokens_are_typed_rejections() {
    let sim = start().await;
    let err = sim.client.book("999").await.expect_err("unknown");
    assert!(
        matches!(
            &err,
            ClobError::Rejected {
                status: 404,
                endpoint: "GET /book",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("No orderbook exists"), "{err}");
    let err = sim.client.book("abc").await.expect_err("invalid");
    assert!(
        matches!(&err, ClobError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn midpoint_in_both_shapes() {
    for shape in [MidpointShape::Mid, MidpointShape::MidPrice] {
        let sim = start_with(SimOptions {
            midpoint_shape: shape,
            ..SimOptions::default()
        })
        .await;
        sim.publish_default_books();
        let mid = sim.client.midpoint(YES).await.expect("midpoint");
        assert!((mid - 0.5).abs() < 1e-9, "{shape:?}: {mid}");
    }
}

#[tokio::test]
async fn price_spread_last_trade_tick() {
    let sim = start().await;
    sim.publish_default_books();
    assert_eq!(sim.client.price(YES, Side::Buy).await.expect("bid"), 0.48);
    assert_eq!(sim.client.price(YES, Side::Sell).await.expect("ask"), 0.52);
    assert!((sim.client.spread(YES).await.expect("spread") - 0.04).abs() < 1e-9);
    sim.feed.publish_trade(YES, Side::Buy, 0.51, 10.0, 2_000);
    assert_eq!(
        sim.client.last_trade_price(YES).await.expect("last").0,
        0.51
    );
    assert_eq!(sim.client.tick_size(YES).await.expect("tick"), 0.01);
    sim.feed.set_market_params(YES, 0.001, 5.0, false);
    assert_eq!(sim.client.tick_size(YES).await.expect("tick"), 0.001);
}

#[tokio::test]
async fn prices_history_follows_published_books() {
    let sim = start().await;
    sim.feed.publish_book(
        YES,
        MARKET,
        &[(0.40, 1.0)],
        &[(0.42, 1.0)],
        1_700_000_000_000,
    );
    sim.feed.publish_book(
        YES,
        MARKET,
        &[(0.50, 1.0)],
        &[(0.52, 1.0)],
        1_700_000_060_000,
    );
    let all = sim
        .client
        .prices_history(YES, &HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(
        all.iter().map(|p| (p.t, p.p)).collect::<Vec<_>>(),
        [(1_700_000_000, 0.41), (1_700_000_060, 0.51)]
    );
    let q = HistoryQuery {
        start_ts: Some(1_700_000_030),
        ..HistoryQuery::default()
    };
    assert_eq!(
        sim.client
            .prices_history(YES, &q)
            .await
            .expect("history")
            .len(),
        1
    );
}

#[tokio::test]
async fn markets_pagination_is_followed_to_the_end_marker() {
    let sim = start_with(SimOptions {
        page_size: 2,
        ..SimOptions::default()
    })
    .await;
    for i in 0..5u32 {
        let market = format!("0xc{i}");
        sim.feed.publish_book(
            &format!("{}", 2000 + 2 * i),
            &market,
            &[(0.4, 1.0)],
            &[(0.6, 1.0)],
            1,
        );
        sim.feed.publish_book(
            &format!("{}", 2001 + 2 * i),
            &market,
            &[(0.4, 1.0)],
            &[(0.6, 1.0)],
            1,
        );
    }
    let first = sim.client.markets_page("MA==").await.expect("first page");
    assert_eq!(first.data.len(), 2);
    assert!(!first.is_last());
    let all = sim.client.markets().await.expect("markets");
    assert_eq!(
        all.iter()
            .map(|m| m.condition_id.as_str())
            .collect::<Vec<_>>(),
        ["0xc0", "0xc1", "0xc2", "0xc3", "0xc4"]
    );
    assert_eq!(
        all[4]
            .tokens
            .iter()
            .map(|t| t.token_id.as_str())
            .collect::<Vec<_>>(),
        ["2008", "2009"]
    );
    assert!(
        sim.client
            .markets_page("LTE=")
            .await
            .expect("end")
            .is_last()
    );
}

#[tokio::test]
async fn gamma_markets_decode_string_encoded_arrays() {
    let sim = start().await;
    sim.publish_default_books();
    let g = sim
        .client
        .gamma_markets(&[("closed", "false")])
        .await
        .expect("gamma");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].token_ids, [YES, NO]);
    assert_eq!(g[0].outcomes, ["Yes", "No"]);
    assert_eq!(g[0].outcome_prices.len(), 2);
    assert_eq!(g[0].condition_id.as_deref(), Some(MARKET));
}
