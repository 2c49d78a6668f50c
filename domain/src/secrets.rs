//! Credentials: the format of API keys and admin tokens, and how they are stored.
//!
//! A credential looks like `tpk_<prefix>_<secret>` (API key) or `tpa_<prefix>_<secret>`
//! (admin token). The 8-character prefix is stored in clear to find the record and to
//! show to humans; only an HMAC-SHA256 of the whole credential, keyed with a server
//! secret, is stored. A keyed hash (rather than a slow password hash) fits because the
//! secret part carries 256 random bits, and it means a stolen database alone cannot be
//! used to check guesses.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;

/// Start of every API key.
pub const API_KEY_TAG: &str = "tpk";
/// Start of every admin token.
pub const ADMIN_TOKEN_TAG: &str = "tpa";
/// Length of the public prefix.
pub const PREFIX_LEN: usize = 8;
/// Length of the base64url (unpadded) encoding of the 32-byte secret part.
const SECRET_LEN: usize = 43;
/// Shortest server secret accepted by [`KeyHasher::new`].
pub const MIN_SERVER_SECRET: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the server secret must be at least {MIN_SERVER_SECRET} bytes, got {len}")]
    ServerSecretTooShort { len: usize },
}

/// Hashes and checks credentials with HMAC-SHA256 under the server secret.
#[derive(Clone)]
pub struct KeyHasher {
    /// Keyed once; each use clones the initialized state instead of re-deriving it.
    mac: Hmac<Sha256>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHasher").finish_non_exhaustive()
    }
}

impl KeyHasher {
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < MIN_SERVER_SECRET {
            return Err(SecretError::ServerSecretTooShort { len: secret.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        Ok(KeyHasher { mac })
    }

    /// Lower-case hex HMAC of `plaintext`; this is what gets stored.
    pub fn hash(&self, plaintext: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(plaintext.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `plaintext` hashes to `stored_hash`, compared in constant time.
    /// A malformed stored hash never verifies.
    pub fn verify(&self, plaintext: &str, stored_hash: &str) -> bool {
        let Ok(expected) = hex::decode(stored_hash) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(plaintext.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }
}

/// A freshly generated credential. The plaintext is shown to its owner once and
/// never stored; `Debug` redacts it so that it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub plaintext: String,
    /// The 8-character public part, e.g. `k3x9a0bz`.
    pub prefix: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey").field("plaintext", &"<redacted>").field("prefix", &self.prefix).finish()
    }
}

/// 32 bytes from the operating system's random source, e.g. for a server secret.
pub fn generate_secret() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn generate(tag: &str) -> GeneratedKey {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let prefix: String = (0..PREFIX_LEN).map(|_| ALPHABET[OsRng.gen_range(0..ALPHABET.len())] as char).collect();
    let secret = URL_SAFE_NO_PAD.encode(generate_secret());
    GeneratedKey { plaintext: format!("{tag}_{prefix}_{secret}"), prefix }
}

/// A new API key for a developer application: `tpk_<prefix>_<secret>`.
pub fn generate_api_key() -> GeneratedKey {
    generate(API_KEY_TAG)
}

/// A new admin API token: `tpa_<prefix>_<secret>`.
pub fn generate_admin_token() -> GeneratedKey {
    generate(ADMIN_TOKEN_TAG)
}

/// The prefix of a well-formed API key or admin token, or `None` if `plaintext`
/// does not have the exact shape of either. Checking the shape first lets callers
/// refuse garbage without a database lookup.
pub fn parse_prefix(plaintext: &str) -> Option<&str> {
    let rest =
        plaintext.strip_prefix(API_KEY_TAG).or_else(|| plaintext.strip_prefix(ADMIN_TOKEN_TAG))?.strip_prefix('_')?;
    // The secret may itself contain '_', so split by position rather than by '_'.
    let prefix = rest.get(..PREFIX_LEN)?;
    let secret = rest.get(PREFIX_LEN..)?.strip_prefix('_')?;
    let prefix_ok = prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() == SECRET_LEN && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|b| b.len() == 32);
    (prefix_ok && secret_ok).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn server_secret_must_be_long_enough() {
        assert_eq!(KeyHasher::new(&[7u8; 31]).unwrap_err(), SecretError::ServerSecretTooShort { len: 31 });
        assert!(KeyHasher::new(&[7u8; 32]).is_ok());
        assert!(KeyHasher::new(&[7u8; 64]).is_ok());
    }

    #[test]
    fn hash_matches_an_independently_computed_hmac_sha256() {
        // Computed with Python: hmac.new(SECRET, b"what do ya want for nothing?", hashlib.sha256).hexdigest()
        let hasher = KeyHasher::new(SECRET).unwrap();
        assert_eq!(
            hasher.hash("what do ya want for nothing?"),
            "137e6557c3c13a1ca5dc7e52a389a0f86be8cb4db4ae61c62396058b00acacd0"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_key_under_the_right_secret() {
        let hasher = KeyHasher::new(SECRET).unwrap();
        let key = generate_api_key();
        let stored = hasher.hash(&key.plaintext);
        assert!(hasher.verify(&key.plaintext, &stored));
        assert!(!hasher.verify(&generate_api_key().plaintext, &stored));
        assert!(!hasher.verify(&key.plaintext[..key.plaintext.len() - 1], &stored));
        // Same key, different server secret: no match.
        let other = KeyHasher::new(&[9u8; 32]).unwrap();
        assert!(!other.verify(&key.plaintext, &stored));
        // Malformed or truncated stored hashes never verify.
        assert!(!hasher.verify(&key.plaintext, "not hex"));
        assert!(!hasher.verify(&key.plaintext, &stored[..32]));
        assert!(!hasher.verify(&key.plaintext, ""));
    }

    #[test]
    fn hashing_is_deterministic() {
        let hasher = KeyHasher::new(SECRET).unwrap();
        assert_eq!(hasher.hash("tpk_x"), hasher.hash("tpk_x"));
        assert_ne!(hasher.hash("tpk_x"), hasher.hash("tpk_y"));
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for (key, tag) in [(generate_api_key(), "tpk_"), (generate_admin_token(), "tpa_")] {
            assert!(key.plaintext.starts_with(tag), "{}", key.prefix);
            assert_eq!(key.plaintext.len(), 4 + PREFIX_LEN + 1 + SECRET_LEN);
            assert_eq!(key.prefix.len(), PREFIX_LEN);
            assert!(key.prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert_eq!(&key.plaintext[4..4 + PREFIX_LEN], key.prefix);
            assert_eq!(parse_prefix(&key.plaintext), Some(key.prefix.as_str()));
            let secret = &key.plaintext[4 + PREFIX_LEN + 1..];
            assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        }
    }

    #[test]
    fn generated_keys_and_secrets_do_not_repeat() {
        let keys: HashSet<String> = (0..200).map(|_| generate_api_key().plaintext).collect();
        assert_eq!(keys.len(), 200);
        let prefixes: HashSet<String> = (0..200).map(|_| generate_api_key().prefix).collect();
        // 36^8 possibilities: a collision among 200 would point at a broken generator.
        assert_eq!(prefixes.len(), 200);
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn parse_prefix_rejects_anything_off_shape() {
        // A real encoding, so that the secret part is canonical base64url and contains
        // the '_' that makes splitting on '_' unsafe.
        let real = URL_SAFE_NO_PAD.encode([0xffu8; 32]);
        assert!(real.contains('_'));
        assert_eq!(parse_prefix(&format!("tpk_abcd1234_{real}")), Some("abcd1234"));
        assert_eq!(parse_prefix(&format!("tpa_0000zzzz_{real}")), Some("0000zzzz"));
        for bad in [
            String::new(),
            "tpk_".into(),
            format!("tpx_abcd1234_{real}"),
            format!("tpkabcd1234_{real}"),
            format!("tpk_ABCD1234_{real}"),
            format!("tpk_abcd123_{real}"),
            format!("tpk_abcd12345_{real}"),
            format!("tpk_abcd1234{real}"),
            format!("tpk_abcd1234_{}", &real[1..]),
            format!("tpk_abcd1234_{real}x"),
            format!("tpk_abcd1234_{}+", &real[1..]),
            format!("tpk_abcé1234_{real}"),
        ] {
            assert_eq!(parse_prefix(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_plaintext() {
        let key = generate_admin_token();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.plaintext));
        assert!(!shown.contains(&key.plaintext[4 + PREFIX_LEN + 1..]));
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains(&key.prefix));
        let hasher = KeyHasher::new(SECRET).unwrap();
        assert!(!format!("{hasher:?}").contains("0123456789abcdef"));
    }
}
