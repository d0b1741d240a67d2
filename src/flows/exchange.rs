//! The legacy v5 exchange (`DOMAIN.md` §5.4): a v5 license token, verified against the v5 public
//! key, becomes a v6 license (`legacy_migration = true`, on its grandfathered plan) and the calling
//! installation is activated on it.
//!
//! The exchange's outcome, the license and its activation key are one atomic append; a failure is
//! recorded before it is answered. The activation key of an exchanged license is derived from the
//! legacy id under the server's secret, so a repeated exchange activates the same license. What v5
//! knows about revocation, renewal and migratability travels in the token's claims. Tokens that are
//! malformed or fail verification are refused without a record: they name no legacy license, and
//! recording unauthenticated input would let anyone grow the log.

use crate::crypto::secrets::ACTIVATION_KEY_PREFIX;
use crate::engine::command::{decide_all, load, CommandError};
use crate::engine::store::{AppendBatch, StoreError, StreamAppend};
use crate::flows::licensing::{ActivateRequest, Activation, Licensing};
use crate::flows::{stream, FlowError, FLOW_ATTEMPTS_MAX};
use aggregates::catalog::BillingCycle;
use aggregates::decider::{encode, Context, Decider};
use aggregates::error::DomainError;
use aggregates::exchange::{
    ExchangeEvent, ExchangeLegacyLicense, LegacyExchange, LegacyLicense, LegacyTokenCheck,
};
use aggregates::ids::{Email, LicenseId};
use aggregates::index::{ActivationKeyIndex, BindActivationKey};
use aggregates::license::{IssueLicense, License, LicenseCommand, LicenseOrigin};
use aggregates::log::{EventMetadata, StreamVersion};
use aggregates::subscription::SubscriptionState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde::Deserialize;

/// Clock skew tolerated on a legacy token's `exp`.
pub const LEGACY_TOKEN_LEEWAY_SECONDS: u64 = 60;

/// `POST /v1/licenses/exchange`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The v5 license token (`legacy_license_key` is accepted as a decode alias).
    #[serde(alias = "legacy_license_key")]
    pub legacy_license_token: String,
    /// The instance's name.
    pub instance_name: String,
    /// The instance's stable fingerprint.
    pub instance_fingerprint: String,
    /// The instance's version.
    pub client_version: String,
}

/// The claims of a v5 license token.
#[derive(Debug, Deserialize)]
struct V5Claims {
    /// The v5 license id.
    sub: String,
    email: String,
    #[serde(default)]
    billing_cycle: Option<String>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    superseded: bool,
    #[serde(default = "migratable_by_default")]
    migratable: bool,
}

fn migratable_by_default() -> bool {
    true
}

/// The v5 public key that verifies legacy tokens.
pub struct LegacyVerifier {
    key: DecodingKey,
}

impl LegacyVerifier {
    /// A verifier for a base64url Ed25519 public key.
    pub fn new(public_key: &str) -> Result<LegacyVerifier, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(public_key.trim())
            .map_err(|e| e.to_string())?;
        if bytes.len() != 32 {
            return Err(String::from("an Ed25519 public key is 32 bytes"));
        }
        Ok(LegacyVerifier {
            key: DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(bytes))
                .map_err(|e| e.to_string())?,
        })
    }

    /// What a legacy token is: malformed, invalid (signature, lifetime), or verified claims.
    pub fn check(&self, token: &str) -> LegacyTokenCheck {
        let parts: Vec<&str> = token.trim().split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return LegacyTokenCheck::Malformed;
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        // One minute of clock skew between v5's issuer and this ledger, stated rather than inherited.
        validation.leeway = LEGACY_TOKEN_LEEWAY_SECONDS;
        let claims = match jsonwebtoken::decode::<V5Claims>(token.trim(), &self.key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                return match error.kind() {
                    jsonwebtoken::errors::ErrorKind::Json(_)
                    | jsonwebtoken::errors::ErrorKind::Base64(_)
                    | jsonwebtoken::errors::ErrorKind::Utf8(_) => LegacyTokenCheck::Malformed,
                    _ => LegacyTokenCheck::Invalid,
                }
            }
        };
        let (Ok(email), false) = (Email::parse(&claims.email), claims.sub.trim().is_empty()) else {
            return LegacyTokenCheck::Malformed;
        };
        let billing_cycle = match claims.billing_cycle.as_deref() {
            Some("annual") | Some("yearly") => BillingCycle::Annual,
            _ => BillingCycle::Monthly,
        };
        LegacyTokenCheck::Verified(LegacyLicense {
            legacy_license_id: claims.sub,
            email,
            billing_cycle,
            revoked: claims.revoked,
            renewed_key_available: claims.superseded,
            migratable: claims.migratable,
        })
    }
}

/// Runs the exchange and, on success, activates the installation on the v6 license.
/// With an idempotency key, a retry activates exactly as the first attempt did (same installation
/// token): the key reaches the activation.
pub async fn exchange(
    licensing: &Licensing<'_>,
    verifier: &LegacyVerifier,
    request: &ExchangeRequest,
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<Activation, FlowError> {
    let check = verifier.check(&request.legacy_license_token);
    let legacy_id = match &check {
        LegacyTokenCheck::Verified(legacy) => legacy.legacy_license_id.clone(),
        LegacyTokenCheck::Malformed | LegacyTokenCheck::Invalid => {
            return Err(refusal_of(&check).into())
        }
    };
    let exchange_stream = stream(LegacyExchange::STREAM_TYPE, &legacy_id)?;
    let context = Context::new(metadata.effective_at, licensing.catalog);
    let key = licensing
        .keys
        .hasher
        .derive(ACTIVATION_KEY_PREFIX, &format!("exchange:{legacy_id}"));
    let activation = ActivateRequest {
        activation_key: key.expose().to_owned(),
        instance_name: request.instance_name.clone(),
        instance_fingerprint: request.instance_fingerprint.clone(),
        client_version: request.client_version.clone(),
    };
    let activation_key = idempotency_key.map(|key| format!("exchange:{key}"));
    // A retry of an exchange that activated answers that activation and records no second
    // exchange (which would also count against the exchange limit).
    if let Some(key) = &activation_key {
        let idempotency = licensing.activation_idempotency(&activation, key);
        if licensing
            .store
            .idempotent_outcome(&idempotency)
            .await?
            .is_some()
        {
            return licensing.activate(&activation, Some(key), metadata).await;
        }
    }
    for attempt in 1..=FLOW_ATTEMPTS_MAX {
        crate::engine::command::pause_before_retry(attempt).await;
        let (state, version) = load::<LegacyExchange>(licensing.store, &exchange_stream).await?;
        let command = ExchangeLegacyLicense {
            check: check.clone(),
            new_license_id: LicenseId::from_entropy(rand::rngs::OsRng.next_u64()),
        };
        let (events, _) = decide_all::<LegacyExchange>(state, &[command], &context)?;
        let mut appends = vec![StreamAppend {
            stream: exchange_stream.clone(),
            expected_version: version,
            events: events.iter().map(encode).collect::<Result<_, _>>()?,
        }];
        let success = events.iter().find_map(|e| match e {
            ExchangeEvent::LegacyExchangeSucceeded {
                license_id,
                plan_version,
                email,
                first,
                ..
            } => Some((
                license_id.clone(),
                plan_version.clone(),
                email.clone(),
                *first,
            )),
            ExchangeEvent::LegacyExchangeFailed { .. } => None,
        });
        if let Some((license_id, plan_version, email, true)) = &success {
            appends.extend(issue_parts(
                licensing,
                &context,
                license_id,
                plan_version,
                email,
                &legacy_id,
                &key,
            )?);
        }
        match licensing
            .store
            .append_batch(AppendBatch {
                appends,
                metadata: metadata.clone(),
                idempotency: None,
            })
            .await
        {
            Err(StoreError::WrongExpectedVersion { .. }) => continue,
            Err(error) => return Err(error.into()),
            Ok(_) => {}
        }
        if let Some(failure) = events.iter().find_map(ExchangeEvent::failure) {
            return Err(failure.into());
        }
        return licensing
            .activate(&activation, activation_key.as_deref(), metadata)
            .await;
    }
    Err(FlowError::Contended)
}

fn refusal_of(check: &LegacyTokenCheck) -> DomainError {
    match check {
        LegacyTokenCheck::Malformed => DomainError::ExchangeMalformed,
        _ => DomainError::ExchangeInvalid,
    }
}

/// The license and its activation-key binding, for a first exchange.
fn issue_parts(
    licensing: &Licensing<'_>,
    context: &Context<'_>,
    license_id: &LicenseId,
    plan_version: &str,
    email: &Email,
    legacy_id: &str,
    key: &crate::crypto::secrets::Secret,
) -> Result<Vec<StreamAppend>, FlowError> {
    let key_hash = licensing.keys.hasher.hash(key.expose());
    let issue = LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: license_id.clone(),
        owner_email: email.clone(),
        plan_version: plan_version.to_owned(),
        billing_cycle: None,
        state: SubscriptionState::Active,
        current_period_end: None,
        origin: LicenseOrigin::LegacyExchange {
            legacy_license_id: legacy_id.to_owned(),
        },
        stripe_price_id: None,
        activation_key_prefix: key.shown_prefix(),
        activation_key_hash: key_hash.clone(),
    }));
    let (license_events, _) = decide_all::<License>(Default::default(), &[issue], context)
        .map_err(CommandError::<DomainError>::Domain)?;
    let (key_events, _) = decide_all::<ActivationKeyIndex>(
        Default::default(),
        &[BindActivationKey {
            license_id: license_id.clone(),
        }],
        context,
    )?;
    Ok(vec![
        StreamAppend {
            stream: stream(License::STREAM_TYPE, license_id.as_str())?,
            expected_version: StreamVersion::EMPTY,
            events: license_events
                .iter()
                .map(encode)
                .collect::<Result<_, _>>()?,
        },
        StreamAppend {
            stream: stream(ActivationKeyIndex::STREAM_TYPE, key_hash.as_str())?,
            expected_version: StreamVersion::EMPTY,
            events: key_events.iter().map(encode).collect::<Result<_, _>>()?,
        },
    ])
}
