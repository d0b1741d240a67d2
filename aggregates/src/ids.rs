//! Identifiers and validated values (`DOMAIN.md` §2): prefixed random ids, emails, secret hashes.
//!
//! An id is its prefix plus 10 Crockford base32 characters. Only `parse` and `from_entropy` build
//! one, so every id inside the domain is well formed. The domain draws no randomness: the service
//! passes random bytes to `from_entropy`.

use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Crockford's base32 alphabet (no I, L, O, U).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters after an id's prefix.
pub const ID_BODY_LEN: usize = 10;

fn crockford(entropy: u64) -> String {
    (0..ID_BODY_LEN)
        .rev()
        .map(|i| CROCKFORD[((entropy >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn parse_prefixed(raw: &str, prefix: &str, field: &'static str) -> Result<String, DomainError> {
    let body = raw
        .strip_prefix(prefix)
        .ok_or_else(|| DomainError::invalid(field, format!("must start with {prefix}")))?;
    let ok = body.len() == ID_BODY_LEN && body.bytes().all(|b| CROCKFORD.contains(&b));
    if !ok {
        return Err(DomainError::invalid(
            field,
            format!("must be {prefix} followed by {ID_BODY_LEN} Crockford base32 characters"),
        ));
    }
    Ok(raw.to_owned())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id, refusing anything but the prefix and 10 Crockford base32 characters.
            pub fn parse(raw: &str) -> Result<$name, DomainError> {
                parse_prefixed(raw, $prefix, $field).map($name)
            }

            /// A new id from 50 random bits (the low bits of `entropy`), drawn by the service.
            pub fn from_entropy(entropy: u64) -> $name {
                $name(format!("{}{}", $prefix, crockford(entropy)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A hosted account (`a_…`).
    AccountId, "a_", "account_id"
);
prefixed_id!(
    /// A person (`u_…`).
    UserId, "u_", "user_id"
);
prefixed_id!(
    /// An invitation to an account (`ainv_…`).
    InvitationId, "ainv_", "invitation_id"
);
prefixed_id!(
    /// A hosted workspace (`t-…`).
    TenantId, "t-", "tenant_id"
);
prefixed_id!(
    /// A self-hosted license (`lic_…`).
    LicenseId, "lic_", "license_id"
);
prefixed_id!(
    /// One installation of a license (`inst_…`).
    InstallationId, "inst_", "installation_id"
);
prefixed_id!(
    /// A purchase handoff (`cph_…`).
    HandoffId, "cph_", "portal_handoff_id"
);
prefixed_id!(
    /// A checkout intent (`cki_…`).
    IntentId, "cki_", "checkout_intent_id"
);
prefixed_id!(
    /// A staff or service API token (`stf_…`): support, auditors, the tenant provisioner.
    StaffTokenId, "stf_", "staff_token_id"
);

/// Longest email address accepted (RFC 5321's path limit).
pub const EMAIL_LEN_MAX: usize = 254;

/// An email address: trimmed, lower-cased, one `@` with text on both sides, no spaces.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Characters an address never holds outside a quoted local part (which the ledger does not
/// accept): RFC 5322's specials other than `@` and `.`.
const EMAIL_FORBIDDEN: &str = "<>()[],;:\\\"";

impl Email {
    /// Parses and normalises an email address: one `@`, a dotted domain, no whitespace, control
    /// character, U+FFFD (the trace of bytes that were not UTF-8) or RFC 5322 special.
    pub fn parse(raw: &str) -> Result<Email, DomainError> {
        let email = raw.trim().to_ascii_lowercase();
        let parts: Vec<&str> = email.split('@').collect();
        let ok = email.len() <= EMAIL_LEN_MAX
            && parts.len() == 2
            && !parts[0].is_empty()
            && parts[1].contains('.')
            && !parts[1].starts_with('.')
            && !parts[1].ends_with('.')
            && !email.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || c == char::REPLACEMENT_CHARACTER
                    || EMAIL_FORBIDDEN.contains(c)
            });
        if !ok {
            return Err(DomainError::invalid(
                "email",
                "must be a valid email address",
            ));
        }
        Ok(Email(email))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The keyed hash (HMAC-SHA256, hex) of a bearer secret. The secret itself never enters the domain.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// Parses 64 lower-case hex characters.
    pub fn parse(raw: &str) -> Result<SecretHash, DomainError> {
        let ok = raw.len() == 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DomainError::invalid(
                "secret_hash",
                "must be 64 lower-case hex characters",
            ));
        }
        Ok(SecretHash(raw.to_owned()))
    }

    /// The hash as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.0[..8])
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        SecretHash::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Checks free text from a client: trimmed, 1 to `max` characters, no control characters.
pub fn bounded_text(field: &'static str, raw: &str, max: usize) -> Result<String, DomainError> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_with_a_replacement_character_control_or_special_is_refused() {
        for raw in [
            "\u{FFFD}@example.com",
            "a\u{0}b@example.com",
            "a b@example.com",
            "a<b@example.com",
            "a\"b@example.com",
            "a@b@example.com",
            "a@example",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?}");
        }
        assert_eq!(
            Email::parse(" Buyer+Tag@Example.com ").unwrap().as_str(),
            "buyer+tag@example.com"
        );
    }

    #[test]
    fn ids_are_a_prefix_and_ten_crockford_characters() {
        let id = LicenseId::from_entropy(0x3_FFFF_FFFF_FFFF);
        assert_eq!(id.as_str(), "lic_ZZZZZZZZZZ");
        assert_eq!(LicenseId::parse(id.as_str()).unwrap(), id);
        assert_eq!(TenantId::from_entropy(1).as_str(), "t-0000000001");
        for bad in [
            "lic_",
            "lic_ABCDEFGHIJ",
            "lic_abcdefghjk",
            "inst_ABCDEFGHJK",
            "lic_ABCDEFGHJKM",
        ] {
            assert!(LicenseId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ops@Example.COM ").unwrap().as_str(),
            "ops@example.com"
        );
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@b.c@d.e",
            "a b@c.d",
            "a@.c",
            "a@c.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_hash_is_hex_and_its_debug_form_is_redacted() {
        let hash = SecretHash::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(format!("{hash:?}"), "SecretHash(abababab…)");
        assert!(SecretHash::parse("AB").is_err());
    }
}
