//! The tenant provisioner's work queue: every hosted workspace waiting for the provisioner — being
//! created (`provisioning`) or being torn down (`deleting`) — keyed `<account id>/<tenant id>`.
//! A workspace leaves the queue when it moves to any other state, so the queue is exactly what
//! is pending, and the provisioner pages through it in key order.

use crate::{DocumentProjection, FoldError};
use aggregates::account::{Account, AccountEvent, TenantState};
use aggregates::decider::{decode, Decider};
use aggregates::log::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A workspace the provisioner must act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTenant {
    /// The account (org) id.
    pub account_id: String,
    /// The tenant id.
    pub tenant_id: String,
    /// `provisioning` or `deleting`.
    pub state: TenantState,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Whether the provisioner must act on a workspace in this state.
pub fn awaits_provisioner(state: TenantState) -> bool {
    matches!(state, TenantState::Provisioning | TenantState::Deleting)
}

/// The provisioner's queue: one document per pending workspace.
pub struct TenantWork;

impl DocumentProjection for TenantWork {
    const NAME: &'static str = "tenant_work";
    type Document = PendingTenant;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if event.stream.stream_type() != Account::STREAM_TYPE {
            return Vec::new();
        }
        match (
            event.event_type.as_str(),
            event.payload["tenant_id"].as_str(),
        ) {
            ("tenant_provisioned" | "tenant_state_changed", Some(tenant_id)) => {
                vec![format!("{}/{tenant_id}", event.stream.stream_id())]
            }
            _ => Vec::new(),
        }
    }

    fn apply(
        _key: &str,
        document: Option<PendingTenant>,
        event: &RecordedEvent,
    ) -> Result<Option<PendingTenant>, FoldError> {
        let event_of_account: AccountEvent =
            decode(&event.event_type, &event.payload).map_err(|e| FoldError::new(e.to_string()))?;
        let (tenant_id, state, since) = match event_of_account {
            AccountEvent::TenantProvisioned { tenant_id, at, .. } => {
                (tenant_id, TenantState::Provisioning, at)
            }
            AccountEvent::TenantStateChanged {
                tenant_id, to, at, ..
            } => (tenant_id, to, at),
            _ => return Ok(document),
        };
        Ok(awaits_provisioner(state).then(|| PendingTenant {
            account_id: event.stream.stream_id().to_owned(),
            tenant_id: tenant_id.to_string(),
            state,
            since,
        }))
    }
}
