//! Auditor export (`ARCHITECTURE-INTENT.md`, audit): the log in global order as JSONL or CSV, each record
//! carrying a running SHA-256 chain over the previous hash and the record's bytes (format 2: the
//! payload and metadata as the database keeps them, never decoded), ending with a manifest (range,
//! count, final hash, key id) signed with Ed25519 — and the offline verifier that checks an export
//! of either format with the public key alone and names the record that broke.
//!
//! The service also seals the committed prefix of the log periodically ([`seal`]: position, chain
//! value, count, signed), and [`check`] recomputes the chain over the stored log to find the first
//! seal an edit of an old row broke.
//!
//! The export reads one page at a time, so its memory does not grow with the log, and chains a
//! page on a blocking thread while the next is read. The seals chain each record's canonical
//! bytes: its JSON with object keys sorted (serde_json's map order), no whitespace.

use crate::crypto::signing::{JwtError, Signer};
use crate::engine::store::{EventStore, Seal, Store, StoreError, StoredRecord, READ_PAGE_MAX};
use aggregates::log::Position;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};

/// The format name written into every manifest. Version 2 chains each record's bytes as the
/// database keeps them ([`record_bytes`]).
pub const EXPORT_FORMAT: &str = "pulse-account-export/2";
/// The first format, whose records were decoded and re-encoded as canonical JSON before being
/// chained. Its records are the same object with canonical payload and metadata, so [`verify`]
/// checks both formats the same way.
pub const EXPORT_FORMAT_V1: &str = "pulse-account-export/1";
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
    /// The 1-based line of a JSONL export, or row of a CSV export (the header being row 1).
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

/// One record's fields, as an export carries them.
struct RecordFields<'a> {
    global_position: i64,
    stream_type: &'a str,
    stream_id: &'a str,
    stream_version: i64,
    event_id: &'a str,
    event_type: &'a str,
    schema_version: i64,
    /// JSON text, written as it is.
    payload: &'a str,
    /// JSON text, written as it is.
    metadata: &'a str,
    recorded_at: &'a str,
}

/// A record's bytes, which the chain covers: one JSON object, keys in sorted order, no whitespace,
/// the payload and metadata as the database keeps them (a format 1 record is the same object with
/// both canonical). JSONL carries these bytes as they are; CSV carries the fields, from which a
/// verifier writes the same bytes again.
fn record_bytes(out: &mut Vec<u8>, fields: &RecordFields<'_>) {
    let string = |out: &mut Vec<u8>, text: &str| {
        serde_json::to_writer(&mut *out, text).expect("a string serialises");
    };
    let number = |out: &mut Vec<u8>, n: i64| {
        write!(out, "{n}").expect("a Vec takes every write");
    };
    out.extend_from_slice(b"{\"event_id\":");
    string(out, fields.event_id);
    out.extend_from_slice(b",\"event_type\":");
    string(out, fields.event_type);
    out.extend_from_slice(b",\"global_position\":");
    number(out, fields.global_position);
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(fields.metadata.as_bytes());
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(fields.payload.as_bytes());
    out.extend_from_slice(b",\"recorded_at\":");
    string(out, fields.recorded_at);
    out.extend_from_slice(b",\"schema_version\":");
    number(out, fields.schema_version);
    out.extend_from_slice(b",\"stream\":{\"stream_id\":");
    string(out, fields.stream_id);
    out.extend_from_slice(b",\"stream_type\":");
    string(out, fields.stream_type);
    out.extend_from_slice(b"},\"stream_version\":");
    number(out, fields.stream_version);
    out.push(b'}');
}

/// The next chain value over a record's bytes: SHA-256 of the previous value and the bytes.
fn chain_bytes(previous: &[u8; 32], record: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(record);
    hasher.finalize().into()
}

/// A chain value in hex, as exports and manifests state it.
fn chain_hex(chain: &[u8; 32]) -> String {
    hex::encode(chain)
}

/// The chain value an export states, back to bytes; `None` when it is not 64 hex digits.
fn chain_from_hex(chain: &str) -> Option<[u8; 32]> {
    let mut bytes = [0; 32];
    hex::decode_to_slice(chain, &mut bytes).ok()?;
    Some(bytes)
}

/// The two export formats: the same records, chain and signed manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV: a header, one row per record, and a final `manifest` row.
    Csv,
}

/// The CSV header: each record's fields, then its chain value.
pub const CSV_HEADER: [&str; 11] = [
    "global_position",
    "stream_type",
    "stream_id",
    "stream_version",
    "event_id",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "recorded_at",
    "chain",
];

/// Where an export goes, page by page: the CLI writes a file and prints progress, the staff API
/// streams an HTTP body. A page is at most [`READ_PAGE_MAX`] records (or the manifest), so an
/// export holds one page in memory, however long the log.
#[async_trait::async_trait]
pub trait ExportOutput: Send {
    /// Takes the encoded bytes of the records up to position `reached` (the last call: the
    /// manifest). An error stops the export.
    async fn write_page(&mut self, bytes: Vec<u8>, reached: Position) -> std::io::Result<()>;
}

/// An [`ExportOutput`] over a writer, telling `progress` the position reached after each page.
struct WriteOutput<'a> {
    out: &'a mut (dyn Write + Send),
    progress: &'a mut (dyn FnMut(Position) + Send),
}

#[async_trait::async_trait]
impl ExportOutput for WriteOutput<'_> {
    async fn write_page(&mut self, bytes: Vec<u8>, reached: Position) -> std::io::Result<()> {
        self.out.write_all(&bytes)?;
        (self.progress)(reached);
        Ok(())
    }
}

/// A byte buffer the CSV writer writes into and the export drains after each page.
#[derive(Clone, Default)]
struct PageBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl PageBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Write for PageBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes the records (and the manifest) in one format into the current page's bytes.
enum Encoder {
    Jsonl(Vec<u8>),
    Csv {
        writer: Box<csv::Writer<PageBuffer>>,
        buffer: PageBuffer,
        /// The current record's bytes, for its chain value.
        scratch: Vec<u8>,
    },
}

impl Encoder {
    fn new(format: ExportFormat) -> Result<Encoder, ExportError> {
        Ok(match format {
            ExportFormat::Jsonl => Encoder::Jsonl(Vec::new()),
            ExportFormat::Csv => {
                let buffer = PageBuffer::default();
                let mut writer = csv::Writer::from_writer(buffer.clone());
                writer
                    .write_record(CSV_HEADER)
                    .map_err(std::io::Error::other)?;
                Encoder::Csv {
                    writer: Box::new(writer),
                    buffer,
                    scratch: Vec::new(),
                }
            }
        })
    }

    /// Encodes one record, chaining its bytes onto `chain`.
    fn record(&mut self, record: &StoredRecord, chain: &mut [u8; 32]) -> Result<(), ExportError> {
        let recorded_at = record
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let fields = RecordFields {
            global_position: record.global_position,
            stream_type: &record.stream_type,
            stream_id: &record.stream_id,
            stream_version: record.stream_version,
            event_id: &record.event_id,
            event_type: &record.event_type,
            schema_version: i64::from(record.schema_version),
            payload: &record.payload,
            metadata: &record.metadata,
            recorded_at: &recorded_at,
        };
        match self {
            Encoder::Jsonl(out) => {
                out.extend_from_slice(b"{\"chain\":\"");
                let chain_at = out.len();
                out.extend_from_slice(&[b'0'; 64]);
                out.extend_from_slice(b"\",\"record\":");
                let record_at = out.len();
                record_bytes(out, &fields);
                *chain = chain_bytes(chain, &out[record_at..]);
                hex::encode_to_slice(chain, &mut out[chain_at..chain_at + 64])
                    .expect("64 hex digits hold 32 bytes");
                out.extend_from_slice(b"}\n");
            }
            Encoder::Csv {
                writer, scratch, ..
            } => {
                scratch.clear();
                record_bytes(scratch, &fields);
                *chain = chain_bytes(chain, scratch);
                let numbers = [
                    record.global_position.to_string(),
                    record.stream_version.to_string(),
                    record.schema_version.to_string(),
                ];
                writer
                    .write_record([
                        numbers[0].as_str(),
                        fields.stream_type,
                        fields.stream_id,
                        numbers[1].as_str(),
                        fields.event_id,
                        fields.event_type,
                        numbers[2].as_str(),
                        fields.payload,
                        fields.metadata,
                        fields.recorded_at,
                        &chain_hex(chain),
                    ])
                    .map_err(std::io::Error::other)?;
            }
        }
        Ok(())
    }

    fn manifest(&mut self, manifest: &Manifest, signature: &str) -> Result<(), ExportError> {
        match self {
            Encoder::Jsonl(out) => {
                serde_json::to_writer(
                    &mut *out,
                    &serde_json::json!({ "manifest": manifest, "signature": signature }),
                )
                .map_err(std::io::Error::other)?;
                out.push(b'\n');
            }
            Encoder::Csv { writer, .. } => {
                let mut row = vec![
                    String::from("manifest"),
                    serde_json::to_string(manifest).map_err(std::io::Error::other)?,
                    signature.to_owned(),
                ];
                row.resize(CSV_HEADER.len(), String::new());
                writer.write_record(&row).map_err(std::io::Error::other)?;
            }
        }
        Ok(())
    }

    /// The bytes encoded since the last call.
    fn take(&mut self) -> Result<Vec<u8>, ExportError> {
        match self {
            Encoder::Jsonl(out) => Ok(std::mem::take(out)),
            Encoder::Csv { writer, buffer, .. } => {
                writer.flush()?;
                Ok(buffer.take())
            }
        }
    }
}

/// Writes the log after `after` (up to `to`, when given) as a chained JSONL export ending with a
/// signed manifest. `progress` is told the position reached after each page.
pub async fn export_jsonl(
    store: &dyn EventStore,
    signer: &Signer,
    after: Position,
    to: Option<Position>,
    out: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Position) + Send),
) -> Result<Manifest, ExportError> {
    export(store, signer, after, to, ExportFormat::Jsonl, out, progress).await
}

/// Writes the log after `after` (up to `to`, when given) in `format` to a writer, each record
/// chained, ending with the signed manifest. `progress` is told the position reached after each
/// page.
pub async fn export(
    store: &dyn EventStore,
    signer: &Signer,
    after: Position,
    to: Option<Position>,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
    progress: &mut (dyn FnMut(Position) + Send),
) -> Result<Manifest, ExportError> {
    let mut output = WriteOutput {
        out: &mut *out,
        progress,
    };
    let manifest = export_to(store, signer, after, to, format, &mut output).await?;
    out.flush()?;
    Ok(manifest)
}

/// Exports the log after `after` (up to `to`, when given) in `format` to `output`, one page at a
/// time, each record chained, ending with the signed manifest.
pub async fn export_to(
    store: &dyn EventStore,
    signer: &Signer,
    after: Position,
    to: Option<Position>,
    format: ExportFormat,
    output: &mut dyn ExportOutput,
) -> Result<Manifest, ExportError> {
    let mut encoder = Encoder::new(format)?;
    let mut chain = [0_u8; 32];
    let (mut cursor, mut count) = (after, 0_u64);
    let mut page = store.read_all_records(cursor, READ_PAGE_MAX).await?;
    while let Some(last) = page.last().map(|record| Position(record.global_position)) {
        let range_ends_here = to.is_some_and(|to| last >= to);
        // The page is encoded and chained on a blocking thread while the next one is read.
        let encoding = tokio::task::spawn_blocking(move || {
            let (mut reached, mut encoded) = (None, 0_u64);
            for record in &page {
                if to.is_some_and(|to| record.global_position > to.0) {
                    break;
                }
                encoder.record(record, &mut chain)?;
                reached = Some(Position(record.global_position));
                encoded += 1;
            }
            let bytes = encoder.take()?;
            Ok::<_, ExportError>((encoder, chain, bytes, reached, encoded))
        });
        let (encoded, next) = if range_ends_here {
            (encoding.await, None)
        } else {
            let (encoded, next) =
                tokio::join!(encoding, store.read_all_records(last, READ_PAGE_MAX));
            (encoded, Some(next))
        };
        let (encoder_back, chain_after, bytes, reached, encoded) =
            encoded.map_err(std::io::Error::other)??;
        (encoder, chain) = (encoder_back, chain_after);
        cursor = reached.unwrap_or(cursor);
        count += encoded;
        output.write_page(bytes, cursor).await?;
        match next {
            Some(next) => page = next?,
            None => break,
        }
    }
    let manifest = Manifest {
        format: String::from(EXPORT_FORMAT),
        after_position: after.0,
        to_position: cursor.0,
        count,
        final_hash: chain_hex(&chain),
        key_id: signer.key_id().to_owned(),
    };
    encoder.manifest(&manifest, &signer.sign(&manifest)?)?;
    output.write_page(encoder.take()?, cursor).await?;
    Ok(manifest)
}

/// One line of an export, whatever its format.
enum Entry {
    Record {
        position: i64,
        /// The record's bytes, which the chain covers.
        bytes: Vec<u8>,
        chain: String,
    },
    Manifest {
        stated: serde_json::Value,
        signature: String,
    },
}

/// The stated chain and the record's bytes of a JSONL record line,
/// `{"chain":"<64 hex digits>","record":<the record's bytes>}`; `None` for any other line.
fn split_record_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("{\"chain\":\"")?;
    let (chain, rest) = (rest.get(..64)?, rest.get(64..)?);
    let record = rest.strip_prefix("\",\"record\":")?.strip_suffix('}')?;
    Some((chain, record))
}

/// Verifies an export — JSONL or CSV, told apart by its first byte — with an Ed25519 public key
/// (base64url, the JWKS `x`) alone. Both formats' versions verify ([`EXPORT_FORMAT`],
/// [`EXPORT_FORMAT_V1`]).
pub fn verify(mut input: impl BufRead, public_key_x: &str) -> Result<Manifest, VerifyError> {
    let first = input
        .fill_buf()
        .map_err(|e| VerifyError {
            line: 1,
            reason: format!("unreadable: {e}"),
        })?
        .first()
        .copied();
    if first == Some(b'{') {
        verify_jsonl(input, public_key_x)
    } else {
        verify_csv(input, public_key_x)
    }
}

/// Verifies a JSONL export: every record's chain over its bytes as the line carries them,
/// positions rising, and the signed manifest's format, range, count and final hash.
pub fn verify_jsonl(input: impl BufRead, public_key_x: &str) -> Result<Manifest, VerifyError> {
    let entries = input.lines().enumerate().map(|(index, line)| {
        let fail = |reason: String| VerifyError {
            line: index + 1,
            reason,
        };
        let line = line.map_err(|e| fail(format!("unreadable: {e}")))?;
        if let Some((chain, record)) = split_record_line(&line) {
            let value: serde_json::Value = serde_json::from_str(record)
                .map_err(|e| fail(format!("the record is not JSON: {e}")))?;
            let position = value["global_position"]
                .as_i64()
                .ok_or_else(|| fail(String::from("a record without a position")))?;
            return Ok((
                index + 1,
                Entry::Record {
                    position,
                    bytes: record.as_bytes().to_vec(),
                    chain: chain.to_owned(),
                },
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
        match (
            value.get("signature").and_then(|s| s.as_str()),
            value.get("record"),
        ) {
            (Some(signature), _) => Ok((
                index + 1,
                Entry::Manifest {
                    stated: value["manifest"].clone(),
                    signature: signature.to_owned(),
                },
            )),
            (None, Some(_)) => Err(fail(String::from(
                "a record line not in the export's shape {\"chain\":…,\"record\":…}",
            ))),
            (None, None) => Err(fail(String::from("neither a record nor a manifest"))),
        }
    });
    verify_entries(entries, public_key_x)
}

/// Verifies a CSV export (header, records, manifest row) the same way: each row's fields are
/// written back into the record's bytes, which the chain covers.
pub fn verify_csv(input: impl std::io::Read, public_key_x: &str) -> Result<Manifest, VerifyError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header_ok = reader
        .headers()
        .is_ok_and(|h| h.iter().eq(CSV_HEADER.iter().copied()));
    if !header_ok {
        return Err(VerifyError {
            line: 1,
            reason: String::from("not an export: the CSV header differs"),
        });
    }
    let entries = reader.into_records().enumerate().map(|(index, row)| {
        let line = index + 2;
        let fail = |reason: String| VerifyError { line, reason };
        let row = row.map_err(|e| fail(format!("unreadable: {e}")))?;
        let field = |i: usize| row.get(i).unwrap_or_default();
        if field(0) == "manifest" {
            let stated = serde_json::from_str(field(1))
                .map_err(|e| fail(format!("unreadable manifest: {e}")))?;
            return Ok((
                line,
                Entry::Manifest {
                    stated,
                    signature: field(2).to_owned(),
                },
            ));
        }
        let number = |i: usize| {
            field(i)
                .parse::<i64>()
                .map_err(|_| fail(format!("column {} is not a number", CSV_HEADER[i])))
        };
        let json = |i: usize| {
            serde_json::from_str::<serde::de::IgnoredAny>(field(i))
                .map(|_| field(i))
                .map_err(|e| fail(format!("column {} is not JSON: {e}", CSV_HEADER[i])))
        };
        let fields = RecordFields {
            global_position: number(0)?,
            stream_type: field(1),
            stream_id: field(2),
            stream_version: number(3)?,
            event_id: field(4),
            event_type: field(5),
            schema_version: number(6)?,
            payload: json(7)?,
            metadata: json(8)?,
            recorded_at: field(9),
        };
        let mut bytes = Vec::new();
        record_bytes(&mut bytes, &fields);
        Ok((
            line,
            Entry::Record {
                position: fields.global_position,
                bytes,
                chain: field(10).to_owned(),
            },
        ))
    });
    verify_entries(entries, public_key_x)
}

fn verify_entries(
    entries: impl Iterator<Item = Result<(usize, Entry), VerifyError>>,
    public_key_x: &str,
) -> Result<Manifest, VerifyError> {
    let key = DecodingKey::from_ed_components(public_key_x).map_err(|e| VerifyError {
        line: 0,
        reason: format!("unusable public key: {e}"),
    })?;
    let mut chain = [0_u8; 32];
    let (mut count, mut last_position, mut first_position, mut last_line) =
        (0_u64, None::<i64>, None::<i64>, 0);
    let mut verified = None;
    for entry in entries {
        if verified.is_some() {
            let line = match &entry {
                Ok((line, _)) => *line,
                Err(error) => error.line,
            };
            return Err(VerifyError {
                line,
                reason: String::from("data after the signed manifest"),
            });
        }
        let (line, entry) = entry?;
        last_line = line;
        let fail = |reason: String| VerifyError { line, reason };
        match entry {
            Entry::Manifest { stated, signature } => {
                let manifest = verify_manifest(&signature, &key).map_err(fail)?;
                let stated: Manifest = serde_json::from_value(stated)
                    .map_err(|e| fail(format!("unreadable manifest: {e}")))?;
                let expected_to = last_position.unwrap_or(manifest.after_position);
                let checks = [
                    (
                        stated == manifest,
                        "the manifest differs from what was signed",
                    ),
                    (
                        [EXPORT_FORMAT, EXPORT_FORMAT_V1].contains(&manifest.format.as_str()),
                        "the manifest names a format this verifier does not know",
                    ),
                    (
                        manifest.count == count,
                        "the manifest's count differs from the records",
                    ),
                    (
                        manifest.final_hash == chain_hex(&chain),
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
                verified = Some(manifest);
            }
            Entry::Record {
                position,
                bytes,
                chain: stated_chain,
            } => {
                if last_position.is_some_and(|last| position <= last) {
                    return Err(fail(format!(
                        "position {position} does not follow {}",
                        last_position.unwrap_or_default()
                    )));
                }
                chain = chain_bytes(&chain, &bytes);
                if chain_from_hex(&stated_chain) != Some(chain) {
                    return Err(fail(format!(
                        "record at position {position} does not match its chain"
                    )));
                }
                first_position.get_or_insert(position);
                last_position = Some(position);
                count += 1;
            }
        }
    }
    verified.ok_or(VerifyError {
        line: last_line + 1,
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
        .seals_after(Position::START, crate::engine::store::SEAL_PAGE_MAX)
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
                .seals_after(seal.position, crate::engine::store::SEAL_PAGE_MAX)
                .await?;
            seals = more.into_iter();
            pending = seals.next();
        }
    }
    Ok(Ok(checked))
}
