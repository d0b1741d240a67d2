//! Self-hosted licensing flows (`DOMAIN.md` §5): issuing a license with its activation key,
//! activating an installation, refreshing a grant and answering grant status.
//!
//! Each flow loads the streams it needs, decides with the pure deciders, and appends every stream
//! it changes in one atomic batch (the license and the secret indexes move together). A retried
//! request with the same `Idempotency-Key` rebuilds its first answer from the recorded events: the
//! installation token is then derived from the key under the server's secret instead of drawn at
//! random, so it can be shown again without ever being stored.

use crate::crypto::secrets::{
    Secret, SecretHasher, ACTIVATION_KEY_PREFIX, INSTALLATION_TOKEN_PREFIX,
};
use crate::crypto::KeyMaterial;
use crate::engine::command::{decide_all, load, load_until, recorded_events};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::store::{BatchOutcome, Idempotency, Store, StoreError};
use crate::flows::license_cache::LicenseCache;
use crate::flows::{stream, FlowError};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::{CodecError, Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::{Email, InstallationId, LicenseId, SecretHash};
use aggregates::index::{
    ActivationKeyIndex, BindActivationKey, BindInstallationToken, InstallationTokenIndex,
};
use aggregates::license::{
    grant_refusal, ActivateInstallation, ContinuityReport, GrantClaims, IssueLicense,
    IssuedLicense, License, LicenseCommand, LicenseEvent, LicenseOrigin,
};
use aggregates::log::{EventMetadata, Position, StreamName};
use aggregates::subscription::SubscriptionState;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::entitlements::{license_entitlements, Entitlements};
use projections::licenses::Licenses;
use projections::DocumentProjection;
use rand::RngCore;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

/// What `POST /v1/activate` asks.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// `ppk_live_…`.
    pub activation_key: String,
    /// The instance's name.
    pub instance_name: String,
    /// The instance's stable fingerprint.
    pub instance_fingerprint: String,
    /// The instance's version.
    pub client_version: String,
}

/// A signed grant.
#[derive(Clone, Debug, Serialize)]
pub struct SignedGrant {
    /// The EdDSA JWT.
    pub jwt: String,
    /// Its id.
    pub jti: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// What an activation produced.
#[derive(Clone, Debug)]
pub struct Activation {
    /// The license after the activation.
    pub license: IssuedLicense,
    /// The installation.
    pub installation_id: InstallationId,
    /// Its token, shown once.
    pub installation_token: Secret,
    /// Its first grant.
    pub grant: SignedGrant,
}

/// A license issued with its activation key.
#[derive(Clone, Debug)]
pub struct IssuedWithKey {
    /// The license.
    pub license_id: LicenseId,
    /// Its activation key, shown to the buyer.
    pub activation_key: Secret,
    /// The append's outcome.
    pub outcome: BatchOutcome,
}

/// What issuing a license needs.
#[derive(Clone, Debug)]
pub struct NewLicense {
    /// The owner.
    pub owner_email: Email,
    /// The plan.
    pub plan_version: String,
    /// Its cadence.
    pub billing_cycle: Option<BillingCycle>,
    /// Its first period end.
    pub current_period_end: Option<DateTime<Utc>>,
    /// How it came to be.
    pub origin: LicenseOrigin,
    /// The Stripe price billed.
    pub stripe_price_id: Option<String>,
}

/// The licensing flows over one store and one set of keys.
pub struct Licensing<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Installation tokens this process has seen bound.
    pub bindings: &'a TokenBindings,
    /// The licenses this process holds in memory, when it keeps them.
    pub cache: Option<&'a LicenseCache>,
    /// Keys for hashing secrets and signing grants.
    pub keys: &'a KeyMaterial,
    /// The catalog in force.
    pub catalog: &'a Catalog,
}

/// Installation tokens seen bound, by hash: the token index keeps a token's first binding forever,
/// so an entry is never stale (whether the token is still its installation's is checked against
/// the license on every request). Unknown tokens are not remembered: they may be bound later.
#[derive(Default)]
pub struct TokenBindings {
    bound: Mutex<HashMap<SecretHash, (LicenseId, InstallationId)>>,
}

/// Most token bindings remembered; the cache starts over when full.
const TOKEN_BINDINGS_MAX: usize = 100_000;

impl TokenBindings {
    fn get(&self, token_hash: &SecretHash) -> Option<(LicenseId, InstallationId)> {
        self.lock().get(token_hash).cloned()
    }

    fn remember(&self, token_hash: SecretHash, binding: (LicenseId, InstallationId)) {
        let mut bound = self.lock();
        if bound.len() >= TOKEN_BINDINGS_MAX {
            bound.clear();
        }
        bound.insert(token_hash, binding);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretHash, (LicenseId, InstallationId)>> {
        self.bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The claims of the grant a decision issued.
fn granted_claims(events: &[LicenseEvent]) -> Result<GrantClaims, FlowError> {
    events
        .iter()
        .find_map(|e| match e {
            LicenseEvent::GrantIssued { claims } => Some(claims.clone()),
            _ => None,
        })
        .ok_or(FlowError::Broken("a grant decision recorded no grant"))
}

/// Names the license and installation a request acts on in its span.
fn record_installation(license_id: &LicenseId, installation_id: &InstallationId) {
    let span = tracing::Span::current();
    span.record("license_id", license_id.as_str());
    span.record("installation_id", installation_id.as_str());
}

fn random_u64() -> u64 {
    rand::rngs::OsRng.next_u64()
}

impl Licensing<'_> {
    fn hasher(&self) -> &SecretHasher {
        &self.keys.hasher
    }

    /// Issues a license and binds a new activation key to it, atomically (an operator's
    /// issuance: the key is drawn at random and shown once, so a replayed idempotency key cannot
    /// show it again and is refused).
    pub async fn issue(
        &self,
        license: NewLicense,
        metadata: EventMetadata,
        idempotency: Option<Idempotency>,
    ) -> Result<IssuedWithKey, FlowError> {
        let license_id = LicenseId::from_entropy(random_u64());
        let activation_key = self.hasher().generate(ACTIVATION_KEY_PREFIX);
        let context = Context::new(metadata.effective_at, self.catalog);
        let issuance = decide_issuance(
            self.hasher(),
            &license_id,
            &activation_key,
            license,
            SubscriptionState::Active,
            &context,
        )?;
        let attempt = Issue { issuance };
        match run(self.store, &metadata, idempotency.as_ref(), &attempt).await? {
            Decided::Appended { outcome, .. } => Ok(IssuedWithKey {
                license_id,
                activation_key,
                outcome,
            }),
            Decided::Replayed(_) | Decided::Unchanged(()) => {
                Err(StoreError::IdempotencyKeyReused {
                    key: idempotency.map(|i| i.key).unwrap_or_default(),
                }
                .into())
            }
        }
    }

    /// The license an activation key opens.
    async fn license_of_key(&self, activation_key: &str) -> Result<LicenseId, FlowError> {
        license_of_key(self.store, self.hasher(), activation_key).await
    }

    /// The license and installation an installation token belongs to.
    pub async fn installation_of_token(
        &self,
        token: &str,
    ) -> Result<(LicenseId, InstallationId, SecretHash), FlowError> {
        if !SecretHasher::well_formed(INSTALLATION_TOKEN_PREFIX, token) {
            return Err(FlowError::UnknownInstallationToken);
        }
        let token_hash = self.hasher().hash(token);
        if let Some((license_id, installation_id)) = self.bindings.get(&token_hash) {
            return Ok((license_id, installation_id, token_hash));
        }
        let (binding, _) = load::<InstallationTokenIndex>(
            self.store,
            &stream(InstallationTokenIndex::STREAM_TYPE, token_hash.as_str())?,
        )
        .await?;
        let (license_id, installation_id) =
            binding.bound.ok_or(FlowError::UnknownInstallationToken)?;
        self.bindings.remember(
            token_hash.clone(),
            (license_id.clone(), installation_id.clone()),
        );
        Ok((license_id, installation_id, token_hash))
    }

    fn sign(&self, claims: &GrantClaims) -> Result<SignedGrant, FlowError> {
        Ok(SignedGrant {
            jwt: self.keys.signer.sign(claims)?,
            jti: claims.jti.clone(),
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
        })
    }

    /// The idempotency record of an activation under the client's key: the activation key
    /// counts by its hash, so the record holds no secret.
    pub fn activation_idempotency(&self, request: &ActivateRequest, key: &str) -> Idempotency {
        let fingerprint = serde_json::json!({
            "activation_key_hash": self.hasher().hash(&request.activation_key).as_str(),
            "instance_name": request.instance_name,
            "instance_fingerprint": request.instance_fingerprint,
            "client_version": request.client_version,
        });
        Idempotency::scoped("activate", key, &fingerprint)
    }

    /// `POST /v1/activate`: activates (or re-activates) an installation and issues its first grant.
    #[tracing::instrument(skip_all, fields(license_id = tracing::field::Empty, instance_fingerprint = %request.instance_fingerprint))]
    pub async fn activate(
        &self,
        request: &ActivateRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<Activation, FlowError> {
        let license_id = self.license_of_key(&request.activation_key).await?;
        tracing::Span::current().record("license_id", license_id.as_str());
        let idempotency = idempotency_key.map(|key| self.activation_idempotency(request, key));
        let token = match idempotency_key {
            Some(key) => self.hasher().derive(
                INSTALLATION_TOKEN_PREFIX,
                &format!("activate:{key}:{license_id}"),
            ),
            None => self.hasher().generate(INSTALLATION_TOKEN_PREFIX),
        };
        let token_hash = self.hasher().hash(token.expose());
        let attempt = Activate {
            license_stream: stream(License::STREAM_TYPE, license_id.as_str())?,
            token_stream: stream(InstallationTokenIndex::STREAM_TYPE, token_hash.as_str())?,
            license_id,
            request,
            token_hash,
            installation_id: InstallationId::from_entropy(random_u64()),
            jti: uuid::Uuid::new_v4().to_string(),
            context: Context::new(metadata.effective_at, self.catalog),
        };
        match run(self.store, &metadata, idempotency.as_ref(), &attempt).await? {
            Decided::Appended { outcome, .. } | Decided::Replayed(outcome) => {
                self.replayed_activation(&outcome, token).await
            }
            Decided::Unchanged(()) => {
                Err(StoreError::Invariant(String::from("an activation decided no events")).into())
            }
        }
    }

    /// Builds the answer of an activation from what it recorded: the license as it was right
    /// after, the installation it activated, and the grant it issued (re-signed: Ed25519 is
    /// deterministic, so the JWT is the same).
    async fn replayed_activation(
        &self,
        outcome: &BatchOutcome,
        token: Secret,
    ) -> Result<Activation, FlowError> {
        let appended = outcome
            .outcomes
            .iter()
            .find(|o| o.stream.stream_type() == License::STREAM_TYPE)
            .ok_or_else(|| {
                StoreError::Invariant(String::from("an activation outcome names no license"))
            })?;
        let events = recorded_events::<License>(self.store, appended).await?;
        let (state, _) =
            load_until::<License>(self.store, &appended.stream, appended.stream_version).await?;
        let license = state
            .issued
            .ok_or(DomainError::NotFound { entity: "license" })?;
        let installation_id = activated_installation(&events)
            .ok_or(FlowError::Broken("an activation decided no installation"))?;
        let claims = granted_claims(&events)?;
        Ok(Activation {
            license,
            installation_id,
            installation_token: token,
            grant: self.sign(&claims)?,
        })
    }

    /// `POST /v1/grants/refresh`: a new grant for the installation presenting its token.
    #[tracing::instrument(skip_all, fields(license_id = tracing::field::Empty, installation_id = tracing::field::Empty))]
    pub async fn refresh_grant(
        &self,
        token: &str,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<(IssuedLicense, SignedGrant), FlowError> {
        let (license_id, installation_id, token_hash) = self.installation_of_token(token).await?;
        record_installation(&license_id, &installation_id);
        let jti = uuid::Uuid::new_v4().to_string();
        let command = LicenseCommand::IssueGrant {
            installation_id: installation_id.clone(),
            token_hash,
            jti,
        };
        let idempotency = idempotency_key.map(|key| {
            Idempotency::scoped(
                "grant",
                key,
                &serde_json::json!({ "installation_id": installation_id }),
            )
        });
        let outcome = crate::engine::command::handle::<License>(
            self.store,
            crate::engine::command::Command {
                stream_id: license_id.as_str(),
                command: &command,
                context: Context::new(metadata.effective_at, self.catalog),
                metadata,
                idempotency,
            },
        )
        .await?;
        let appended = outcome
            .appended
            .ok_or(FlowError::Broken("a grant decision recorded no grant"))?;
        let events = recorded_events::<License>(self.store, &appended).await?;
        let claims = granted_claims(&events)?;
        let (state, _) =
            load_until::<License>(self.store, &appended.stream, appended.stream_version).await?;
        let license = state
            .issued
            .ok_or(DomainError::NotFound { entity: "license" })?;
        Ok((license, self.sign(&claims)?))
    }

    /// `POST /v1/grants/status`: the current `license_version`, and whether a runtime holding
    /// `known_version` must refresh. Revocation and suspension answer as a refresh would.
    #[tracing::instrument(skip_all, fields(license_id = tracing::field::Empty, installation_id = tracing::field::Empty))]
    pub async fn grant_status(
        &self,
        token: &str,
        known_version: Option<u64>,
    ) -> Result<(u64, bool), FlowError> {
        let (license_id, installation_id, token_hash) = self.installation_of_token(token).await?;
        record_installation(&license_id, &installation_id);
        let (state, _) = load::<License>(
            self.store,
            &stream(License::STREAM_TYPE, license_id.as_str())?,
        )
        .await?;
        let license = state
            .issued
            .ok_or(DomainError::NotFound { entity: "license" })?;
        if let Some(refusal) = grant_refusal(&license, &installation_id, &token_hash) {
            return Err(refusal.into());
        }
        let current = license.license_version;
        Ok((current, known_version.is_none_or(|known| known < current)))
    }
}

impl Licensing<'_> {
    /// The license of an installation presenting its token, checked the way a grant would be:
    /// an unknown or rotated token, or a deactivated installation, is refused.
    async fn presented(
        &self,
        token: &str,
        at_least: Option<Position>,
    ) -> Result<(Arc<IssuedLicense>, InstallationId), FlowError> {
        let (license_id, installation_id, token_hash) = self.installation_of_token(token).await?;
        let license = self.current_license(&license_id, at_least).await?;
        let installation = license
            .installations
            .get(&installation_id)
            .filter(|i| i.active)
            .ok_or(DomainError::InstallationRevoked)?;
        if installation.token_hash != token_hash {
            return Err(DomainError::TokenRevoked.into());
        }
        Ok((license, installation_id))
    }

    /// A license as it stands now, at least as of `at_least` (a client's own write). From memory
    /// when the cache is current (`crate::flows::license_cache`); else from the `licenses` read
    /// model when that has folded the whole stream — one statement, however long the history —
    /// else folded from the stream itself, so a read model that lags never answers for the
    /// license.
    async fn current_license(
        &self,
        license_id: &LicenseId,
        at_least: Option<Position>,
    ) -> Result<Arc<IssuedLicense>, FlowError> {
        if let Some(cache) = self.cache {
            if let Some(license) = cache.get(license_id, at_least) {
                return Ok(license);
            }
            if cache.current(at_least) {
                let state = cache.load(self.store, license_id).await?;
                return Ok(Arc::new(
                    state
                        .issued
                        .ok_or(DomainError::NotFound { entity: "license" })?,
                ));
            }
        }
        let stream = stream(License::STREAM_TYPE, license_id.as_str())?;
        let document = self
            .store
            .read_current_document(Licenses::NAME, license_id.as_str(), &stream)
            .await?;
        if let Some(body) = document {
            match serde_json::from_value::<IssuedLicense>(body) {
                Ok(license) => return Ok(Arc::new(license)),
                Err(error) => {
                    tracing::warn!(%license_id, %error, "unreadable licenses document; folding the stream")
                }
            }
        }
        let (state, _) = load::<License>(self.store, &stream).await?;
        Ok(Arc::new(
            state
                .issued
                .ok_or(DomainError::NotFound { entity: "license" })?,
        ))
    }

    /// `GET /v1/entitlements`: what the installation's license grants now (§14). A revoked or
    /// lapsed license still answers, saying so (`valid: false`).
    #[tracing::instrument(skip_all, fields(license_id = tracing::field::Empty, installation_id = tracing::field::Empty))]
    pub async fn entitlements(
        &self,
        token: &str,
        now: DateTime<Utc>,
        at_least: Option<Position>,
    ) -> Result<(Arc<IssuedLicense>, InstallationId, Entitlements), FlowError> {
        let (license, installation_id) = self.presented(token, at_least).await?;
        record_installation(&license.license_id, &installation_id);
        let entitlements = license_entitlements(&license, self.catalog, now, None);
        Ok((license, installation_id, entitlements))
    }

    /// `POST /v1/continuity/capture`: the first settled monitored-system count of a migrated
    /// license (§7); later reports change nothing. Returns the continuity report.
    /// With an `Idempotency-Key`, a retry answers the report as the first capture left it.
    #[tracing::instrument(skip_all, fields(license_id = tracing::field::Empty, installation_id = tracing::field::Empty, monitored_systems))]
    pub async fn capture_floor(
        &self,
        token: &str,
        monitored_systems: u32,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<ContinuityReport, FlowError> {
        let (license, installation_id) = self.presented(token, None).await?;
        record_installation(&license.license_id, &installation_id);
        let command = LicenseCommand::CaptureFloor { monitored_systems };
        let idempotency = idempotency_key.map(|key| {
            Idempotency::scoped(
                "continuity",
                key,
                &serde_json::json!({
                    "installation_id": installation_id,
                    "monitored_systems": monitored_systems,
                }),
            )
        });
        let outcome = crate::engine::command::handle::<License>(
            self.store,
            crate::engine::command::Command {
                stream_id: license.license_id.as_str(),
                command: &command,
                context: Context::new(metadata.effective_at, self.catalog),
                metadata,
                idempotency,
            },
        )
        .await?;
        let (state, _) = load_until::<License>(
            self.store,
            &stream(License::STREAM_TYPE, license.license_id.as_str())?,
            outcome.stream_version,
        )
        .await?;
        Ok(state
            .issued
            .ok_or(DomainError::NotFound { entity: "license" })?
            .continuity(self.catalog))
    }
}

fn activated_installation(events: &[LicenseEvent]) -> Option<InstallationId> {
    events.iter().find_map(|e| match e {
        LicenseEvent::InstallationActivated {
            installation_id, ..
        } => Some(installation_id.clone()),
        _ => None,
    })
}

/// The activation key of a license bought or exchanged, derived from where it came from under the
/// server secret: never stored, so the checkout's status, a retried exchange and the owner's
/// `retrieve` job all answer the same key. (An operator's issuance draws a random key instead.)
pub fn derived_activation_key(hasher: &SecretHasher, origin: &LicenseOrigin) -> Secret {
    let context = match origin {
        LicenseOrigin::Checkout { session_id } => format!("checkout:{session_id}"),
        LicenseOrigin::LegacyExchange { legacy_license_id } => {
            format!("exchange:{legacy_license_id}")
        }
    };
    hasher.derive(ACTIVATION_KEY_PREFIX, &context)
}

/// The license an activation key opens ([`FlowError::UnknownActivationKey`] for none).
pub async fn license_of_key(
    store: &dyn Store,
    hasher: &SecretHasher,
    activation_key: &str,
) -> Result<LicenseId, FlowError> {
    if !SecretHasher::well_formed(ACTIVATION_KEY_PREFIX, activation_key) {
        return Err(FlowError::UnknownActivationKey);
    }
    let key_hash = hasher.hash(activation_key);
    let (binding, _) = load::<ActivationKeyIndex>(
        store,
        &stream(ActivationKeyIndex::STREAM_TYPE, key_hash.as_str())?,
    )
    .await?;
    binding.license_id.ok_or(FlowError::UnknownActivationKey)
}

/// A license and its activation key's binding, decided together: the one place a license comes to
/// be, whether bought, exchanged from v5 or issued by an operator.
pub struct Issuance {
    license_stream: StreamName,
    license_events: Vec<LicenseEvent>,
    key_stream: StreamName,
    key_events: Vec<<ActivationKeyIndex as Decider>::Event>,
}

/// Decides the issuance of `license` as `license_id`, opened by `activation_key` (only its keyed
/// hash and shown prefix are recorded), starting in `state`.
pub fn decide_issuance(
    hasher: &SecretHasher,
    license_id: &LicenseId,
    activation_key: &Secret,
    license: NewLicense,
    state: SubscriptionState,
    context: &Context<'_>,
) -> Result<Issuance, FlowError> {
    let key_hash = hasher.hash(activation_key.expose());
    let issue = LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: license_id.clone(),
        owner_email: license.owner_email,
        plan_version: license.plan_version,
        billing_cycle: license.billing_cycle,
        state,
        current_period_end: license.current_period_end,
        origin: license.origin,
        stripe_price_id: license.stripe_price_id,
        activation_key_prefix: activation_key.shown_prefix(),
        activation_key_hash: key_hash.clone(),
    }));
    let (license_events, _) = decide_all::<License>(Default::default(), &[issue], context)?;
    let bind = BindActivationKey {
        license_id: license_id.clone(),
    };
    let (key_events, _) = decide_all::<ActivationKeyIndex>(Default::default(), &[bind], context)?;
    Ok(Issuance {
        license_stream: stream(License::STREAM_TYPE, license_id.as_str())?,
        license_events,
        key_stream: stream(ActivationKeyIndex::STREAM_TYPE, key_hash.as_str())?,
        key_events,
    })
}

impl Issuance {
    /// Adds the new license and its key binding to `decision` (both streams must be new).
    pub fn into_decision<T>(&self, decision: Decision<T>) -> Result<Decision<T>, CodecError> {
        decision
            .create::<License>(self.license_stream.clone(), &self.license_events)?
            .create::<ActivationKeyIndex>(self.key_stream.clone(), &self.key_events)
    }
}

/// An operator's issuance: nothing to load, two streams to start.
struct Issue {
    issuance: Issuance,
}

#[async_trait]
impl Attempt for Issue {
    type Answer = ();
    type Error = FlowError;

    async fn attempt(&self, _: &mut Reads<'_>) -> Result<Decision<()>, FlowError> {
        Ok(self.issuance.into_decision(Decision::answer(()))?)
    }
}

/// An activation: the license and the token's index entry, decided together with the
/// installation's first grant.
struct Activate<'a> {
    license_id: LicenseId,
    license_stream: StreamName,
    token_stream: StreamName,
    request: &'a ActivateRequest,
    token_hash: SecretHash,
    installation_id: InstallationId,
    jti: String,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for Activate<'_> {
    type Answer = ();
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<()>, FlowError> {
        let license = reads.load::<License>(&self.license_stream).await?;
        let binding = reads
            .load::<InstallationTokenIndex>(&self.token_stream)
            .await?;
        let activate = LicenseCommand::ActivateInstallation(Box::new(ActivateInstallation {
            installation_id: self.installation_id.clone(),
            fingerprint: self.request.instance_fingerprint.clone(),
            instance_name: self.request.instance_name.clone(),
            token_hash: self.token_hash.clone(),
            client_version: self.request.client_version.clone(),
        }));
        let (mut events, activated) = decide_all::<License>(license, &[activate], &self.context)?;
        // Re-activating a known fingerprint keeps its installation id.
        let installation_id = activated_installation(&events)
            .ok_or(FlowError::Broken("an activation decided no installation"))?;
        let grant = LicenseCommand::IssueGrant {
            installation_id: installation_id.clone(),
            token_hash: self.token_hash.clone(),
            jti: self.jti.clone(),
        };
        let (grant_events, _) = decide_all::<License>(activated, &[grant], &self.context)?;
        events.extend(grant_events);
        let bind = BindInstallationToken {
            license_id: self.license_id.clone(),
            installation_id,
        };
        let (token_events, _) =
            decide_all::<InstallationTokenIndex>(binding, &[bind], &self.context)?;
        Ok(Decision::answer(())
            .append::<License>(self.license_stream.clone(), &events)?
            .append::<InstallationTokenIndex>(self.token_stream.clone(), &token_events)?)
    }
}
