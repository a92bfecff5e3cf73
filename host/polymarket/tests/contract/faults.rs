//! Each fault class of the plan, mapped by the client to the right typed error.

use std::time::Duration;

use polybot_polymarket::order::OrderType;
use polybot_polymarket::rest::{ClobConfig, ClobError, TransportKind};
use polybot_polymarket::server::{Fault, FaultPlan};
use polybot_polymarket::types::Side;

use crate::util::{YES, client_for, start};

/// Whether an error is the one a fault should produce.
type Check = fn(&ClobError) -> bool;

#[tokio::test]
async fn every_fault_class_maps_to_its_typed_error() {
    let sim = start().await;
    sim.publish_default_books();
    let cases: Vec<(Fault, Check)> = vec![
        (
            Fault::RateLimited {
                retry_after_s: Some(2),
            },
            |e| matches!(e, ClobError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(2)),
        ),
        (
            Fault::RateLimited {
                retry_after_s: None,
            },
            |e| {
                matches!(
                    e,
                    ClobError::RateLimited {
                        retry_after: None,
                        ..
                    }
                )
            },
        ),
        (Fault::TooEarly, |e| matches!(e, ClobError::TooEarly { .. })),
        (Fault::Unavailable { cancel_only: true }, |e| {
            matches!(
                e,
                ClobError::Unavailable {
                    cancel_only: true,
                    ..
                }
            )
        }),
        (Fault::Unavailable { cancel_only: false }, |e| {
            matches!(
                e,
                ClobError::Unavailable {
                    cancel_only: false,
                    ..
                }
            )
        }),
        (Fault::ServerError, |e| {
            matches!(e, ClobError::Server { status: 500, .. })
        }),
        (Fault::MalformedJson, |e| {
            matches!(e, ClobError::Malformed { .. })
        }),
        (Fault::DropConnection, |e| {
            matches!(
                e,
                ClobError::Transport {
                    kind: TransportKind::Interrupted,
                    ..
                }
            )
        }),
    ];
    for (fault, check) in cases {
        sim.server
            .set_faults(FaultPlan::times("GET /book", fault.clone(), 1));
        let err = sim.client.book(YES).await.expect_err("fault must surface");
        assert!(check(&err), "{fault:?} gave {err:?}");
        assert!(err.is_retryable(), "{fault:?} should be retryable");
        assert_eq!(err.endpoint(), "GET /book");
        // The count is spent: the next call succeeds.
        sim.client
            .book(YES)
            .await
            .unwrap_or_else(|e| panic!("after {fault:?}: {e}"));
    }
}

#[tokio::test]
async fn duplicate_order_fault_is_recognised() {
    let sim = start().await;
    sim.publish_default_books();
    sim.server
        .set_faults(FaultPlan::times("POST /order", Fault::DuplicateOrder, 1));
    let order = sim.sign("f-dup", Side::Buy, 0.40, 5.0, OrderType::Gtc);
    let err = sim.client.post_order(&order).await.expect_err("duplicate");
    assert!(err.is_duplicate() && !err.is_retryable(), "{err}");
    // Not processed: the lookup finds nothing, and the same bytes then go through.
    assert_eq!(
        sim.client
            .get_order(&order.order_hash)
            .await
            .expect("lookup"),
        None
    );
    sim.client.post_order(&order).await.expect("resend");
}

#[tokio::test]
async fn latency_beyond_the_timeout_is_a_transport_timeout() {
    let sim = start().await;
    sim.publish_default_books();
    let cfg = ClobConfig::new(sim.server.base_url(), sim.server.gamma_url())
        .with_timeout(Duration::from_millis(150));
    let impatient = client_for(&sim.server, cfg);
    sim.server.set_faults(FaultPlan::times(
        "/midpoint",
        Fault::Latency { ms: 1_000 },
        1,
    ));
    let err = impatient.midpoint(YES).await.expect_err("timeout");
    assert!(
        matches!(
            err,
            ClobError::Transport {
                kind: TransportKind::Timeout,
                endpoint: "GET /midpoint",
                ..
            }
        ),
        "{err}"
    );
    // Latency below the timeout only slows the call down.
    sim.server
        .set_faults(FaultPlan::times("/midpoint", Fault::Latency { ms: 20 }, 1));
    impatient.midpoint(YES).await.expect("slow but fine");
}

#[tokio::test]
async fn connection_refused_is_a_connect_failure() {
    let sim = start().await;
    // Port 1 on loopback: nothing listens there.
    let cfg = ClobConfig::new("http://127.0.0.1:1", sim.server.gamma_url());
    let err = client_for(&sim.server, cfg)
        .ok()
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ClobError::Transport {
                kind: TransportKind::Connect,
                endpoint: "GET /ok",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn admin_endpoint_and_file_load_plans() {
    let sim = start().await;
    sim.publish_default_books();
    let http = reqwest::Client::new();
    let admin = format!("{}/admin/faults", sim.server.base_url());
    let plan = r#"{"rules":[{"endpoint":"*","fault":{"kind":"server_error"},"count":2}]}"#;
    let r = http
        .post(&admin)
        .body(plan)
        .send()
        .await
        .expect("post plan");
    assert!(r.status().is_success());
    assert!(matches!(
        sim.client.ok().await,
        Err(ClobError::Server { .. })
    ));
    let r = http.delete(&admin).send().await.expect("clear plan");
    assert!(r.status().is_success());
    sim.client.ok().await.expect("cleared");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plan.json");
    std::fs::write(
        &path,
        r#"{"seed":3,"rules":[{"endpoint":"GET /spread","fault":{"kind":"too_early"},"count":1}]}"#,
    )
    .expect("write");
    sim.server
        .set_faults(FaultPlan::from_file(&path).expect("load"));
    assert!(matches!(
        sim.client.spread(YES).await,
        Err(ClobError::TooEarly { .. })
    ));
    assert_eq!(sim.server.faults().rules[0].count, Some(0));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{").expect("write");
    assert!(
        FaultPlan::from_file(&bad)
            .expect_err("bad plan")
            .to_string()
            .contains("bad.json")
    );
}
