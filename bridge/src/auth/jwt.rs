//! JWT verification for `auth.mode = "jwt"`: HS256 with `auth.jwt.secret`, or RS256/ES256 with
//! the PEM public key at `auth.jwt.public_key` (the key type decides the algorithm). `exp` is
//! required; `nbf` is honoured when present; `aud`/`iss` are checked (and then required) only
//! when configured. The grant is the `mqws` claim (missing: nothing allowed).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mqws_config::JwtConfig;
use serde::Deserialize;

use super::{AuthError, AuthSetupError, Grant, InvalidReason};

/// Latest `exp` taken at face value (the end of year 9999); later ones are clamped so the
/// expiry stays a representable `SystemTime`.
const MAX_EXP: u64 = 253_402_300_799;

/// RFC 7518 §3.3: RS256 keys must be at least 2048 bits.
const MIN_RSA_BITS: usize = 2048;

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The `mqws` claim; empty when the token has none.
    pub(crate) grant: Grant,
    /// `exp` plus the configured leeway: the last instant the token is accepted, and when the
    /// connection it opened is closed with 4003.
    pub(crate) expires_at: SystemTime,
}

/// Verifies JWTs with one configured key. Immutable; share it.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    leeway: Duration,
}

impl fmt::Debug for JwtVerifier {
    // The key is left out: for HS256 it is the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// The claims mqws reads itself; `jsonwebtoken` checks `exp`, `nbf`, `aud` and `iss`.
#[derive(Deserialize)]
struct RawClaims {
    /// Kept loose: the library has already validated it as a number when this is read.
    #[serde(default)]
    exp: serde_json::Value,
    #[serde(default)]
    mqws: Option<Grant>,
}

impl JwtVerifier {
    /// Builds the verifier from `[auth.jwt]`: exactly one of `secret` (HS256) and `public_key`
    /// (RS256 for an RSA key of at least 2048 bits, ES256 for an EC P-256 key).
    pub(crate) fn from_config(config: &JwtConfig) -> Result<Self, AuthSetupError> {
        let (key, algorithm) = match (&config.secret, &config.public_key) {
            (Some(_), Some(_)) => return Err(AuthSetupError::BothKeys),
            (None, None) => return Err(AuthSetupError::NoKey),
            (Some(secret), None) => {
                if secret.expose().is_empty() {
                    return Err(AuthSetupError::EmptySecret);
                }
                (
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                    Algorithm::HS256,
                )
            }
            (None, Some(path)) => load_public_key(path)?,
        };
        let leeway = Duration::from_secs(config.leeway.as_secs());
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // Like Centrifugo: no audience configured means no audience check, so tokens from
            // identity providers that always set `aud` still work.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            key,
            algorithm,
            validation,
            leeway,
        })
    }

    /// The algorithm tokens must be signed with.
    #[cfg(test)]
    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies `token` (signature, algorithm, `exp`, `nbf`, `aud`, `iss`) and reads its grant.
    /// A grant with an invalid filter refuses the whole token.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // The header is parsed first so a token that is not a JWT at all is told apart from
        // one whose claims are wrong.
        jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid(InvalidReason::Malformed))?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        let grant = data.claims.mqws.unwrap_or_default();
        grant
            .check()
            .map_err(|e| AuthError::Invalid(InvalidReason::BadGrant(e)))?;
        let exp =
            exp_seconds(&data.claims.exp).ok_or(AuthError::Invalid(InvalidReason::MissingExp))?;
        Ok(Claims {
            grant,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp.min(MAX_EXP)) + self.leeway,
        })
    }
}

/// `exp` as whole seconds, rounded like `jsonwebtoken` does when it validates it.
fn exp_seconds(exp: &serde_json::Value) -> Option<u64> {
    let n = exp.as_number()?;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
}

fn map_error(kind: &ErrorKind) -> AuthError {
    let why = match kind {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => InvalidReason::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => InvalidReason::BadAlgorithm,
        ErrorKind::InvalidAudience => InvalidReason::BadAudience,
        ErrorKind::InvalidIssuer => InvalidReason::BadIssuer,
        ErrorKind::ImmatureSignature => InvalidReason::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "aud" => InvalidReason::BadAudience,
            "iss" => InvalidReason::BadIssuer,
            "exp" => InvalidReason::MissingExp,
            _ => InvalidReason::BadClaims,
        },
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => InvalidReason::BadClaims,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            InvalidReason::Malformed
        }
        _ => InvalidReason::Other,
    };
    AuthError::Invalid(why)
}

/// Reads a PEM public key and picks the algorithm from its type. Text around the PEM block
/// (as `openssl` sometimes writes) is ignored.
fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthSetupError> {
    use p256::pkcs8::DecodePublicKey as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;

    let bad = |why: String| AuthSetupError::BadKey {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|source| AuthSetupError::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    let block = pem_block(&text).ok_or_else(|| {
        bad(if text.contains("PRIVATE KEY-----") {
            "it holds a private key; give the public key".to_owned()
        } else {
            "no -----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY----- block".to_owned()
        })
    })?;

    if p256::PublicKey::from_public_key_pem(block).is_ok() {
        let decoding = DecodingKey::from_ec_pem(block.as_bytes())
            .map_err(|e| bad(format!("not a usable P-256 key ({e})")))?;
        return Ok((decoding, Algorithm::ES256));
    }
    let rsa_key = rsa::RsaPublicKey::from_public_key_pem(block)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(block));
    match rsa_key {
        Ok(key) => {
            let bits = key.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(bad(format!(
                    "an RSA key of {bits} bits; RS256 needs at least {MIN_RSA_BITS}"
                )));
            }
            let decoding = DecodingKey::from_rsa_raw_components(
                &key.n().to_bytes_be(),
                &key.e().to_bytes_be(),
            );
            Ok((decoding, Algorithm::RS256))
        }
        Err(e) => Err(bad(format!(
            "neither an RSA public key nor an EC P-256 public key ({e})"
        ))),
    }
}

/// The first `PUBLIC KEY` or `RSA PUBLIC KEY` PEM block of `text`, boundaries included.
fn pem_block(text: &str) -> Option<&str> {
    for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(start) = text.find(&begin) {
            let stop = text[start..].find(&end)? + start + end.len();
            return Some(&text[start..stop]);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use mqws_config::Secret;
    use serde_json::{json, Value};

    const SECRET: &str = "an-hs256-secret-of-32-bytes-or-more!";

    pub(crate) fn hs256(secret: &str, claims: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("HS256 signs")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs_verifier(audience: Option<&str>, issuer: Option<&str>, leeway: u64) -> JwtVerifier {
        JwtVerifier::from_config(&JwtConfig {
            secret: Some(Secret::new(SECRET)),
            audience: audience.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
            leeway: Duration::from_secs(leeway),
            ..JwtConfig::default()
        })
        .expect("HS256 verifier builds")
    }

    fn reason(r: Result<Claims, AuthError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.reason())
    }

    #[test]
    fn hs256_good_token_with_grant() {
        let v = hs_verifier(None, None, 0);
        assert_eq!(v.algorithm(), Algorithm::HS256);
        let exp = now() + 300;
        let token = hs256(
            SECRET,
            &json!({"exp": exp, "sub": "user-1",
                    "mqws": {"sub": ["site/a/#"], "pub": ["readers/+/cmd"]}}),
        );
        let claims = v.verify(&token).expect("valid");
        assert_eq!(claims.grant.sub, vec!["site/a/#".to_owned()]);
        assert_eq!(claims.grant.pub_, vec!["readers/+/cmd".to_owned()]);
        assert!(claims.grant.may_subscribe("site/a/tags/+"));
        assert!(!claims.grant.may_subscribe("site/#"));
        assert!(claims.grant.may_publish("readers/r1/cmd"));
        assert_eq!(claims.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
    }

    #[test]
    fn missing_grant_claim_allows_nothing() {
        let v = hs_verifier(None, None, 0);
        let claims = v
            .verify(&hs256(SECRET, &json!({"exp": now() + 60})))
            .expect("valid");
        assert_eq!(claims.grant, Grant::none());
        assert!(!claims.grant.may_subscribe("a"));
        let claims = v
            .verify(&hs256(
                SECRET,
                &json!({"exp": now() + 60, "mqws": {"sub": ["a"]}}),
            ))
            .expect("valid");
        assert!(claims.grant.pub_.is_empty());
    }

    #[test]
    fn hs256_refusals() {
        let v = hs_verifier(None, None, 0);
        let expired = hs256(SECRET, &json!({"exp": now() - 10}));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let wrong_secret = hs256(
            "another-secret-another-secret-123",
            &json!({"exp": now() + 60}),
        );
        assert_eq!(reason(v.verify(&wrong_secret)), "bad_signature");
        let no_exp = hs256(SECRET, &json!({"mqws": {"sub": ["#"]}}));
        assert_eq!(reason(v.verify(&no_exp)), "missing_exp");
        // An `exp` that is no number counts as no `exp`.
        let text_exp = hs256(SECRET, &json!({"exp": "tomorrow"}));
        assert_eq!(reason(v.verify(&text_exp)), "missing_exp");
        let negative_exp = hs256(SECRET, &json!({"exp": -5}));
        assert_ne!(reason(v.verify(&negative_exp)), "ok");
        let future = hs256(SECRET, &json!({"exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(reason(v.verify(&future)), "not_yet_valid");
        let bad_grant = hs256(
            SECRET,
            &json!({"exp": now() + 60, "mqws": {"sub": ["a/#/b"]}}),
        );
        assert_eq!(reason(v.verify(&bad_grant)), "bad_grant");
        let wrong_shape = hs256(SECRET, &json!({"exp": now() + 60, "mqws": {"sub": "a/#"}}));
        assert_eq!(reason(v.verify(&wrong_shape)), "bad_claims");
        assert_eq!(reason(v.verify("not a jwt")), "malformed");
        assert_eq!(reason(v.verify("a.b.c")), "malformed");
        // Tampered payload, original signature.
        let good = hs256(SECRET, &json!({"exp": now() + 60, "mqws": {"sub": ["a"]}}));
        let forged_claims = hs256("x", &json!({"exp": now() + 60, "mqws": {"sub": ["#"]}}));
        let parts: Vec<&str> = good.split('.').collect();
        let forged: Vec<&str> = forged_claims.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged[1], parts[2]);
        assert_eq!(reason(v.verify(&tampered)), "bad_signature");
        // alg "none" is never accepted.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&json!({"exp": now() + 60}).to_string())
        );
        assert_ne!(reason(v.verify(&none)), "ok");
    }

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn leeway_extends_exp() {
        let v = hs_verifier(None, None, 30);
        let exp = now() - 10;
        let claims = v
            .verify(&hs256(SECRET, &json!({"exp": exp})))
            .expect("inside the leeway");
        assert_eq!(
            claims.expires_at,
            UNIX_EPOCH + Duration::from_secs(exp + 30)
        );
        let too_old = hs256(SECRET, &json!({"exp": now() - 60}));
        assert_eq!(v.verify(&too_old), Err(AuthError::Expired));
    }

    #[test]
    fn audience_and_issuer() {
        let v = hs_verifier(Some("mqws"), Some("https://id.example"), 0);
        let exp = now() + 60;
        let ok = hs256(
            SECRET,
            &json!({"exp": exp, "aud": "mqws", "iss": "https://id.example"}),
        );
        assert_eq!(reason(v.verify(&ok)), "ok");
        let ok_list = hs256(
            SECRET,
            &json!({"exp": exp, "aud": ["other", "mqws"], "iss": "https://id.example"}),
        );
        assert_eq!(reason(v.verify(&ok_list)), "ok");
        let wrong_aud = hs256(
            SECRET,
            &json!({"exp": exp, "aud": "other", "iss": "https://id.example"}),
        );
        assert_eq!(reason(v.verify(&wrong_aud)), "bad_audience");
        let no_aud = hs256(SECRET, &json!({"exp": exp, "iss": "https://id.example"}));
        assert_eq!(reason(v.verify(&no_aud)), "bad_audience");
        let wrong_iss = hs256(SECRET, &json!({"exp": exp, "aud": "mqws", "iss": "evil"}));
        assert_eq!(reason(v.verify(&wrong_iss)), "bad_issuer");
        let no_iss = hs256(SECRET, &json!({"exp": exp, "aud": "mqws"}));
        assert_eq!(reason(v.verify(&no_iss)), "bad_issuer");

        // Without configured checks, aud and iss are not looked at.
        let open = hs_verifier(None, None, 0);
        assert_eq!(reason(open.verify(&wrong_aud)), "ok");
        assert_eq!(reason(open.verify(&wrong_iss)), "ok");
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", hs_verifier(None, None, 0));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("HS256"), "{shown}");
    }

    /// Writes `pem` to a fresh temp file and builds a verifier for it.
    fn key_verifier(pem: &str) -> Result<JwtVerifier, AuthSetupError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, pem).expect("write key");
        JwtVerifier::from_config(&JwtConfig {
            public_key: Some(path),
            ..JwtConfig::default()
        })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signs")
    }

    #[test]
    fn es256_with_a_generated_key() {
        use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let private_pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM");
        // Text around the block is tolerated.
        let v = key_verifier(&format!("ES256 key for tests\n{public_pem}\n")).expect("builds");
        assert_eq!(v.algorithm(), Algorithm::ES256);
        let signing = EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC key");
        let exp = now() + 60;
        let token = sign(
            Algorithm::ES256,
            &signing,
            &json!({"exp": exp, "mqws": {"pub": ["x"]}}),
        );
        let claims = v.verify(&token).expect("valid ES256");
        assert!(claims.grant.may_publish("x"));
        let expired = sign(Algorithm::ES256, &signing, &json!({"exp": now() - 5}));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));

        let other = p256::SecretKey::random(&mut rand_core::OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM");
        let other = EncodingKey::from_ec_pem(other.as_bytes()).expect("EC key");
        let forged = sign(Algorithm::ES256, &other, &json!({"exp": exp}));
        assert_eq!(reason(v.verify(&forged)), "bad_signature");
        // An HS256 token must not pass against a public-key verifier.
        assert_eq!(
            reason(v.verify(&hs256(SECRET, &json!({"exp": exp})))),
            "bad_algorithm"
        );

        // A private key in place of the public one is refused with a hint.
        let err = key_verifier(&private_pem).expect_err("private key");
        assert!(err.to_string().contains("private key"), "{err}");
        assert!(!err.to_string().contains("BEGIN"), "{err}");
    }

    #[test]
    fn rs256_with_a_generated_key() {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
        let private_pem = private.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
        let public = rsa::RsaPublicKey::from(&private);
        let spki_pem = public.to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
        let pkcs1_pem = public.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
        let signing = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA key");
        let exp = now() + 60;
        let token = sign(
            Algorithm::RS256,
            &signing,
            &json!({"exp": exp, "mqws": {"sub": ["a/#"]}}),
        );
        for pem in [&spki_pem, &pkcs1_pem] {
            let v = key_verifier(pem).expect("builds");
            assert_eq!(v.algorithm(), Algorithm::RS256);
            let claims = v.verify(&token).expect("valid RS256");
            assert!(claims.grant.may_subscribe("a/b"));
            assert_eq!(claims.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
            let expired = sign(Algorithm::RS256, &signing, &json!({"exp": now() - 5}));
            assert_eq!(v.verify(&expired), Err(AuthError::Expired));
            // Same key, other RSA algorithm: refused.
            let rs512 = sign(Algorithm::RS512, &signing, &json!({"exp": exp}));
            assert_eq!(reason(v.verify(&rs512)), "bad_algorithm");
            // Key confusion: an HS256 token whose secret is the public key PEM.
            let confused = hs256(pem, &json!({"exp": exp, "mqws": {"sub": ["#"]}}));
            assert_eq!(reason(v.verify(&confused)), "bad_algorithm");
        }
        let mut tampered: Vec<char> = token.chars().collect();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        let v = key_verifier(&spki_pem).expect("builds");
        assert_eq!(reason(v.verify(&tampered)), "bad_signature");
    }

    #[test]
    fn unusable_key_files() {
        let err = key_verifier("hello").expect_err("not PEM");
        assert!(matches!(err, AuthSetupError::BadKey { .. }), "{err}");
        let err = key_verifier("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .expect_err("garbage DER");
        assert!(err.to_string().contains("neither an RSA"), "{err}");
        // A 1024-bit RSA key is too short for RS256. (Only the public half is parsed, so an
        // odd 1024-bit modulus stands in for a real key without slow prime generation.)
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        let n = rsa::BigUint::from_bytes_be(&[0xC3; 128]);
        let small = rsa::RsaPublicKey::new(n, rsa::BigUint::from(65_537u32)).expect("RSA key");
        let pem = small.to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
        let err = key_verifier(&pem).expect_err("too short");
        assert!(err.to_string().contains("1024 bits"), "{err}");
    }
}
