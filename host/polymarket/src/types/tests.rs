//! Table tests for every documented shape, and property tests that feed random and mutated
//! bytes to every parser: whatever the input, a parser returns `Ok` or `Err`, never panics.

use proptest::prelude::*;

use super::*;

const BOOK: &str = r#"{"market":"0xabc","asset_id":"123","timestamp":"1750428146322",
 "bids":[{"price":"0.46","size":"10"},{"price":"0.47","size":"20"},{"price":"0.48","size":"30"}],
 "asks":[{"price":"0.54","size":"5"},{"price":"0.53","size":"15"},{"price":"0.52","size":"25"}],
 "min_order_size":"5","tick_size":"0.01","neg_risk":false,"hash":"h1","last_trade_price":"0.5"}"#;
const MID: &str = r#"{"mid":"0.45"}"#;
const MID_PRICE: &str = r#"{"mid_price":"0.45"}"#;
const PRICE: &str = r#"{"price":"0.52"}"#;
const SPREAD: &str = r#"{"spread":"0.04"}"#;
const LAST: &str = r#"{"price":"0.5","side":"BUY"}"#;
const HISTORY: &str = r#"{"history":[{"t":1700000000,"p":0.51},{"t":1700000060,"p":0.52}]}"#;
const TICK: &str = r#"{"minimum_tick_size":0.01}"#;
const MARKETS: &str = r#"{"limit":2,"count":2,"next_cursor":"Mg==","data":[
 {"condition_id":"0xc1","question":"Q1?","market_slug":"q1","active":true,"closed":false,
  "accepting_orders":true,"neg_risk":false,"minimum_tick_size":0.01,"minimum_order_size":5,
  "tokens":[{"token_id":"1","outcome":"Yes","price":0.5},{"token_id":"2","outcome":"No","price":0.5}]},
 {"condition_id":"0xc2","tokens":[]}]}"#;
const GAMMA: &str = r#"[{"id":"101","question":"Q?","conditionId":"0xc1","slug":"q",
 "outcomes":"[\"Yes\", \"No\"]","outcomePrices":"[\"0.45\", \"0.55\"]",
 "clobTokenIds":"[\"111\", \"222\"]","enableOrderBook":true,"orderPriceMinTickSize":0.01,
 "orderMinSize":5,"negRisk":false,"active":true,"closed":false,"acceptingOrders":true,
 "bestBid":0.44,"bestAsk":0.46,"endDate":"2026-12-31T00:00:00Z"},
 {"id":"102","version":"v2","outcomes":["Yes","No"],"positionIds":["333","444"]}]"#;
const WS_BOOK: &str = r#"{"event_type":"book","asset_id":"123","market":"0xabc",
 "bids":[{"price":"0.48","size":"30"}],"asks":[{"price":"0.52","size":"25"}],"timestamp":"5","hash":"0x1"}"#;
const WS_ARRAY: &str = r#"[{"event_type":"price_change","market":"0xabc","timestamp":"6",
 "price_changes":[{"asset_id":"123","price":"0.5","size":"200","side":"BUY","hash":"h","best_bid":"0.5","best_ask":"0.52"}]},
 {"event_type":"last_trade_price","asset_id":"123","market":"0xabc","fee_rate_bps":"0","price":"0.456","side":"BUY","size":"219.21","timestamp":"1750428146322"},
 {"event_type":"tick_size_change","asset_id":"123","market":"0xabc","old_tick_size":"0.01","new_tick_size":"0.001","timestamp":"7"},
 {"event_type":"best_bid_ask","asset_id":"123","market":"0xabc","best_bid":"0.5","best_ask":"0.52","spread":"0.02","timestamp":"8"},
 {"event_type":"new_market","market":"0xdef"}]"#;
const POST_RESP: &str = r#"{"success":true,"errorMsg":"","orderID":"0xaa","status":"live",
 "makingAmount":"","takingAmount":"","transactionsHashes":[],"tradeIDs":[]}"#;
const CANCEL: &str = r#"{"canceled":["0x1"],"not_canceled":{"0x2":"order not found"}}"#;
const ORDER: &str = r#"{"id":"0x1","status":"LIVE","market":"0xabc","asset_id":"123","side":"BUY",
 "original_size":"10","size_matched":"2","price":"0.45","created_at":1700000000,"expiration":"0","order_type":"GTC"}"#;
const TRADES: &str = r#"{"data":[{"id":"t1","taker_order_id":"0x1","market":"0xabc","asset_id":"123",
 "side":"BUY","size":"2","price":"0.45","status":"MATCHED","match_time":"1700000001",
 "maker_orders":[{"order_id":"0x9","matched_amount":"2","price":"0.45"}]}],"next_cursor":"LTE="}"#;

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn book_is_normalised_best_first() {
    let b = parse_book(BOOK.as_bytes()).expect("book");
    assert_eq!(b.asset_id, "123");
    assert_eq!(b.timestamp_ms, 1750428146322);
    assert_eq!(
        b.bids.iter().map(|l| l.price).collect::<Vec<_>>(),
        [0.48, 0.47, 0.46]
    );
    assert_eq!(
        b.asks.iter().map(|l| l.price).collect::<Vec<_>>(),
        [0.52, 0.53, 0.54]
    );
    assert_eq!(
        b.best_bid(),
        Some(Level {
            price: 0.48,
            size: 30.0
        })
    );
    assert!(approx(b.midpoint().expect("mid"), 0.5));
    assert_eq!(b.tick_size, Some(0.01));
    assert_eq!(b.neg_risk, Some(false));
    // The wire form puts the best level last again and round-trips.
    let wire = serde_json::to_vec(&b.to_wire()).expect("ser");
    assert_eq!(parse_book(&wire).expect("reparse"), b);
    assert_eq!(b.to_wire()["bids"][2]["price"], "0.48");
}

#[test]
fn empty_book_sides_parse_but_have_no_midpoint() {
    let b = parse_book(br#"{"asset_id":"1","bids":[],"asks":[]}"#).expect("book");
    assert_eq!(b.midpoint(), None);
    for bad in [&b""[..], b"{}", b"[]", b"null", br#"{"asset_id":"1"}"#] {
        assert!(
            parse_book(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn apply_level_inserts_replaces_and_removes() {
    let mut b = parse_book(BOOK.as_bytes()).expect("book");
    b.apply_level(Side::Buy, 0.49, 7.0);
    b.apply_level(Side::Sell, 0.52, 0.0);
    b.apply_level(Side::Buy, 0.47, 1.0);
    assert_eq!(
        b.bids.iter().map(|l| (l.price, l.size)).collect::<Vec<_>>(),
        [(0.49, 7.0), (0.48, 30.0), (0.47, 1.0), (0.46, 10.0)]
    );
    assert_eq!(b.best_ask().expect("ask").price, 0.53);
}

#[test]
fn books_array() {
    let v = format!("[{BOOK},{BOOK}]");
    assert_eq!(parse_books(v.as_bytes()).expect("books").len(), 2);
    assert!(parse_books(BOOK.as_bytes()).is_err());
}

#[test]
fn scalar_shapes() {
    assert_eq!(parse_midpoint(MID.as_bytes()).expect("mid"), 0.45);
    assert_eq!(
        parse_midpoint(MID_PRICE.as_bytes()).expect("mid_price"),
        0.45
    );
    assert_eq!(
        parse_midpoint(br#"{"mid":0.45}"#).expect("numeric mid"),
        0.45
    );
    assert!(matches!(
        parse_midpoint(b"{}"),
        Err(ParseError::Field { .. })
    ));
    assert_eq!(parse_price(PRICE.as_bytes()).expect("price"), 0.52);
    assert_eq!(parse_spread(SPREAD.as_bytes()).expect("spread"), 0.04);
    assert_eq!(
        parse_last_trade_price(LAST.as_bytes()).expect("last"),
        (0.5, Some(Side::Buy))
    );
    assert_eq!(
        parse_last_trade_price(br#"{"price":"0.5","side":""}"#)
            .expect("last")
            .1,
        None
    );
    let h = parse_prices_history(HISTORY.as_bytes()).expect("history");
    assert_eq!(
        h,
        [
            PricePoint {
                t: 1700000000,
                p: 0.51
            },
            PricePoint {
                t: 1700000060,
                p: 0.52
            }
        ]
    );
    assert_eq!(parse_tick_size(TICK.as_bytes()).expect("tick"), 0.01);
    assert!(parse_tick_size(br#"{"minimum_tick_size":0}"#).is_err());
    assert_eq!(parse_server_time(b"1700000000").expect("time"), 1700000000);
    assert_eq!(
        parse_server_time(br#""1700000000""#).expect("time"),
        1700000000
    );
}

#[test]
fn field_errors_name_the_field() {
    let err = parse_price(br#"{"price":true}"#).expect_err("bool price");
    assert!(err.to_string().contains("`price`"), "{err}");
    let err = parse_book(br#"{"asset_id":"1","bids":[{"price":"x","size":"1"}],"asks":[]}"#)
        .expect_err("bad level");
    assert!(err.to_string().contains("bids[0].price"), "{err}");
    let err = parse_midpoint(b"<html><body>502 Bad Gateway</body></html>").expect_err("html");
    assert!(
        matches!(
            err,
            ParseError::NotJson {
                what: "midpoint",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("<html>"));
    assert!(parse_price(br#"{"price":"NaN"}"#).is_err());
    assert!(parse_price(br#"{"price":"inf"}"#).is_err());
}

#[test]
fn markets_page_and_cursor() {
    let p = parse_markets_page(MARKETS.as_bytes()).expect("page");
    assert_eq!(p.next_cursor, "Mg==");
    assert!(!p.is_last());
    assert_eq!(p.data.len(), 2);
    assert_eq!(p.data[0].tokens[1].token_id, "2");
    assert_eq!(p.data[0].minimum_tick_size, Some(0.01));
    let last = parse_markets_page(br#"{"limit":1,"count":0,"next_cursor":"LTE=","data":[]}"#)
        .expect("last");
    assert!(last.is_last());
}

#[test]
fn gamma_decodes_string_encoded_arrays_and_v2_position_ids() {
    let g = parse_gamma_markets(GAMMA.as_bytes()).expect("gamma");
    assert_eq!(g[0].outcomes, ["Yes", "No"]);
    assert_eq!(g[0].outcome_prices, [0.45, 0.55]);
    assert_eq!(g[0].token_ids, ["111", "222"]);
    assert_eq!(g[0].order_price_min_tick_size, Some(0.01));
    assert_eq!(g[0].accepting_orders, Some(true));
    assert_eq!(g[1].token_ids, ["333", "444"]);
    assert_eq!(g[1].version.as_deref(), Some("v2"));
    let err = parse_gamma_markets(br#"[{"id":"1","clobTokenIds":"[\"1\","}]"#)
        .expect_err("broken encoding");
    assert!(err.to_string().contains("clobTokenIds"), "{err}");
}

#[test]
fn ws_object_and_array_frames() {
    let one = parse_ws_frame(WS_BOOK).expect("book frame");
    assert!(
        matches!(&one[..], [MarketEvent::Book(b)] if b.best_bid().map(|l| l.price) == Some(0.48))
    );
    let many = parse_ws_frame(WS_ARRAY).expect("array frame");
    assert_eq!(many.len(), 5);
    assert!(
        matches!(&many[0], MarketEvent::PriceChange(pc) if pc.changes[0].size == 200.0 && pc.changes[0].side == Side::Buy)
    );
    assert!(
        matches!(&many[1], MarketEvent::LastTradePrice(t) if t.price == 0.456 && t.size == 219.21)
    );
    assert!(matches!(&many[2], MarketEvent::TickSizeChange(t) if t.new_tick_size == 0.001));
    assert!(matches!(&many[3], MarketEvent::BestBidAsk(b) if b.spread == Some(0.02)));
    assert!(
        matches!(&many[4], MarketEvent::Unknown { event_type, .. } if event_type == "new_market")
    );
    // Wire round trip of every known event.
    for e in &many[..4] {
        let text = e.to_wire().to_string();
        assert_eq!(&parse_ws_frame(&text).expect("reparse")[0], e);
    }
    assert!(parse_ws_frame("PONG").is_err());
    assert!(
        parse_ws_frame(r#"{"event_type":"price_change","price_changes":[{"asset_id":"1"}]}"#)
            .is_err()
    );
}

#[test]
fn order_responses() {
    let p = parse_post_order_response(POST_RESP.as_bytes()).expect("post");
    assert!(p.success);
    assert_eq!(p.status, Some(OrderStatus::Live));
    assert_eq!(p.making_amount, None);
    let c = parse_cancel_response(CANCEL.as_bytes()).expect("cancel");
    assert_eq!(c.canceled, ["0x1"]);
    assert_eq!(
        c.not_canceled.get("0x2").map(String::as_str),
        Some("order not found")
    );
    let o = parse_open_order(ORDER.as_bytes())
        .expect("order")
        .expect("some");
    assert_eq!(
        (o.status.clone(), o.side, o.original_size, o.size_matched),
        (OrderStatus::Live, Side::Buy, 10.0, 2.0)
    );
    assert_eq!(parse_open_order(b"null").expect("null"), None);
    let bare = format!("[{ORDER}]");
    assert_eq!(
        parse_open_orders(bare.as_bytes()).expect("bare").data.len(),
        1
    );
    let paged = format!(r#"{{"data":[{ORDER}],"next_cursor":"MQ=="}}"#);
    assert_eq!(
        parse_open_orders(paged.as_bytes())
            .expect("paged")
            .next_cursor
            .as_deref(),
        Some("MQ==")
    );
    let t = parse_trades(TRADES.as_bytes()).expect("trades");
    assert_eq!(t.next_cursor, None);
    assert_eq!(t.data[0].maker_orders[0].order_id, "0x9");
    assert_eq!(t.data[0].match_time, Some(1700000001));
    assert_eq!(
        parse_heartbeat(br#"{"heartbeat_id":"hb"}"#)
            .expect("hb")
            .heartbeat_id,
        "hb"
    );
    assert_eq!(
        parse_error_body(br#"{"error":"Invalid token id"}"#).as_deref(),
        Some("Invalid token id")
    );
    assert_eq!(parse_error_body(b"<html>"), None);
}

/// Every parser, fed the same bytes; the result is ignored, only panics matter.
fn run_all(bytes: &[u8]) {
    let _ = parse_book(bytes);
    let _ = parse_books(bytes);
    let _ = parse_midpoint(bytes);
    let _ = parse_price(bytes);
    let _ = parse_spread(bytes);
    let _ = parse_last_trade_price(bytes);
    let _ = parse_prices_history(bytes);
    let _ = parse_tick_size(bytes);
    let _ = parse_server_time(bytes);
    let _ = parse_markets_page(bytes);
    let _ = parse_gamma_markets(bytes);
    let _ = parse_post_order_response(bytes);
    let _ = parse_cancel_response(bytes);
    let _ = parse_open_order(bytes);
    let _ = parse_open_orders(bytes);
    let _ = parse_trades(bytes);
    let _ = parse_heartbeat(bytes);
    let _ = parse_error_body(bytes);
    let _ = parse_ws_frame(&String::from_utf8_lossy(bytes));
}

const VALID: &[&str] = &[
    BOOK, MID, MID_PRICE, PRICE, SPREAD, LAST, HISTORY, TICK, MARKETS, GAMMA, WS_BOOK, WS_ARRAY,
    POST_RESP, CANCEL, ORDER, TRADES,
];

/// Replacements that swap a JSON value's type at a string, number or literal.
const SWAPS: &[&str] = &[
    "null", "true", "[]", "{}", "\"\"", "-1", "1e400", "\"x\"", "0.5", "[[[]]]",
];

/// Replaces the JSON value after the `n`-th `:` with `swap` (a type swap in a valid payload).
fn swap_value(text: &str, n: usize, swap: &str) -> String {
    let Some((pos, _)) = text.match_indices(':').nth(n) else {
        return text.to_string();
    };
    let rest = &text[pos + 1..];
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    format!("{}:{}{}", &text[..pos], swap, &rest[end..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        run_all(&bytes);
    }

    #[test]
    fn truncations_never_panic(which in 0..VALID.len(), cut in 0usize..4096) {
        let v = VALID[which].as_bytes();
        run_all(&v[..cut.min(v.len())]);
    }

    #[test]
    fn byte_flips_never_panic(which in 0..VALID.len(), flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let mut v = VALID[which].as_bytes().to_vec();
        for (i, b) in flips {
            let len = v.len();
            v[i % len] = b;
        }
        run_all(&v);
    }

    #[test]
    fn type_swaps_never_panic(which in 0..VALID.len(), n in 0usize..64, swap in 0..SWAPS.len()) {
        let text = swap_value(VALID[which], n, SWAPS[swap]);
        run_all(text.as_bytes());
    }
}
