//! Hosted signup (`../shared/design/PORTAL.md` §3): `POST /api/public/signup` prices a self-serve
//! hosted plan (`aggregates::signup::price_signup`), creates its Stripe Checkout Session (a local
//! one in local checkout mode) and records the signup under the session's id. The completed
//! checkout (`crate::flows::billing`) opens the account with the signup's organisation name and
//! makes its email the Owner, and emails them a sign-in link, all in the webhook's one append.
//!
//! Without an `Idempotency-Key` every request starts its own Checkout Session; with one, a retry
//! reaches the same Stripe session (Stripe's own idempotency) and answers its URL again.

use crate::engine::command::{handle, Command};
use crate::engine::store::{scoped_digest, Store};
use crate::flows::FlowError;
use crate::gateways::stripe::{NewCheckoutSession, StripeGateway};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::Context;
use aggregates::error::DomainError;
use aggregates::ids::{bounded_text, Email};
use aggregates::log::EventMetadata;
use aggregates::signup::{price_signup, Signup, SignupCommand, ORG_NAME_LEN_MAX};
use std::collections::BTreeMap;

/// What a signup asks for.
#[derive(Clone, Debug)]
pub struct SignupRequest {
    /// The first Owner's email.
    pub email: String,
    /// The organisation's name.
    pub org_name: String,
    /// A `cloud_*` plan or `msp_starter`.
    pub plan_key: String,
    /// Monthly unless asked otherwise.
    pub billing_cycle: BillingCycle,
}

/// Starts a signup; answers the Checkout Session's URL.
#[tracing::instrument(skip_all)]
pub async fn start_signup(
    store: &dyn Store,
    stripe: &StripeGateway,
    catalog: &Catalog,
    (public_url, request): (&str, &SignupRequest),
    idempotency_key: Option<&str>,
    metadata: EventMetadata,
) -> Result<String, FlowError> {
    let email = Email::parse(&request.email)?;
    let org_name = bounded_text("org_name", &request.org_name, ORG_NAME_LEN_MAX)?;
    let context = Context::new(metadata.effective_at, catalog);
    let priced = price_signup(&request.plan_key, request.billing_cycle, &context)?;
    let base = public_url.trim_end_matches('/');
    let key = match idempotency_key {
        Some(key) => format!("signup:key:{}", scoped_digest(key)),
        None => format!("signup:{}", uuid::Uuid::new_v4().simple()),
    };
    let session = stripe
        .create_checkout_session(&NewCheckoutSession {
            price_id: priced.price_id.clone(),
            success_url: format!("{base}/portal/signup/done"),
            cancel_url: format!("{base}/portal/signup"),
            client_reference_id: String::from("signup"),
            metadata: BTreeMap::from([(String::from("plan_version"), priced.plan_key.clone())]),
            trial_period_days: None,
            idempotency_key: key,
        })
        .await?;
    let start = SignupCommand::Start {
        email,
        org_name,
        priced,
    };
    let recorded = handle::<Signup>(
        store,
        Command {
            stream_id: &session.id,
            command: &start,
            context,
            metadata,
            idempotency: None,
        },
    )
    .await;
    match recorded {
        Ok(_) => Ok(session.url),
        // A retry under the same key reached the same session, recorded by the first request.
        Err(crate::engine::command::CommandError::Domain(DomainError::AlreadyExists {
            ..
        })) if idempotency_key.is_some() => Ok(session.url),
        Err(error) => Err(error.into()),
    }
}
