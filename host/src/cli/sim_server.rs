//! `polybot-host sim-server`: a local server speaking Polymarket's CLOB API
//! shapes and market WebSocket, fed by the deterministic simulated market.
//! Faults come from a plan file (`--faults`) or `POST /admin/faults`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use polybot_polymarket::server::{FaultPlan, SimOptions, SimServer};
use polybot_polymarket::types::Side as WireSide;

use super::{Failure, block_on};
use crate::contract::{EventKind, Side};
use crate::venue::sim::{SimConfig, SimMarket};

#[derive(Debug, Args)]
pub struct SimServerArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Fault plan (JSON) to start with.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Seed of the simulated market.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Token ids to serve, decimal like Polymarket's (repeat for several)
    /// [default: 1001 1002 1003].
    #[arg(long = "market", value_name = "TOKEN")]
    pub markets: Vec<String>,
    /// Event-time speed of the market: 1 is real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Stop after this long (wall time) [default: until Ctrl-C].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

pub fn run(args: SimServerArgs) -> Result<ExitCode, Failure> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--speed must be a positive number"
        )));
    }
    let faults = match &args.faults {
        Some(path) => FaultPlan::from_file(path).map_err(Failure::bad_input)?,
        None => FaultPlan::default(),
    };
    let markets = if args.markets.is_empty() {
        vec!["1001".into(), "1002".into(), "1003".into()]
    } else {
        args.markets.clone()
    };
    if let Some(bad) = markets
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "market `{bad}`: token ids are decimal numbers, as on Polymarket"
        )));
    }
    block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
        let options = SimOptions {
            faults,
            ..SimOptions::default()
        };
        let (server, feed) = SimServer::start(addr, options)
            .await
            .map_err(|e| Failure::bad_input(anyhow::anyhow!("cannot listen on {addr}: {e}")))?;
        outln!(
            "sim-server listening: clob {} ws {} gamma {}",
            server.base_url(),
            server.ws_url(),
            server.gamma_url()
        );

        let config = SimConfig {
            seed: args.seed,
            markets,
            ..SimConfig::default()
        };
        let tick = Duration::from_secs_f64(config.tick_ms as f64 / 1000.0 / args.speed);
        let mut market = SimMarket::new(config);
        let mut every = tokio::time::interval(tick);
        let stop = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = every.tick() => {}
            }
            let (timestamp_ms, events) = market.step();
            for event in events {
                match event {
                    EventKind::Book(book) => {
                        let bids: Vec<(f64, f64)> =
                            book.bids.iter().map(|l| (l.price, l.size)).collect();
                        let asks: Vec<(f64, f64)> =
                            book.asks.iter().map(|l| (l.price, l.size)).collect();
                        feed.publish_book(
                            &book.market,
                            &format!("0x{}", book.market),
                            &bids,
                            &asks,
                            timestamp_ms,
                        );
                    }
                    EventKind::Trade(trade) => {
                        let side = match trade.side {
                            Side::Buy => WireSide::Buy,
                            Side::Sell => WireSide::Sell,
                        };
                        feed.publish_trade(
                            &trade.market,
                            side,
                            trade.price,
                            trade.size,
                            timestamp_ms,
                        );
                    }
                    _ => {}
                }
            }
        }
        drop(server);
        Ok(ExitCode::SUCCESS)
    })
}
