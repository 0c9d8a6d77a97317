//! Authentication and authorization of WebSocket clients (protocol §3).
//!
//! [`Authenticator`] is built once from `auth.*` and turns the `token` of a client's `hello`
//! into an [`Identity`]: the client's [`Grant`] (what it may subscribe to and publish) and when
//! its token expires. Mode `none` grants everything; `jwt` verifies a signed token
//! ([`jwt::JwtVerifier`]); `tokens` looks the token's SHA-256 up among configured entries
//! ([`tokens::StaticTokens`]). [`grant`] answers the per-request questions.
//!
//! Nothing here logs or formats a token or a secret: errors say why, never with what.

pub(crate) mod grant;
pub(crate) mod jwt;
pub(crate) mod tokens;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mqws_config::{AuthConfig, AuthMode};

pub(crate) use grant::Grant;
pub use grant::GrantError;
pub(crate) use jwt::JwtVerifier;
pub(crate) use tokens::StaticTokens;

/// Longest token accepted, so a client cannot make the server hash or parse megabytes.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Who a client is once its `hello` is accepted: what it may do and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// What the client may subscribe to and publish.
    pub(crate) grant: Grant,
    /// When the token stops being valid (the connection is then closed with 4003); `None`
    /// for tokens that do not expire (mode `none`, static tokens).
    pub(crate) expires_at: Option<SystemTime>,
}

impl Identity {
    /// How long until the token expires, as seen at `now`: `None` when it never does, zero
    /// when it already has. What the connection's expiry timer waits for.
    pub(crate) fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

/// Why a client's token was refused. The `Display` text is safe to send to the client in an
/// `unauthorized` error frame: it never contains the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// Auth is on and `hello` carried no token (or an empty one).
    #[error("a token is required")]
    Missing,
    /// The token is not acceptable.
    #[error("invalid token: {0}")]
    Invalid(#[source] InvalidReason),
    /// The token was valid but its `exp` has passed.
    #[error("the token has expired")]
    Expired,
}

/// What exactly is wrong with a refused token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidReason {
    /// Not a JWT at all (wrong shape, bad base64, bad header).
    #[error("not a well-formed token")]
    Malformed,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is too long")]
    TooLong,
    /// The signature does not verify with the configured key.
    #[error("the signature does not verify")]
    BadSignature,
    /// Signed with another algorithm than the configured key's (e.g. HS256 against an RSA
    /// key): refused so one key type can never stand in for another.
    #[error("the token's algorithm is not the configured one")]
    BadAlgorithm,
    /// `aud` is missing or does not contain `auth.jwt.audience`.
    #[error("the token's audience is not accepted")]
    BadAudience,
    /// `iss` is missing or is not `auth.jwt.issuer`.
    #[error("the token's issuer is not accepted")]
    BadIssuer,
    /// No `exp` claim: tokens that never expire are refused.
    #[error("the token has no exp claim")]
    MissingExp,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The claims are not the expected JSON (e.g. `exp` not a number, `mqws` not a grant).
    #[error("the token's claims are malformed")]
    BadClaims,
    /// The `mqws` grant holds an invalid filter.
    #[error("the token's grant is invalid: {0}")]
    BadGrant(#[source] GrantError),
    /// Not one of the configured static tokens.
    #[error("unknown token")]
    UnknownToken,
    /// Anything else the JWT library refused.
    #[error("the token was refused")]
    Other,
}

impl AuthError {
    /// A short, fixed label for metrics (`reason` of the auth failure counter).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(why) => why.reason(),
        }
    }
}

impl InvalidReason {
    /// A short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            InvalidReason::Malformed => "malformed",
            InvalidReason::TooLong => "too_long",
            InvalidReason::BadSignature => "bad_signature",
            InvalidReason::BadAlgorithm => "bad_algorithm",
            InvalidReason::BadAudience => "bad_audience",
            InvalidReason::BadIssuer => "bad_issuer",
            InvalidReason::MissingExp => "missing_exp",
            InvalidReason::NotYetValid => "not_yet_valid",
            InvalidReason::BadClaims => "bad_claims",
            InvalidReason::BadGrant(_) => "bad_grant",
            InvalidReason::UnknownToken => "unknown_token",
            InvalidReason::Other => "invalid",
        }
    }
}

/// Why the `auth` configuration cannot be turned into an [`Authenticator`]. The config crate
/// catches most of these at load time; this is the authoritative check (e.g. it parses the
/// key).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `auth.mode = "jwt"` without a key.
    #[error("auth.mode = \"jwt\" needs auth.jwt.secret or auth.jwt.public_key")]
    NoKey,
    /// Both a secret and a public key.
    #[error("auth.jwt.secret and auth.jwt.public_key are both set; use one")]
    BothKeys,
    /// An empty HS256 secret.
    #[error("auth.jwt.secret is empty")]
    EmptySecret,
    /// The public key file could not be read.
    #[error("reading the JWT public key {}: {source}", path.display())]
    ReadKey {
        /// `auth.jwt.public_key`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The public key file holds no usable key.
    #[error("the JWT public key {} is not usable: {why}", path.display())]
    BadKey {
        /// `auth.jwt.public_key`.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// `auth.mode = "tokens"` without entries.
    #[error("auth.mode = \"tokens\" needs at least one [[auth.tokens]] entry")]
    NoTokens,
    /// A token hash that is not 64 hex digits.
    #[error("auth.tokens[{index}].sha256 is not 64 hex digits")]
    TokenHash {
        /// Position of the entry.
        index: usize,
    },
    /// Two entries with the same hash.
    #[error("auth.tokens[{index}].sha256 repeats auth.tokens[{first}].sha256")]
    DuplicateToken {
        /// Position of the repeat.
        index: usize,
        /// Position of the first entry with that hash.
        first: usize,
    },
    /// A token entry's grant holds an invalid filter.
    #[error("auth.tokens[{index}]: {source}")]
    TokenGrant {
        /// Position of the entry.
        index: usize,
        /// The bad filter.
        #[source]
        source: GrantError,
    },
}

/// Checks `hello` tokens according to `auth.mode`. Built once at start-up and shared by all
/// connections (it is immutable and `Sync`).
#[derive(Debug)]
pub(crate) struct Authenticator {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    None,
    // Boxed: the verifier is large and built once.
    Jwt(Box<JwtVerifier>),
    Tokens(StaticTokens),
}

impl Authenticator {
    /// Builds the authenticator for `config.mode` (reading and parsing the JWT public key, if
    /// any). Only the active mode's settings are used.
    pub(crate) fn from_config(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let kind = match config.mode {
            AuthMode::None => Kind::None,
            AuthMode::Jwt => Kind::Jwt(Box::new(JwtVerifier::from_config(&config.jwt)?)),
            AuthMode::Tokens => Kind::Tokens(StaticTokens::from_config(&config.tokens)?),
        };
        Ok(Authenticator { kind })
    }

    /// The active mode.
    #[cfg(test)]
    pub(crate) fn mode(&self) -> AuthMode {
        match self.kind {
            Kind::None => AuthMode::None,
            Kind::Jwt(_) => AuthMode::Jwt,
            Kind::Tokens(_) => AuthMode::Tokens,
        }
    }

    /// Checks the token of a `hello`. Mode `none` accepts anything (the token is ignored) and
    /// grants everything; otherwise a missing or empty token is [`AuthError::Missing`].
    pub(crate) fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        match &self.kind {
            Kind::None => Ok(Identity {
                grant: Grant::all(),
                expires_at: None,
            }),
            Kind::Jwt(verifier) => verifier.verify(presented(token)?).map(|c| Identity {
                grant: c.grant,
                expires_at: Some(c.expires_at),
            }),
            Kind::Tokens(tokens) => tokens.verify(presented(token)?).map(|grant| Identity {
                grant,
                expires_at: None,
            }),
        }
    }
}

/// The token to check, when one worth checking was given.
fn presented(token: Option<&str>) -> Result<&str, AuthError> {
    match token {
        None | Some("") => Err(AuthError::Missing),
        Some(t) if t.len() > MAX_TOKEN_LEN => Err(AuthError::Invalid(InvalidReason::TooLong)),
        Some(t) => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqws_config::{JwtConfig, Secret, TokenConfig};
    use sha2::{Digest, Sha256};
    use std::time::UNIX_EPOCH;

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    #[test]
    fn none_grants_everything_whatever_the_token() {
        let auth = Authenticator::from_config(&AuthConfig::default()).expect("builds");
        assert_eq!(auth.mode(), AuthMode::None);
        for token in [None, Some(""), Some("garbage")] {
            let id = auth.authenticate(token).expect("accepted");
            assert_eq!(id.grant, Grant::all());
            assert_eq!(id.expires_at, None);
            assert_eq!(id.time_left(SystemTime::now()), None);
        }
    }

    #[test]
    fn jwt_mode_end_to_end() {
        let secret = "an-hs256-secret-of-32-bytes-or-more!";
        let auth = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Jwt,
            jwt: JwtConfig {
                secret: Some(Secret::new(secret)),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        })
        .expect("builds");
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("")), Err(AuthError::Missing));
        let huge = "x".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            auth.authenticate(Some(&huge)).map_err(|e| e.reason()),
            Err("too_long")
        );
        let exp = now_secs() + 600;
        let token = jwt::tests::hs256(
            secret,
            &serde_json::json!({"exp": exp, "mqws": {"sub": ["a/#"], "pub": ["b"]}}),
        );
        let id = auth.authenticate(Some(&token)).expect("valid");
        assert!(id.grant.may_subscribe("a/x"));
        assert!(id.grant.may_publish("b"));
        assert_eq!(id.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));
        let left = id.time_left(SystemTime::now()).expect("expires");
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
        assert_eq!(
            id.time_left(UNIX_EPOCH + Duration::from_secs(exp + 5)),
            Some(Duration::ZERO)
        );
        let err = auth.authenticate(Some("a.b.c")).expect_err("garbage");
        assert_eq!(err.reason(), "malformed");
        assert!(!err.to_string().contains("a.b.c"));
    }

    #[test]
    fn tokens_mode_end_to_end() {
        let auth = Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Tokens,
            tokens: vec![TokenConfig {
                sha256: hex::encode(Sha256::digest(b"reader-token")),
                sub: vec!["site/#".to_owned()],
                pub_: vec![],
            }],
            ..AuthConfig::default()
        })
        .expect("builds");
        assert_eq!(auth.mode(), AuthMode::Tokens);
        let id = auth.authenticate(Some("reader-token")).expect("known");
        assert!(id.grant.may_subscribe("site/a/+"));
        assert!(!id.grant.may_publish("site/a"));
        assert_eq!(id.expires_at, None);
        let err = auth.authenticate(Some("other")).expect_err("unknown");
        assert_eq!(err, AuthError::Invalid(InvalidReason::UnknownToken));
        assert_eq!(err.reason(), "unknown_token");
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn setup_errors() {
        let jwt = |jwt: JwtConfig| {
            Authenticator::from_config(&AuthConfig {
                mode: AuthMode::Jwt,
                jwt,
                ..AuthConfig::default()
            })
            .map(|_| ())
        };
        assert!(matches!(
            jwt(JwtConfig::default()),
            Err(AuthSetupError::NoKey)
        ));
        assert!(matches!(
            jwt(JwtConfig {
                secret: Some(Secret::new("x")),
                public_key: Some("/nonexistent.pem".into()),
                ..JwtConfig::default()
            }),
            Err(AuthSetupError::BothKeys)
        ));
        let err = jwt(JwtConfig {
            public_key: Some("/nonexistent/key.pem".into()),
            ..JwtConfig::default()
        })
        .expect_err("missing file");
        assert!(matches!(err, AuthSetupError::ReadKey { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");

        let tokens = |tokens: Vec<TokenConfig>| {
            Authenticator::from_config(&AuthConfig {
                mode: AuthMode::Tokens,
                tokens,
                ..AuthConfig::default()
            })
            .map(|_| ())
        };
        assert!(matches!(tokens(vec![]), Err(AuthSetupError::NoTokens)));
        let entry = |sha256: &str, sub: &[&str]| TokenConfig {
            sha256: sha256.to_owned(),
            sub: sub.iter().map(|s| (*s).to_owned()).collect(),
            pub_: vec![],
        };
        let hash = hex::encode(Sha256::digest(b"t"));
        assert!(matches!(
            tokens(vec![entry("plaintext", &[])]),
            Err(AuthSetupError::TokenHash { index: 0 })
        ));
        assert!(matches!(
            tokens(vec![entry(&hash, &[]), entry(&hash.to_uppercase(), &[])]),
            Err(AuthSetupError::DuplicateToken { index: 1, first: 0 })
        ));
        assert!(matches!(
            tokens(vec![entry(&hash, &["a/#/b"])]),
            Err(AuthSetupError::TokenGrant { index: 0, .. })
        ));
    }

    #[test]
    fn reasons_are_stable_labels() {
        assert_eq!(AuthError::Missing.reason(), "missing");
        assert_eq!(AuthError::Expired.reason(), "expired");
        assert_eq!(
            AuthError::Invalid(InvalidReason::BadSignature).reason(),
            "bad_signature"
        );
        assert_eq!(
            AuthError::Invalid(InvalidReason::BadAudience).reason(),
            "bad_audience"
        );
        assert_eq!(AuthError::Invalid(InvalidReason::Other).reason(), "invalid");
    }
}
