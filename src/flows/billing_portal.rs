//! "Manage billing" (`../shared/design/PORTAL.md` §3): an Owner or Admin of a hosted account gets
//! a Stripe Billing Portal session for the account's Stripe customer (payment methods, invoices
//! and cancellation live there), returning to the portal. In local checkout mode there is no
//! Stripe to ask: the answer is the portal's own stand-in page, which says so.
//!
//! The customer is the one a checkout linked to the account (a `stripe_object/cus_…` stream that
//! names it, found through the `subject_streams` read model).

use crate::engine::projection::wait_for_position;
use crate::engine::store::Store;
use crate::flows::access::member_account;
use crate::flows::FlowError;
use crate::gateways::stripe::StripeGateway;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, UserId};
use projections::subject_streams::{SubjectStreamList, SubjectStreams};
use projections::DocumentProjection;

/// How long a billing-portal request waits for the subject index to fold the newest event.
const LINK_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where "Manage billing" sends an Owner or Admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManageBilling {
    /// A Stripe Billing Portal session.
    Stripe(String),
    /// Local checkout mode: the portal's stand-in page.
    Local,
}

/// Opens the billing portal of `account_id` for `user_id`, returning to `return_url`.
#[tracing::instrument(skip_all, fields(account_id = %account_id))]
pub async fn manage_billing(
    store: &dyn Store,
    stripe: &StripeGateway,
    account_id: &AccountId,
    user_id: &UserId,
    return_url: &str,
) -> Result<ManageBilling, FlowError> {
    let member = member_account(store, account_id, user_id).await?;
    if !member.role.can_manage() {
        return Err(DomainError::Forbidden {
            action: "manage billing",
        }
        .into());
    }
    if stripe.local_mode() {
        return Ok(ManageBilling::Local);
    }
    let customer = stripe_customer(store, account_id)
        .await?
        .ok_or(DomainError::NoBillingRecord)?;
    let url = stripe
        .create_billing_portal_session(&customer, return_url)
        .await?
        .ok_or(FlowError::Broken("Stripe mode answered no billing portal"))?;
    Ok(ManageBilling::Stripe(url))
}

/// The Stripe customer a checkout linked to the account, if any.
async fn stripe_customer(
    store: &dyn Store,
    account_id: &AccountId,
) -> Result<Option<String>, FlowError> {
    // The link is folded by a read model: give it a moment to fold the newest event, so an Owner
    // who pays and clicks at once still finds the customer.
    let head = store.head_position().await?;
    wait_for_position(store, SubjectStreams::NAME, head, LINK_INDEX_WAIT).await?;
    linked_stripe_object(store, &format!("account/{account_id}"), "cus_").await
}

/// The newest Stripe object with id prefix `prefix` (`cus_`, `sub_`) linked to `subject`
/// (`account/<id>` or `license/<id>`) as the `subject_streams` read model holds it now, if any.
pub async fn linked_stripe_object(
    store: &dyn Store,
    subject: &str,
    prefix: &str,
) -> Result<Option<String>, FlowError> {
    let Some(document) = store.read_document(SubjectStreams::NAME, subject).await? else {
        return Ok(None);
    };
    let list: SubjectStreamList = serde_json::from_value(document)
        .map_err(|_| FlowError::Broken("a subject-streams document does not decode"))?;
    Ok(list
        .streams
        .iter()
        .rev()
        .filter_map(|stream| stream.strip_prefix("stripe_object/"))
        .find(|id| id.starts_with(prefix))
        .map(str::to_owned))
}
