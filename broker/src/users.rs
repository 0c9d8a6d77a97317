//! MQTT logins (`broker.users`): argon2 password hashes checked off the async workers, with a
//! small cache of recently verified logins so the two layers that check a CONNECT (the proxy,
//! then rumqttd's own auth handler on the internal listener) pay for argon2 once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Logins remembered as verified, at most.
const CACHE: usize = 4096;

/// A login known to be good: username and SHA-256 of the password.
type Verified = (String, [u8; 32]);

/// The configured users.
#[derive(Clone)]
pub(crate) struct Users {
    hashes: Arc<HashMap<String, String>>,
    verified: Arc<Mutex<HashSet<Verified>>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// From `(username, argon2 PHC hash)` pairs.
    pub(crate) fn new(users: impl IntoIterator<Item = (String, String)>) -> Users {
        Users {
            hashes: Arc::new(users.into_iter().collect()),
            verified: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Whether logins are required.
    pub(crate) fn enabled(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Checks a login. argon2 runs on the blocking pool.
    pub(crate) async fn check(&self, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.hashes.get(user).cloned() else {
            return false;
        };
        let key = (user.to_owned(), <[u8; 32]>::from(Sha256::digest(password)));
        if self.verified.lock().contains(&key) {
            return true;
        }
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| Argon2::default().verify_password(&password, &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock();
            if cache.len() >= CACHE {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

/// An argon2id PHC hash of `password` with a random salt (for `mqws hash-password`).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_hashes() {
        let hash = hash_password(b"s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::new([("reader".to_owned(), hash)]);
        assert!(users.check("reader", b"s3cret").await);
        assert!(users.check("reader", b"s3cret").await, "cached");
        assert!(!users.check("reader", b"wrong").await);
        assert!(!users.check("nobody", b"s3cret").await);
    }
}
