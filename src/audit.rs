//! Auditor export (`ARCHITECTURE-INTENT.md`, audit): the log in global order as JSONL, each record
//! carrying a running SHA-256 chain over the previous hash and the record's canonical bytes, ending
//! with a manifest (range, count, final hash, key id) signed with Ed25519 — and the offline
//! verifier that checks an export with the public key alone and names the record that broke.
//!
//! The service also seals the committed prefix of the log periodically ([`seal`]: position, chain
//! value, count, signed), and [`check`] recomputes the chain over the stored log to find the first
//! seal an edit of an old row broke.
//!
//! The export reads one page at a time, so its memory does not grow with the log. A record's
//! canonical bytes are its JSON with object keys sorted (serde_json's map order), no whitespace.

use crate::crypto::signing::{JwtError, Signer};
use crate::store::{EventStore, Seal, Store, StoreError, READ_PAGE_MAX};
use aggregates::log::Position;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};

/// The format name written into every manifest.
pub const EXPORT_FORMAT: &str = "pulse-account-export/1";
/// The chain value before the first record.
pub const GENESIS_CHAIN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an export covers, signed at its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// The export covers positions after this one.
    pub after_position: i64,
    /// The last position exported (equal to `after_position` when empty).
    pub to_position: i64,
    /// How many records.
    pub count: u64,
    /// The chain value after the last record.
    pub final_hash: String,
    /// The key that signed the manifest.
    pub key_id: String,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the export failed.
    #[error("writing the export failed")]
    Io(#[from] std::io::Error),
    /// Signing the manifest failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// Where and why an export does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct VerifyError {
    /// The 1-based line of the export.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// The next chain value: SHA-256 over the previous value's bytes and the record's canonical bytes.
fn chained(previous: &str, record: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(hex::decode(previous).unwrap_or_default());
    hasher.update(serde_json::to_vec(record).expect("a JSON value serialises"));
    hex::encode(hasher.finalize())
}

/// Writes the log after `after` (up to `to`, when given) as a chained JSONL export ending with a
/// signed manifest. `progress` is told the position reached after each page.
pub async fn export_jsonl(
    store: &dyn EventStore,
    signer: &Signer,
    after: Position,
    to: Option<Position>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Position),
) -> Result<Manifest, ExportError> {
    let mut chain = String::from(GENESIS_CHAIN);
    let (mut cursor, mut count) = (after, 0_u64);
    'pages: loop {
        let page = store.read_all_stored(cursor, READ_PAGE_MAX).await?;
        if page.is_empty() {
            break;
        }
        for event in page {
            if to.is_some_and(|to| event.global_position > to) {
                break 'pages;
            }
            let record = serde_json::to_value(&event).map_err(std::io::Error::other)?;
            chain = chained(&chain, &record);
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({ "record": record, "chain": chain }),
            )
            .map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
            cursor = event.global_position;
            count += 1;
        }
        progress(cursor);
    }
    let manifest = Manifest {
        format: String::from(EXPORT_FORMAT),
        after_position: after.0,
        to_position: cursor.0,
        count,
        final_hash: chain,
        key_id: signer.key_id().to_owned(),
    };
    let line = serde_json::json!({ "manifest": manifest, "signature": signer.sign(&manifest)? });
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(manifest)
}

/// Verifies a JSONL export with an Ed25519 public key (base64url, the JWKS `x`) alone: every
/// record's chain, positions rising, and the signed manifest's range, count and final hash.
pub fn verify_jsonl(input: impl BufRead, public_key_x: &str) -> Result<Manifest, VerifyError> {
    let key = DecodingKey::from_ed_components(public_key_x).map_err(|e| VerifyError {
        line: 0,
        reason: format!("unusable public key: {e}"),
    })?;
    let mut chain = String::from(GENESIS_CHAIN);
    let (mut count, mut last_position, mut first_position) = (0_u64, None::<i64>, None::<i64>);
    for (index, line) in input.lines().enumerate() {
        let line_number = index + 1;
        let fail = |reason: String| VerifyError {
            line: line_number,
            reason,
        };
        let line = line.map_err(|e| fail(format!("unreadable: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
        if let Some(signature) = value.get("signature").and_then(|s| s.as_str()) {
            let manifest = verify_manifest(signature, &key).map_err(fail)?;
            let stated: Manifest = serde_json::from_value(value["manifest"].clone())
                .map_err(|e| fail(format!("unreadable manifest: {e}")))?;
            let expected_to = last_position.unwrap_or(manifest.after_position);
            let checks = [
                (
                    stated == manifest,
                    "the manifest differs from what was signed",
                ),
                (
                    manifest.count == count,
                    "the manifest's count differs from the records",
                ),
                (
                    manifest.final_hash == chain,
                    "the manifest's final hash differs from the chain",
                ),
                (
                    manifest.to_position == expected_to,
                    "the manifest's range differs from the records",
                ),
                (
                    first_position.is_none_or(|first| first > manifest.after_position),
                    "records precede the manifest's range",
                ),
            ];
            if let Some((_, reason)) = checks.iter().find(|(ok, _)| !ok) {
                return Err(fail((*reason).to_owned()));
            }
            return Ok(manifest);
        }
        let record = value
            .get("record")
            .ok_or_else(|| fail(String::from("neither a record nor a manifest")))?;
        let position = record["global_position"]
            .as_i64()
            .ok_or_else(|| fail(String::from("a record without a position")))?;
        if last_position.is_some_and(|last| position <= last) {
            return Err(fail(format!(
                "position {position} does not follow {}",
                last_position.unwrap_or_default()
            )));
        }
        chain = chained(&chain, record);
        if value["chain"].as_str() != Some(chain.as_str()) {
            return Err(fail(format!(
                "record at position {position} does not match its chain"
            )));
        }
        first_position.get_or_insert(position);
        last_position = Some(position);
        count += 1;
    }
    Err(VerifyError {
        line: count as usize + 1,
        reason: String::from("the export ends without a signed manifest"),
    })
}

fn verify_manifest(signature: &str, key: &DecodingKey) -> Result<Manifest, String> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Manifest>(signature, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("the manifest's signature does not verify: {e}"))
}

/// What a seal signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SealClaims {
    position: i64,
    chain_hash: String,
    count: i64,
}

/// Why sealing or checking failed to run (not: what a check found).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// What a check found wrong: the first seal whose prefix of the log no longer matches.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the log up to position {position} no longer matches the seal made at {sealed_at}: {reason}"
)]
pub struct SealMismatch {
    /// The seal's position.
    pub position: i64,
    /// When the seal was made.
    pub sealed_at: String,
    /// What differs.
    pub reason: String,
}

/// Seals the committed log after the newest seal, continuing its chain; `None` when nothing new
/// was committed since.
pub async fn seal(
    store: &dyn Store,
    signer: &Signer,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Seal>, SealError> {
    let latest = store.latest_seal().await?;
    let (mut cursor, mut chain, mut count) = match &latest {
        Some(seal) => (seal.position, seal.chain_hash.clone(), seal.count),
        None => (Position::START, String::from(GENESIS_CHAIN), 0),
    };
    let start = cursor;
    loop {
        let page = store.read_all_stored(cursor, READ_PAGE_MAX).await?;
        let Some(last) = page.last() else { break };
        cursor = last.global_position;
        for event in &page {
            chain = chained(
                &chain,
                &serde_json::to_value(event).expect("an event serialises"),
            );
            count += 1;
        }
    }
    if cursor == start {
        return Ok(None);
    }
    let claims = SealClaims {
        position: cursor.0,
        chain_hash: chain.clone(),
        count,
    };
    let seal = Seal {
        position: cursor,
        chain_hash: chain,
        count,
        key_id: signer.key_id().to_owned(),
        signature: signer.sign(&claims)?,
        sealed_at: now,
    };
    store.save_seal(&seal).await?;
    Ok(Some(seal))
}

/// Recomputes the chain over the whole stored log and compares it with every seal (and each
/// seal's signature, with `public_key_x`). Returns how many seals were checked.
pub async fn check(
    store: &dyn Store,
    public_key_x: &str,
) -> Result<Result<usize, SealMismatch>, SealError> {
    let key = DecodingKey::from_ed_components(public_key_x).map_err(JwtError::from)?;
    let (mut cursor, mut chain, mut count, mut checked) =
        (Position::START, String::from(GENESIS_CHAIN), 0_i64, 0_usize);
    let mut seals = store
        .seals_after(Position::START, crate::store::SEAL_PAGE_MAX)
        .await?
        .into_iter();
    let mut pending = seals.next();
    while let Some(seal) = pending.take() {
        let mismatch = |reason: &str| SealMismatch {
            position: seal.position.0,
            sealed_at: seal.sealed_at.to_rfc3339(),
            reason: reason.to_owned(),
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        match jsonwebtoken::decode::<SealClaims>(&seal.signature, &key, &validation) {
            Ok(data)
                if data.claims
                    == (SealClaims {
                        position: seal.position.0,
                        chain_hash: seal.chain_hash.clone(),
                        count: seal.count,
                    }) => {}
            _ => return Ok(Err(mismatch("the seal's signature does not verify"))),
        }
        while cursor < seal.position {
            let page = store.read_all_stored(cursor, READ_PAGE_MAX).await?;
            let Some(last) = page.last() else { break };
            for event in page.iter().filter(|e| e.global_position <= seal.position) {
                chain = chained(
                    &chain,
                    &serde_json::to_value(event).expect("an event serialises"),
                );
                count += 1;
                cursor = event.global_position;
            }
            if last.global_position > seal.position {
                break;
            }
        }
        if count != seal.count {
            return Ok(Err(mismatch(&format!(
                "it held {} events, the log now holds {count}",
                seal.count
            ))));
        }
        if chain != seal.chain_hash {
            return Ok(Err(mismatch(
                "a row at or before this position was changed",
            )));
        }
        checked += 1;
        pending = seals.next();
        if pending.is_none() {
            let more = store
                .seals_after(seal.position, crate::store::SEAL_PAGE_MAX)
                .await?;
            seals = more.into_iter();
            pending = seals.next();
        }
    }
    Ok(Ok(checked))
}
