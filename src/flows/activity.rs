//! The account's own history for its members (the portal's Activity): what changed, when, by
//! whom and why, from the log through the support replay engine (`crate::flows::support`), limited
//! to what a customer may see: the events of the account's own stream, without the runtime's
//! routine (leases, host pinning), with who did it named as the members know them.

use crate::engine::store::Store;
use crate::flows::access::member_account;
use crate::flows::support::{history, SubjectKind};
use crate::flows::FlowError;
use aggregates::account::{Account, OpenAccount};
use aggregates::catalog::CatalogHistory;
use aggregates::decider::Decider;
use aggregates::ids::{AccountId, UserId};
use chrono::{DateTime, Utc};
use projections::replay::Step;
use serde::Serialize;

/// Entries shown at most, newest first.
pub const ACTIVITY_ENTRIES_MAX: usize = 200;

/// One thing that happened to the account.
#[derive(Clone, Debug, Serialize)]
pub struct ActivityEntry {
    /// When it took effect.
    pub at: DateTime<Utc>,
    /// What happened, in words.
    pub what: String,
    /// Who did it, as the members know them.
    pub who: String,
    /// What it changed in the account's billing state and entitlements, `field: before → after`.
    pub changes: Vec<String>,
}

/// The history of `account_id` as its member `user_id` may see it, newest first.
#[tracing::instrument(skip_all, fields(account_id = %account_id))]
pub async fn account_activity(
    store: &dyn Store,
    catalogs: &CatalogHistory,
    account_id: &AccountId,
    user_id: &UserId,
) -> Result<Vec<ActivityEntry>, FlowError> {
    let member = member_account(store, account_id, user_id).await?;
    let own_stream = format!("{}/{account_id}", Account::STREAM_TYPE);
    let steps = history(store, SubjectKind::Account, account_id.as_str())
        .await?
        .timeline(catalogs)?;
    Ok(steps
        .iter()
        .rev()
        .filter(|step| step.stream == own_stream && shown(&step.event_type))
        .take(ACTIVITY_ENTRIES_MAX)
        .map(|step| entry(step, &member.account))
        .collect())
}

/// Whether a customer sees events of this type (a runtime's leases and host are routine).
fn shown(event_type: &str) -> bool {
    !matches!(event_type, "lease_issued" | "instance_host_pinned")
}

fn entry(step: &Step, account: &OpenAccount) -> ActivityEntry {
    ActivityEntry {
        at: step.effective_at,
        what: what(&step.event_type),
        who: who(&step.actor, account),
        changes: step
            .changes
            .iter()
            .filter(|change| {
                // Leaf values only: a container appearing or going is said by its fields.
                let container = |v: &Option<serde_json::Value>| {
                    v.as_ref().is_some_and(|v| v.is_object() || v.is_array())
                };
                !container(&change.before) && !container(&change.after)
            })
            .map(|change| {
                let shown = |value: &Option<serde_json::Value>| {
                    value.as_ref().map_or_else(
                        || String::from("none"),
                        |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                };
                format!(
                    "{}: {} → {}",
                    change.field,
                    shown(&change.before),
                    shown(&change.after)
                )
            })
            .collect(),
    }
}

/// An event type in words.
fn what(event_type: &str) -> String {
    let words = match event_type {
        "account_opened" => "The account was opened",
        "account_renamed" => "The account was renamed",
        "member_invited" => "Someone was invited",
        "member_joined" => "A member joined",
        "invitation_withdrawn" => "An invitation was withdrawn",
        "member_role_changed" => "A member's role changed",
        "member_removed" => "A member was removed",
        "billing_recorded" => "The subscription changed",
        "stripe_snapshot_applied" => "Stripe updated the subscription",
        "stripe_event_ignored" => "A Stripe update arrived late and changed nothing",
        "trial_granted" => "The trial started",
        "tenant_provisioned" => "A workspace was created",
        "tenant_state_changed" => "A workspace changed state",
        other => return other.replace('_', " "),
    };
    words.to_owned()
}

/// Who an actor is, as the members know them.
fn who(actor: &str, account: &OpenAccount) -> String {
    if let Ok(user_id) = UserId::parse(actor) {
        return account
            .members
            .get(&user_id)
            .map_or_else(|| String::from("a former member"), |m| m.email.to_string());
    }
    match actor.split(':').next().unwrap_or_default() {
        "stripe" => String::from("Stripe"),
        "staff" | "operator" => String::from("Pulse staff"),
        "provisioner" | "tenant" => String::from("the workspace itself"),
        _ => String::from("Pulse Account"),
    }
}
