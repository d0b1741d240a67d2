//! Bearer secrets: generated with the documented prefixes, shown once, stored only as a keyed
//! hash (HMAC-SHA256 under a server key). The plaintext never reaches the log.

use aggregates::ids::SecretHash;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;

/// The prefix of an activation key (§2).
pub const ACTIVATION_KEY_PREFIX: &str = "ppk_live_";
/// The prefix of an installation token (§2).
pub const INSTALLATION_TOKEN_PREFIX: &str = "pit_live_";
/// The prefix of a hosted lease refresh token (§2).
pub const LEASE_REFRESH_TOKEN_PREFIX: &str = "etr_hosted_";
/// Hex characters after the refresh token's prefix (§2).
pub const LEASE_REFRESH_TOKEN_HEX_LEN: usize = 48;
/// Characters of a secret shown to help a customer recognise it (prefix plus a few).
pub const SHOWN_PREFIX_LEN: usize = 13;
/// Crockford's base32 alphabet.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Base32 characters encoding 32 random bytes.
pub const SECRET_BODY_LEN: usize = 52;

/// A secret in plaintext, to be shown once. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The plaintext, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A secret scoped by a public prefix: `<scope>.<secret>` (a session cookie names the person
    /// whose stream holds the secret's hash).
    pub fn scoped(scope: &str, secret: &Secret) -> Secret {
        Secret(format!("{scope}.{}", secret.0))
    }

    /// The first characters, safe to show again.
    pub fn shown_prefix(&self) -> String {
        self.0.chars().take(SHOWN_PREFIX_LEN).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(CROCKFORD[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(CROCKFORD[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Hashes bearer secrets under the server's key and makes new ones.
pub struct SecretHasher {
    key: [u8; 32],
}

impl SecretHasher {
    /// A hasher under a 32-byte key.
    pub fn new(key: [u8; 32]) -> SecretHasher {
        SecretHasher { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }

    /// The keyed hash of a secret.
    pub fn hash(&self, secret: &str) -> SecretHash {
        let mut mac = self.mac();
        mac.update(secret.as_bytes());
        SecretHash::parse(&hex::encode(mac.finalize().into_bytes()))
            .expect("hex of 32 bytes is a secret hash")
    }

    /// A new random secret with a prefix: `prefix` + 32 random bytes in base32.
    pub fn generate(&self, prefix: &str) -> Secret {
        let mut bytes = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Secret(format!("{prefix}{}", base32(&bytes)))
    }

    /// A secret derived from `material` under the server key, for a retried request that must
    /// answer with the same secret without it ever being stored.
    pub fn derive(&self, prefix: &str, material: &str) -> Secret {
        let mut mac = self.mac();
        mac.update(b"pulse-account derived secret\0");
        mac.update(prefix.as_bytes());
        mac.update(b"\0");
        mac.update(material.as_bytes());
        Secret(format!("{prefix}{}", base32(&mac.finalize().into_bytes())))
    }

    /// Like [`SecretHasher::derive`], with a body of `hex_len` lower-case hex characters (at most
    /// 64), for secrets whose documented format is hex (`etr_hosted_` + 48 hex).
    pub fn derive_hex(&self, prefix: &str, material: &str, hex_len: usize) -> Secret {
        let mut mac = self.mac();
        mac.update(b"pulse-account derived hex secret\0");
        mac.update(prefix.as_bytes());
        mac.update(b"\0");
        mac.update(material.as_bytes());
        let body = hex::encode(mac.finalize().into_bytes());
        Secret(format!("{prefix}{}", &body[..hex_len.min(body.len())]))
    }

    /// Whether `raw` has the shape of a secret with this prefix.
    pub fn well_formed(prefix: &str, raw: &str) -> bool {
        raw.strip_prefix(prefix).is_some_and(|body| {
            body.len() == SECRET_BODY_LEN && body.bytes().all(|b| CROCKFORD.contains(&b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_their_prefix_and_52_base32_characters() {
        let hasher = SecretHasher::new([1; 32]);
        let secret = hasher.generate(ACTIVATION_KEY_PREFIX);
        assert!(
            SecretHasher::well_formed(ACTIVATION_KEY_PREFIX, secret.expose()),
            "{}",
            secret.expose()
        );
        assert_ne!(secret, hasher.generate(ACTIVATION_KEY_PREFIX));
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        assert!(!SecretHasher::well_formed(
            INSTALLATION_TOKEN_PREFIX,
            secret.expose()
        ));
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let (a, b) = (SecretHasher::new([1; 32]), SecretHasher::new([2; 32]));
        assert_eq!(a.hash("pit_live_X"), a.hash("pit_live_X"));
        assert_ne!(a.hash("pit_live_X"), b.hash("pit_live_X"));
        assert_ne!(a.hash("pit_live_X"), a.hash("pit_live_Y"));
    }

    #[test]
    fn derived_secrets_repeat_for_the_same_material_only() {
        let hasher = SecretHasher::new([3; 32]);
        let first = hasher.derive(INSTALLATION_TOKEN_PREFIX, "key-1");
        assert_eq!(first, hasher.derive(INSTALLATION_TOKEN_PREFIX, "key-1"));
        assert_ne!(first, hasher.derive(INSTALLATION_TOKEN_PREFIX, "key-2"));
        assert!(SecretHasher::well_formed(
            INSTALLATION_TOKEN_PREFIX,
            first.expose()
        ));
    }
}
