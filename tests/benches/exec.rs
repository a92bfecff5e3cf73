//! Execution-layer benchmark: prints a table.
//!
//! - the exec layer's own cost per order on the happy path: risk check,
//!   intent record, rate limiter, circuit breaker, the venue's answer applied
//!   and the strategy's update built — against a venue that answers at once
//!   and an in-memory intent log, so neither the network nor a durable write
//!   is in the figure (target ≤ 50 µs);
//! - the breaker + limiter decision alone (target ≤ 1 µs).
//!
//! Run: `cargo bench -p polybot-tests --bench exec`

use std::time::{Duration, Instant};

use polybot_host::contract::{
    EventKind, Fill, OrderStatus, OrderType, OrderUpdate, PlaceOrder, Side,
};
use polybot_host::exec::{ExecConfig, Executor, LimitsConfig, MemoryIntentLog, RiskConfig};
use polybot_host::venue::{ExecutionClient, VenueError, VenueTrade};

const ORDERS: usize = 50_000;
const DECISIONS: usize = 1_000_000;

/// Fills every order at once, in full.
struct Instant_;

#[async_trait::async_trait]
impl ExecutionClient for Instant_ {
    fn venue_name(&self) -> &str {
        "bench"
    }
    async fn place(&mut self, id: &str, o: &PlaceOrder) -> Result<Vec<EventKind>, VenueError> {
        Ok(vec![
            EventKind::Fill(Fill {
                intent_id: id.to_string(),
                market: o.market.clone(),
                side: o.side,
                price: o.price,
                size: o.size,
                fee: 0.0,
            }),
            EventKind::OrderUpdate(OrderUpdate {
                intent_id: id.to_string(),
                market: o.market.clone(),
                status: OrderStatus::Filled,
                filled_size: o.size,
                remaining_size: 0.0,
                reason: None,
            }),
        ])
    }
    async fn cancel(&mut self, _: &str) -> Result<Vec<EventKind>, VenueError> {
        Ok(Vec::new())
    }
    async fn lookup(&mut self, _: &str) -> Result<Option<OrderUpdate>, VenueError> {
        Ok(None)
    }
    async fn open(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        Ok(Vec::new())
    }
    async fn trades(&mut self, _: u64) -> Result<Vec<VenueTrade>, VenueError> {
        Ok(Vec::new())
    }
}

fn unlimited() -> ExecConfig {
    let big = 1_000_000_000;
    ExecConfig {
        limits: LimitsConfig {
            orders_per_10s: big,
            orders_per_10min: big,
            cancels_per_10s: big,
            reads_per_10s: big,
            signer_orders_per_s: big,
            signer_orders_burst: big,
            signer_cancels_per_s: big,
            signer_cancels_burst: big,
            ..LimitsConfig::default()
        },
        ..ExecConfig::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let risk = RiskConfig {
        max_order_size: Some(1_000.0),
        max_open_orders: Some(100),
        ..RiskConfig::default()
    };
    let mut times = rt.block_on(async {
        let mut ex = Executor::new(
            "bench",
            "bench",
            unlimited(),
            risk,
            Box::new(MemoryIntentLog::default()),
        );
        let mut venue = Instant_;
        let mut times = Vec::with_capacity(ORDERS);
        for i in 0..ORDERS {
            let id = format!("{i}.0");
            let order = PlaceOrder {
                market: "m".into(),
                side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
                price: 0.5,
                size: 10.0,
                order_type: OrderType::Gtc,
            };
            let t = Instant::now();
            let out = ex
                .submit(&mut venue, &id, order, i as u64)
                .await
                .expect("submit");
            times.push(t.elapsed());
            assert_eq!(out.events.len(), 2, "{out:?}");
        }
        times
    });
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;

    let mut decisions = rt.block_on(async {
        let mut ex = Executor::new(
            "bench",
            "bench",
            unlimited(),
            RiskConfig::default(),
            Box::new(MemoryIntentLog::default()),
        );
        let mut go = 0usize;
        let t = Instant::now();
        for _ in 0..DECISIONS {
            go += usize::from(ex.gate_decision());
        }
        assert_eq!(go, DECISIONS);
        t.elapsed()
    });
    decisions /= DECISIONS as u32;

    println!("exec layer ({ORDERS} orders, venue answers at once, in-memory intent log)");
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!(
        "| happy-path order, mean | {:.2} µs | ≤ 50 µs |",
        mean.as_secs_f64() * 1e6
    );
    println!(
        "| happy-path order, p50 | {:.2} µs | |",
        percentile(&times, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "| happy-path order, p99 | {:.2} µs | |",
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| breaker + limiter decision, mean of {DECISIONS} | {:.0} ns | ≤ 1 µs |",
        decisions.as_secs_f64() * 1e9
    );
}
