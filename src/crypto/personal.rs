//! Personal-data keys: the master key that wraps per-person data keys, the data keys that seal one
//! personal value each with AES-256-GCM, the text form of a sealed value, and person ids.
//!
//! A sealed value is `pii1.<kind>.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`: it names the key
//! that opens it, so a reader never needs to know whose value it holds, and its kind (`e` email,
//! `t` text) says what to show once that key is erased. The key id is the associated data, so a
//! value cannot be moved under another key.

use super::secrets::SecretHasher;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use aggregates::ids::Email;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// The prefix of every sealed value.
pub const SEALED_PREFIX: &str = "pii1.";
const NONCE_LEN: usize = 12;
const WRAP_CONTEXT: &[u8] = b"pulse-account person key v1\0";

/// What a personal value is: decides what an erased one reads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersonalKind {
    /// An email address: erased, it reads as a well-formed address under `erased.invalid`.
    Email,
    /// Free text (an instance name): erased, it reads as [`ERASED_TEXT`].
    Text,
}

impl PersonalKind {
    fn tag(self) -> &'static str {
        match self {
            PersonalKind::Email => "e",
            PersonalKind::Text => "t",
        }
    }

    fn from_tag(tag: &str) -> Option<PersonalKind> {
        match tag {
            "e" => Some(PersonalKind::Email),
            "t" => Some(PersonalKind::Text),
            _ => None,
        }
    }

    /// What a value of this kind sealed under the erased key `key_id` reads as.
    pub fn erased(self, key_id: &str) -> String {
        match self {
            PersonalKind::Email => {
                let short: String = key_id.chars().rev().take(10).collect();
                format!("erased-{short}@erased.invalid")
            }
            PersonalKind::Text => ERASED_TEXT.to_owned(),
        }
    }
}

/// Whether an address is what an erased email reads as (under the reserved `.invalid` top-level
/// domain, which never receives mail).
pub fn reads_as_erased(email: &str) -> bool {
    email.ends_with(".invalid")
}

/// What erased free text reads as.
pub const ERASED_TEXT: &str = "[erased]";

/// Why a sealed value or wrapped key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The text is not a sealed value.
    #[error("not a sealed value")]
    Malformed,
    /// Authentication failed: wrong key, or the bytes were changed.
    #[error("the value does not authenticate under its key")]
    Unauthentic,
}

/// A sealed value, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// What it holds.
    pub kind: PersonalKind,
    /// The key that opens it.
    pub key_id: &'a str,
    ciphertext: &'a str,
}

impl<'a> Sealed<'a> {
    /// Parses `pii1.<kind>.<key id>.<ciphertext>`; `None` for any other text (plaintext written
    /// before sealing existed reads as itself).
    pub fn parse(text: &'a str) -> Option<Sealed<'a>> {
        let mut parts = text.strip_prefix(SEALED_PREFIX)?.splitn(3, '.');
        let kind = PersonalKind::from_tag(parts.next()?)?;
        let key_id = parts.next()?;
        let ciphertext = parts.next()?;
        Some(Sealed {
            kind,
            key_id,
            ciphertext,
        })
    }
}

/// One person's data key, with its expanded cipher (expanded once, not per value).
pub struct DataKey {
    key: [u8; 32],
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(key: [u8; 32]) -> DataKey {
        DataKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            key,
        }
    }

    /// A fresh random key.
    pub fn generate() -> DataKey {
        let mut key = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        DataKey::new(key)
    }

    /// Seals `plaintext` as a value of `kind` under this key, named `key_id`.
    pub fn seal(&self, kind: PersonalKind, key_id: &str, plaintext: &str) -> String {
        let sealed = encrypt(&self.cipher, key_id.as_bytes(), plaintext.as_bytes());
        format!(
            "{SEALED_PREFIX}{}.{key_id}.{}",
            kind.tag(),
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// Opens a value sealed under this key.
    pub fn open(&self, sealed: &Sealed<'_>) -> Result<String, OpenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed.ciphertext)
            .map_err(|_| OpenError::Malformed)?;
        let plaintext = decrypt(&self.cipher, sealed.key_id.as_bytes(), &bytes)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Malformed)
    }
}

/// The master key: wraps every data key; from configuration in production.
pub struct MasterKey(Aes256Gcm);

impl MasterKey {
    /// The master key from its 32 bytes.
    pub fn new(key: [u8; 32]) -> MasterKey {
        MasterKey(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)))
    }

    fn associated_data(key_id: &str) -> Vec<u8> {
        [WRAP_CONTEXT, key_id.as_bytes()].concat()
    }

    /// `data_key` wrapped for storage as the key `key_id`.
    pub fn wrap(&self, key_id: &str, data_key: &DataKey) -> Vec<u8> {
        encrypt(&self.0, &Self::associated_data(key_id), &data_key.key)
    }

    /// The data key stored wrapped as `key_id`.
    pub fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, OpenError> {
        let key = decrypt(&self.0, &Self::associated_data(key_id), wrapped)?;
        Ok(DataKey::new(
            key.try_into().map_err(|_| OpenError::Malformed)?,
        ))
    }
}

fn encrypt(cipher: &Aes256Gcm, associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0_u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: associated_data,
            },
        )
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    [nonce.as_slice(), &ciphertext].concat()
}

fn decrypt(
    cipher: &Aes256Gcm,
    associated_data: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE_LEN {
        return Err(OpenError::Malformed);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: associated_data,
            },
        )
        .map_err(|_| OpenError::Unauthentic)
}

/// A new key id: `pk_` and 32 random hex digits.
pub fn new_key_id() -> String {
    let mut id = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    format!("pk_{}", hex::encode(id))
}

/// The person an email belongs to: `per_` and 32 hex digits of the keyed hash of the email as
/// `Email` normalises it (trimmed, lower-case; any other text trimmed and lower-cased alike), so
/// every spelling of one address names one person and the id reveals nothing without the server key.
pub fn person_id(hasher: &SecretHasher, email: &str) -> String {
    let normalized = Email::parse(email).map_or_else(
        |_| email.trim().to_lowercase(),
        |email| email.as_str().to_owned(),
    );
    hasher
        .derive_hex("per_", &normalized, 32)
        .expose()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_under_its_key_only() {
        let key = DataKey::generate();
        let text = key.seal(PersonalKind::Email, "pk_1", "ops@example.com");
        assert!(!text.contains("ops@example.com"));
        let sealed = Sealed::parse(&text).unwrap();
        assert_eq!(sealed.kind, PersonalKind::Email);
        assert_eq!(sealed.key_id, "pk_1");
        assert_eq!(key.open(&sealed).unwrap(), "ops@example.com");
        assert!(matches!(
            DataKey::generate().open(&sealed),
            Err(OpenError::Unauthentic)
        ));
    }

    #[test]
    fn a_value_moved_under_another_key_id_or_changed_does_not_open() {
        let key = DataKey::generate();
        let text = key.seal(PersonalKind::Text, "pk_1", "lab");
        let moved = text.replace(".pk_1.", ".pk_2.");
        assert!(matches!(
            key.open(&Sealed::parse(&moved).unwrap()),
            Err(OpenError::Unauthentic)
        ));
        let mut changed = text.into_bytes();
        let last = changed.len() - 2;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert!(key.open(&Sealed::parse(&changed).unwrap()).is_err());
    }

    #[test]
    fn plaintext_is_not_a_sealed_value() {
        for text in [
            "ops@example.com",
            "pii1.",
            "pii1.x.pk_1.AAAA",
            "pii1.e.pk_1",
        ] {
            assert_eq!(Sealed::parse(text), None, "{text}");
        }
    }

    #[test]
    fn data_keys_wrap_under_the_master_key_bound_to_their_id() {
        let master = MasterKey::new([7; 32]);
        let key = DataKey::generate();
        let wrapped = master.wrap("pk_1", &key);
        assert_eq!(master.unwrap("pk_1", &wrapped).unwrap().key, key.key);
        assert!(master.unwrap("pk_2", &wrapped).is_err());
        assert!(MasterKey::new([8; 32]).unwrap("pk_1", &wrapped).is_err());
    }

    #[test]
    fn erased_emails_are_still_well_formed_addresses() {
        let erased = PersonalKind::Email.erased("pk_0123456789abcdef");
        assert!(Email::parse(&erased).is_ok(), "{erased}");
        assert_eq!(PersonalKind::Text.erased("pk_1"), ERASED_TEXT);
    }

    #[test]
    fn person_ids_are_stable_per_email_and_differ_between_emails() {
        let hasher = SecretHasher::new([1; 32]);
        let a = person_id(&hasher, "a@example.com");
        assert_eq!(a, person_id(&hasher, "a@example.com"));
        assert_ne!(a, person_id(&hasher, "b@example.com"));
        assert_eq!(
            a,
            person_id(&hasher, " A@Example.COM "),
            "one person per address"
        );
        assert!(a.starts_with("per_") && a.len() == 36, "{a}");
    }
}
