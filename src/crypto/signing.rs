//! Ed25519 signing (EdDSA JWTs through jsonwebtoken) with key ids, and the JWKS that lets anyone
//! verify what we signed with the public half alone.

use super::KeyError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// Signs JWTs with one Ed25519 key.
pub struct Signer {
    key_id: String,
    encoding: EncodingKey,
    public_key: [u8; 32],
}

/// A JWT that could not be made or checked.
#[derive(Debug, thiserror::Error)]
#[error("JWT: {0}")]
pub struct JwtError(#[from] jsonwebtoken::errors::Error);

impl Signer {
    /// A signer from a 32-byte Ed25519 seed and its key id.
    pub fn from_seed(key_id: &str, seed: [u8; 32]) -> Result<Signer, KeyError> {
        let kid_ok = !key_id.is_empty()
            && key_id.len() <= 64
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !kid_ok {
            return Err(KeyError::Invalid {
                what: "signing key id",
                reason: String::from("1 to 64 of A-Z a-z 0-9 - _"),
            });
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().map_err(|e| KeyError::Invalid {
            what: "signing key",
            reason: e.to_string(),
        })?;
        Ok(Signer {
            key_id: key_id.to_owned(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public_key: signing.verifying_key().to_bytes(),
        })
    }

    /// The key id carried in every JWT header (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `claims` as an EdDSA JWT with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwtError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// The JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.key_id,
            "x": URL_SAFE_NO_PAD.encode(self.public_key),
        }]})
    }
}

/// Verifies an EdDSA JWT against a JWKS document alone, as a Pulse installation would.
pub fn verify_with_jwks<T: DeserializeOwned>(
    token: &str,
    jwks: &serde_json::Value,
    validation: &Validation,
) -> Result<T, JwtError> {
    let header = jsonwebtoken::decode_header(token)?;
    let invalid = || JwtError(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|key| key["kid"].as_str() == header.kid.as_deref())
        .ok_or_else(invalid)?;
    let x = key["x"].as_str().ok_or_else(invalid)?;
    let decoding = DecodingKey::from_ed_components(x)?;
    Ok(jsonwebtoken::decode::<T>(token, &decoding, validation)?.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Claims {
        sub: String,
        exp: i64,
    }

    #[test]
    fn a_signed_jwt_verifies_against_the_jwks_and_a_tampered_one_does_not() {
        let signer = Signer::from_seed("k1", [7; 32]).unwrap();
        let claims = Claims {
            sub: String::from("lic_1"),
            exp: 4_000_000_000,
        };
        let token = signer.sign(&claims).unwrap();
        let validation = Validation::new(Algorithm::EdDSA);
        let verified: Claims = verify_with_jwks(&token, &signer.jwks(), &validation).unwrap();
        assert_eq!(verified, claims);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"lic_2","exp":4000000000}"#);
        assert!(verify_with_jwks::<Claims>(&parts.join("."), &signer.jwks(), &validation).is_err());
        let other = Signer::from_seed("k1", [8; 32]).unwrap();
        assert!(verify_with_jwks::<Claims>(&token, &other.jwks(), &validation).is_err());
    }

    #[test]
    fn a_key_id_outside_its_alphabet_is_refused() {
        assert!(Signer::from_seed("bad kid", [1; 32]).is_err());
    }
}
