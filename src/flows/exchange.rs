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

use crate::crypto::secrets::Secret;
use crate::engine::command::decide_all;
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::flows::licensing::{
    decide_issuance, derived_activation_key, ActivateRequest, Activation, Licensing, NewLicense,
};
use crate::flows::{stream, FlowError};
use aggregates::catalog::BillingCycle;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::exchange::{
    ExchangeEvent, ExchangeLegacyLicense, LegacyExchange, LegacyLicense, LegacyTokenCheck,
};
use aggregates::ids::{Email, LicenseId};
use aggregates::license::LicenseOrigin;
use aggregates::log::{EventMetadata, StreamName};
use aggregates::subscription::SubscriptionState;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde::Deserialize;

/// Clock skew tolerated on a legacy token's `exp`.
pub const LEGACY_TOKEN_LEEWAY_SECONDS: u64 = 60;

/// `POST /v1/licenses/exchange`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
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
#[tracing::instrument(skip_all, fields(legacy_license = tracing::field::Empty))]
pub async fn exchange(
    licensing: &Licensing<'_>,
    verifier: &LegacyVerifier,
    request: &ExchangeRequest,
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<Activation, FlowError> {
    let check = verifier.check(&request.legacy_license_token);
    let legacy_id = match &check {
        LegacyTokenCheck::Verified(legacy) => {
            tracing::Span::current().record("legacy_license", legacy.legacy_license_id.as_str());
            legacy.legacy_license_id.clone()
        }
        LegacyTokenCheck::Malformed | LegacyTokenCheck::Invalid => {
            return Err(refusal_of(&check).into())
        }
    };
    let exchange_stream = stream(LegacyExchange::STREAM_TYPE, &legacy_id)?;
    let context = Context::new(metadata.effective_at, licensing.catalog);
    let key = derived_activation_key(
        &licensing.keys.hasher,
        &LicenseOrigin::LegacyExchange {
            legacy_license_id: legacy_id.clone(),
        },
    );
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
    let attempt = Exchange {
        exchange_stream,
        check,
        new_license_id: LicenseId::from_entropy(rand::rngs::OsRng.next_u64()),
        legacy_id,
        key,
        licensing,
        context,
    };
    let refusal = match run(licensing.store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => answer,
        Decided::Replayed(_) => None,
    };
    if let Some(refusal) = refusal {
        return Err(refusal.into());
    }
    licensing
        .activate(&activation, activation_key.as_deref(), metadata)
        .await
}

/// One exchange of a verified (or refused) v5 token: its record and, the first time it succeeds,
/// the license it becomes; answers the refusal to give, if any (a failure is recorded first).
struct Exchange<'a> {
    exchange_stream: StreamName,
    check: LegacyTokenCheck,
    new_license_id: LicenseId,
    legacy_id: String,
    key: Secret,
    licensing: &'a Licensing<'a>,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for Exchange<'_> {
    type Answer = Option<DomainError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let state = reads.load::<LegacyExchange>(&self.exchange_stream).await?;
        let command = ExchangeLegacyLicense {
            check: self.check.clone(),
            new_license_id: self.new_license_id.clone(),
        };
        let (events, _) = decide_all::<LegacyExchange>(state, &[command], &self.context)?;
        let refusal = events.iter().find_map(ExchangeEvent::failure);
        let mut decision = Decision::answer(refusal)
            .append::<LegacyExchange>(self.exchange_stream.clone(), &events)?;
        let first_success = events.iter().find_map(|e| match e {
            ExchangeEvent::LegacyExchangeSucceeded {
                license_id,
                plan_version,
                email,
                first: true,
                ..
            } => Some((license_id, plan_version, email)),
            _ => None,
        });
        if let Some((license_id, plan_version, email)) = first_success {
            let license = NewLicense {
                owner_email: email.clone(),
                plan_version: plan_version.clone(),
                billing_cycle: None,
                current_period_end: None,
                origin: LicenseOrigin::LegacyExchange {
                    legacy_license_id: self.legacy_id.clone(),
                },
                stripe_price_id: None,
            };
            let issuance = decide_issuance(
                &self.licensing.keys.hasher,
                license_id,
                &self.key,
                license,
                SubscriptionState::Active,
                &self.context,
            )?;
            decision = issuance.into_decision(decision)?;
        }
        Ok(decision)
    }
}

fn refusal_of(check: &LegacyTokenCheck) -> DomainError {
    match check {
        LegacyTokenCheck::Malformed => DomainError::ExchangeMalformed,
        _ => DomainError::ExchangeInvalid,
    }
}
