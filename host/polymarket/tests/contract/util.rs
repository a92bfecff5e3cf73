//! Shared helpers: start a server with a client wired to it, sign intents, bound every wait.

use std::future::Future;
use std::time::Duration;

use polybot_polymarket::auth::{Credentials, Secret};
use polybot_polymarket::order::{OrderIntent, OrderSigner, OrderType, SignedOrder};
use polybot_polymarket::rest::{ClobClient, ClobConfig};
use polybot_polymarket::server::{FeedHandle, SimHandle, SimOptions, SimServer};
use polybot_polymarket::types::Side;

/// Hardhat's first well-known test key; holds nothing anywhere.
pub const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const MARKET: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";
pub const YES: &str = "1001";
pub const NO: &str = "1002";

pub struct Sim {
    pub server: SimHandle,
    pub feed: FeedHandle,
    pub client: ClobClient,
    pub signer: OrderSigner,
}

pub async fn start() -> Sim {
    start_with(SimOptions::default()).await
}

pub async fn start_with(opts: SimOptions) -> Sim {
    let (server, feed) = SimServer::start("127.0.0.1:0".parse().expect("addr"), opts)
        .await
        .expect("bind local server");
    let signer = OrderSigner::from_private_key(KEY).expect("key");
    let client = client_for(
        &server,
        ClobConfig::new(server.base_url(), server.gamma_url()),
    );
    Sim {
        server,
        feed,
        client,
        signer,
    }
}

pub fn credentials(server: &SimHandle) -> Credentials {
    let c = server.credentials();
    Credentials {
        api_key: c.api_key.clone(),
        secret: Secret::new(c.secret.clone()),
        passphrase: Secret::new(c.passphrase.clone()),
        address: OrderSigner::from_private_key(KEY)
            .expect("key")
            .address()
            .to_checksum(None),
        private_key: Some(Secret::new(KEY)),
    }
}

pub fn client_for(server: &SimHandle, cfg: ClobConfig) -> ClobClient {
    ClobClient::new(cfg)
        .expect("client")
        .with_credentials(credentials(server))
}

impl Sim {
    /// YES: bids 0.48/0.47, asks 0.52/0.53; NO mirrors it.
    pub fn publish_default_books(&self) {
        self.feed.publish_book(
            YES,
            MARKET,
            &[(0.47, 50.0), (0.48, 30.0)],
            &[(0.53, 40.0), (0.52, 25.0)],
            1_000,
        );
        self.feed
            .publish_book(NO, MARKET, &[(0.47, 25.0)], &[(0.53, 30.0)], 1_000);
    }

    pub fn sign(
        &self,
        id: &str,
        side: Side,
        price: f64,
        size: f64,
        order_type: OrderType,
    ) -> SignedOrder {
        self.signer
            .sign(
                &intent(id, side, price, size, order_type),
                &self.server.credentials().api_key,
            )
            .expect("sign")
    }
}

pub fn intent(id: &str, side: Side, price: f64, size: f64, order_type: OrderType) -> OrderIntent {
    OrderIntent {
        strategy: "contract".into(),
        intent_id: id.into(),
        token_id: YES.into(),
        side,
        price,
        size,
        tick_size: 0.01,
        neg_risk: false,
        timestamp_ms: 1_735_689_600_000,
        order_type,
        expiration: 0,
        post_only: false,
    }
}

/// Awaits `fut`, failing the test if it takes longer than 10 s.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
