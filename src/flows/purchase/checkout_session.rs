//! Stripe Checkout Sessions started from a handoff (`DOMAIN.md` §6.3), and the lookup an
//! installation makes on its return (§6.5).

use super::{
    parse_handoff_id, with_session_placeholder, Checkout, SessionResult, StartCheckoutRequest,
    StartedCheckoutView,
};
use crate::engine::command::{decide_all, load, recorded_events};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::store::{scoped_digest, BatchOutcome, Idempotency};
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::NewCheckoutSession;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::handoff::{
    price_checkout, HandoffCommand, HandoffStatus, PurchaseHandoff, StartedCheckout,
};
use aggregates::ids::HandoffId;
use aggregates::index::{BindCheckoutSession, CheckoutSessionIndex};
use aggregates::license::License;
use aggregates::log::{EventMetadata, StreamName};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

impl Checkout<'_> {
    /// Starts a Stripe Checkout from a handoff; the intent's URLs and jti stay server-side.
    #[tracing::instrument(skip_all, fields(handoff_id = %request.portal_handoff_id, plan = %request.plan_key))]
    pub async fn start_checkout(
        &self,
        request: &StartCheckoutRequest,
        idempotency_key: Option<&str>,
        metadata: EventMetadata,
    ) -> Result<StartedCheckoutView, FlowError> {
        let handoff_id = parse_handoff_id(&request.portal_handoff_id)?;
        let idempotency =
            idempotency_key.map(|key| Idempotency::scoped("checkout-session", key, request));
        let attempt = StartSession {
            checkout: self,
            handoff_id: &handoff_id,
            handoff_stream: stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?,
            request,
            idempotency_key,
            context: self.context(metadata.effective_at),
        };
        match run(self.store, &metadata, idempotency.as_ref(), &attempt).await? {
            Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer),
            Decided::Replayed(outcome) => self.replayed_checkout(&outcome).await,
        }
    }

    /// The answer a recorded checkout start gave: the session it started, with its URL.
    async fn replayed_checkout(
        &self,
        outcome: &BatchOutcome,
    ) -> Result<StartedCheckoutView, FlowError> {
        let appended = outcome
            .outcomes
            .iter()
            .find(|o| o.stream.stream_type() == PurchaseHandoff::STREAM_TYPE)
            .ok_or(FlowError::Broken(
                "a recorded checkout start holds no started checkout",
            ))?;
        let events = recorded_events::<PurchaseHandoff>(self.store, appended).await?;
        let started = events
            .into_iter()
            .find_map(|event| match event {
                aggregates::handoff::HandoffEvent::CheckoutStarted(started) => Some(started),
                _ => None,
            })
            .ok_or(FlowError::Broken(
                "a recorded checkout start holds no started checkout",
            ))?;
        Ok(StartedCheckoutView {
            url: started.url.unwrap_or_default(),
            plan_key: started.plan_key,
            tier: started.tier,
            billing_cycle: started.billing_cycle,
        })
    }

    /// The installation's lookup on return (§6.5).
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn session_result(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<SessionResult, FlowError> {
        let index = stream(CheckoutSessionIndex::STREAM_TYPE, session_id)?;
        let (binding, _) = load::<CheckoutSessionIndex>(self.store, &index).await?;
        let handoff_id = binding.handoff_id.ok_or(DomainError::NotFound {
            entity: "checkout session",
        })?;
        let (handoff, _) = self.handoff(&handoff_id).await?;
        let checkout = handoff
            .checkout(session_id)
            .cloned()
            .ok_or(DomainError::UnknownCheckoutSession)?;
        let mut result = SessionResult {
            status: "pending",
            portal_handoff_id: handoff.handoff_id.clone(),
            purchase_return_jti: handoff.intent.purchase_return_jti.clone(),
            license_id: None,
            activation_key: None,
            activation_key_prefix: None,
            owner_email: None,
            tier: checkout.tier.clone(),
            plan_key: checkout.plan_key.clone(),
        };
        match &handoff.completed {
            Some((completed_session, Some(license_id))) if completed_session == session_id => {
                let (license, _) = load::<License>(
                    self.store,
                    &stream(License::STREAM_TYPE, license_id.as_str())?,
                )
                .await?;
                let key = self.activation_key_of(session_id);
                result.status = "fulfilled";
                result.license_id = Some(license_id.clone());
                result.activation_key_prefix = Some(key.shown_prefix());
                result.activation_key = Some(key.expose().to_owned());
                result.owner_email = license.issued.map(|l| l.owner_email);
            }
            // A hosted purchase completes without a license: the account is what it bought.
            Some((completed_session, None)) if completed_session == session_id => {
                result.status = "fulfilled"
            }
            Some(_) => result.status = "failed",
            None if handoff.status(now) == HandoffStatus::Expired => result.status = "failed",
            None => {}
        }
        Ok(result)
    }
}

/// A checkout start: the handoff, priced and checked, then a Checkout Session created at Stripe
/// (idempotently: a retried attempt reaches Stripe with the same key and gets the same session),
/// then the session recorded on the handoff and in the session index.
struct StartSession<'a> {
    checkout: &'a Checkout<'a>,
    handoff_id: &'a HandoffId,
    handoff_stream: StreamName,
    request: &'a StartCheckoutRequest,
    idempotency_key: Option<&'a str>,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for StartSession<'_> {
    type Answer = StartedCheckoutView;
    type Error = FlowError;

    async fn attempt(
        &self,
        reads: &mut Reads<'_>,
    ) -> Result<Decision<StartedCheckoutView>, FlowError> {
        let (state, version) = reads
            .load_versioned::<PurchaseHandoff>(&self.handoff_stream)
            .await?;
        let handoff = state
            .handoff
            .clone()
            .ok_or(DomainError::NotFound { entity: "handoff" })?;
        let priced = price_checkout(
            &handoff,
            &self.request.plan_key,
            &self.request.tier,
            self.request.billing_cycle,
            self.request.trial,
            &self.context,
        )?;
        let handoff_id = self.handoff_id;
        let mut metadata = BTreeMap::new();
        metadata.insert(String::from("portal_handoff_id"), handoff_id.to_string());
        metadata.insert(String::from("plan_version"), priced.plan_key.clone());
        let session = self
            .checkout
            .stripe
            .create_checkout_session(&NewCheckoutSession {
                price_id: priced.price_id.clone(),
                success_url: with_session_placeholder(&handoff.intent.success_url),
                cancel_url: handoff.intent.cancel_url.clone(),
                client_reference_id: handoff_id.to_string(),
                metadata,
                trial_period_days: priced.trial.then_some(aggregates::trial::TRIAL_DAYS as u32),
                idempotency_key: match self.idempotency_key {
                    Some(key) => format!("checkout:{handoff_id}:key:{}", scoped_digest(key)),
                    None => format!("checkout:{handoff_id}:{}", version.0),
                },
            })
            .await?;
        let started = StartedCheckout {
            session_id: session.id.clone(),
            plan_key: priced.plan_key.clone(),
            tier: priced.tier.clone(),
            billing_cycle: priced.billing_cycle,
            price_id: priced.price_id,
            trial: priced.trial,
            url: Some(session.url.clone()),
        };
        let (handoff_events, _) = decide_all::<PurchaseHandoff>(
            state,
            &[HandoffCommand::StartCheckout(started)],
            &self.context,
        )?;
        let bind = BindCheckoutSession {
            handoff_id: handoff_id.clone(),
        };
        let (index_events, _) =
            decide_all::<CheckoutSessionIndex>(Default::default(), &[bind], &self.context)?;
        let view = StartedCheckoutView {
            url: session.url,
            plan_key: priced.plan_key,
            tier: priced.tier,
            billing_cycle: priced.billing_cycle,
        };
        Ok(Decision::answer(view)
            .append::<PurchaseHandoff>(self.handoff_stream.clone(), &handoff_events)?
            .create::<CheckoutSessionIndex>(
                stream(CheckoutSessionIndex::STREAM_TYPE, &session.id)?,
                &index_events,
            )?)
    }
}
