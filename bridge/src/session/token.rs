//! Resume tokens that carry, signed, what a session needs until it first changes.
//!
//! A new session is not written to storage at `hello`: its token holds the session id, the log
//! epoch, the cursor it starts from and its filters, signed with HMAC-SHA256 under a key kept
//! in the session store. If the server dies before the session was saved (kill -9 right after
//! `hello`), the token alone restores it. Once saved, the stored state (newer) wins; the token
//! must still match its stored hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Filters larger than this (as JSON) are not put in a token; such a session is saved and
/// flushed when it is created instead.
pub(crate) const MAX_FILTER_BYTES: usize = 2048;

/// What a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// Session id.
    #[serde(rename = "s")]
    pub(crate) session: String,
    /// Log epoch of `start`.
    #[serde(rename = "e")]
    pub(crate) epoch: String,
    /// The cursor the session starts from (the log head when it was created).
    #[serde(rename = "c")]
    pub(crate) start: u64,
    /// Its filters at creation, when small enough (see [`MAX_FILTER_BYTES`]).
    #[serde(rename = "f", skip_serializing_if = "Option::is_none", default)]
    pub(crate) filters: Option<Vec<String>>,
    /// Creation time, ms since the Unix epoch.
    #[serde(rename = "t")]
    pub(crate) created_ms: u64,
    /// Random bits, so the token is a secret even to someone who knows the rest.
    #[serde(rename = "n")]
    pub(crate) nonce: String,
}

/// Signs and checks tokens with one key.
#[derive(Clone)]
pub(crate) struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    /// A signer with `key`.
    pub(crate) fn new(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The token for `claims`: `base64url(json).base64url(hmac)`.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).expect("claims always serialize");
        let body = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The claims of a token this key signed; `None` for anything else (including tokens of
    /// earlier releases, which were random strings).
    pub(crate) fn verify(&self, token: &str) -> Option<Claims> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session: "s-1".to_owned(),
            epoch: "e".to_owned(),
            start: 42,
            filters: Some(vec!["a/#".to_owned()]),
            created_ms: 7,
            nonce: "n".to_owned(),
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let signer = Signer::new([1; 32]);
        let token = signer.sign(&claims());
        assert_eq!(signer.verify(&token), Some(claims()));
        assert_eq!(Signer::new([2; 32]).verify(&token), None, "another key");
        let (body, tag) = token.split_once('.').expect("dot");
        let mut other = claims();
        other.start = 0;
        let forged_body = signer.sign(&other);
        let forged_body = forged_body.split_once('.').expect("dot").0;
        assert_eq!(signer.verify(&format!("{forged_body}.{tag}")), None);
        assert_eq!(signer.verify(body), None);
        assert_eq!(signer.verify(&"0".repeat(64)), None, "an old random token");
    }
}
