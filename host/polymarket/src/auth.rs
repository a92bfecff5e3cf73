//! API credentials and L2 (HMAC) request authentication.
//!
//! Owns: loading [`Credentials`] from the environment or from a permission-checked file, keeping
//! secrets out of `Debug` output, and computing the five `POLY_*` L2 headers. The local server
//! verifies requests with the same [`l2_signature`], so client and server cannot drift apart.
//!
//! Does not own: L1 (EIP-712 key derivation; keys are created once, outside the host) or order
//! signing (see `order`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Environment variable names (also the keys of a credentials file).
pub const ENV_API_KEY: &str = "POLYMARKET_API_KEY";
pub const ENV_API_SECRET: &str = "POLYMARKET_API_SECRET";
pub const ENV_API_PASSPHRASE: &str = "POLYMARKET_API_PASSPHRASE";
pub const ENV_ADDRESS: &str = "POLYMARKET_ADDRESS";
pub const ENV_PRIVATE_KEY: &str = "POLYMARKET_PRIVATE_KEY";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credential `{name}` is not set")]
    Missing { name: &'static str },
    #[error("credentials file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credentials file {path} is readable by group or others (mode {mode:o}); run `chmod 600` on it"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("credentials file {path}, line {line}: expected KEY=VALUE")]
    Syntax { path: PathBuf, line: usize },
    #[error("API secret is not valid base64url: {0}")]
    BadSecret(base64::DecodeError),
}

/// A string that never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything needed to trade: L2 API credentials plus the wallet that signs orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub api_key: String,
    pub secret: Secret,
    pub passphrase: Secret,
    /// Address sent as `POLY_ADDRESS` (the signer's address).
    pub address: String,
    /// Hex private key of the order signer; absent for read-only or cancel-only use.
    pub private_key: Option<Secret>,
}

impl Credentials {
    /// Reads the `POLYMARKET_*` environment variables. The private key is optional.
    ///
    /// # Errors
    /// [`AuthError::Missing`] naming the first required variable that is unset or empty.
    pub fn from_env() -> Result<Self, AuthError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads `KEY=VALUE` lines (the environment variable names; `#` starts a comment) from a
    /// file that only its owner may read.
    ///
    /// # Errors
    /// [`AuthError::InsecurePermissions`] if group or others have any access to the file,
    /// [`AuthError::Io`], [`AuthError::Syntax`], or [`AuthError::Missing`].
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let io = |source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        };
        check_permissions(path)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=').ok_or_else(|| AuthError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
            })?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            pairs.push((k.trim().to_string(), v.to_string()));
        }
        Self::from_lookup(|k| pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone()))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let req = |name: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AuthError::Missing { name })
        };
        Ok(Credentials {
            api_key: req(ENV_API_KEY)?,
            secret: Secret(req(ENV_API_SECRET)?),
            passphrase: Secret(req(ENV_API_PASSPHRASE)?),
            address: req(ENV_ADDRESS)?,
            private_key: get(ENV_PRIVATE_KEY)
                .filter(|v| !v.trim().is_empty())
                .map(Secret),
        })
    }

    /// The L2 headers for one request. `request_path` may carry a query; it is not signed.
    ///
    /// # Errors
    /// [`AuthError::BadSecret`] if the API secret is not base64url.
    pub fn l2_headers(
        &self,
        timestamp_s: u64,
        method: &str,
        request_path: &str,
        body: &str,
    ) -> Result<L2Headers, AuthError> {
        let ts = timestamp_s.to_string();
        let signature = l2_signature(self.secret.expose(), &ts, method, request_path, body)?;
        Ok(L2Headers {
            address: self.address.clone(),
            signature,
            timestamp: ts,
            api_key: self.api_key.clone(),
            passphrase: self.passphrase.clone(),
        })
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), AuthError> {
    Ok(())
}

/// The five L2 headers; `passphrase` stays redacted in `Debug`.
#[derive(Clone, Debug)]
pub struct L2Headers {
    pub address: String,
    pub signature: String,
    pub timestamp: String,
    pub api_key: String,
    pub passphrase: Secret,
}

impl L2Headers {
    /// (header name, value) pairs in the venue's spelling.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("POLY_ADDRESS", &self.address),
            ("POLY_SIGNATURE", &self.signature),
            ("POLY_TIMESTAMP", &self.timestamp),
            ("POLY_API_KEY", &self.api_key),
            ("POLY_PASSPHRASE", self.passphrase.expose()),
        ]
    }
}

/// Secrets are issued padded, but accept unpadded ones too rather than fail at the first order.
const SECRET_DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `base64url(HMAC_SHA256(base64url_decode(secret), timestamp + METHOD + path + body))`, padded,
/// with any query string cut off `request_path`.
///
/// # Errors
/// [`AuthError::BadSecret`] if `secret` is not base64url.
pub fn l2_signature(
    secret: &str,
    timestamp: &str,
    method: &str,
    request_path: &str,
    body: &str,
) -> Result<String, AuthError> {
    let key = SECRET_DECODER
        .decode(secret.trim())
        .map_err(AuthError::BadSecret)?;
    let path = request_path.split('?').next().unwrap_or(request_path);
    // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than panic.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
        .map_err(|_| AuthError::BadSecret(base64::DecodeError::InvalidLength(key.len())))?;
    mac.update(timestamp.as_bytes());
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(path.as_bytes());
    mac.update(body.as_bytes());
    Ok(URL_SAFE.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            api_key: "key-1".into(),
            secret: Secret::new("c2VjcmV0LWtleS0xMjM0NQ=="),
            passphrase: Secret::new("pass-phrase-xyz"),
            address: "0x1111111111111111111111111111111111111111".into(),
            private_key: Some(Secret::new("0xdeadbeefcafe")),
        }
    }

    // Recompute with:
    // python3 -c 'import hmac,hashlib,base64; k=base64.urlsafe_b64decode("c2VjcmV0LWtleS0xMjM0NQ=="); m=b"1700000000POST/order"+b"{\"a\":1}"; print(base64.urlsafe_b64encode(hmac.new(k,m,hashlib.sha256).digest()).decode())'
    #[test]
    fn l2_signature_matches_independent_vector() {
        let sig = l2_signature(
            "c2VjcmV0LWtleS0xMjM0NQ==",
            "1700000000",
            "POST",
            "/order",
            "{\"a\":1}",
        )
        .expect("valid secret");
        assert_eq!(sig, "U1MDuYd15yoLSJq1Om9jjj1P-6nf-Ci55k5mgSrtY1s=");
    }

    // python3 -c 'import hmac,hashlib,base64; k=base64.urlsafe_b64decode("c2VjcmV0LWtleS0xMjM0NQ=="); m=b"1700000000GET/data/orders"; print(base64.urlsafe_b64encode(hmac.new(k,m,hashlib.sha256).digest()).decode())'
    #[test]
    fn l2_signature_drops_query_and_uppercases_method() {
        let sig = l2_signature(
            "c2VjcmV0LWtleS0xMjM0NQ==",
            "1700000000",
            "get",
            "/data/orders?market=0xabc",
            "",
        )
        .expect("valid secret");
        assert_eq!(sig, "2FZ9usFO50if9GFW2cXt92ruqRxRKhTT6qqWM2WWli8=");
    }

    #[test]
    fn bad_secret_is_an_error() {
        assert!(matches!(
            l2_signature("not base64 !!", "1", "GET", "/", ""),
            Err(AuthError::BadSecret(_))
        ));
    }

    #[test]
    fn headers_carry_all_five_names() {
        let h = creds()
            .l2_headers(1700000000, "POST", "/order", "{}")
            .expect("headers");
        let names: Vec<_> = h.pairs().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "POLY_ADDRESS",
                "POLY_SIGNATURE",
                "POLY_TIMESTAMP",
                "POLY_API_KEY",
                "POLY_PASSPHRASE"
            ]
        );
        assert_eq!(h.timestamp, "1700000000");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = creds();
        let shown = format!(
            "{c:?} {:?}",
            c.l2_headers(1, "GET", "/", "").expect("headers")
        );
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("pass-phrase-xyz"), "{shown}");
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(shown.contains("key-1"));
    }

    const FILE: &str = "# test\nPOLYMARKET_API_KEY=key-1\nPOLYMARKET_API_SECRET=c2VjcmV0LWtleS0xMjM0NQ==\n\
POLYMARKET_API_PASSPHRASE=pass-phrase-xyz\nexport POLYMARKET_ADDRESS=0x1111111111111111111111111111111111111111\n\
POLYMARKET_PRIVATE_KEY=\"0xdeadbeefcafe\"\n";

    #[cfg(unix)]
    #[test]
    fn file_with_owner_only_permissions_loads() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("creds");
        std::fs::write(&path, FILE).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(Credentials::from_file(&path).expect("load"), creds());
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("creds");
        std::fs::write(&path, FILE).expect("write");
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = Credentials::from_file(&path).expect_err("must refuse");
            assert!(
                matches!(err, AuthError::InsecurePermissions { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
    }

    #[test]
    fn missing_variable_is_named() {
        let err = Credentials::from_lookup(|k| (k != ENV_API_PASSPHRASE).then(|| "x".into()))
            .expect_err("missing");
        assert!(err.to_string().contains(ENV_API_PASSPHRASE), "{err}");
    }
}
