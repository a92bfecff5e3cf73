//! Orders: post, match, look up, cancel, duplicates, authentication, heartbeats.

use std::time::Duration;

use polybot_polymarket::auth::Secret;
use polybot_polymarket::order::OrderType;
use polybot_polymarket::rest::{ClobClient, ClobConfig, ClobError, RejectCode, TransportKind};
use polybot_polymarket::server::{Fault, FaultPlan, SimOptions};
use polybot_polymarket::types::{OrderStatus, Side};

use crate::util::{MARKET, YES, credentials, start, start_with, within};

#[tokio::test]
async fn resting_order_is_posted_looked_up_and_cancelled() {
    let sim = start().await;
    sim.publish_default_books();
    let order = sim.sign("rest-1", Side::Buy, 0.45, 10.0, OrderType::Gtc);
    let resp = sim.client.post_order(&order).await.expect("post");
    // The hash computed before sending is the venue's order id.
    assert_eq!(resp.order_id, order.order_hash);
    assert_eq!(resp.status, Some(OrderStatus::Live));

    let found = sim
        .client
        .get_order(&order.order_hash)
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(
        (found.status, found.side, found.price, found.original_size),
        (OrderStatus::Live, Side::Buy, 0.45, 10.0)
    );
    let open = sim
        .client
        .open_orders(Some(MARKET), None)
        .await
        .expect("open orders");
    assert_eq!(
        open.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        [order.order_hash.as_str()]
    );

    let c = sim
        .client
        .cancel_order(&order.order_hash)
        .await
        .expect("cancel");
    assert_eq!(c.canceled, std::slice::from_ref(&order.order_hash));
    let again = sim
        .client
        .cancel_order(&order.order_hash)
        .await
        .expect("cancel again");
    assert!(again.not_canceled.contains_key(&order.order_hash));
    let found = sim
        .client
        .get_order(&order.order_hash)
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(found.status, OrderStatus::Canceled);
    assert!(
        sim.client
            .open_orders(None, None)
            .await
            .expect("open")
            .is_empty()
    );
    assert_eq!(sim.client.get_order("0xdead").await.expect("lookup"), None);
}

#[tokio::test]
async fn marketable_order_matches_against_the_book() {
    let sim = start().await;
    sim.publish_default_books();
    let order = sim.sign("take-1", Side::Buy, 0.53, 30.0, OrderType::Gtc);
    let resp = sim.client.post_order(&order).await.expect("post");
    assert_eq!(resp.status, Some(OrderStatus::Matched));
    assert_eq!(resp.trade_ids.len(), 2);
    // 25 @ 0.52 then 5 @ 0.53.
    let book = sim.feed.book(YES).expect("book");
    assert_eq!(
        book.asks
            .iter()
            .map(|l| (l.price, l.size))
            .collect::<Vec<_>>(),
        [(0.53, 35.0)]
    );
    let trades = sim.client.trades().await.expect("trades");
    assert_eq!(
        trades.iter().map(|t| (t.price, t.size)).collect::<Vec<_>>(),
        [(0.52, 25.0), (0.53, 5.0)]
    );
    assert!(
        trades
            .iter()
            .all(|t| t.taker_order_id.as_deref() == Some(order.order_hash.as_str()))
    );

    // FOK beyond the available size is rejected; FAK takes what is there.
    let fok = sim.sign("fok-1", Side::Buy, 0.53, 100.0, OrderType::Fok);
    let err = sim.client.post_order(&fok).await.expect_err("fok");
    assert!(
        matches!(
            err,
            ClobError::Rejected {
                code: Some(RejectCode::FokOrderNotFilled),
                ..
            }
        ),
        "{err}"
    );
    let fak = sim.sign("fak-1", Side::Buy, 0.53, 100.0, OrderType::Fak);
    assert_eq!(
        sim.client.post_order(&fak).await.expect("fak").status,
        Some(OrderStatus::Matched)
    );
    assert!(sim.feed.book(YES).expect("book").asks.is_empty());
}

#[tokio::test]
async fn reposting_the_same_bytes_is_a_recognisable_duplicate() {
    let sim = start().await;
    sim.publish_default_books();
    let order = sim.sign("dup-1", Side::Sell, 0.60, 5.0, OrderType::Gtc);
    sim.client.post_order(&order).await.expect("first post");
    let resend = sim.sign("dup-1", Side::Sell, 0.60, 5.0, OrderType::Gtc);
    assert_eq!(resend.body, order.body);
    let err = sim.client.post_order(&resend).await.expect_err("duplicate");
    assert!(err.is_duplicate(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(sim.server.orders().len(), 1);
}

#[tokio::test]
async fn lost_acknowledgement_is_recovered_by_lookup_then_duplicate() {
    let sim = start().await;
    sim.publish_default_books();
    sim.server
        .set_faults(FaultPlan::times("POST /order", Fault::LoseResponse, 1));
    let order = sim.sign("lost-1", Side::Buy, 0.40, 5.0, OrderType::Gtc);
    let err = sim.client.post_order(&order).await.expect_err("ack lost");
    assert!(
        matches!(
            err,
            ClobError::Transport {
                kind: TransportKind::Interrupted,
                ..
            }
        ),
        "{err}"
    );
    // The recipe: look it up by the hash known before sending; it exists, so do not re-sign.
    let found = sim
        .client
        .get_order(&order.order_hash)
        .await
        .expect("lookup");
    assert_eq!(found.map(|o| o.status), Some(OrderStatus::Live));
    assert!(
        sim.client
            .post_order(&order)
            .await
            .expect_err("resend")
            .is_duplicate()
    );
}

#[tokio::test]
async fn batch_cancels() {
    let sim = start().await;
    sim.publish_default_books();
    let mut ids = Vec::new();
    for i in 0..4 {
        let o = sim.sign(
            &format!("batch-{i}"),
            Side::Buy,
            0.30 + 0.01 * f64::from(i),
            5.0,
            OrderType::Gtc,
        );
        sim.client.post_order(&o).await.expect("post");
        ids.push(o.order_hash);
    }
    let c = sim
        .client
        .cancel_orders(&ids[..2])
        .await
        .expect("cancel orders");
    assert_eq!(c.canceled.len(), 2);
    let c = sim
        .client
        .cancel_market_orders(Some(MARKET), Some(YES))
        .await
        .expect("cancel market");
    assert_eq!(c.canceled.len(), 2);
    let post = sim.sign("batch-9", Side::Buy, 0.2, 5.0, OrderType::Gtc);
    sim.client.post_order(&post).await.expect("post");
    assert_eq!(
        sim.client.cancel_all().await.expect("cancel all").canceled,
        [post.order_hash]
    );
    assert!(
        sim.client
            .open_orders(None, None)
            .await
            .expect("open")
            .is_empty()
    );
}

#[tokio::test]
async fn order_validation_errors_are_typed() {
    let sim = start().await;
    sim.publish_default_books();
    sim.feed.set_market_params(YES, 0.01, 10.0, false);
    let small = sim.sign("small", Side::Buy, 0.40, 5.0, OrderType::Gtc);
    let err = sim
        .client
        .post_order(&small)
        .await
        .expect_err("below min size");
    assert!(
        matches!(
            err,
            ClobError::Rejected {
                code: Some(RejectCode::InvalidOrderMinSize),
                ..
            }
        ),
        "{err}"
    );
    let mut tampered = sim.sign("tampered", Side::Buy, 0.40, 20.0, OrderType::Gtc);
    tampered.body = tampered.body.replace(
        "\"takerAmount\":\"20000000\"",
        "\"takerAmount\":\"30000000\"",
    );
    let err = sim
        .client
        .post_order(&tampered)
        .await
        .expect_err("bad signature");
    assert!(
        matches!(
            err,
            ClobError::Rejected {
                code: Some(RejectCode::InvalidSignature),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn authentication_failures_are_unauthorized_or_missing() {
    let sim = start().await;
    sim.publish_default_books();
    let mut creds = credentials(&sim.server);
    creds.secret = Secret::new("d3Jvbmctc2VjcmV0");
    let wrong = ClobClient::new(ClobConfig::new(
        sim.server.base_url(),
        sim.server.gamma_url(),
    ))
    .expect("client")
    .with_credentials(creds);
    let err = wrong.open_orders(None, None).await.expect_err("bad hmac");
    assert!(
        matches!(
            err,
            ClobError::Unauthorized {
                endpoint: "GET /data/orders",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    let anonymous = ClobClient::new(ClobConfig::new(
        sim.server.base_url(),
        sim.server.gamma_url(),
    ))
    .expect("client");
    assert!(matches!(
        anonymous.cancel_all().await,
        Err(ClobError::NoCredentials { .. })
    ));
    // Market data needs no credentials.
    anonymous.book(YES).await.expect("public book");
}

#[tokio::test]
async fn dead_man_switch_cancels_when_heartbeats_stop() {
    let sim = start_with(SimOptions {
        heartbeat_timeout: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    sim.publish_default_books();
    let order = sim.sign("hb-1", Side::Buy, 0.40, 5.0, OrderType::Gtc);
    sim.client.post_order(&order).await.expect("post");
    let mut fired = sim.server.dead_man_fired();

    // Heartbeats every 100 ms keep it alive for three timeouts.
    let mut id = String::new();
    let mut beat = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..9 {
        beat.tick().await;
        id = sim
            .client
            .heartbeat(&id)
            .await
            .expect("heartbeat")
            .heartbeat_id;
    }
    assert!(!id.is_empty());
    assert_eq!(*fired.borrow(), 0);
    assert_eq!(
        sim.client
            .get_order(&order.order_hash)
            .await
            .expect("lookup")
            .map(|o| o.status),
        Some(OrderStatus::Live)
    );

    // Then stop: the switch fires and the order is gone.
    within("dead-man switch", fired.changed())
        .await
        .expect("watch open");
    let after = sim
        .client
        .get_order(&order.order_hash)
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(after.status, OrderStatus::Canceled);
    assert!(
        sim.client
            .open_orders(None, None)
            .await
            .expect("open")
            .is_empty()
    );
}

#[tokio::test]
async fn neg_risk_orders_are_signed_for_the_neg_risk_exchange() {
    let sim = start().await;
    sim.publish_default_books();
    sim.feed.set_market_params(YES, 0.01, 1.0, true);
    let mut i = crate::util::intent("nr-1", Side::Buy, 0.40, 5.0, OrderType::Gtc);
    let wrong = sim
        .signer
        .sign(&i, &sim.server.credentials().api_key)
        .expect("sign");
    assert!(
        sim.client.post_order(&wrong).await.is_err(),
        "standard-exchange signature must not verify"
    );
    i.neg_risk = true;
    let right = sim
        .signer
        .sign(&i, &sim.server.credentials().api_key)
        .expect("sign");
    assert_eq!(
        sim.client.post_order(&right).await.expect("post").order_id,
        right.order_hash
    );
}

#[tokio::test]
async fn post_only_mode_refuses_takers_and_accepts_resting_orders() {
    let sim = start().await;
    sim.publish_default_books();
    sim.server.set_post_only(true);
    let taker = sim.sign("po-1", Side::Buy, 0.52, 5.0, OrderType::Fak);
    let err = sim.client.post_order(&taker).await.expect_err("refused");
    assert!(
        matches!(
            err,
            ClobError::Rejected {
                code: Some(RejectCode::InvalidPostOnly),
                ..
            }
        ),
        "{err}"
    );
    let rest = sim.sign("po-2", Side::Buy, 0.45, 5.0, OrderType::Gtc);
    sim.client.post_order(&rest).await.expect("resting order");
    sim.server.set_post_only(false);
    let taker = sim.sign("po-3", Side::Buy, 0.52, 5.0, OrderType::Fak);
    let resp = sim.client.post_order(&taker).await.expect("taker after");
    assert_eq!(resp.status, Some(OrderStatus::Matched));
    assert_eq!(
        sim.server.orders().len(),
        2,
        "the refused taker left no order"
    );
}

#[tokio::test]
async fn trades_settle_or_fail_as_the_server_is_told() {
    let sim = start().await;
    sim.publish_default_books();
    let taker = sim.sign("settle-1", Side::Buy, 0.52, 5.0, OrderType::Fak);
    let resp = sim.client.post_order(&taker).await.expect("taker");
    let id = resp.trade_ids.first().cloned().expect("a trade");
    let status = |trades: Vec<polybot_polymarket::types::Trade>| {
        trades
            .into_iter()
            .find(|t| t.id == id)
            .and_then(|t| t.status)
    };
    assert_eq!(
        status(sim.client.trades().await.expect("trades")).as_deref(),
        Some("MATCHED")
    );
    assert!(sim.server.set_trade_status(&id, "mined"));
    assert_eq!(status(sim.server.trades()).as_deref(), Some("MINED"));
    assert!(sim.server.set_trade_status(&id, "FAILED"));
    assert_eq!(
        status(sim.client.trades().await.expect("trades")).as_deref(),
        Some("FAILED")
    );
    assert!(!sim.server.set_trade_status("no-such-trade", "CONFIRMED"));
}

#[tokio::test]
async fn the_rate_limit_warning_header_is_counted_by_the_client() {
    let sim = start().await;
    sim.publish_default_books();
    sim.server
        .set_faults(FaultPlan::times("POST /order", Fault::RateLimitWarning, 1));
    assert_eq!(sim.client.rate_limit_warnings(), 0);
    let first = sim.sign("warn-1", Side::Buy, 0.45, 5.0, OrderType::Gtc);
    sim.client
        .post_order(&first)
        .await
        .expect("served despite the warning");
    assert_eq!(sim.client.rate_limit_warnings(), 1);
    let second = sim.sign("warn-2", Side::Buy, 0.45, 5.0, OrderType::Gtc);
    sim.client.post_order(&second).await.expect("post");
    assert_eq!(sim.client.rate_limit_warnings(), 1, "no header, no count");
    assert_eq!(sim.server.orders().len(), 2);
}
