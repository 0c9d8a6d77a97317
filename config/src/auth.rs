//! The `[auth]` section: who may connect to `/ws` and what they may subscribe to and publish
//! (protocol §3). This module owns the serde shape of `auth.*`, the [`Secret`] wrapper that keeps
//! the HS256 secret out of logs and `check-config` output, and the start-up checks of the whole
//! section ([`AuthConfig::validate`]). Verifying tokens is the bridge's job (`mqws::auth`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// Longest accepted `auth.jwt.leeway`: more would make `exp` meaningless (and a huge value
/// would underflow the time arithmetic of the JWT library).
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// How clients of `/ws` prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every client may do everything (default; for a bridge on loopback).
    #[default]
    None,
    /// `hello.token` must be a JWT signed with `auth.jwt`'s key; its `mqws` claim is the grant.
    Jwt,
    /// `hello.token` must be one of the `[[auth.tokens]]`, identified by its SHA-256.
    Tokens,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::None => "none",
            AuthMode::Jwt => "jwt",
            AuthMode::Tokens => "tokens",
        })
    }
}

/// A configured secret (the HS256 key). It exists so the value cannot leak by accident:
/// `Debug` prints `Secret(***)` and `Serialize` writes `"***"` (what `mqws check-config`
/// prints), while `Deserialize` reads the plain string. Consequently a config that is
/// serialized and read back has lost the secret; only ever serialize for display.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (tests and programmatic configuration).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (building the verifier). Never log
    /// or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Reads a string. Scalars are accepted too, as their text: the environment provider
    /// turns `MQWS_AUTH__JWT__SECRET=12345` into a number, and refusing it would put the
    /// secret into the "invalid type" error line. (Quote such values, `'"007"'`, to keep
    /// leading zeros.) Lists and tables are refused without echoing their content.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Secret, E> {
        String::from_utf8(v.to_vec())
            .map(Secret)
            .map_err(|_| E::invalid_type(serde::de::Unexpected::Other("non-UTF-8 bytes"), &self))
    }

    fn visit_char<E: serde::de::Error>(self, v: char) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `"none"` (default), `"jwt"` or `"tokens"`.
    pub mode: AuthMode,
    /// JWT verification settings, used when `mode = "jwt"`.
    pub jwt: JwtConfig,
    /// Static tokens, used when `mode = "tokens"`. Only SHA-256 hashes are stored.
    pub tokens: Vec<TokenConfig>,
}

/// `[auth.jwt]`: the key and the claim checks. Exactly one of `secret` and `public_key`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret. Use at least 32 random bytes (RFC 7518 §3.2 asks for a key as long
    /// as the hash). Masked in `Debug` and `check-config` output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Path of a PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`): an RSA key means RS256, an
    /// EC P-256 key means ES256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PathBuf>,
    /// When set, a token must carry an `aud` claim containing this value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// When set, a token must carry this `iss` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` (and `nbf`). Default 0 s, at most 1 h.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

/// One `[[auth.tokens]]` entry: a token's hash and what its holder may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Lower- or upper-case hex of the SHA-256 of the token (64 hex digits), e.g. the output of
    /// `printf %s "$TOKEN" | sha256sum`. The token itself is never stored.
    pub sha256: String,
    /// MQTT filters the holder may subscribe within (also bounds replay, history and last).
    pub sub: Vec<String>,
    /// MQTT filters the topics the holder publishes to must match.
    #[serde(rename = "pub")]
    pub pub_: Vec<String>,
}

impl AuthConfig {
    /// Checks what serde cannot: the `auth.jwt` key choice (and that a public key file is a
    /// readable PEM public key), token hashes, grant filter syntax, and that an enabled mode
    /// has what it needs. Errors name the key, the value (secrets and hashes masked) and
    /// what is allowed, like every other start-up error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_jwt()?;
        self.validate_tokens()
    }

    /// The `auth.jwt` keys: one key choice, no empty strings, a bounded leeway, and a key at
    /// all when `auth.mode = "jwt"` needs one.
    fn validate_jwt(&self) -> Result<(), ConfigError> {
        let jwt = &self.jwt;
        if jwt.secret.is_some() && jwt.public_key.is_some() {
            return Err(ConfigError::invalid(
                "auth.jwt.public_key",
                quoted_path(jwt.public_key.as_ref()),
                "either auth.jwt.secret (HS256) or auth.jwt.public_key (RS256/ES256), not both",
            ));
        }
        if let Some(secret) = &jwt.secret {
            if secret.expose().is_empty() {
                return Err(ConfigError::invalid(
                    "auth.jwt.secret",
                    "\"\"",
                    "a non-empty HS256 secret (at least 32 random bytes recommended)",
                ));
            }
        }
        for (key, value) in [
            ("auth.jwt.audience", &jwt.audience),
            ("auth.jwt.issuer", &jwt.issuer),
        ] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::invalid(
                    key,
                    "\"\"",
                    "a non-empty string, or leave the key out to skip the check",
                ));
            }
        }
        if jwt.leeway > MAX_LEEWAY {
            return Err(ConfigError::invalid(
                "auth.jwt.leeway",
                format!(
                    "{:?}",
                    humantime_serde::re::humantime::format_duration(jwt.leeway).to_string()
                ),
                "a duration of at most 1h (e.g. \"30s\")",
            ));
        }
        if self.mode == AuthMode::Jwt {
            match (&jwt.secret, &jwt.public_key) {
                (None, None) => {
                    return Err(ConfigError::invalid(
                        "auth.jwt.secret",
                        "(unset)",
                        "auth.mode = \"jwt\" needs auth.jwt.secret (HS256) or \
                         auth.jwt.public_key (a PEM path, RS256/ES256)",
                    ));
                }
                (None, Some(path)) => check_public_key(path)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The `[[auth.tokens]]` entries: present when `auth.mode = "tokens"`, each a distinct
    /// SHA-256 hash with well-formed grant filters.
    fn validate_tokens(&self) -> Result<(), ConfigError> {
        if self.mode == AuthMode::Tokens && self.tokens.is_empty() {
            return Err(ConfigError::invalid(
                "auth.tokens",
                "[]",
                "at least one [[auth.tokens]] entry when auth.mode = \"tokens\"",
            ));
        }
        let mut seen: Vec<String> = Vec::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}].sha256");
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                // Masked: a wrong length often means the plaintext token was pasted here.
                return Err(ConfigError::invalid(
                    &key,
                    format!("\"***\" ({} characters)", entry.sha256.chars().count()),
                    "64 hex digits, the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
            let normalized = entry.sha256.to_ascii_lowercase();
            if let Some(first) = seen.iter().position(|h| *h == normalized) {
                return Err(ConfigError::invalid(
                    &key,
                    "\"***\"",
                    &format!(
                        "a hash not already used by auth.tokens[{first}] (one grant per token)"
                    ),
                ));
            }
            seen.push(normalized);
            check_filters(&format!("auth.tokens[{i}].sub"), &entry.sub)?;
            check_filters(&format!("auth.tokens[{i}].pub"), &entry.pub_)?;
        }
        Ok(())
    }
}

fn quoted_path(path: Option<&PathBuf>) -> String {
    path.map(|p| format!("{:?}", p.display().to_string()))
        .unwrap_or_else(|| "(unset)".to_owned())
}

const KEY_ALLOWED: &str = "a readable PEM file holding an RSA or EC P-256 public key \
                           (-----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----)";

/// A light check that catches the usual mistakes (wrong path, a private key, a certificate,
/// DER); the bridge parses the key itself when it builds the verifier.
fn check_public_key(path: &PathBuf) -> Result<(), ConfigError> {
    let value = quoted_path(Some(path));
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(
            "auth.jwt.public_key",
            &value,
            &format!("{KEY_ALLOWED}; reading it failed: {e}"),
        )
    })?;
    let has = |label: &str| {
        text.contains(&format!("-----BEGIN {label}-----"))
            && text.contains(&format!("-----END {label}-----"))
    };
    if has("PUBLIC KEY") || has("RSA PUBLIC KEY") {
        return Ok(());
    }
    let why = if text.contains("PRIVATE KEY-----") {
        "it holds a private key; give the public key only"
    } else if text.contains("-----BEGIN CERTIFICATE-----") {
        "it holds a certificate; extract the public key (openssl x509 -pubkey -noout)"
    } else {
        "it is not a PEM public key"
    };
    Err(ConfigError::invalid(
        "auth.jwt.public_key",
        &value,
        &format!("{KEY_ALLOWED}; {why}"),
    ))
}

fn check_filters(key: &str, filters: &[String]) -> Result<(), ConfigError> {
    for f in filters {
        if let Err(why) = check_filter(f) {
            return Err(ConfigError::invalid(
                key,
                format!("{f:?}"),
                &format!("MQTT topic filters ({why})"),
            ));
        }
    }
    Ok(())
}

/// MQTT filter syntax: non-empty, no NUL, `#` only as the whole last level, `+` only as a whole
/// level.
fn check_filter(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("a filter must not be empty");
    }
    if f.contains('\0') {
        return Err("a filter must not contain NUL");
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(toml_text: &str) -> AuthConfig {
        #[derive(Deserialize)]
        struct Root {
            auth: AuthConfig,
        }
        toml::from_str::<Root>(toml_text)
            .expect("test TOML parses")
            .auth
    }

    fn error_line(c: &AuthConfig) -> String {
        c.validate().expect_err("config is invalid").to_string()
    }

    #[test]
    fn default_is_none_and_valid() {
        let c = AuthConfig::default();
        assert_eq!(c.mode, AuthMode::None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = parse(&format!(
            r#"
            [auth]
            mode = "jwt"
            [auth.jwt]
            secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
            audience = "mqws"
            issuer = "me"
            leeway = "5s"
            [[auth.tokens]]
            sha256 = "{HASH}"
            sub = ["site/a/#"]
            pub = ["readers/+/cmd"]
            "#
        ));
        assert_eq!(c.mode, AuthMode::Jwt);
        assert_eq!(
            c.jwt.secret.as_ref().map(Secret::expose),
            Some("s3cret-s3cret-s3cret-s3cret-s3cret")
        );
        assert_eq!(c.jwt.leeway, Duration::from_secs(5));
        assert_eq!(c.tokens[0].pub_, vec!["readers/+/cmd".to_owned()]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Root {
            auth: AuthConfig,
        }
        assert!(toml::from_str::<Root>("[auth.jwt]\nsecrett = \"x\"").is_err());
        assert!(toml::from_str::<Root>("[auth]\nmode = \"basic\"").is_err());
    }

    #[test]
    fn secret_never_shows() {
        let c = parse("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"hunter2\"");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        let shown = toml::to_string(&c).expect("serializes");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("secret = \"***\""), "{shown}");
    }

    #[test]
    fn secret_reads_scalars_and_never_echoes() {
        let secret = |v: toml::Value| Secret::deserialize(v).map(|s| s.expose().to_owned());
        assert_eq!(
            secret(toml::Value::Integer(12345)).ok().as_deref(),
            Some("12345")
        );
        assert_eq!(
            secret(toml::Value::Boolean(true)).ok().as_deref(),
            Some("true")
        );
        let err = secret(toml::Value::Array(vec![toml::Value::String(
            "hunter2".into(),
        )]))
        .expect_err("a list is no secret");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn jwt_needs_exactly_one_key() {
        let line = error_line(&parse("[auth]\nmode = \"jwt\""));
        assert!(
            line.starts_with("invalid config: auth.jwt.secret = (unset): "),
            "{line}"
        );
        let line = error_line(&parse(
            "[auth.jwt]\nsecret = \"hunter2\"\npublic_key = \"/k.pem\"",
        ));
        assert!(line.contains("auth.jwt.public_key = \"/k.pem\""), "{line}");
        assert!(line.contains("not both"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
        let line = error_line(&parse("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"\""));
        assert!(line.contains("auth.jwt.secret"), "{line}");
    }

    #[test]
    fn public_key_file_is_checked() {
        let dir = std::env::temp_dir().join(format!("mqws-auth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = |path: &std::path::Path| AuthConfig {
            mode: AuthMode::Jwt,
            jwt: JwtConfig {
                public_key: Some(path.to_owned()),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        };
        let missing = dir.join("missing.pem");
        let line = error_line(&cfg(&missing));
        assert!(line.contains("auth.jwt.public_key = \""), "{line}");
        assert!(line.contains("reading it failed"), "{line}");

        let private = dir.join("private.pem");
        std::fs::write(
            &private,
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        assert!(error_line(&cfg(&private)).contains("private key"));

        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        assert!(error_line(&cfg(&junk)).contains("not a PEM public key"));

        let public = dir.join("public.pem");
        std::fs::write(
            &public,
            "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n",
        )
        .expect("write");
        assert!(cfg(&public).validate().is_ok());

        // Only checked when JWT mode uses it.
        let mut unused = cfg(&missing);
        unused.mode = AuthMode::None;
        assert!(unused.validate().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn leeway_is_bounded() {
        let line = error_line(&parse("[auth.jwt]\nleeway = \"2h\""));
        assert!(
            line.starts_with("invalid config: auth.jwt.leeway = \"2h\": "),
            "{line}"
        );
    }

    #[test]
    fn token_entries_are_checked() {
        let line = error_line(&parse("[auth]\nmode = \"tokens\""));
        assert!(line.contains("auth.tokens = []"), "{line}");

        let line = error_line(&parse(
            "[[auth.tokens]]\nsha256 = \"my-plain-token\"\nsub = [\"#\"]",
        ));
        assert!(
            line.contains("auth.tokens[0].sha256 = \"***\" (14 characters)"),
            "{line}"
        );
        assert!(!line.contains("my-plain-token"), "{line}");

        let upper = HASH.to_ascii_uppercase();
        let line = error_line(&parse(&format!(
            "[[auth.tokens]]\nsha256 = \"{HASH}\"\n[[auth.tokens]]\nsha256 = \"{upper}\""
        )));
        assert!(line.contains("auth.tokens[1].sha256"), "{line}");
        assert!(line.contains("auth.tokens[0]"), "{line}");

        for (bad, why) in [("a/#/b", "'#'"), ("a/b+", "'+'"), ("", "empty")] {
            let line = error_line(&parse(&format!(
                "[[auth.tokens]]\nsha256 = \"{HASH}\"\nsub = [\"ok/#\", \"{bad}\"]"
            )));
            assert!(
                line.contains(&format!("auth.tokens[0].sub = \"{bad}\"")),
                "{line}"
            );
            assert!(line.contains(why), "{line}");
        }
        let line = error_line(&parse(&format!(
            "[[auth.tokens]]\nsha256 = \"{HASH}\"\npub = [\"x/#y\"]"
        )));
        assert!(line.contains("auth.tokens[0].pub = \"x/#y\""), "{line}");

        let ok = parse(&format!(
            "[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{HASH}\"\nsub = [\"#\", \"$SYS/#\", \"a/+/c\"]\npub = [\"a//b\"]"
        ));
        assert!(ok.validate().is_ok());
    }
}
