//! Stripe's events (`DOMAIN.md` §9): what each means for the ledger, and applying it once.
//!
//! What an event means is a pure function of the event ([`effect_of`]): complete a checkout, a
//! command for the license or hosted account the Stripe object is linked to, or nothing (with the
//! reason). Applying it is one attempt of the decision runner over the event's receipt stream
//! (`stripe_event/<id>`) and the streams the effect changes: the receipt and the effects are one
//! append, so an event took full effect or none, exactly once. Subscription, invoice and charge
//! objects reach what they are linked to through the Stripe-object index written at checkout.

use crate::engine::command::decide_all;
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::flows::licensing::{decide_issuance, NewLicense};
use crate::flows::purchase::{Checkout, WebhookOutcome};
use crate::flows::{stream, FlowError};
use crate::gateways::stripe::{StripeEvent, StripeObject};
use aggregates::account::{Account, AccountCommand, AccountEvent};
use aggregates::catalog::{BillingCycle, StripePlanSource};
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::handoff::{HandoffCommand, HandoffState, PurchaseHandoff, StartedCheckout};
use aggregates::ids::{Email, LicenseId};
use aggregates::index::{CheckoutSessionIndex, LinkStripeObject, StripeObjectIndex, StripeTarget};
use aggregates::license::{
    License, LicenseCommand, LicenseEvent, LicenseOrigin, Payment, RevocationReason, StripeSnapshot,
};
use aggregates::log::{EventMetadata, StreamName};
use aggregates::signup::{Signup, SignupCommand, SignupState};
use aggregates::stripe_event::{RecordStripeEvent, StripeEventReceipt};
use aggregates::subscription::SubscriptionState;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;

/// What a Stripe event means for the ledger.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A Checkout Session completed: the purchase it started is fulfilled.
    CompleteCheckout {
        /// The session.
        session_id: String,
        /// The buyer's email, as Stripe has it.
        customer_email: Option<String>,
        /// The subscription and customer it created, to link to what was bought.
        links: Vec<String>,
    },
    /// A command for whatever the Stripe object is linked to.
    Linked {
        /// The Stripe object (subscription, charge) that names the target.
        stripe_id: Option<String>,
        /// What a linked license is told.
        for_license: LicenseCommand,
        /// What a linked hosted account is told (`None`: settled in Stripe).
        for_account: Option<AccountCommand>,
        /// Another Stripe object to link to the license (an invoice's charge, for refunds).
        also_link: Option<String>,
    },
    /// Nothing to do, and why.
    Ignore(String),
}

/// What `event` (created at `created`) means; pure.
pub fn effect_of(event: &StripeEvent, created: DateTime<Utc>) -> Effect {
    let hosted_status = |status: &str, plan_source| AccountCommand::ApplyStripeStatus {
        stripe_event_id: event.id.clone(),
        created,
        status: status.to_owned(),
        plan_source,
    };
    let at = |seconds: Option<i64>| seconds.and_then(|t| DateTime::from_timestamp(t, 0));
    match (event.event_type.as_str(), &event.object) {
        (
            "checkout.session.completed",
            StripeObject::CheckoutSession {
                id,
                customer_email,
                subscription,
                customer,
            },
        ) => match id {
            Some(session_id) => Effect::CompleteCheckout {
                session_id: session_id.clone(),
                customer_email: customer_email.clone(),
                links: [subscription, customer]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
            },
            None => Effect::Ignore(String::from("the session has no id")),
        },
        (
            kind @ ("customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"),
            StripeObject::Subscription {
                id,
                status,
                current_period_end,
                metadata,
                price_id,
                interval,
            },
        ) => {
            let status = if kind == "customer.subscription.deleted" {
                String::from("canceled")
            } else {
                status.clone().unwrap_or_default()
            };
            let plan_source = StripePlanSource {
                metadata: metadata.clone(),
                price_id: price_id.clone(),
            };
            let snapshot = StripeSnapshot {
                stripe_event_id: event.id.clone(),
                created,
                status: status.clone(),
                current_period_end: at(*current_period_end),
                plan_source: plan_source.clone(),
                billing_cycle: match interval.as_deref() {
                    Some("month") => Some(BillingCycle::Monthly),
                    Some("year") => Some(BillingCycle::Annual),
                    _ => None,
                },
            };
            Effect::Linked {
                stripe_id: id.clone(),
                for_license: LicenseCommand::ApplyStripeSnapshot(Box::new(snapshot)),
                for_account: Some(hosted_status(&status, Some(plan_source))),
                also_link: None,
            }
        }
        (
            "invoice.paid",
            StripeObject::Invoice {
                subscription,
                period_end,
                charge,
            },
        ) => Effect::Linked {
            stripe_id: subscription.clone(),
            for_license: LicenseCommand::RecordPaymentSucceeded {
                stripe_event_id: event.id.clone(),
                current_period_end: at(*period_end),
                payment: charge.clone().map(|charge| Payment {
                    charge,
                    paid_at: created,
                }),
            },
            for_account: Some(hosted_status("active", None)),
            also_link: charge.clone(),
        },
        ("invoice.payment_failed", StripeObject::Invoice { subscription, .. }) => Effect::Linked {
            stripe_id: subscription.clone(),
            for_license: LicenseCommand::RecordPaymentFailed {
                stripe_event_id: event.id.clone(),
            },
            for_account: Some(hosted_status("past_due", None)),
            also_link: None,
        },
        ("charge.refunded", StripeObject::Charge { id }) => Effect::Linked {
            stripe_id: id.clone(),
            for_license: LicenseCommand::Revoke {
                reason: RevocationReason::Refund,
                reference: id.clone().unwrap_or_else(|| event.id.clone()),
            },
            for_account: None,
            also_link: None,
        },
        ("charge.dispute.created", StripeObject::Dispute { id, charge }) => Effect::Linked {
            stripe_id: charge.clone(),
            for_license: LicenseCommand::Revoke {
                reason: RevocationReason::Dispute,
                reference: id.clone().unwrap_or_else(|| event.id.clone()),
            },
            for_account: None,
            also_link: None,
        },
        (other, _) => Effect::Ignore(format!(
            "{other} is not handled by this version of the ledger"
        )),
    }
}

impl Checkout<'_> {
    /// Applies a verified Stripe event exactly once; every event leaves a receipt.
    #[tracing::instrument(skip_all, fields(stripe_event = %event.id, event_type = %event.event_type))]
    pub async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        metadata: EventMetadata,
    ) -> Result<WebhookOutcome, FlowError> {
        let attempt = ApplyEvent {
            checkout: self,
            event,
            created: DateTime::from_timestamp(event.created, 0).unwrap_or(metadata.effective_at),
            receipt_stream: stream(StripeEventReceipt::STREAM_TYPE, &event.id)?,
            context: Context::new(metadata.effective_at, self.catalog),
        };
        match run(self.store, &metadata, None, &attempt).await? {
            Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer),
            Decided::Replayed(_) => Ok(WebhookOutcome::AlreadyProcessed),
        }
    }
}

/// One Stripe event: its receipt, and the effect it has.
struct ApplyEvent<'a> {
    checkout: &'a Checkout<'a>,
    event: &'a StripeEvent,
    created: DateTime<Utc>,
    receipt_stream: StreamName,
    context: Context<'a>,
}

/// A decision in the making, and the reason the event is ignored (if it is).
type Effects = (Decision<()>, Option<String>);

#[async_trait]
impl Attempt for ApplyEvent<'_> {
    type Answer = WebhookOutcome;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<WebhookOutcome>, FlowError> {
        let receipt = reads
            .load::<StripeEventReceipt>(&self.receipt_stream)
            .await?;
        if receipt.received.is_some() {
            return Ok(Decision::answer(WebhookOutcome::AlreadyProcessed));
        }
        let decision = Decision::answer(());
        let (decision, ignored_because) = match effect_of(self.event, self.created) {
            Effect::CompleteCheckout {
                session_id,
                customer_email,
                links,
            } => {
                self.complete_checkout(reads, &session_id, customer_email, &links, decision)
                    .await?
            }
            Effect::Linked {
                stripe_id,
                for_license,
                for_account,
                also_link,
            } => {
                self.on_linked(
                    reads,
                    stripe_id.as_deref(),
                    for_license,
                    for_account,
                    also_link.as_deref(),
                    decision,
                )
                .await?
            }
            Effect::Ignore(reason) => (decision, Some(reason)),
        };
        let record = RecordStripeEvent {
            event_type: self.event.event_type.clone(),
            created: self.created,
            ignored_because: ignored_because.clone(),
        };
        let (receipt_events, _) =
            decide_all::<StripeEventReceipt>(receipt, &[record], &self.context)?;
        let outcome = if ignored_because.is_some() {
            WebhookOutcome::Ignored
        } else {
            WebhookOutcome::Applied
        };
        Ok(decision
            .append::<StripeEventReceipt>(self.receipt_stream.clone(), &receipt_events)?
            .map_answer(|()| outcome))
    }
}

impl ApplyEvent<'_> {
    /// A completed Checkout Session: for a self-hosted plan, the license, its key and the
    /// handoff's completion; for a hosted plan, the account; anything the ledger cannot act on is
    /// ignored with its reason.
    async fn complete_checkout(
        &self,
        reads: &mut Reads<'_>,
        session_id: &str,
        customer_email: Option<String>,
        links: &[String],
        decision: Decision<()>,
    ) -> Result<Effects, FlowError> {
        let ignore = |decision, reason: &str| Ok((decision, Some(reason.to_owned())));
        let Ok(index) = stream(CheckoutSessionIndex::STREAM_TYPE, session_id) else {
            return ignore(decision, "the session id is malformed");
        };
        let signup_stream = stream(Signup::STREAM_TYPE, session_id)?;
        let signup = reads.load::<Signup>(&signup_stream).await?;
        if signup.started.is_some() {
            return self
                .complete_signup(reads, (signup_stream, signup), links, decision)
                .await;
        }
        let Some(handoff_id) = reads.load::<CheckoutSessionIndex>(&index).await?.handoff_id else {
            return ignore(
                decision,
                "the session was not started by a handoff of this ledger",
            );
        };
        let handoff_stream = stream(PurchaseHandoff::STREAM_TYPE, handoff_id.as_str())?;
        let Some(handoff) = reads
            .load::<PurchaseHandoff>(&handoff_stream)
            .await?
            .handoff
        else {
            return Err(DomainError::NotFound { entity: "handoff" }.into());
        };
        let Some(checkout) = handoff.checkout(session_id).cloned() else {
            return ignore(decision, "the handoff never started this session");
        };
        if handoff.completed.is_some() {
            return ignore(decision, "the handoff is already completed");
        }
        let Some(Ok(owner_email)) = customer_email.as_deref().map(Email::parse) else {
            return ignore(decision, "the session has no valid customer email");
        };
        let hosted = self
            .checkout
            .catalog
            .plan(&checkout.plan_key)
            .is_some_and(|plan| plan.max_workspaces.is_some());
        let (decision, completion, target) = if hosted {
            let (account_id, decision) = crate::flows::hosted::open_account(
                reads,
                self.checkout.keys,
                &self.context,
                (&checkout, None),
                owner_email,
                decision,
            )
            .await?;
            let completion = HandoffCommand::Complete {
                session_id: session_id.to_owned(),
                license_id: None,
                account_id: Some(account_id.clone()),
            };
            (decision, completion, StripeTarget::Account(account_id))
        } else {
            let license_id = LicenseId::from_entropy(rand::rngs::OsRng.next_u64());
            let license = NewLicense {
                owner_email,
                plan_version: checkout.plan_key.clone(),
                billing_cycle: Some(checkout.billing_cycle),
                current_period_end: None,
                origin: LicenseOrigin::Checkout {
                    session_id: session_id.to_owned(),
                },
                stripe_price_id: Some(checkout.price_id.clone()),
            };
            let state = if checkout.trial {
                SubscriptionState::Trial
            } else {
                SubscriptionState::Active
            };
            let issuance = decide_issuance(
                &self.checkout.keys.hasher,
                &license_id,
                &self.checkout.activation_key_of(session_id),
                license,
                state,
                &self.context,
            )?;
            let completion = HandoffCommand::Complete {
                session_id: session_id.to_owned(),
                license_id: Some(license_id.clone()),
                account_id: None,
            };
            (
                issuance.into_decision(decision)?,
                completion,
                StripeTarget::License(license_id),
            )
        };
        let state = HandoffState {
            handoff: Some(handoff),
        };
        let (handoff_events, _) =
            decide_all::<PurchaseHandoff>(state, &[completion], &self.context)?;
        let mut decision = decision.append::<PurchaseHandoff>(handoff_stream, &handoff_events)?;
        for linked in links {
            decision = self.link(reads, linked, target.clone(), decision).await?;
        }
        Ok((decision, None))
    }

    /// A completed signup's checkout: the account (named as the signup asked, its email the
    /// Owner), the signup's completion, the Owner's sign-in link, and the Stripe objects linked.
    async fn complete_signup(
        &self,
        reads: &mut Reads<'_>,
        (signup_stream, signup): (StreamName, SignupState),
        links: &[String],
        decision: Decision<()>,
    ) -> Result<Effects, FlowError> {
        let Some(started) = signup.started.clone() else {
            return Err(FlowError::Broken("a signup completed before it started"));
        };
        if started.account_id.is_some() {
            return Ok((
                decision,
                Some(String::from("the signup is already completed")),
            ));
        }
        let checkout = StartedCheckout {
            session_id: signup_stream.stream_id().to_owned(),
            plan_key: started.priced.plan_key.clone(),
            tier: started.priced.tier.clone(),
            billing_cycle: started.priced.billing_cycle,
            price_id: started.priced.price_id.clone(),
            trial: false,
            url: None,
        };
        let keys = self.checkout.keys;
        let (account_id, decision) = crate::flows::hosted::open_account(
            reads,
            keys,
            &self.context,
            (&checkout, Some(&started.org_name)),
            started.email.clone(),
            decision,
        )
        .await?;
        let complete = SignupCommand::Complete {
            account_id: account_id.clone(),
        };
        let (completed, _) = decide_all::<Signup>(signup, &[complete], &self.context)?;
        let mut decision = decision.append::<Signup>(signup_stream, &completed)?;
        decision = crate::flows::sign_in::issue_link_into(
            reads,
            keys,
            &self.context,
            &started.email,
            decision,
        )
        .await?;
        for linked in links {
            decision = self
                .link(
                    reads,
                    linked,
                    StripeTarget::Account(account_id.clone()),
                    decision,
                )
                .await?;
        }
        Ok((decision, None))
    }

    /// Links a Stripe object (subscription, customer, charge) to a license or account, if it is a
    /// valid id.
    async fn link(
        &self,
        reads: &mut Reads<'_>,
        stripe_id: &str,
        target: StripeTarget,
        decision: Decision<()>,
    ) -> Result<Decision<()>, FlowError> {
        let Ok(index) = StreamName::parse(StripeObjectIndex::STREAM_TYPE, stripe_id) else {
            return Ok(decision);
        };
        let link = reads.load::<StripeObjectIndex>(&index).await?;
        let (events, _) =
            decide_all::<StripeObjectIndex>(link, &[LinkStripeObject { target }], &self.context)?;
        Ok(decision.append::<StripeObjectIndex>(index, &events)?)
    }

    /// Applies the command for what a Stripe object is linked to: `for_license` to a license (and
    /// links `also_link` to it), `for_account` to a hosted account. An event about nothing known,
    /// one the target refuses or records as ignored, or one that changes nothing (a refund of a
    /// license revoked already), is ignored with its reason.
    async fn on_linked(
        &self,
        reads: &mut Reads<'_>,
        stripe_id: Option<&str>,
        for_license: LicenseCommand,
        for_account: Option<AccountCommand>,
        also_link: Option<&str>,
        decision: Decision<()>,
    ) -> Result<Effects, FlowError> {
        let Some(stripe_id) = stripe_id else {
            let reason = String::from("the object names no subscription or charge");
            return Ok((decision, Some(reason)));
        };
        let Ok(index) = StreamName::parse(StripeObjectIndex::STREAM_TYPE, stripe_id) else {
            return Ok((decision, Some(format!("{stripe_id:?} is not a Stripe id"))));
        };
        match reads.load::<StripeObjectIndex>(&index).await?.target {
            None => Ok((
                decision,
                Some(format!("{stripe_id} belongs to nothing of this ledger")),
            )),
            Some(StripeTarget::License(license_id)) => {
                let license_stream = stream(License::STREAM_TYPE, license_id.as_str())?;
                let state = reads.load::<License>(&license_stream).await?;
                let events = match decide_all::<License>(state, &[for_license], &self.context) {
                    Ok((events, _)) => events,
                    Err(refusal) => {
                        return Ok((decision, Some(format!("the license refused it: {refusal}"))))
                    }
                };
                let ignored_because = if events.is_empty() {
                    Some(String::from("the license is already as the event says"))
                } else {
                    only_ignored(&events, |event| match event {
                        LicenseEvent::StripeEventIgnored { reason, .. } => Some(reason),
                        _ => None,
                    })
                };
                let mut decision = decision.append::<License>(license_stream, &events)?;
                if let (Some(charge), None) = (also_link, &ignored_because) {
                    decision = self
                        .link(reads, charge, StripeTarget::License(license_id), decision)
                        .await?;
                }
                Ok((decision, ignored_because))
            }
            Some(StripeTarget::Account(account_id)) => {
                let Some(command) = for_account else {
                    let reason =
                        "refunds and disputes of hosted subscriptions are settled in Stripe";
                    return Ok((decision, Some(String::from(reason))));
                };
                let account_stream = stream(Account::STREAM_TYPE, account_id.as_str())?;
                let state = reads.load::<Account>(&account_stream).await?;
                let events = match decide_all::<Account>(state, &[command], &self.context) {
                    Ok((events, _)) => events,
                    Err(refusal) => {
                        return Ok((decision, Some(format!("the account refused it: {refusal}"))))
                    }
                };
                let ignored_because = only_ignored(&events, |event| match event {
                    AccountEvent::StripeEventIgnored { reason, .. } => Some(reason),
                    _ => None,
                });
                Ok((
                    decision.append::<Account>(account_stream, &events)?,
                    ignored_because,
                ))
            }
        }
    }
}

/// The reason a decision recorded for ignoring a Stripe event, when recording that is all it did:
/// the webhook then answers `ignored`, as the log says.
fn only_ignored<E>(events: &[E], reason: impl Fn(&E) -> Option<&String>) -> Option<String> {
    let reasons: Vec<&String> = events.iter().map(&reason).collect::<Option<_>>()?;
    reasons.first().map(|first| (*first).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, object: StripeObject) -> StripeEvent {
        StripeEvent {
            id: String::from("evt_1"),
            event_type: event_type.to_owned(),
            created: 1_000,
            object,
        }
    }

    fn created() -> DateTime<Utc> {
        DateTime::from_timestamp(1_000, 0).unwrap()
    }

    #[test]
    fn a_completed_checkout_completes_the_purchase_and_links_its_subscription_and_customer() {
        let completed = event(
            "checkout.session.completed",
            StripeObject::CheckoutSession {
                id: Some(String::from("cs_1")),
                customer_email: Some(String::from("a@b.example")),
                subscription: Some(String::from("sub_1")),
                customer: Some(String::from("cus_1")),
            },
        );
        assert_eq!(
            effect_of(&completed, created()),
            Effect::CompleteCheckout {
                session_id: String::from("cs_1"),
                customer_email: Some(String::from("a@b.example")),
                links: vec![String::from("sub_1"), String::from("cus_1")],
            }
        );
    }

    #[test]
    fn a_deleted_subscription_is_a_canceled_snapshot_for_the_license_and_the_account() {
        let deleted = event(
            "customer.subscription.deleted",
            StripeObject::Subscription {
                id: Some(String::from("sub_1")),
                status: Some(String::from("active")),
                current_period_end: Some(2_000),
                metadata: Default::default(),
                price_id: Some(String::from("price_1")),
                interval: Some(String::from("year")),
            },
        );
        let Effect::Linked {
            stripe_id,
            for_license: LicenseCommand::ApplyStripeSnapshot(snapshot),
            for_account: Some(AccountCommand::ApplyStripeStatus { status, .. }),
            also_link: None,
        } = effect_of(&deleted, created())
        else {
            panic!("a subscription snapshot for what the subscription is linked to");
        };
        assert_eq!(stripe_id.as_deref(), Some("sub_1"));
        assert_eq!(
            (snapshot.status.as_str(), status.as_str()),
            ("canceled", "canceled")
        );
        assert_eq!(snapshot.billing_cycle, Some(BillingCycle::Annual));
        assert_eq!(
            snapshot.current_period_end.map(|t| t.timestamp()),
            Some(2_000)
        );
    }

    #[test]
    fn a_paid_invoice_records_the_payment_and_links_its_charge() {
        let paid = event(
            "invoice.paid",
            StripeObject::Invoice {
                subscription: Some(String::from("sub_1")),
                period_end: Some(3_000),
                charge: Some(String::from("ch_1")),
            },
        );
        assert!(matches!(
            effect_of(&paid, created()),
            Effect::Linked {
                for_license: LicenseCommand::RecordPaymentSucceeded { .. },
                also_link: Some(ref charge),
                ..
            } if charge == "ch_1"
        ));
    }

    #[test]
    fn refunds_and_disputes_revoke_the_license_and_leave_hosted_accounts_to_stripe() {
        let refunded = event(
            "charge.refunded",
            StripeObject::Charge {
                id: Some(String::from("ch_1")),
            },
        );
        let disputed = event(
            "charge.dispute.created",
            StripeObject::Dispute {
                id: Some(String::from("dp_1")),
                charge: Some(String::from("ch_1")),
            },
        );
        for (event, reason, reference) in [
            (refunded, RevocationReason::Refund, "ch_1"),
            (disputed, RevocationReason::Dispute, "dp_1"),
        ] {
            assert_eq!(
                effect_of(&event, created()),
                Effect::Linked {
                    stripe_id: Some(String::from("ch_1")),
                    for_license: LicenseCommand::Revoke {
                        reason,
                        reference: reference.to_owned(),
                    },
                    for_account: None,
                    also_link: None,
                }
            );
        }
    }

    #[test]
    fn any_other_event_is_ignored_with_its_type() {
        let other = event("customer.created", StripeObject::Other);
        assert_eq!(
            effect_of(&other, created()),
            Effect::Ignore(String::from(
                "customer.created is not handled by this version of the ledger"
            ))
        );
    }
}
