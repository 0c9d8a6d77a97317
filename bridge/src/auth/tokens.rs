//! Static tokens for `auth.mode = "tokens"`: each `[[auth.tokens]]` entry is the SHA-256 of a
//! token plus its grant. A presented token is hashed and compared with every entry in constant
//! time, so neither the plaintext nor which entry matched leaks through storage or timing.

use std::fmt;

use mqws_config::TokenConfig;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{AuthError, AuthSetupError, Grant, InvalidReason};

/// The configured tokens, as hashes. Immutable; share it.
pub(crate) struct StaticTokens {
    entries: Vec<([u8; 32], Grant)>,
}

impl fmt::Debug for StaticTokens {
    // Hashes are not secrets, but they are nobody's business in a log either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl StaticTokens {
    /// Builds the table from `[[auth.tokens]]`, checking each hash (64 hex digits, either
    /// case, no repeats) and grant.
    pub(crate) fn from_config(entries: &[TokenConfig]) -> Result<Self, AuthSetupError> {
        if entries.is_empty() {
            return Err(AuthSetupError::NoTokens);
        }
        let mut table: Vec<([u8; 32], Grant)> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&entry.sha256, &mut hash)
                .map_err(|_| AuthSetupError::TokenHash { index })?;
            if let Some(first) = table.iter().position(|(h, _)| *h == hash) {
                return Err(AuthSetupError::DuplicateToken { index, first });
            }
            let grant = Grant {
                sub: entry.sub.clone(),
                pub_: entry.pub_.clone(),
                unrestricted: false,
            };
            grant
                .check()
                .map_err(|source| AuthSetupError::TokenGrant { index, source })?;
            table.push((hash, grant));
        }
        Ok(StaticTokens { entries: table })
    }

    /// The grant of the entry whose hash is the SHA-256 of `token`. Every entry is compared,
    /// in constant time, whether or not an earlier one matched.
    pub(crate) fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Position + 1 of the matching entry, 0 for none; selected without branching.
        let mut found = 0u64;
        for (i, (hash, _)) in self.entries.iter().enumerate() {
            let position = i as u64 + 1;
            found.conditional_assign(&position, hash[..].ct_eq(&digest[..]));
        }
        usize::try_from(found)
            .ok()
            .and_then(|p| p.checked_sub(1))
            .and_then(|i| self.entries.get(i))
            .map(|(_, grant)| grant.clone())
            .ok_or(AuthError::Invalid(InvalidReason::UnknownToken))
    }

    /// How many tokens are configured.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a built table (at least one entry is required).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str, sub: &[&str], pub_: &[&str]) -> TokenConfig {
        TokenConfig {
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            sub: sub.iter().map(|s| (*s).to_owned()).collect(),
            pub_: pub_.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn good_and_bad_tokens() {
        let mut upper = entry("writer", &[], &["readers/+/cmd"]);
        upper.sha256 = upper.sha256.to_ascii_uppercase();
        let tokens = StaticTokens::from_config(&[
            entry("reader", &["site/#"], &[]),
            upper,
            entry("both", &["#"], &["#"]),
        ])
        .expect("valid table");
        assert_eq!(tokens.len(), 3);
        assert!(!tokens.is_empty());

        let reader = tokens.verify("reader").expect("known");
        assert!(reader.may_subscribe("site/a/#"));
        assert!(!reader.may_publish("readers/r1/cmd"));
        let writer = tokens.verify("writer").expect("upper-case hash works");
        assert!(writer.may_publish("readers/r1/cmd"));
        assert!(!writer.may_subscribe("site/a"));
        let both = tokens.verify("both").expect("known");
        assert!(both.may_subscribe("a/#") && both.may_publish("a/b"));
        assert!(
            !both.may_subscribe("$SYS/#"),
            "a token's # does not cover $-topics"
        );

        for bad in ["", "Reader", "reader ", "readerx", "unknown"] {
            assert_eq!(
                tokens.verify(bad),
                Err(AuthError::Invalid(InvalidReason::UnknownToken)),
                "{bad:?}"
            );
        }
        // The hash itself is not a token.
        let hash = hex::encode(Sha256::digest(b"reader"));
        assert!(tokens.verify(&hash).is_err());
    }

    #[test]
    fn debug_shows_no_hashes() {
        let tokens = StaticTokens::from_config(&[entry("t", &[], &[])]).expect("valid");
        let shown = format!("{tokens:?}");
        assert_eq!(shown, "StaticTokens { entries: 1 }");
    }

    #[test]
    fn bad_tables() {
        assert!(matches!(
            StaticTokens::from_config(&[]),
            Err(AuthSetupError::NoTokens)
        ));
        let mut short = entry("t", &[], &[]);
        short.sha256.pop();
        assert!(matches!(
            StaticTokens::from_config(&[entry("a", &[], &[]), short]),
            Err(AuthSetupError::TokenHash { index: 1 })
        ));
        let mut not_hex = entry("t", &[], &[]);
        not_hex.sha256.replace_range(0..1, "g");
        assert!(matches!(
            StaticTokens::from_config(&[not_hex]),
            Err(AuthSetupError::TokenHash { index: 0 })
        ));
        assert!(matches!(
            StaticTokens::from_config(&[entry("t", &["a/b#"], &[])]),
            Err(AuthSetupError::TokenGrant { index: 0, .. })
        ));
    }
}
