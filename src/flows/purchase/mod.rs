//! The purchase flow (`DOMAIN.md` §6): purchase handoffs ([`handoff`]), Stripe Checkout Sessions
//! started from them and the lookup an installation makes on its return ([`checkout_session`]),
//! the redemption record ([`redemption`]), and local checkout mode ([`local`]). What Stripe's
//! events do — a completed checkout included — is [`crate::flows::billing`].
//!
//! A completed self-hosted checkout issues the license, binds its activation key, completes the
//! handoff and records the Stripe event, in one atomic append: the webhook either took full effect
//! or none, and Stripe's retry (we answer 500 on failure) finds either nothing or the receipt. The
//! activation key of a purchase is derived from its Checkout Session under the server's secret, so
//! the session lookup can show it again without it ever being stored.

mod checkout_session;
mod handoff;
mod local;
mod redemption;

use crate::crypto::secrets::Secret;
use crate::crypto::KeyMaterial;
use crate::engine::command::load;
use crate::engine::store::{Store, IDEMPOTENCY_SCOPED_DIGEST_LEN};
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::StripeGateway;
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::handoff::{Handoff, PurchaseHandoff};
use aggregates::ids::{Email, HandoffId, LicenseId};
use aggregates::license::LicenseOrigin;
use aggregates::log::StreamVersion;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/checkout/portal-handoff`.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHandoffRequest {
    /// The feature asked for.
    pub feature: String,
    /// The return URL after payment.
    pub success_url: String,
    /// The return URL on cancel.
    pub cancel_url: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
}

/// `POST /v1/checkout/session`: what the browser sends, and nothing else.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCheckoutRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// `monthly` or `annual`.
    #[schema(value_type = String, example = "monthly")]
    pub billing_cycle: BillingCycle,
    /// Whether to include a trial.
    #[serde(default)]
    pub trial: bool,
}

/// What `POST /v1/checkout/session` answers.
#[derive(Clone, Debug, Serialize)]
pub struct StartedCheckoutView {
    /// Where to send the browser.
    pub url: String,
    /// The plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
}

/// What `GET /v1/checkout/session` answers to the returning installation (§6.5).
#[derive(Clone, Debug, Serialize)]
pub struct SessionResult {
    /// `fulfilled`, `pending` or `failed`.
    pub status: &'static str,
    /// The handoff.
    pub portal_handoff_id: HandoffId,
    /// The runtime's purchase-return token id (the runtime checks it).
    pub purchase_return_jti: String,
    /// The license, once fulfilled.
    pub license_id: Option<LicenseId>,
    /// Its activation key, once fulfilled.
    pub activation_key: Option<String>,
    /// The key's first characters.
    pub activation_key_prefix: Option<String>,
    /// The buyer.
    pub owner_email: Option<Email>,
    /// The plan's tier.
    pub tier: String,
    /// The plan.
    pub plan_key: String,
}

/// What became of a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// It took effect now.
    Applied,
    /// It was recorded and changes nothing (the reason is in the log).
    Ignored,
    /// It had already taken effect.
    AlreadyProcessed,
}

/// `POST /v1/checkout/redemptions/begin`: the installation starts redeeming its purchase.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginRedemptionRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
    /// The Checkout Session being redeemed.
    pub session_id: String,
}

/// `POST /v1/checkout/redemptions/activated` and `…/failed`: how the attempt ended.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRedemptionRequest {
    /// The handoff.
    pub portal_handoff_id: String,
    /// The runtime's purchase-return token id.
    pub purchase_return_jti: String,
    /// The license activated (on success).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub license_id: Option<LicenseId>,
    /// A reason code (on failure).
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// A message for a human (on failure).
    #[serde(default)]
    pub failure_message: Option<String>,
}

/// The purchase flows over one store, one Stripe gateway and one set of keys.
pub struct Checkout<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Stripe.
    pub stripe: &'a StripeGateway,
    /// Keys for deriving activation keys.
    pub keys: &'a KeyMaterial,
    /// The catalog in force.
    pub catalog: &'a Catalog,
}

/// Longest handoff id accepted from outside.
pub const HANDOFF_ID_LEN_MAX: usize = 64;
// The Stripe idempotency key of a keyed checkout start, `checkout:<handoff>:key:<digest>`, fits
// Stripe's limit whatever the client's key.
const _: () = assert!(
    "checkout:".len() + HANDOFF_ID_LEN_MAX + ":key:".len() + IDEMPOTENCY_SCOPED_DIGEST_LEN
        <= crate::gateways::stripe::STRIPE_IDEMPOTENCY_KEY_LEN_MAX
);

/// The handoff id a browser or runtime sent: `[A-Za-z0-9_-]+` and our prefix, else not found.
pub fn parse_handoff_id(raw: &str) -> Result<HandoffId, DomainError> {
    let charset_ok = !raw.is_empty()
        && raw.len() <= HANDOFF_ID_LEN_MAX
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !charset_ok {
        return Err(DomainError::invalid(
            "portal_handoff_id",
            "must match [A-Za-z0-9_-]+",
        ));
    }
    HandoffId::parse(raw).map_err(|_| DomainError::NotFound { entity: "handoff" })
}

/// Appends `{CHECKOUT_SESSION_ID}` for Stripe to fill, keeping any query the URL already has.
fn with_session_placeholder(success_url: &str) -> String {
    let separator = if success_url.contains('?') { '&' } else { '?' };
    format!("{success_url}{separator}session_id={{CHECKOUT_SESSION_ID}}")
}

impl Checkout<'_> {
    fn context(&self, now: DateTime<Utc>) -> Context<'_> {
        Context::new(now, self.catalog)
    }

    /// The activation key of the license a Checkout Session bought.
    pub fn activation_key_of(&self, session_id: &str) -> Secret {
        crate::flows::licensing::derived_activation_key(
            &self.keys.hasher,
            &LicenseOrigin::Checkout {
                session_id: session_id.to_owned(),
            },
        )
    }

    async fn handoff(&self, handoff_id: &HandoffId) -> Result<(Handoff, StreamVersion), FlowError> {
        let (state, version) = load::<PurchaseHandoff>(
            self.store,
            &stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
        )
        .await?;
        Ok((
            state
                .handoff
                .ok_or(DomainError::NotFound { entity: "handoff" })?,
            version,
        ))
    }
}
