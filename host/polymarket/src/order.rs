//! V2 orders: amounts, deterministic identity, EIP-712 hashing and signing, and the exact JSON
//! body of `POST /order`.
//!
//! Owns the idempotency invariant the whole host leans on. The venue has no client order id;
//! its `orderID` *is* the EIP-712 hash of the signed struct. That hash depends only on fields
//! this module picks, and two of them are usually random: `salt` and `timestamp`. Here both
//! are derived from the intent instead — `salt` from SHA-256 of `"<strategy>/<intent-id>"`,
//! `timestamp` from the intent's event time supplied by the caller — and ECDSA signing is
//! deterministic (RFC 6979). So one intent always yields the same hash *and* the same body
//! bytes: the hash can be journaled before sending, a re-send after a crash is byte-identical,
//! and the venue answers it with `INVALID_ORDER_DUPLICATED` instead of opening a second order.
//!
//! Does not own: sending (see `rest`), or deciding whether a re-send is needed (the host's
//! execution layer reconciles with `GET /data/order/{hash}` first).

use std::borrow::Cow;
use std::str::FromStr as _;

use alloy_primitives::{Address, B256, Signature, U256};
use alloy_signer::SignerSync as _;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct as _, sol};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::types::Side;

/// Polygon mainnet.
pub const CHAIN_ID: u64 = 137;
/// CTF exchange (V2) for standard markets.
pub const EXCHANGE: &str = "0xE111180000d2663C0091e4f400237545B87B996B";
/// CTF exchange (V2) for neg-risk markets.
pub const NEG_RISK_EXCHANGE: &str = "0xe2222d279d744050d28e00520010520000310F59";
/// Salts must survive a round trip through a JavaScript number.
pub const MAX_SALT: u64 = (1 << 53) - 1;

sol! {
    /// The V2 order struct as the exchange hashes it (field order is part of the type hash).
    struct Order {
        uint256 salt;
        address maker;
        address signer;
        uint256 tokenId;
        uint256 makerAmount;
        uint256 takerAmount;
        uint8 side;
        uint8 signatureType;
        uint256 timestamp;
        bytes32 metadata;
        bytes32 builder;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("private key is not a valid secp256k1 key")]
    BadPrivateKey,
    #[error("signing failed: {0}")]
    Signing(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> OrderError {
    OrderError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// How the maker's funds are held (`signatureType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureType {
    Eoa = 0,
    PolyProxy = 1,
    GnosisSafe = 2,
    Poly1271 = 3,
}

/// Time in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderType {
    Gtc,
    Gtd,
    Fok,
    Fak,
}

/// What a strategy asked for, plus the identity that pins the order's hash.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderIntent {
    /// Strategy name; with `intent_id` it is the order's identity.
    pub strategy: String,
    /// Unique within the strategy (e.g. `"<event seq>/<index>"`).
    pub intent_id: String,
    /// Outcome token id (decimal uint256).
    pub token_id: String,
    pub side: Side,
    pub price: f64,
    /// Shares.
    pub size: f64,
    /// The market's tick size (0.1, 0.01, 0.001 or 0.0001).
    pub tick_size: f64,
    /// Neg-risk markets are signed for a different exchange contract.
    pub neg_risk: bool,
    /// The intent's event time in ms since the epoch; signed, so it must not change on re-send.
    pub timestamp_ms: u64,
    pub order_type: OrderType,
    /// Unix seconds for GTD orders, 0 otherwise (sent but not signed).
    pub expiration: u64,
    pub post_only: bool,
}

/// The `salt` of an intent: the first 8 bytes of SHA-256(`"<strategy>/<intent_id>"`), masked to
/// 53 bits so it stays exact as a JSON number.
pub fn salt_for(strategy: &str, intent_id: &str) -> u64 {
    let digest = Sha256::digest(format!("{strategy}/{intent_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & MAX_SALT
}

/// Maker and taker amounts in 6-decimal base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    pub maker: u64,
    pub taker: u64,
    /// Price rounded to the tick, in millionths.
    pub price_micros: u64,
    /// Size rounded down to 0.01 share, in millionths.
    pub size_micros: u64,
}

/// Computes amounts: BUY pays `price*size` USDC for `size` shares, SELL the reverse.
///
/// Price is rounded to the nearest tick and must stay within `[tick, 1 - tick]`; size is
/// rounded *down* to 0.01 share so the order never exceeds what was asked. Integer arithmetic
/// keeps the result exact (a 4-decimal price times a 2-decimal size has at most 6 decimals).
///
/// # Errors
/// [`OrderError::Invalid`] naming `tick_size`, `price` or `size`.
pub fn amounts(side: Side, price: f64, size: f64, tick_size: f64) -> Result<Amounts, OrderError> {
    let tick_micros = (tick_size * 1e6).round();
    if !tick_size.is_finite() || ![100_000.0, 10_000.0, 1_000.0, 100.0].contains(&tick_micros) {
        return Err(invalid(
            "tick_size",
            format!("{tick_size} is not one of 0.1, 0.01, 0.001, 0.0001"),
        ));
    }
    if !price.is_finite() || !size.is_finite() {
        return Err(invalid("price", "price and size must be finite"));
    }
    let tick_micros = tick_micros as u64;
    let ticks = (price / tick_size).round();
    if ticks < 1.0 || ticks * tick_micros as f64 > 1e6 - tick_micros as f64 {
        return Err(invalid(
            "price",
            format!("{price} is outside [{tick_size}, {}]", 1.0 - tick_size),
        ));
    }
    let price_micros = ticks as u64 * tick_micros;
    // The epsilon keeps 0.29 * 100 = 28.999999999999996 from losing a cent.
    let centi = (size * 100.0 + 1e-6).floor();
    if !(1.0..=1e12).contains(&centi) {
        return Err(invalid(
            "size",
            format!("{size} shares is below 0.01 or absurdly large"),
        ));
    }
    let size_micros = centi as u64 * 10_000;
    // u128: the product of two micro-amounts can exceed u64 before the division.
    let usdc_micros = (u128::from(price_micros) * u128::from(size_micros) / 1_000_000) as u64;
    let (maker, taker) = match side {
        Side::Buy => (usdc_micros, size_micros),
        Side::Sell => (size_micros, usdc_micros),
    };
    Ok(Amounts {
        maker,
        taker,
        price_micros,
        size_micros,
    })
}

/// The `order` object of `POST /order`, field order fixed so the bytes are reproducible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderWire {
    pub salt: u64,
    pub maker: String,
    pub signer: String,
    pub taker: String,
    pub token_id: String,
    pub maker_amount: String,
    pub taker_amount: String,
    pub side: Side,
    pub signature_type: u8,
    pub timestamp: String,
    pub expiration: String,
    pub metadata: String,
    pub builder: String,
    pub signature: String,
}

/// The whole `POST /order` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostOrderBody {
    pub order: OrderWire,
    pub owner: String,
    pub order_type: OrderType,
    #[serde(default)]
    pub defer_exec: bool,
    #[serde(default)]
    pub post_only: bool,
}

/// A signed order ready to send: its hash (the venue's `orderID`) and the exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOrder {
    /// `0x` + 64 lowercase hex digits.
    pub order_hash: String,
    /// The JSON body to send, byte for byte, on every attempt.
    pub body: String,
    pub wire: PostOrderBody,
}

/// The EIP-712 domain of the V2 exchange.
pub fn domain(neg_risk: bool) -> Eip712Domain {
    let contract = if neg_risk {
        NEG_RISK_EXCHANGE
    } else {
        EXCHANGE
    };
    // The constants above are valid addresses; parse cannot fail, but fall back to zero
    // rather than panic (a wrong domain shows up at once as a rejected signature).
    let contract = Address::from_str(contract).unwrap_or(Address::ZERO);
    Eip712Domain::new(
        Some(Cow::Borrowed("Polymarket CTF Exchange")),
        Some(Cow::Borrowed("2")),
        Some(U256::from(CHAIN_ID)),
        Some(contract),
        None,
    )
}

fn parse_b256(field: &'static str, s: &str) -> Result<B256, OrderError> {
    B256::from_str(s).map_err(|e| invalid(field, format!("{s:?} is not 32-byte hex: {e}")))
}

fn parse_u256(field: &'static str, s: &str) -> Result<U256, OrderError> {
    U256::from_str_radix(s, 10)
        .map_err(|e| invalid(field, format!("{s:?} is not a decimal uint256: {e}")))
}

fn parse_address(field: &'static str, s: &str) -> Result<Address, OrderError> {
    Address::from_str(s).map_err(|e| invalid(field, format!("{s:?} is not an address: {e}")))
}

impl OrderWire {
    /// The EIP-712 struct this wire order claims to sign.
    ///
    /// # Errors
    /// [`OrderError::Invalid`] naming the first field that does not parse.
    pub fn to_struct(&self) -> Result<Order, OrderError> {
        Ok(Order {
            salt: U256::from(self.salt),
            maker: parse_address("maker", &self.maker)?,
            signer: parse_address("signer", &self.signer)?,
            tokenId: parse_u256("tokenId", &self.token_id)?,
            makerAmount: parse_u256("makerAmount", &self.maker_amount)?,
            takerAmount: parse_u256("takerAmount", &self.taker_amount)?,
            side: match self.side {
                Side::Buy => 0,
                Side::Sell => 1,
            },
            signatureType: self.signature_type,
            timestamp: parse_u256("timestamp", &self.timestamp)?,
            metadata: parse_b256("metadata", &self.metadata)?,
            builder: parse_b256("builder", &self.builder)?,
        })
    }

    /// The order hash (`orderID`): the EIP-712 signing hash under the V2 domain.
    ///
    /// # Errors
    /// As [`OrderWire::to_struct`].
    pub fn hash(&self, neg_risk: bool) -> Result<B256, OrderError> {
        Ok(self.to_struct()?.eip712_signing_hash(&domain(neg_risk)))
    }

    /// The address that produced `signature` over this order's hash.
    ///
    /// # Errors
    /// [`OrderError::Invalid`] if a field or the signature does not parse or recover.
    pub fn recover_signer(&self, neg_risk: bool) -> Result<Address, OrderError> {
        let hash = self.hash(neg_risk)?;
        let sig = Signature::from_str(&self.signature)
            .map_err(|e| invalid("signature", format!("not a 65-byte signature: {e}")))?;
        sig.recover_address_from_prehash(&hash)
            .map_err(|e| invalid("signature", format!("does not recover: {e}")))
    }
}

/// Signs orders for one wallet.
pub struct OrderSigner {
    signer: PrivateKeySigner,
    maker: Address,
    signature_type: SignatureType,
}

impl std::fmt::Debug for OrderSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderSigner")
            .field("signer", &self.signer.address())
            .field("maker", &self.maker)
            .field("signature_type", &self.signature_type)
            .finish_non_exhaustive()
    }
}

impl OrderSigner {
    /// An EOA signer that is its own maker.
    ///
    /// # Errors
    /// [`OrderError::BadPrivateKey`].
    pub fn from_private_key(hex_key: &str) -> Result<Self, OrderError> {
        let signer =
            PrivateKeySigner::from_str(hex_key.trim()).map_err(|_| OrderError::BadPrivateKey)?;
        let maker = signer.address();
        Ok(OrderSigner {
            signer,
            maker,
            signature_type: SignatureType::Eoa,
        })
    }

    /// Uses a funder (proxy or safe) address as maker, signed by this key.
    pub fn with_funder(mut self, maker: Address, signature_type: SignatureType) -> Self {
        self.maker = maker;
        self.signature_type = signature_type;
        self
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Builds, hashes and signs the order for `intent`; `owner` is the API key.
    ///
    /// # Errors
    /// [`OrderError::Invalid`] for a bad token id, price, size or tick;
    /// [`OrderError::Signing`] if the signer fails.
    pub fn sign(&self, intent: &OrderIntent, owner: &str) -> Result<SignedOrder, OrderError> {
        let token = parse_u256("tokenId", &intent.token_id)?;
        if intent.post_only && matches!(intent.order_type, OrderType::Fok | OrderType::Fak) {
            return Err(invalid("postOnly", "not allowed with FOK/FAK"));
        }
        let a = amounts(intent.side, intent.price, intent.size, intent.tick_size)?;
        let salt = salt_for(&intent.strategy, &intent.intent_id);
        let order = Order {
            salt: U256::from(salt),
            maker: self.maker,
            signer: self.signer.address(),
            tokenId: token,
            makerAmount: U256::from(a.maker),
            takerAmount: U256::from(a.taker),
            side: match intent.side {
                Side::Buy => 0,
                Side::Sell => 1,
            },
            signatureType: self.signature_type as u8,
            timestamp: U256::from(intent.timestamp_ms),
            metadata: B256::ZERO,
            builder: B256::ZERO,
        };
        let hash = order.eip712_signing_hash(&domain(intent.neg_risk));
        let sig = self
            .signer
            .sign_hash_sync(&hash)
            .map_err(|e| OrderError::Signing(e.to_string()))?;
        let wire = PostOrderBody {
            order: OrderWire {
                salt,
                maker: self.maker.to_checksum(None),
                signer: self.signer.address().to_checksum(None),
                taker: Address::ZERO.to_checksum(None),
                token_id: intent.token_id.clone(),
                maker_amount: a.maker.to_string(),
                taker_amount: a.taker.to_string(),
                side: intent.side,
                signature_type: self.signature_type as u8,
                timestamp: intent.timestamp_ms.to_string(),
                expiration: intent.expiration.to_string(),
                metadata: B256::ZERO.to_string(),
                builder: B256::ZERO.to_string(),
                signature: format!("0x{}", hex::encode(sig.as_bytes())),
            },
            owner: owner.to_string(),
            order_type: intent.order_type,
            defer_exec: false,
            post_only: intent.post_only,
        };
        let body = serde_json::to_string(&wire).map_err(|e| OrderError::Signing(e.to_string()))?;
        Ok(SignedOrder {
            order_hash: hash.to_string(),
            body,
            wire,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hardhat's well-known first test account; never holds real funds.
    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ADDR: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    fn intent(id: &str) -> OrderIntent {
        OrderIntent {
            strategy: "momentum".into(),
            intent_id: id.into(),
            token_id:
                "71321045679252212594626385532706912750332728571942532289631379312455583992563"
                    .into(),
            side: Side::Buy,
            price: 0.45,
            size: 10.0,
            tick_size: 0.01,
            neg_risk: false,
            timestamp_ms: 1_735_689_600_000,
            order_type: OrderType::Gtc,
            expiration: 0,
            post_only: false,
        }
    }

    #[test]
    fn same_intent_same_hash_and_bytes() {
        let s = OrderSigner::from_private_key(KEY).expect("key");
        let a = s.sign(&intent("7/0"), "api-key").expect("sign");
        let b = s.sign(&intent("7/0"), "api-key").expect("sign");
        assert_eq!(a.order_hash, b.order_hash);
        assert_eq!(a.body, b.body);
    }

    /// Computed independently with Python's `eth-account` (see `scripts/eip712_vector.py`).
    #[test]
    fn hash_and_signature_match_independent_vector() {
        let s = OrderSigner::from_private_key(KEY).expect("key");
        let o = s.sign(&intent("7/0"), "k").expect("sign");
        assert_eq!(o.wire.order.salt, 8358845814502268);
        assert_eq!(
            o.order_hash,
            "0x023c5220929087bab400ff1005dad0013f4e20c3858a8e7d4dc3b058f0b7748b"
        );
        assert_eq!(
            o.wire.order.signature,
            "0x87d835be6c75a693336de8b3d667d9c4dc74bd1c4ef36e6fd78828cc33870a691335442c672862fa1fd06f0d1c5bcf7b2c89d2539094f4a4d93a28c0d872a7111c"
        );
    }

    #[test]
    fn different_intent_different_hash() {
        let s = OrderSigner::from_private_key(KEY).expect("key");
        let a = s.sign(&intent("7/0"), "k").expect("sign");
        let b = s.sign(&intent("7/1"), "k").expect("sign");
        assert_ne!(a.order_hash, b.order_hash);
        assert_ne!(a.wire.order.salt, b.wire.order.salt);
        let mut other = intent("7/0");
        other.strategy = "other".into();
        assert_ne!(s.sign(&other, "k").expect("sign").order_hash, a.order_hash);
    }

    #[test]
    fn hash_is_prefixed_32_byte_hex_and_signature_recovers() {
        let s = OrderSigner::from_private_key(KEY).expect("key");
        assert_eq!(s.address().to_checksum(None), ADDR);
        for neg_risk in [false, true] {
            let mut i = intent("1/0");
            i.neg_risk = neg_risk;
            let o = s.sign(&i, "k").expect("sign");
            assert!(o.order_hash.starts_with("0x"));
            assert_eq!(o.order_hash.len(), 66);
            assert!(o.order_hash[2..].chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(
                o.wire.order.hash(neg_risk).expect("hash").to_string(),
                o.order_hash
            );
            assert_eq!(
                o.wire.order.recover_signer(neg_risk).expect("recover"),
                s.address()
            );
        }
        // The domain matters: the neg-risk hash differs.
        let mut n = intent("1/0");
        n.neg_risk = true;
        assert_ne!(
            s.sign(&n, "k").expect("sign").order_hash,
            s.sign(&intent("1/0"), "k").expect("sign").order_hash
        );
    }

    #[test]
    fn body_has_the_documented_shape() {
        let s = OrderSigner::from_private_key(KEY).expect("key");
        let o = s.sign(&intent("1/0"), "api-key").expect("sign");
        let v: serde_json::Value = serde_json::from_str(&o.body).expect("json");
        assert!(v["order"]["salt"].is_u64());
        assert!(v["order"]["salt"].as_u64().expect("salt") <= MAX_SALT);
        assert_eq!(v["order"]["makerAmount"], "4500000");
        assert_eq!(v["order"]["takerAmount"], "10000000");
        assert_eq!(v["order"]["side"], "BUY");
        assert_eq!(v["order"]["signatureType"], 0);
        assert_eq!(v["order"]["timestamp"], "1735689600000");
        assert_eq!(v["order"]["expiration"], "0");
        assert_eq!(
            v["order"]["taker"],
            "0x0000000000000000000000000000000000000000"
        );
        assert_eq!(v["order"]["signature"].as_str().expect("sig").len(), 132);
        assert_eq!(v["owner"], "api-key");
        assert_eq!(v["orderType"], "GTC");
        assert_eq!(v["postOnly"], false);
    }

    #[test]
    fn amounts_round_to_tick_and_swap_for_sell() {
        let buy = amounts(Side::Buy, 0.4549999, 10.0, 0.01).expect("buy");
        assert_eq!((buy.maker, buy.taker), (4_500_000, 10_000_000));
        let sell = amounts(Side::Sell, 0.455, 0.29, 0.001).expect("sell");
        assert_eq!((sell.maker, sell.taker), (290_000, 131_950));
        assert!(amounts(Side::Buy, 0.0, 10.0, 0.01).is_err());
        assert!(amounts(Side::Buy, 1.0, 10.0, 0.01).is_err());
        assert!(amounts(Side::Buy, 0.5, 0.001, 0.01).is_err());
        assert!(amounts(Side::Buy, 0.5, 1.0, 0.02).is_err());
        assert!(amounts(Side::Buy, f64::NAN, 1.0, 0.01).is_err());
    }

    #[test]
    fn bad_token_and_key_are_typed_errors() {
        assert!(matches!(
            OrderSigner::from_private_key("zz"),
            Err(OrderError::BadPrivateKey)
        ));
        let s = OrderSigner::from_private_key(KEY).expect("key");
        let mut i = intent("x");
        i.token_id = "not-a-number".into();
        assert!(matches!(
            s.sign(&i, "k"),
            Err(OrderError::Invalid {
                field: "tokenId",
                ..
            })
        ));
    }
}
