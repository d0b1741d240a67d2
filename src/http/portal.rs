//! The portal's session-authenticated JSON (`../shared/design/PORTAL.md` §3): the bootstrap and
//! account access. Every route takes a [`PortalUser`] (401 without a live session) and checks the
//! user's role on the account named in the path (403 `forbidden` for a non-member; Tech and
//! Read-only may only read).
//!
//! - `GET /api/portal/bootstrap`
//! - `GET /api/accounts/{id}/members` · `POST …` `{email, role}` (201 member, 202 pending)
//! - `PATCH /api/accounts/{id}/members/{subject_id}` `{role}` · `DELETE …` (204)
//! - `GET /api/accounts/{id}/tenants` · `POST …` `{display_name}` · `DELETE …/{tenant_id}` ·
//!   `POST …/{tenant_id}/handoff` (the workspaces)
//! - `GET /api/portal/billing?account_id=` · `POST …` (Manage billing: a Stripe Billing Portal URL)

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::licensing::metadata;
use super::session::PortalUser;
use super::AppState;
use crate::flows::access::{
    accounts_of, change_role, has_self_hosted_commercial, invite, member_account, remove, Invited,
    MemberAccount, NewMember,
};
use aggregates::account::{OpenAccount, Role};
use aggregates::ids::{AccountId, Email};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bootstrap))
        .routes(routes!(roster, invite_member))
        .routes(routes!(change_member_role, remove_member))
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(delete_workspace))
        .routes(routes!(open_workspace))
        .routes(routes!(billing, manage_billing))
        .routes(routes!(activity))
        .routes(routes!(licenses))
}

/// `GET /api/portal/bootstrap`: who is signed in and the accounts they belong to.
#[utoipa::path(get, path = "/api/portal/bootstrap", tag = "portal", security(("session" = [])),
    responses(
        (status = 200, description = "`authenticated`, `email`, `user_id`, `has_self_hosted_commercial`, `support_email`, `accounts[]`"),
        (status = 401, description = "`missing_session`, `invalid_session`, `expired_session`, `revoked_session`", body = ErrorBody)))]
pub(super) async fn bootstrap(
    State(state): State<AppState>,
    user: PortalUser,
) -> Result<Json<Value>, ApiError> {
    let store = state.store.as_ref();
    let accounts = accounts_of(store, &user.user).await?;
    Ok(Json(json!({
        "authenticated": true,
        "email": user.user.email,
        "user_id": user.user.user_id,
        "has_self_hosted_commercial": has_self_hosted_commercial(store, &user.user.email).await?,
        "support_email": state.support_email,
        "accounts": accounts.iter().map(account_view).collect::<Vec<_>>(),
    })))
}

fn account_view(member: &MemberAccount) -> Value {
    let account = &member.account;
    json!({
        "id": account.account_id,
        "kind": account.kind,
        "kind_label": account.kind.label(),
        "name": account.display_name,
        "role": member.role,
        "role_label": member.role.display(),
        "can_manage": member.role.can_manage(),
        "has_billing": account.billing.is_some(),
        "workspaces": account.tenants.iter().map(|(tenant_id, tenant)| json!({
            "tenant_id": tenant_id,
            "state": tenant.state.as_str(),
        })).collect::<Vec<_>>(),
        "members": roster_rows(account, member.role),
    })
}

/// The roster as `viewer` may see it: members, and pending invitations for an Owner or Admin.
fn roster_rows(account: &OpenAccount, viewer: Role) -> Vec<Value> {
    let members = account.members.iter().map(|(user_id, member)| {
        json!({
            "subject_id": user_id,
            "user_id": user_id,
            "email": member.email,
            "role": member.role,
            "role_label": member.role.display(),
            "state": "active",
            "created_at": member.since,
        })
    });
    let pending = account
        .invitations
        .iter()
        .filter(|_| viewer.can_manage())
        .map(|(invitation_id, invitation)| {
            json!({
                "subject_id": invitation_id,
                "user_id": null,
                "email": invitation.email,
                "role": invitation.role,
                "role_label": invitation.role.display(),
                "state": "pending",
                "created_at": invitation.since,
            })
        });
    members.chain(pending).collect()
}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(ApiError::from)
}

/// `GET /api/accounts/{id}/members`.
#[utoipa::path(get, path = "/api/accounts/{account_id}/members", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "`{account_id, members[]}`: rows `{subject_id, user_id, email, role, role_label, state}`; pending rows only for an Owner or Admin"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody)))]
pub(super) async fn roster(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath(raw_account): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&raw_account)?;
    let member = member_account(state.store.as_ref(), &account_id, &user.user.user_id).await?;
    Ok(Json(json!({
        "account_id": account_id,
        "members": roster_rows(&member.account, member.role),
    })))
}

/// What an invitation sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InviteRequest {
    email: String,
    /// `owner`, `admin`, `tech` or `read_only`.
    #[schema(value_type = String, example = "tech")]
    role: Role,
}

/// `POST /api/accounts/{id}/members`: 201 with the new member, or 202 with the pending invitation.
#[utoipa::path(post, path = "/api/accounts/{account_id}/members", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)")), request_body = InviteRequest,
    responses(
        (status = 201, description = "A user joined at once"),
        (status = 202, description = "A pending invitation, emailed"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`, `owner_required`, `cross_site_request`", body = ErrorBody),
        (status = 409, description = "`already_member`", body = ErrorBody)))]
pub(super) async fn invite_member(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath(raw_account): ApiPath<String>,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<Response, ApiError> {
    let account_id = account_id(&raw_account)?;
    let email = Email::parse(&request.email)?;
    let invited = invite(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &account_id,
        &user.user.user_id,
        NewMember {
            email: &email,
            role: request.role,
        },
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    let (status, subject, user_id, member_state) = match invited {
        Invited::Joined(user_id) => (
            StatusCode::CREATED,
            user_id.to_string(),
            Some(user_id.to_string()),
            "active",
        ),
        Invited::Pending(invitation_id) => (
            StatusCode::ACCEPTED,
            invitation_id.to_string(),
            None,
            "pending",
        ),
    };
    Ok((
        status,
        Json(json!({
            "subject_id": subject,
            "user_id": user_id,
            "email": email,
            "role": request.role,
            "role_label": request.role.display(),
            "state": member_state,
        })),
    )
        .into_response())
}

/// What a role change sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleChange {
    /// `owner`, `admin`, `tech` or `read_only`.
    #[schema(value_type = String, example = "admin")]
    role: Role,
}

/// `PATCH /api/accounts/{id}/members/{subject_id}`.
#[utoipa::path(patch, path = "/api/accounts/{account_id}/members/{subject_id}", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("subject_id" = String, Path, description = "A member (`u_…`) or a pending invitation (`ainv_…`)")), request_body = RoleChange,
    responses(
        (status = 200, description = "`{subject_id, role, role_label}`"),
        (status = 400, description = "`invalid_request` (a pending invitation's role cannot change)", body = ErrorBody),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`, `owner_required`, `cross_site_request`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_owner`", body = ErrorBody)))]
pub(super) async fn change_member_role(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath((raw_account, subject)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<RoleChange>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&raw_account)?;
    change_role(
        state.store.as_ref(),
        &state.catalog,
        &account_id,
        &user.user.user_id,
        &subject,
        request.role,
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    Ok(Json(json!({
        "subject_id": subject,
        "role": request.role,
        "role_label": request.role.display(),
    })))
}

/// `DELETE /api/accounts/{id}/members/{subject_id}`: 204.
#[utoipa::path(delete, path = "/api/accounts/{account_id}/members/{subject_id}", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("subject_id" = String, Path, description = "A member (`u_…`) or a pending invitation (`ainv_…`)")),
    responses(
        (status = 204, description = "Removed, or the invitation withdrawn"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`, `owner_required`, `cross_site_request`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`last_owner`", body = ErrorBody)))]
pub(super) async fn remove_member(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath((raw_account, subject)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let account_id = account_id(&raw_account)?;
    remove(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &account_id,
        &user.user.user_id,
        &subject,
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workspaces of an account and how many of the plan's places they use.
fn workspaces_view(state: &AppState, member: &crate::flows::access::MemberAccount) -> Value {
    let account = &member.account;
    let context = aggregates::decider::Context::new(chrono::Utc::now(), &state.catalog);
    let (current, limit) = account.workspace_usage(&context);
    json!({
        "account_id": account.account_id,
        "usage": { "current": current, "limit": limit },
        "tenants": account.tenants.iter().map(|(tenant_id, tenant)| json!({
            "tenant_id": tenant_id,
            "display_name": tenant.display_name,
            "state": tenant.state.as_str(),
            "since": tenant.state_since,
            "instance_host": tenant.instance_host,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /api/accounts/{id}/tenants`.
#[utoipa::path(get, path = "/api/accounts/{account_id}/tenants", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "`{account_id, usage: {current, limit}, tenants[]}`: each `{tenant_id, display_name, state, since, instance_host}`"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody)))]
pub(super) async fn list_workspaces(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath(raw_account): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&raw_account)?;
    let member = member_account(state.store.as_ref(), &account_id, &user.user.user_id).await?;
    Ok(Json(workspaces_view(&state, &member)))
}

/// What creating a workspace sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWorkspace {
    /// What to call it (1 to 80 characters).
    display_name: Option<String>,
}

/// `POST /api/accounts/{id}/tenants`: 201 with the new workspace.
#[utoipa::path(post, path = "/api/accounts/{account_id}/tenants", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    request_body = NewWorkspace,
    responses(
        (status = 201, description = "`{tenant_id, display_name, state: provisioning}`"),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`, `no_billing_record`, `subscription_canceled`, `workspace_limit_reached` (`details.current`, `details.limit`)", body = ErrorBody)))]
pub(super) async fn create_workspace(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath(raw_account): ApiPath<String>,
    ApiJson(request): ApiJson<NewWorkspace>,
) -> Result<Response, ApiError> {
    let account_id = account_id(&raw_account)?;
    let tenant_id = crate::flows::hosted::provision_tenant(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &account_id,
        (&user.user.user_id, request.display_name.as_deref()),
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    let member = member_account(state.store.as_ref(), &account_id, &user.user.user_id).await?;
    let tenant = member.account.tenants.get(&tenant_id);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "tenant_id": tenant_id,
            "display_name": tenant.and_then(|t| t.display_name.clone()),
            "state": tenant.map(|t| t.state.as_str()),
        })),
    )
        .into_response())
}

fn tenant_id(raw: &str) -> Result<aggregates::ids::TenantId, ApiError> {
    aggregates::ids::TenantId::parse(raw).map_err(ApiError::from)
}

/// `DELETE /api/accounts/{id}/tenants/{tenant_id}`: 204.
#[utoipa::path(delete, path = "/api/accounts/{account_id}/tenants/{tenant_id}", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("tenant_id" = String, Path, description = "The workspace (`t-…`)")),
    responses(
        (status = 204, description = "Deleting (a workspace never booted is canceled)"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn delete_workspace(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath((raw_account, raw_tenant)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::flows::workspaces::delete_workspace(
        state.store.as_ref(),
        &state.catalog,
        &account_id(&raw_account)?,
        &user.user.user_id,
        &tenant_id(&raw_tenant)?,
        metadata(user.user.user_id.as_str()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/accounts/{id}/tenants/{tenant_id}/handoff`: opens the workspace.
#[utoipa::path(post, path = "/api/accounts/{account_id}/tenants/{tenant_id}/handoff", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("tenant_id" = String, Path, description = "The workspace (`t-…`)")),
    responses(
        (status = 200, description = "`{url, expires_at}`: the workspace's `/auth/cloud-handoff` with a 60-second EdDSA JWT (`iss` pulse-account, `aud` pulse-cloud-handoff, `sub`, `email`, `org_id`, `tenant_id`, `role`, `iat`, `exp`, `jti`), verifiable with `/.well-known/jwks.json`"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`workspace_not_ready`: not running, or its runtime has not reported its host", body = ErrorBody)))]
pub(super) async fn open_workspace(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath((raw_account, raw_tenant)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let handoff = crate::flows::workspaces::open_workspace(
        state.store.as_ref(),
        &state.keys,
        &account_id(&raw_account)?,
        &user.user,
        &tenant_id(&raw_tenant)?,
        chrono::Utc::now(),
    )
    .await?;
    Ok(Json(
        json!({ "url": handoff.url, "expires_at": handoff.expires_at }),
    ))
}

/// Which account a billing route is about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BillingQuery {
    account_id: String,
}

/// `GET /api/portal/billing?account_id=`: the account's subscription as its members see it.
#[utoipa::path(get, path = "/api/portal/billing", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Query, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "`{account_id, has_billing, plan_version, state, grace_started_at, grace_ends_at, trial_ends_at}`"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody)))]
pub(super) async fn billing(
    State(state): State<AppState>,
    user: PortalUser,
    ApiQuery(query): ApiQuery<BillingQuery>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&query.account_id)?;
    let member = member_account(state.store.as_ref(), &account_id, &user.user.user_id).await?;
    let billing = member.account.billing.as_ref();
    let grace_started_at = billing.and_then(|b| b.grace_started_at);
    Ok(Json(json!({
        "account_id": account_id,
        "has_billing": billing.is_some(),
        "plan_version": billing.map(|b| b.plan_version.clone()),
        "state": billing.map(|b| b.state.as_str()),
        "grace_started_at": grace_started_at,
        "grace_ends_at": grace_started_at.map(|at| aggregates::subscription::grace_ends_at(at, aggregates::subscription::HOSTED_GRACE_DAYS)),
        "trial_ends_at": billing.and_then(|b| b.trial_ends_at),
    })))
}

/// `POST /api/portal/billing?account_id=`: where "Manage billing" goes.
#[utoipa::path(post, path = "/api/portal/billing", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Query, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "`{url, local}`: a Stripe Billing Portal session returning to the portal, or (local checkout mode, `local: true`) this service's stand-in page"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden` (an Owner or Admin is required), `no_billing_record` (no Stripe customer)", body = ErrorBody),
        (status = 502, description = "`stripe_unavailable`", body = ErrorBody)))]
pub(super) async fn manage_billing(
    State(state): State<AppState>,
    user: PortalUser,
    ApiQuery(query): ApiQuery<BillingQuery>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&query.account_id)?;
    let opened = crate::flows::billing_portal::manage_billing(
        state.store.as_ref(),
        &state.stripe,
        &account_id,
        &user.user.user_id,
        &super::web::billing_return_url(&state, account_id.as_str()),
    )
    .await?;
    Ok(Json(match opened {
        crate::flows::billing_portal::ManageBilling::Stripe(url) => {
            json!({ "url": url, "local": false })
        }
        crate::flows::billing_portal::ManageBilling::Local => json!({
            "url": format!("{}/portal/accounts/{account_id}/billing/local", state.public_url.trim_end_matches('/')),
            "local": true,
        }),
    }))
}

/// `GET /api/accounts/{id}/activity`: the account's own history, newest first.
#[utoipa::path(get, path = "/api/accounts/{account_id}/activity", tag = "portal", security(("session" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "`{account_id, entries[]}`: each `{at, what, who, changes[]}`, at most 200"),
        (status = 401, description = "No live session", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody)))]
pub(super) async fn activity(
    State(state): State<AppState>,
    user: PortalUser,
    ApiPath(raw_account): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let account_id = account_id(&raw_account)?;
    let entries = crate::flows::activity::account_activity(
        state.store.as_ref(),
        &state.catalogs,
        &account_id,
        &user.user.user_id,
    )
    .await?;
    Ok(Json(
        json!({ "account_id": account_id, "entries": entries }),
    ))
}

/// `GET /api/portal/licenses`: the self-hosted licenses of the signed-in email.
#[utoipa::path(get, path = "/api/portal/licenses", tag = "portal", security(("session" = [])),
    responses(
        (status = 200, description = "`{licenses[]}`: each `{license_id, plan_version, state, current_period_end, plan_limit, grandfathered_floor, effective_limit, installations[]}`"),
        (status = 401, description = "No live session", body = ErrorBody)))]
pub(super) async fn licenses(
    State(state): State<AppState>,
    user: PortalUser,
) -> Result<Json<Value>, ApiError> {
    let licenses = crate::flows::owned_licenses::licenses_of(
        state.store.as_ref(),
        &state.catalog,
        &user.user.email,
    )
    .await?;
    Ok(Json(json!({ "licenses": licenses })))
}
