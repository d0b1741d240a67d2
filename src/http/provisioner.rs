//! Routes of the hosted tenant provisioner (`/v1/provisioner/…`, a staff token with the
//! `provisioner` role): the queue of workspaces waiting to be created or torn down, each tenant's
//! lease refresh token to boot its runtime with, and the tenant's state as the provisioner reports
//! it (`active` once booted, `failed`, `deleted`, …).

use super::consistency::ReadAfter;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use super::licensing::metadata;
use super::staff::{decoded, Staff};
use super::AppState;
use crate::engine::store::READ_PAGE_MAX;
use crate::flows::hosted::{change_tenant_state, tenant_credentials, TenantStateChange};
use aggregates::account::Tenant;
use aggregates::staff::StaffRole;
use axum::extract::State;
use axum::Json;
use projections::tenant_work::{PendingTenant, TenantWork};
use projections::DocumentProjection;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pending_tenants))
        .routes(routes!(credentials))
        .routes(routes!(report_state))
}

/// Workspaces per page of the queue unless the caller asks for fewer.
const TENANT_PAGE_DEFAULT: usize = 100;

/// A page of the queue: after a cursor, at most `limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueuePage {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/provisioner/tenants?after=&limit=`: workspaces waiting for the provisioner, in a stable
/// order; `next_after` is the cursor of the next page (`null` on the last).
#[utoipa::path(get, path = "/v1/provisioner/tenants", tag = "staff",
    security(("staff_token" = [])),
    params(("after" = Option<String>, Query, description = "The cursor (`next_after` of the previous page)"),
           ("limit" = Option<usize>, Query, description = "At most this many (1 to 1000; default 100)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "`{tenants[], next_after}`: workspaces waiting to be created or torn down"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: the provisioner role is needed", body = ErrorBody),
        (status = 503, description = "`read_model_lagging`", body = ErrorBody)))]
pub(super) async fn pending_tenants(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiQuery(page): ApiQuery<QueuePage>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Provisioner, "provision tenants")?;
    let limit = page.limit.unwrap_or(TENANT_PAGE_DEFAULT);
    if !(1..=READ_PAGE_MAX).contains(&limit) {
        return Err(ApiError::flow(
            aggregates::error::DomainError::invalid(
                "limit",
                format!("must be 1 to {READ_PAGE_MAX}"),
            )
            .into(),
        ));
    }
    let rows = state
        .store
        .list_documents(TenantWork::NAME, page.after.as_deref(), limit)
        .await?;
    let next_after = (rows.len() == limit).then(|| rows.last().map(|(key, _)| key.clone()));
    let tenants = rows
        .into_iter()
        .map(|(_, body)| decoded::<PendingTenant>(body, TenantWork::NAME))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(
        json!({ "tenants": tenants, "next_after": next_after.flatten() }),
    ))
}

fn tenant_view(account_id: &str, tenant_id: &str, tenant: &Tenant) -> Value {
    json!({
        "org_id": account_id,
        "tenant_id": tenant_id,
        "state": tenant.state,
        "state_since": tenant.state_since,
        "instance_host": tenant.instance_host,
    })
}

/// `GET /v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/credentials`: the tenant's
/// lease refresh token (`entitlement_refresh_token`), for its runtime's configuration.
#[utoipa::path(get, path = "/v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/credentials", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("tenant_id" = String, Path, description = "The tenant (`t-…`)")),
    responses(
        (status = 200, description = "The tenant with its `entitlement_refresh_token`"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn credentials(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((account_id, tenant_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Provisioner, "provision tenants")?;
    let (tenant, token) =
        tenant_credentials(state.store.as_ref(), &state.keys, &account_id, &tenant_id).await?;
    let mut body = tenant_view(&account_id, &tenant_id, &tenant);
    body["entitlement_refresh_token"] = json!(token.expose());
    Ok(Json(body))
}

/// `POST /v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/state` `{state, reason}`.
#[utoipa::path(post, path = "/v1/provisioner/accounts/{account_id}/tenants/{tenant_id}/state", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("tenant_id" = String, Path, description = "The tenant (`t-…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer exactly what the first request did")),
    request_body = TenantStateChange,
    responses(
        (status = 200, description = "The tenant as it is now"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody)))]
pub(super) async fn report_state(
    State(state): State<AppState>,
    staff: Staff,
    IdempotencyKey(key): IdempotencyKey,
    ApiPath((account_id, tenant_id)): ApiPath<(String, String)>,
    ApiJson(change): ApiJson<TenantStateChange>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Provisioner, "provision tenants")?;
    let tenant = change_tenant_state(
        state.store.as_ref(),
        &state.catalog,
        &account_id,
        &tenant_id,
        &change,
        key.as_deref(),
        metadata(&staff.0.actor()),
    )
    .await?;
    Ok(Json(tenant_view(&account_id, &tenant_id, &tenant)))
}
