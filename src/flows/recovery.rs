//! The self-hosted recovery jobs (`DOMAIN.md` §13, `../shared/design/PORTAL.md` §4): a person who
//! owns a license asks for a job by email (`manage`, `retrieve`, `export`, `delete`), gets a
//! 6-digit code, and confirms the job with it.
//!
//! - Asking is decided off the request path (an [`OffPathQueue`]), so the answer and its timing
//!   are the same whether the email owns a license or not; only an owner's request records a
//!   code (`aggregates::email_code`: bound to the job, 15 minutes, 5 tries, one a minute), and the
//!   outbox (`crate::flows::mail`) sends it. The code (6 digits, like a sign-in code) is derived
//!   from its id under the server secret; the log holds only its keyed hash.
//! - Confirming records the code used (or the wrong code, which counts against its tries) on the
//!   person's `email_code` stream before the job runs: two confirmations that race are decided
//!   one after the other, and the second finds the code used.
//! - The jobs: [`manage`] opens a Stripe Billing Portal session for the license's customer;
//!   [`retrieve`] lists the licenses with their activation keys (derived, never stored); [`export`]
//!   gathers everything the ledger holds on the email and signs it with the ledger's Ed25519 key;
//!   [`delete`] revokes every license (reason `erasure`), then runs the erasure job.

use crate::crypto::secrets::SecretHasher;
use crate::crypto::KeyMaterial;
use crate::engine::command::{decide_all, handle, load, Command};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::personal_data::PersonalDataStore;
use crate::engine::projection::{wait_for_position, ProjectionFold};
use crate::engine::store::{Store, READ_PAGE_MAX};
use crate::flows::access::accounts_of;
use crate::flows::billing_portal::{linked_stripe_object, ManageBilling};
use crate::flows::licensing::derived_activation_key;
use crate::flows::owned_licenses::license_ids_of;
use crate::flows::queue::{decide_each, OffPathQueue, OffPathRequests};
use crate::flows::sign_in::{is_code, person_of, random_bytes, six_digits};
use crate::flows::support::{history, SubjectKind};
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::StripeGateway;
use crate::metrics::Metrics;
use aggregates::account::Account;
use aggregates::catalog::Catalog;
use aggregates::decider::{decode, Context, Decider};
use aggregates::email_code::{EmailCode, EmailCodeCommand, EmailCodeEvent, RecoveryJob};
use aggregates::erasure::PersonErasure;
use aggregates::error::DomainError;
use aggregates::ids::{Email, LicenseId, SecretHash};
use aggregates::license::{License, LicenseCommand, LicenseEvent, RevocationReason};
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use aggregates::magic_link::MagicLink;
use aggregates::user::User;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::licenses::LicensesByEmail;
use projections::subject_streams::SubjectStreams;
use projections::DocumentProjection;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Events one export holds at most; past it the export says it was cut (`events_truncated`).
pub const EXPORT_EVENTS_MAX: usize = 10_000;
/// How long a request waits for the license read models to fold the newest event.
const READ_MODEL_WAIT: Duration = Duration::from_secs(2);
/// The `aud` of an export's signature.
pub const EXPORT_AUDIENCE: &str = "pulse-personal-data-export";
/// The version of an export document's shape.
pub const EXPORT_FORMAT: &str = "pulse-account.personal-data-export.v1";

/// What the recovery jobs share: their request queue, the store that can erase, and the
/// configured limits.
pub struct Recovery {
    /// Code requests waiting to be decided off the request path.
    pub queue: OffPathQueue<(RecoveryJob, Email)>,
    /// The sealing store, which the erasure needs as itself.
    pub personal: Arc<PersonalDataStore>,
    /// The data directory (its `.eml` outbox files are scanned by the erasure).
    pub data_dir: PathBuf,
    /// Days after the first payment in which a license may be refunded by its owner.
    pub self_refund_window_days: u32,
    /// One erasure at a time in this process (each rebuilds every read model).
    erasing: tokio::sync::Mutex<()>,
}

impl Recovery {
    /// The jobs' shared parts, and the receiving end of their queue.
    pub fn new(
        personal: Arc<PersonalDataStore>,
        data_dir: PathBuf,
        self_refund_window_days: u32,
    ) -> (Recovery, OffPathRequests<(RecoveryJob, Email)>) {
        let (queue, requests) = OffPathQueue::new();
        let recovery = Recovery {
            queue,
            personal,
            data_dir,
            self_refund_window_days,
            erasing: tokio::sync::Mutex::new(()),
        };
        (recovery, requests)
    }
}

/// The 6-digit code of a recovery code id, derived under the server secret.
pub fn recovery_code(hasher: &SecretHasher, code_id: &str) -> String {
    six_digits(hasher, &format!("email-code:{code_id}"))
}

/// The keyed hash a code is recorded under: bound to its code id, so equal codes of two codes
/// never share a hash.
fn code_hash(hasher: &SecretHasher, code_id: &str, code: &str) -> SecretHash {
    hasher.hash(&format!("email-code:{code_id}:{code}"))
}

/// Whether `email` owns a license, once the owner index has folded the newest event (this runs
/// off the request path, so the wait tells no one anything).
async fn owns_license(store: &dyn Store, email: &Email) -> Result<bool, FlowError> {
    let head = store.head_position().await?;
    wait_for_position(store, LicensesByEmail::NAME, head, READ_MODEL_WAIT).await?;
    Ok(store
        .read_document(LicensesByEmail::NAME, email.as_str())
        .await?
        .is_some())
}

/// Issues a code for `job` to `email` if the email owns a license. The caller answers the same
/// whatever happened here; the outbox sends the code.
#[tracing::instrument(skip_all, fields(job = ?job))]
pub async fn request_code(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    job: RecoveryJob,
    email: &Email,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    if !owns_license(store, email).await? {
        tracing::debug!("a recovery code was asked for an email that owns no license");
        return Ok(());
    }
    let person = person_of(keys, email);
    let code_id = format!("ec_{}", hex::encode(random_bytes::<12>()));
    let code = recovery_code(&keys.hasher, &code_id);
    let command = EmailCodeCommand::Request {
        job,
        code_hash: code_hash(&keys.hasher, &code_id, &code),
        code_id,
        email: email.clone(),
    };
    handle::<EmailCode>(
        store,
        Command {
            stream_id: &person,
            command: &command,
            context: Context::new(metadata.effective_at, catalog),
            metadata,
            idempotency: None,
        },
    )
    .await?;
    Ok(())
}

/// Decides queued code requests until the queue closes or `stopped` turns true.
pub async fn decide_requests(
    requests: OffPathRequests<(RecoveryJob, Email)>,
    store: Arc<dyn Store>,
    keys: Arc<KeyMaterial>,
    catalog: Arc<Catalog>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    decide_each(
        requests,
        stopped,
        "recovery code",
        |(job, email), metadata| {
            let (store, keys, catalog) = (&store, &keys, &catalog);
            async move { request_code(store.as_ref(), keys, catalog, job, &email, metadata).await }
        },
    )
    .await;
}

/// Confirms `job` for `email` with `code`: `Ok` once this call has used the code; a wrong code
/// is recorded (it counts against the code's tries) and answered, like an unknown, used, expired
/// or exhausted one, [`DomainError::InvalidToken`]. Answers the code's id.
#[tracing::instrument(skip_all, fields(job = ?job))]
pub async fn confirm_code(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    job: RecoveryJob,
    email: &Email,
    code: &str,
    metadata: EventMetadata,
) -> Result<String, FlowError> {
    if !is_code(code) {
        return Err(DomainError::InvalidToken.into());
    }
    let attempt = ConfirmAttempt {
        hasher: &keys.hasher,
        codes: stream(EmailCode::STREAM_TYPE, &person_of(keys, email))?,
        job,
        code,
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer?),
        Decided::Replayed(_) => Err(FlowError::Broken("a confirmation has no idempotency key")),
    }
}

struct ConfirmAttempt<'a> {
    hasher: &'a SecretHasher,
    codes: StreamName,
    job: RecoveryJob,
    code: &'a str,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for ConfirmAttempt<'_> {
    type Answer = Result<String, DomainError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let codes = reads.load::<EmailCode>(&self.codes).await?;
        let code_id = codes
            .codes
            .get(&self.job)
            .map_or_else(String::new, |code| code.code_id.clone());
        let confirm = EmailCodeCommand::Confirm {
            job: self.job,
            code_hash: code_hash(self.hasher, &code_id, self.code),
        };
        let events = match decide_all::<EmailCode>(codes, &[confirm], &self.context) {
            Ok((events, _)) => events,
            Err(refusal) => return Ok(Decision::answer(Err(refusal))),
        };
        let answer = match events.iter().find_map(EmailCodeEvent::refusal) {
            Some(refusal) => Err(refusal),
            None => Ok(code_id),
        };
        Ok(Decision::answer(answer).append::<EmailCode>(self.codes.clone(), &events)?)
    }
}

/// `manage`: where the owner manages the billing of their licenses: a Stripe Billing Portal
/// session for the Stripe customer of their newest license that has one (403
/// `no_billing_record` when none has), or in local checkout mode the portal's stand-in page.
pub async fn manage(
    store: &dyn Store,
    stripe: &StripeGateway,
    email: &Email,
    return_url: &str,
) -> Result<ManageBilling, FlowError> {
    if stripe.local_mode() {
        return Ok(ManageBilling::Local);
    }
    let head = store.head_position().await?;
    wait_for_position(store, SubjectStreams::NAME, head, READ_MODEL_WAIT).await?;
    let mut customer = None;
    for license_id in license_ids_of(store, email).await?.iter().rev() {
        let subject = format!("license/{license_id}");
        if let Some(found) = linked_stripe_object(store, &subject, "cus_").await? {
            customer = Some(found);
            break;
        }
    }
    let customer = customer.ok_or(DomainError::NoBillingRecord)?;
    let url = stripe
        .create_billing_portal_session(&customer, return_url)
        .await?
        .ok_or(FlowError::Broken("Stripe mode answered no billing portal"))?;
    Ok(ManageBilling::Stripe(url))
}

/// One license as `retrieve` shows it to its owner.
#[derive(Clone, Debug, Serialize)]
pub struct RetrievedLicense {
    /// The activation key; `null` for a license an operator issued (its key was drawn at random
    /// and only its hash is kept: support issues a new one).
    pub activation_key: Option<String>,
    /// `lic_…`.
    pub license_id: String,
    /// The plan's tier.
    pub tier: Option<String>,
    /// The plan.
    pub plan_version: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When the paid period ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its state (`revoked` once revoked).
    pub state: String,
    /// The owner's email.
    pub email: String,
}

/// `retrieve`: every license of `email`, in issue order, with its activation key.
pub async fn retrieve(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    email: &Email,
) -> Result<Vec<RetrievedLicense>, FlowError> {
    let mut licenses = Vec::new();
    for license_id in license_ids_of(store, email).await? {
        if let Some(license) = retrieved(store, keys, catalog, &license_id).await? {
            licenses.push(license);
        }
    }
    Ok(licenses)
}

async fn retrieved(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    license_id: &LicenseId,
) -> Result<Option<RetrievedLicense>, FlowError> {
    let license_stream = stream(License::STREAM_TYPE, license_id.as_str())?;
    let first = store
        .read_stream(&license_stream, StreamVersion(1), 2)
        .await?;
    let mut origin = None;
    let mut key_hash = None;
    let mut issued_at = None;
    for event in &first {
        match decode::<LicenseEvent>(&event.event_type, &event.payload)? {
            LicenseEvent::LicenseIssued { origin: o, .. } => {
                origin = Some(o);
                issued_at = Some(event.recorded_at);
            }
            LicenseEvent::ActivationKeyIssued { key_hash: h, .. } => key_hash = Some(h),
            _ => {}
        }
    }
    let (Some(origin), Some(issued_at)) = (origin, issued_at) else {
        return Ok(None);
    };
    let (state, _) = load::<License>(store, &license_stream).await?;
    let Some(license) = state.issued else {
        return Ok(None);
    };
    let key = derived_activation_key(&keys.hasher, &origin);
    let activation_key = (key_hash.as_ref() == Some(&keys.hasher.hash(key.expose())))
        .then(|| key.expose().to_owned());
    Ok(Some(RetrievedLicense {
        activation_key,
        license_id: license_id.to_string(),
        tier: catalog.plan(&license.plan_version).map(|p| p.tier.clone()),
        plan_version: license.plan_version.clone(),
        issued_at,
        expires_at: license.current_period_end,
        state: if license.revoked.is_some() {
            String::from("revoked")
        } else {
            license.state.as_str().to_owned()
        },
        email: license.owner_email.to_string(),
    }))
}

/// `export`'s answer: the document, and a signature over it.
#[derive(Clone, Debug, Serialize)]
pub struct SignedExport {
    /// Everything the ledger holds on the email.
    pub export: Value,
    /// An EdDSA JWT (verifiable with `/.well-known/jwks.json`) whose claims name the person,
    /// the time and `export_sha256`: the SHA-256 (hex) of `export` serialized as JSON with its
    /// object keys sorted and no whitespace.
    pub signature: String,
}

/// The claims of an export's signature.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ExportClaims {
    /// `pulse-account`.
    pub iss: String,
    /// [`EXPORT_AUDIENCE`].
    pub aud: String,
    /// The person (`per_…`).
    pub sub: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
    /// The SHA-256 (hex) of the export's canonical JSON.
    pub export_sha256: String,
}

/// The canonical bytes an export's signature covers: JSON with sorted object keys (serde_json's
/// map is ordered) and no whitespace.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value serializes")
}

/// `export`: everything the ledger holds on `email` — its licenses and their installations (the
/// names opened), the accounts it is a member of and its role in each, and every event of its
/// streams and of its licenses' histories, and the account events that name it, with their
/// positions — signed with the ledger's Ed25519 key.
pub async fn export(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    email: &Email,
    now: DateTime<Utc>,
) -> Result<SignedExport, FlowError> {
    let person = person_of(keys, email);
    let head = store.head_position().await?;
    let mut events: BTreeMap<Position, RecordedEvent> = BTreeMap::new();
    let mut licenses = Vec::new();
    let mut installations = Vec::new();
    for license_id in license_ids_of(store, email).await? {
        let (state, _) =
            load::<License>(store, &stream(License::STREAM_TYPE, license_id.as_str())?).await?;
        let Some(license) = state.issued else {
            continue;
        };
        for installation in license.installations.values() {
            installations.push(json!({
                "license_id": license_id.as_str(),
                "installation_id": installation.installation_id.as_str(),
                "instance_name": installation.instance_name,
                "active": installation.active,
            }));
        }
        licenses.push(json!({
            "license_id": license_id.as_str(),
            "plan_version": license.plan_version,
            "tier": catalog.plan(&license.plan_version).map(|p| p.tier.clone()),
            "state": license.state.as_str(),
            "revoked": license.revoked,
            "current_period_end": license.current_period_end,
            "first_payment": license.first_payment,
        }));
        for event in history(store, SubjectKind::License, license_id.as_str())
            .await?
            .events
        {
            events.insert(event.global_position, event);
        }
    }
    for stream_type in [
        User::STREAM_TYPE,
        MagicLink::STREAM_TYPE,
        EmailCode::STREAM_TYPE,
        PersonErasure::STREAM_TYPE,
    ] {
        for event in read_whole(store, &stream(stream_type, &person)?).await? {
            events.insert(event.global_position, event);
        }
    }
    let (user, _) = load::<User>(store, &stream(User::STREAM_TYPE, &person)?).await?;
    let mut accounts = Vec::new();
    if let Some(user) = &user.user {
        for member in accounts_of(store, user).await? {
            let account_stream = stream(Account::STREAM_TYPE, member.account.account_id.as_str())?;
            accounts.push(json!({
                "account_id": member.account.account_id.as_str(),
                "name": member.account.display_name,
                "kind": member.account.kind,
                "role": member.role,
            }));
            let names = [user.user_id.as_str(), email.as_str()];
            for event in read_whole(store, &account_stream).await? {
                if names_any(&event.payload, &names) {
                    events.insert(event.global_position, event);
                }
            }
        }
    }
    let events_truncated = events.len() > EXPORT_EVENTS_MAX;
    let events: Vec<Value> = events
        .into_values()
        .take(EXPORT_EVENTS_MAX)
        .map(|event| {
            json!({
                "position": event.global_position.0,
                "stream": event.stream.to_string(),
                "event_type": event.event_type,
                "recorded_at": event.recorded_at,
                "effective_at": event.metadata.effective_at,
                "actor": event.metadata.actor,
                "payload": event.payload,
            })
        })
        .collect();
    let export = json!({
        "format": EXPORT_FORMAT,
        "email": email.as_str(),
        "person_id": person,
        "exported_at": now,
        "log_head_position": head.0,
        "licenses": licenses,
        "installations": installations,
        "accounts": accounts,
        "events": events,
        "events_truncated": events_truncated,
    });
    use sha2::Digest;
    let claims = ExportClaims {
        iss: String::from("pulse-account"),
        aud: String::from(EXPORT_AUDIENCE),
        sub: person,
        iat: now.timestamp(),
        export_sha256: hex::encode(sha2::Sha256::digest(canonical_json(&export))),
    };
    let signature = keys.signer.sign(&claims)?;
    Ok(SignedExport { export, signature })
}

/// Every event of one stream, up to [`EXPORT_EVENTS_MAX`], read page by page.
async fn read_whole(
    store: &dyn Store,
    stream: &StreamName,
) -> Result<Vec<RecordedEvent>, FlowError> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = StreamVersion(events.last().map_or(1, |e| e.stream_version.0 + 1));
        let page = store.read_stream(stream, from, READ_PAGE_MAX).await?;
        let full = page.len() == READ_PAGE_MAX;
        events.extend(page);
        if !full || events.len() >= EXPORT_EVENTS_MAX {
            return Ok(events);
        }
    }
}

/// Whether any string inside `value` is one of `names`.
fn names_any(value: &Value, names: &[&str]) -> bool {
    match value {
        Value::String(text) => names.contains(&text.as_str()),
        Value::Array(items) => items.iter().any(|item| names_any(item, names)),
        Value::Object(fields) => fields.values().any(|item| names_any(item, names)),
        _ => false,
    }
}

/// What `delete` did.
#[derive(Clone, Debug, Serialize)]
pub struct Deleted {
    /// The licenses revoked and erased.
    pub deleted_count: usize,
    /// What happened, for people.
    pub message: String,
    /// What Stripe still holds, and how to have it deleted there.
    pub stripe_reminder: String,
}

/// What `delete` needs besides the store.
pub struct Eraser<'a> {
    /// The jobs' shared parts.
    pub recovery: &'a Recovery,
    /// The read models to rebuild.
    pub projections: &'a [Arc<dyn ProjectionFold>],
    /// Counters.
    pub metrics: &'a Arc<Metrics>,
    /// The catalog in force.
    pub catalog: &'a Catalog,
    /// Where the customer asks a person (named in the reminder).
    pub support_email: &'a str,
}

/// `delete`: revokes every license of `email` (an event each, reason `erasure`, referencing what
/// asked for it: the confirming code's id, or the signed-in user's), then erases the person (`crate::flows::erasure`) and the outbox files that
/// name them. One erasure at a time per process; the caller runs this in its own task, so a
/// client that goes away does not cut it short.
pub async fn delete(
    eraser: Eraser<'_>,
    email: &Email,
    reference: &str,
    metadata: EventMetadata,
) -> Result<Deleted, FlowError> {
    let recovery = eraser.recovery;
    let _one_at_a_time = recovery.erasing.lock().await;
    let store: &dyn Store = recovery.personal.as_ref();
    let license_ids = license_ids_of(store, email).await?;
    for license_id in &license_ids {
        let revoke = LicenseCommand::Revoke {
            reason: RevocationReason::Erasure,
            reference: reference.to_owned(),
        };
        handle::<License>(
            store,
            Command {
                stream_id: license_id.as_str(),
                command: &revoke,
                context: Context::new(metadata.effective_at, eraser.catalog),
                metadata: metadata.clone(),
                idempotency: None,
            },
        )
        .await?;
    }
    crate::flows::erasure::erase(
        Arc::clone(&recovery.personal),
        eraser.projections,
        Arc::clone(eraser.metrics),
        email,
        "the owner asked for their data to be deleted (recovery job delete)",
        metadata,
        &mut |_, _, _| {},
    )
    .await
    .map_err(|error| match error {
        crate::flows::erasure::ErasureError::Flow(flow) => flow,
        crate::flows::erasure::ErasureError::Rebuild(rebuild) => {
            tracing::error!(%rebuild, "the erasure's rebuild failed; run `pulse-account erase` to finish it");
            FlowError::Broken("the erasure's rebuild failed")
        }
    })?;
    crate::gateways::mail::forget_files(&recovery.data_dir, email);
    Ok(Deleted {
        deleted_count: license_ids.len(),
        message: format!(
            "{} license(s) revoked and your personal data erased: the ledger can no longer read your email, names or installations.",
            license_ids.len()
        ),
        stripe_reminder: format!(
            "Stripe keeps its own records of your payments (customer, invoices, any subscription). Deleting your data here does not cancel a subscription or delete them there: write to {} to have Stripe's records deleted.",
            eraser.support_email
        ),
    })
}
