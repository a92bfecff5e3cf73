//! The API's bearer token: from `POLYBOT_API_TOKEN`, or generated on first
//! start into `DIR/api-token` (mode 600) and read from there afterwards;
//! compared in constant time.
//!
//! Owns the token and its check. Never logs or prints the token, and never
//! includes it in an error.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::{ApiState, HttpError};

/// The environment variable holding a token given by the operator.
pub const TOKEN_ENV: &str = "POLYBOT_API_TOKEN";

/// The file a generated token is kept in, under the data directory.
pub const TOKEN_FILE: &str = "api-token";

/// Shortest token accepted from the environment or the file.
const MIN_LEN: usize = 16;

/// A bearer token (its `Debug` hides it).
pub struct Token {
    secret: String,
    /// Given by the operator (`POLYBOT_API_TOKEN`) rather than generated.
    pub explicit: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("explicit", &self.explicit)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{TOKEN_ENV}: shorter than {MIN_LEN} characters or not printable ASCII")]
    WeakEnv,
    #[error(
        "{path}: the API token file is shorter than {MIN_LEN} characters or not printable ASCII"
    )]
    WeakFile { path: String },
    #[error("{path}: cannot read or write the API token: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn acceptable(secret: &str) -> bool {
    secret.len() >= MIN_LEN && secret.bytes().all(|b| b.is_ascii_graphic())
}

impl Token {
    /// A token given as is (for tests and embedding).
    pub fn new(secret: String, explicit: bool) -> Token {
        Token { secret, explicit }
    }

    /// The token given by the environment, if any.
    ///
    /// # Errors
    /// [`TokenError::WeakEnv`] for a short or non-printable token.
    pub fn from_env() -> Result<Option<Token>, TokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(secret) if acceptable(secret.trim()) => {
                Ok(Some(Token::new(secret.trim().to_string(), true)))
            }
            Ok(_) => Err(TokenError::WeakEnv),
            Err(_) => Ok(None),
        }
    }

    /// Where a generated token is kept.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(TOKEN_FILE)
    }

    /// The token in `DIR/api-token`, generated there (mode 600) on first start.
    ///
    /// # Errors
    /// The file cannot be read or written, or holds a weak token.
    pub fn load_or_generate(data_dir: &Path) -> Result<Token, TokenError> {
        let path = Token::path(data_dir);
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = text.trim();
                if !acceptable(secret) {
                    return Err(TokenError::WeakFile {
                        path: path.display().to_string(),
                    });
                }
                Ok(Token::new(secret.to_string(), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = hex::encode(rand::random::<[u8; 32]>());
                std::fs::create_dir_all(data_dir).map_err(io)?;
                write_private(&path, &secret).map_err(io)?;
                tracing::info!("generated an API token in {} (mode 600)", path.display());
                Ok(Token::new(secret, false))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The secret, to send (clients only; never log it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `given` is this token, in time independent of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        bool::from(self.secret.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// Creates `path` readable by its owner only, then writes `secret` to it.
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The one route that also takes the token as `?token=`: a browser's
/// `EventSource` cannot set headers.
pub const STREAM_PATH: &str = "/api/stream";

/// The `token` query parameter of a request to [`STREAM_PATH`].
fn query_token(request: &Request) -> Option<String> {
    if request.uri().path() != STREAM_PATH {
        return None;
    }
    let axum::extract::Query(mut query) = axum::extract::Query::<
        std::collections::HashMap<String, String>,
    >::try_from_uri(request.uri())
    .ok()?;
    query.remove("token")
}

/// Lets a request through only with `Authorization: Bearer <token>` (or,
/// for [`STREAM_PATH`] only, `?token=<token>`).
pub async fn require(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let given = header.or_else(|| query_token(&request));
    match given.as_deref() {
        Some(given) if state.token.matches(given.trim()) => next.run(request).await,
        Some(_) => HttpError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response(),
        None => HttpError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` (the token is in DIR/api-token or POLYBOT_API_TOKEN)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = Token::load_or_generate(dir.path()).unwrap();
        let again = Token::load_or_generate(dir.path()).unwrap();
        assert!(first.matches(&again.secret));
        assert!(!first.matches("wrong"));
        assert!(!first.matches(""));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(Token::path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains(&first.secret));
    }

    #[test]
    fn a_weak_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Token::path(dir.path()), "short\n").unwrap();
        assert!(matches!(
            Token::load_or_generate(dir.path()),
            Err(TokenError::WeakFile { .. })
        ));
    }
}
