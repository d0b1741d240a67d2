//! Key material and what is done with it: Ed25519 signing keys with key ids and their JWKS
//! ([`signing`]), keyed hashes of bearer secrets and the generation of new secrets ([`secrets`]),
//! per-person data keys for personal data and the master key that wraps them ([`personal`]), and
//! where keys come from ([`KeyMaterial`]): configuration in production, a development file in
//! the data directory otherwise, loudly labelled.

pub mod personal;
pub mod secrets;
pub mod signing;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The development key file inside the data directory.
pub const DEV_KEYS_FILE_NAME: &str = "dev-keys.json";

/// Why key material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A configured key is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which key.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The development key file cannot be read or written.
    #[error("cannot use the development key file {path}")]
    DevFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Configured text that must never print (a key, a database URL with its password): `Debug`
/// and `Display` show `[redacted]`; [`SecretText::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// The text, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretText {
    fn from(text: String) -> SecretText {
        SecretText(text)
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> SecretText {
        SecretText(text.to_owned())
    }
}

impl std::str::FromStr for SecretText {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<SecretText, Self::Err> {
        Ok(SecretText(text.to_owned()))
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Keys as configured: each `None` falls back to the development file.
#[derive(Clone, Debug, Default)]
pub struct KeyConfig {
    /// `kid:base64url(32-byte seed)` of the Ed25519 signing key.
    pub signing_key: Option<SecretText>,
    /// base64url of the 32-byte HMAC key for bearer-secret hashes.
    pub secret_hash_key: Option<SecretText>,
    /// base64url of the 32-byte AES-256 master key that wraps per-person data keys.
    pub master_key: Option<SecretText>,
}

/// The development key file: generated once, reused after.
#[derive(Serialize, Deserialize)]
struct DevKeys {
    warning: String,
    signing_key_id: String,
    signing_seed: String,
    secret_hash_key: String,
    /// Added after the first files were written: a file without one gains one on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master_key: Option<String>,
}

/// All key material the service uses.
pub struct KeyMaterial {
    /// The grant and lease signer.
    pub signer: signing::Signer,
    /// The bearer-secret hasher.
    pub hasher: secrets::SecretHasher,
    /// The master key of personal data.
    pub master: personal::MasterKey,
    /// Where development keys came from, if any were used.
    pub dev_keys_file: Option<PathBuf>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn decode_key(what: &'static str, encoded: &str) -> Result<[u8; 32], KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .map_err(|e| KeyError::Invalid {
            what,
            reason: e.to_string(),
        })?;
    bytes.try_into().map_err(|_| KeyError::Invalid {
        what,
        reason: String::from("must decode to 32 bytes"),
    })
}

impl KeyMaterial {
    /// Loads configured keys, filling what is missing from the development file in `data_dir`
    /// (created with fresh random keys on first use, readable only by its owner).
    pub fn load(config: &KeyConfig, data_dir: &Path) -> Result<KeyMaterial, KeyError> {
        let needs_dev = config.signing_key.is_none()
            || config.secret_hash_key.is_none()
            || config.master_key.is_none();
        let dev = needs_dev
            .then(|| load_or_create_dev_keys(data_dir))
            .transpose()?;
        let missing = |what| KeyError::Invalid {
            what,
            reason: String::from("not configured"),
        };
        let (signing_key_id, seed) = match (&config.signing_key, &dev) {
            (Some(configured), _) => {
                let (kid, seed) =
                    configured
                        .expose()
                        .split_once(':')
                        .ok_or_else(|| KeyError::Invalid {
                            what: "signing key",
                            reason: String::from("expected kid:base64url-seed"),
                        })?;
                (kid.to_owned(), decode_key("signing key", seed)?)
            }
            (None, Some(dev)) => (
                dev.signing_key_id.clone(),
                decode_key("development signing key", &dev.signing_seed)?,
            ),
            (None, None) => return Err(missing("signing key")),
        };
        let hash_key = match (&config.secret_hash_key, &dev) {
            (Some(configured), _) => decode_key("secret hash key", configured.expose())?,
            (None, Some(dev)) => decode_key("development secret hash key", &dev.secret_hash_key)?,
            (None, None) => return Err(missing("secret hash key")),
        };
        let master_key = match (&config.master_key, &dev) {
            (Some(configured), _) => decode_key("master key", configured.expose())?,
            (
                None,
                Some(DevKeys {
                    master_key: Some(dev_key),
                    ..
                }),
            ) => decode_key("development master key", dev_key)?,
            (None, _) => return Err(missing("master key")),
        };
        Ok(KeyMaterial {
            signer: signing::Signer::from_seed(&signing_key_id, seed)?,
            hasher: secrets::SecretHasher::new(hash_key),
            master: personal::MasterKey::new(master_key),
            dev_keys_file: needs_dev.then(|| data_dir.join(DEV_KEYS_FILE_NAME)),
        })
    }
}

fn load_or_create_dev_keys(data_dir: &Path) -> Result<DevKeys, KeyError> {
    let path = data_dir.join(DEV_KEYS_FILE_NAME);
    let dev_file = |source| KeyError::DevFile {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut keys: DevKeys =
                serde_json::from_slice(&bytes).map_err(|e| dev_file(std::io::Error::other(e)))?;
            if keys.master_key.is_none() {
                keys.master_key = Some(URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
                let json = serde_json::to_vec_pretty(&keys)
                    .map_err(|e| dev_file(std::io::Error::other(e)))?;
                let partial = path.with_extension("json.new");
                let _ = std::fs::remove_file(&partial);
                write_private(&partial, &json).map_err(dev_file)?;
                std::fs::rename(&partial, &path).map_err(dev_file)?;
            }
            Ok(keys)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(dev_file)?;
            let keys = DevKeys {
                warning: String::from(
                    "DEVELOPMENT KEYS generated by pulse-account: never use them in production",
                ),
                signing_key_id: format!("dev-{}", hex::encode(random_bytes::<4>())),
                signing_seed: URL_SAFE_NO_PAD.encode(random_bytes::<32>()),
                secret_hash_key: URL_SAFE_NO_PAD.encode(random_bytes::<32>()),
                master_key: Some(URL_SAFE_NO_PAD.encode(random_bytes::<32>())),
            };
            let json =
                serde_json::to_vec_pretty(&keys).map_err(|e| dev_file(std::io::Error::other(e)))?;
            write_private(&path, &json).map_err(dev_file)?;
            Ok(keys)
        }
        Err(error) => Err(dev_file(error)),
    }
}

/// Writes a file only its owner can read, refusing to replace an existing one.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_keys_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyMaterial::load(&KeyConfig::default(), dir.path()).unwrap();
        assert_eq!(
            first.dev_keys_file.as_deref(),
            Some(dir.path().join(DEV_KEYS_FILE_NAME).as_path())
        );
        let again = KeyMaterial::load(&KeyConfig::default(), dir.path()).unwrap();
        assert_eq!(first.signer.jwks(), again.signer.jwks());
        assert_eq!(first.hasher.hash("x"), again.hasher.hash("x"));
        assert!(first.signer.key_id().starts_with("dev-"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_KEYS_FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_keys_are_used_and_no_development_file_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let config = KeyConfig {
            signing_key: Some(format!("prod-1:{}", URL_SAFE_NO_PAD.encode([9_u8; 32])).into()),
            secret_hash_key: Some(URL_SAFE_NO_PAD.encode([4_u8; 32]).into()),
            master_key: Some(URL_SAFE_NO_PAD.encode([5_u8; 32]).into()),
        };
        let printed = format!("{config:?}");
        for secret in [
            URL_SAFE_NO_PAD.encode([9_u8; 32]),
            URL_SAFE_NO_PAD.encode([4_u8; 32]),
            URL_SAFE_NO_PAD.encode([5_u8; 32]),
        ] {
            assert!(!printed.contains(&secret), "{printed}");
        }
        let keys = KeyMaterial::load(&config, dir.path()).unwrap();
        assert_eq!(keys.signer.key_id(), "prod-1");
        assert!(keys.dev_keys_file.is_none());
        assert!(!dir.path().join(DEV_KEYS_FILE_NAME).exists());
        let short = KeyConfig {
            secret_hash_key: Some(SecretText::from("AAAA")),
            ..config
        };
        assert!(KeyMaterial::load(&short, dir.path()).is_err());
    }

    #[test]
    fn a_development_file_from_before_personal_data_keys_gains_a_master_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({
            "warning": "DEVELOPMENT KEYS",
            "signing_key_id": "dev-1",
            "signing_seed": URL_SAFE_NO_PAD.encode([1_u8; 32]),
            "secret_hash_key": URL_SAFE_NO_PAD.encode([2_u8; 32]),
        });
        write_private(
            &dir.path().join(DEV_KEYS_FILE_NAME),
            old.to_string().as_bytes(),
        )
        .unwrap();
        let first = KeyMaterial::load(&KeyConfig::default(), dir.path()).unwrap();
        assert_eq!(first.signer.key_id(), "dev-1");
        let wrapped = first.master.wrap("pk_1", &personal::DataKey::generate());
        let again = KeyMaterial::load(&KeyConfig::default(), dir.path()).unwrap();
        assert!(again.master.unwrap("pk_1", &wrapped).is_ok());
    }
}
