//! Local checkout mode: with no Stripe key, a Checkout Session is a page of this service that
//! completes the purchase (a handoff's, or a hosted signup's) by posting itself a correctly signed
//! webhook.

use super::{with_session_placeholder, Checkout};
use crate::engine::command::load;
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::StripeGatewayError;
use aggregates::decider::Decider;
use aggregates::error::DomainError;
use aggregates::ids::Email;
use aggregates::index::CheckoutSessionIndex;
use aggregates::log::EventMetadata;
use aggregates::signup::Signup;

impl Checkout<'_> {
    /// Local mode: what a local session buys and where it returns — a handoff's checkout, or a
    /// hosted signup's. Not found outside local mode.
    pub async fn local_session(&self, session_id: &str) -> Result<LocalSession, FlowError> {
        let not_found = || {
            FlowError::Domain(DomainError::NotFound {
                entity: "checkout session",
            })
        };
        if !self.stripe.local_mode() || !session_id.starts_with("cs_local_") {
            return Err(not_found());
        }
        let signup = stream(Signup::STREAM_TYPE, session_id)?;
        if let Some(started) = load::<Signup>(self.store, &signup).await?.0.started {
            return Ok(LocalSession {
                plan_key: started.priced.plan_key,
                billing_cycle: started.priced.billing_cycle,
                price_id: started.priced.price_id,
                success_url: String::from("/portal/signup/done"),
            });
        }
        let index = stream(CheckoutSessionIndex::STREAM_TYPE, session_id)?;
        let handoff_id = load::<CheckoutSessionIndex>(self.store, &index)
            .await?
            .0
            .handoff_id
            .ok_or_else(not_found)?;
        let (handoff, _) = self.handoff(&handoff_id).await?;
        let checkout = handoff.checkout(session_id).ok_or_else(not_found)?;
        Ok(LocalSession {
            plan_key: checkout.plan_key.clone(),
            billing_cycle: checkout.billing_cycle,
            price_id: checkout.price_id.clone(),
            success_url: with_session_placeholder(&handoff.intent.success_url)
                .replace("{CHECKOUT_SESSION_ID}", session_id),
        })
    }

    /// Local mode: completes a purchase by posting itself a correctly signed
    /// `checkout.session.completed` through the webhook path; returns where to send the browser.
    /// Completing a session again changes nothing and sends the browser to the same place.
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn complete_local(
        &self,
        session_id: &str,
        email: &str,
        metadata: EventMetadata,
    ) -> Result<String, FlowError> {
        let session = self.local_session(session_id).await?;
        let email = Email::parse(email)?;
        // One event per session: submitting the form again is the same Stripe event, already
        // processed, and writes nothing.
        let event = serde_json::json!({
            "id": format!("evt_local_{}", session_id.trim_start_matches("cs_local_")),
            "object": "event",
            "created": metadata.effective_at.timestamp(),
            "livemode": false,
            "pending_webhooks": 1,
            "type": "checkout.session.completed",
            "data": { "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "subscription",
                "payment_status": "paid",
                "status": "complete",
                "customer_details": { "email": email.as_str() },
            }},
        });
        let payload = event.to_string();
        let signature = self
            .stripe
            .sign_local_event(&payload)
            .ok_or(DomainError::NotFound {
                entity: "checkout session",
            })?;
        let verified = self
            .stripe
            .verify_webhook(&payload, &signature)
            .map_err(|rejection| {
                StripeGatewayError::Api(format!("local webhook refused: {rejection}"))
            })?;
        self.apply_stripe_event(&verified, metadata).await?;
        Ok(session.success_url)
    }
}

/// What a local Checkout Session buys, and where the browser goes once it completed.
#[derive(Clone, Debug)]
pub struct LocalSession {
    /// The plan.
    pub plan_key: String,
    /// Its cadence.
    pub billing_cycle: aggregates::catalog::BillingCycle,
    /// The price it charges (nothing, locally).
    pub price_id: String,
    /// Where the browser goes after completing it.
    pub success_url: String,
}
