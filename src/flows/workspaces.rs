//! Hosted workspaces from the portal (`../shared/design/PORTAL.md` §3, `DOMAIN.md` §10): listing
//! an account's workspaces with its usage, creating one (`crate::flows::hosted::provision_tenant`
//! decides the caps), deleting one, and opening one: a 60-second signed handoff (EdDSA JWT) to
//! the workspace's `/auth/cloud-handoff`, carrying the member's role inside it (owner → owner,
//! admin → admin, tech → editor, read-only → viewer). Any member may open a workspace; only an
//! Owner or Admin creates or deletes one.

use crate::crypto::KeyMaterial;
use crate::engine::store::Store;
use crate::flows::access::{account_decision, member_account};
use crate::flows::FlowError;
use aggregates::account::{AccountCommand, TenantState};
use aggregates::catalog::Catalog;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, TenantId};
use aggregates::log::EventMetadata;
use aggregates::user::RegisteredUser;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;

/// Who issues a workspace handoff.
pub const HANDOFF_ISSUER: &str = "pulse-account";
/// Whom a workspace handoff is for.
pub const HANDOFF_AUDIENCE: &str = "pulse-cloud-handoff";
/// How long a workspace handoff can be used.
pub const HANDOFF_LIFETIME_SECONDS: i64 = 60;

/// The claims of a workspace handoff.
#[derive(Clone, Debug, Serialize)]
pub struct HandoffClaims {
    /// `pulse-account`.
    pub iss: &'static str,
    /// `pulse-cloud-handoff`.
    pub aud: &'static str,
    /// The user.
    pub sub: String,
    /// The user's email.
    pub email: String,
    /// The account (org).
    pub org_id: String,
    /// The workspace.
    pub tenant_id: String,
    /// The user's role inside the workspace.
    pub role: &'static str,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expires at (seconds), 60 after issue.
    pub exp: i64,
    /// A unique id, so the workspace can refuse a second use.
    pub jti: String,
}

/// An open workspace: where to send the browser, and until when the link works.
#[derive(Clone, Debug)]
pub struct Handoff {
    /// `https://<host>/auth/cloud-handoff?token=<jwt>`.
    pub url: String,
    /// When the handoff expires.
    pub expires_at: DateTime<Utc>,
}

/// Opens `tenant_id` of `account_id` for its member `user` at `now`.
#[tracing::instrument(skip_all, fields(account_id = %account_id, tenant_id = %tenant_id))]
pub async fn open_workspace(
    store: &dyn Store,
    keys: &KeyMaterial,
    account_id: &AccountId,
    user: &RegisteredUser,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<Handoff, FlowError> {
    let member = member_account(store, account_id, &user.user_id).await?;
    let tenant = member
        .account
        .tenants
        .get(tenant_id)
        .ok_or(DomainError::NotFound { entity: "tenant" })?;
    let host = match (&tenant.state, &tenant.instance_host) {
        (TenantState::Active, Some(host)) => host,
        (state, _) => {
            return Err(DomainError::WorkspaceNotReady {
                state: state.as_str(),
            }
            .into())
        }
    };
    let expires_at = now + Duration::seconds(HANDOFF_LIFETIME_SECONDS);
    let mut jti = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let claims = HandoffClaims {
        iss: HANDOFF_ISSUER,
        aud: HANDOFF_AUDIENCE,
        sub: user.user_id.to_string(),
        email: user.email.to_string(),
        org_id: account_id.to_string(),
        tenant_id: tenant_id.to_string(),
        role: member.role.tenant_role(),
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
        jti: hex::encode(jti),
    };
    let token = keys.signer.sign(&claims)?;
    Ok(Handoff {
        url: format!("https://{host}/auth/cloud-handoff?token={token}"),
        expires_at,
    })
}

/// Deletes a workspace on behalf of `actor` (an Owner or Admin).
pub async fn delete_workspace(
    store: &dyn Store,
    catalog: &Catalog,
    account_id: &AccountId,
    actor: &aggregates::ids::UserId,
    tenant_id: &TenantId,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let command = AccountCommand::RemoveTenant {
        actor: actor.clone(),
        tenant_id: tenant_id.clone(),
    };
    account_decision(store, catalog, account_id, actor, command, metadata).await
}
