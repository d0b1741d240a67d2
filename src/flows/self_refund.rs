//! Self-refund (`POST /v1/self-refund`, `../shared/design/PORTAL.md` §4): the owner of a
//! self-hosted license, proving it with the email it was bought with and its activation key, gets
//! the first payment back inside the window after it, and the license is revoked at once.
//!
//! Three steps, so that Stripe refunds once however many requests race and whatever crashes:
//! 1. the refund is requested on the license's `self_refund` stream (the rules, and who wins a
//!    race, are `aggregates::self_refund`'s: a second request meanwhile is `refund_in_progress`);
//! 2. Stripe is asked, with an idempotency key derived from the license, so asking again (a
//!    stalled request taken over, a retry) answers the same refund; then the license's
//!    subscription is canceled at once (its own derived key), so a revoked license is not billed
//!    again;
//! 3. the refund and the license's revocation (reason `refund`, the refund's id) are recorded in
//!    one append. The `charge.refunded` webhook Stripe sends next finds the license revoked and
//!    changes nothing.

use crate::crypto::KeyMaterial;
use crate::engine::command::decide_all;
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::projection::wait_for_position;
use crate::engine::store::Store;
use crate::flows::billing_portal::linked_stripe_object;
use crate::flows::licensing::license_of_key;
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::StripeGateway;
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::{Email, LicenseId};
use aggregates::license::{License, LicenseCommand, RevocationReason};
use aggregates::log::{EventMetadata, StreamName};
use aggregates::self_refund::{eligibility, SelfRefund, SelfRefundCommand, SelfRefundEvent};
use aggregates::subscription::SubscriptionState;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::subject_streams::SubjectStreams;
use projections::DocumentProjection;
use serde::Serialize;

/// How long a self-refund waits for the subject index to fold the newest event before it looks
/// up the license's subscription.
const LINK_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a self-refund did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refunded {
    /// The license, now revoked.
    pub license_id: String,
    /// Stripe's refund (`re_…`).
    pub refund_id: String,
    /// The charge refunded.
    pub charge: String,
    /// When the refund was recorded.
    pub refunded_at: DateTime<Utc>,
}

/// What the service needs for a self-refund.
pub struct SelfRefunds<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The server secret (activation keys are looked up by their keyed hash).
    pub keys: &'a KeyMaterial,
    /// The catalog in force.
    pub catalog: &'a Catalog,
    /// Stripe.
    pub stripe: &'a StripeGateway,
    /// Days after the first payment in which it may be refunded.
    pub window_days: u32,
}

impl SelfRefunds<'_> {
    /// Refunds the license `activation_key` opens, if `email` owns it and it is eligible. A key
    /// that opens no license, or one of another owner, is [`FlowError::UnknownActivationKey`]
    /// alike.
    #[tracing::instrument(skip_all)]
    pub async fn refund(
        &self,
        email: &Email,
        activation_key: &str,
        metadata: EventMetadata,
    ) -> Result<Refunded, FlowError> {
        let license_id = license_of_key(self.store, &self.keys.hasher, activation_key).await?;
        self.refund_license(email, &license_id, metadata).await
    }

    /// Refunds `license_id` for `email`, who proved it is theirs (a signed-in owner, or the
    /// license's activation key); another owner's license is [`FlowError::UnknownActivationKey`].
    #[tracing::instrument(skip_all, fields(license_id = %license_id))]
    pub async fn refund_license(
        &self,
        email: &Email,
        license_id: &LicenseId,
        metadata: EventMetadata,
    ) -> Result<Refunded, FlowError> {
        let streams = Streams {
            license: stream(License::STREAM_TYPE, license_id.as_str())?,
            refund: stream(SelfRefund::STREAM_TYPE, license_id.as_str())?,
        };
        let context = Context::new(metadata.effective_at, self.catalog);
        let request = RequestRefund {
            streams: &streams,
            email,
            window_days: self.window_days,
            context: &context,
        };
        let (charge, subscribed) = match run(self.store, &metadata, None, &request).await? {
            Decided::Appended { answer, .. } | Decided::Unchanged(answer) => answer?,
            Decided::Replayed(_) => return Err(FlowError::Broken("a self-refund has no key")),
        };
        let refund_id = self
            .stripe
            .create_refund(
                &charge,
                &refund_idempotency_key(license_id),
                &[
                    ("license_id", license_id.as_str()),
                    ("reason", "self_refund"),
                ],
            )
            .await?;
        if subscribed {
            self.cancel_subscription(license_id).await?;
        }
        let record = RecordRefund {
            streams: &streams,
            refund_id: &refund_id,
            context: &context,
        };
        match run(self.store, &metadata, None, &record).await? {
            Decided::Appended { answer, .. } | Decided::Unchanged(answer) => {
                let (refund_id, refunded_at) = answer;
                Ok(Refunded {
                    license_id: license_id.to_string(),
                    refund_id,
                    charge,
                    refunded_at,
                })
            }
            Decided::Replayed(_) => Err(FlowError::Broken("a self-refund has no key")),
        }
    }
}

impl SelfRefunds<'_> {
    /// Cancels the license's Stripe subscription at once, so a refunded, revoked license is not
    /// billed again (a license with no linked subscription has nothing to cancel).
    async fn cancel_subscription(&self, license_id: &LicenseId) -> Result<(), FlowError> {
        let head = self.store.head_position().await?;
        wait_for_position(self.store, SubjectStreams::NAME, head, LINK_INDEX_WAIT).await?;
        let subject = format!("license/{license_id}");
        if let Some(subscription) = linked_stripe_object(self.store, &subject, "sub_").await? {
            self.stripe
                .cancel_subscription(&subscription, &cancel_idempotency_key(license_id))
                .await?;
        }
        Ok(())
    }
}

/// The idempotency key a self-refund's cancellation of the subscription is asked under.
pub fn cancel_idempotency_key(license_id: &LicenseId) -> String {
    format!("self-refund-cancel:{license_id}")
}

/// The idempotency key every Stripe refund of `license_id` is asked under: one license, one
/// refund, however often it is asked.
pub fn refund_idempotency_key(license_id: &LicenseId) -> String {
    format!("self-refund:{license_id}")
}

struct Streams {
    license: StreamName,
    refund: StreamName,
}

/// Step 1: the owner's check, the eligibility, and the request recorded. Answers the charge, and
/// whether the license's subscription is still live (to be canceled).
struct RequestRefund<'a> {
    streams: &'a Streams,
    email: &'a Email,
    window_days: u32,
    context: &'a Context<'a>,
}

#[async_trait]
impl Attempt for RequestRefund<'_> {
    type Answer = Result<(String, bool), DomainError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let license = reads.load::<License>(&self.streams.license).await?;
        let Some(license) = license.issued.filter(|l| &l.owner_email == self.email) else {
            return Err(FlowError::UnknownActivationKey);
        };
        let refund = reads.load::<SelfRefund>(&self.streams.refund).await?;
        let charge = match eligibility(&license, &refund, self.window_days, self.context.now) {
            Ok(charge) => charge,
            Err(refusal) => return Ok(Decision::answer(Err(refusal))),
        };
        let command = SelfRefundCommand::Request { charge };
        let events = match decide_all::<SelfRefund>(refund, &[command], self.context) {
            Ok((events, _)) => events,
            Err(refusal) => return Ok(Decision::answer(Err(refusal))),
        };
        let charge = events
            .iter()
            .find_map(|event| match event {
                SelfRefundEvent::SelfRefundRequested { charge, .. } => Some(charge.clone()),
                SelfRefundEvent::SelfRefundIssued { .. } => None,
            })
            .ok_or(FlowError::Broken("a refund request decided no request"))?;
        let subscribed = license.state != SubscriptionState::Canceled;
        Ok(Decision::answer(Ok((charge, subscribed)))
            .append::<SelfRefund>(self.streams.refund.clone(), &events)?)
    }
}

/// Step 3: Stripe's refund and the license's revocation, in one append.
struct RecordRefund<'a> {
    streams: &'a Streams,
    refund_id: &'a str,
    context: &'a Context<'a>,
}

#[async_trait]
impl Attempt for RecordRefund<'_> {
    /// The refund's id and when it was recorded.
    type Answer = (String, DateTime<Utc>);
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let refund = reads.load::<SelfRefund>(&self.streams.refund).await?;
        let license = reads.load::<License>(&self.streams.license).await?;
        if let Some(done) = &refund.refund {
            if let Some(refund_id) = &done.refund_id {
                // A request that took this one over recorded Stripe's (same) refund first.
                return Ok(Decision::answer((refund_id.clone(), done.at)));
            }
        }
        let issued = SelfRefundCommand::RecordIssued {
            refund_id: self.refund_id.to_owned(),
        };
        let (refund_events, _) = decide_all::<SelfRefund>(refund, &[issued], self.context)?;
        let revoke = LicenseCommand::Revoke {
            reason: RevocationReason::Refund,
            reference: self.refund_id.to_owned(),
        };
        let (license_events, _) = decide_all::<License>(license, &[revoke], self.context)?;
        Ok(
            Decision::answer((self.refund_id.to_owned(), self.context.now))
                .append::<SelfRefund>(self.streams.refund.clone(), &refund_events)?
                .append::<License>(self.streams.license.clone(), &license_events)?,
        )
    }
}
