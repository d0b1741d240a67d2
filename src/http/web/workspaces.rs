//! The portal's Workspaces section (Clients for an MSP): each workspace with its state, Open for
//! a running one (a 303 to the workspace with its 60-second handoff), and for an Owner or Admin,
//! Delete and a create form. Refusals come back as fixed problem codes; the page always shows how
//! many of the plan's places are used.

use super::{back_to, member_view, see_other, PageUser, Section, Shell};
use crate::flows::access::MemberAccount;
use crate::flows::workspaces::{delete_workspace, open_workspace};
use crate::http::error::ApiError;
use crate::http::extract::{ApiForm, ApiPath};
use crate::http::licensing::metadata;
use crate::http::pages::render;
use crate::http::AppState;
use aggregates::account::TenantState;
use aggregates::ids::TenantId;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the Workspaces forms.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_form))
        .routes(routes!(delete_form))
        .routes(routes!(open_form))
}

struct WorkspaceRow {
    tenant_id: String,
    name: String,
    state: &'static str,
    openable: bool,
    deletable: bool,
}

#[derive(Template)]
#[template(path = "portal/workspaces.html")]
struct WorkspacesPage<'a> {
    nonce: &'a str,
    shell: Shell,
    title: &'static str,
    noun: String,
    one: &'static str,
    usage: String,
    workspaces: Vec<WorkspaceRow>,
}

/// The section.
pub(super) fn page(
    state: &AppState,
    nonce: &str,
    shell: Shell,
    current: &MemberAccount,
) -> Response {
    let account = &current.account;
    let context = aggregates::decider::Context::new(chrono::Utc::now(), &state.catalog);
    let (used, limit) = account.workspace_usage(&context);
    let title = Section::Workspaces.label(account.kind);
    let noun = title.to_lowercase();
    let one = match account.kind {
        aggregates::account::AccountKind::Msp => "a client",
        aggregates::account::AccountKind::Individual => "a workspace",
    };
    let page = WorkspacesPage {
        nonce,
        title,
        usage: format!("{used} of {limit} {noun} used."),
        noun,
        one,
        workspaces: account
            .tenants
            .iter()
            .map(|(tenant_id, tenant)| WorkspaceRow {
                tenant_id: tenant_id.to_string(),
                name: tenant
                    .display_name
                    .clone()
                    .unwrap_or_else(|| tenant_id.to_string()),
                state: tenant.state.as_str(),
                openable: tenant.state == TenantState::Active && tenant.instance_host.is_some(),
                deletable: !matches!(
                    tenant.state,
                    TenantState::Deleting | TenantState::Deleted | TenantState::Canceled
                ),
            })
            .collect(),
        shell,
    };
    render(StatusCode::OK, &page, nonce)
}

/// The create form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateForm {
    display_name: String,
}

/// `POST /portal/accounts/{account_id}/workspaces/create`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/workspaces/create", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    request_body(content = CreateForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to the section with `notice` or `problem`")))]
pub(super) async fn create_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath(raw_account): ApiPath<String>,
    ApiForm(form): ApiForm<CreateForm>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let account_id = &current.account.account_id;
    let created = crate::flows::hosted::provision_tenant(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        account_id,
        (&user.user_id, Some(form.display_name.as_str())),
        metadata(user.user_id.as_str()),
    )
    .await
    .map(|_| "created");
    back_to(account_id.as_str(), Section::Workspaces, created)
}

/// `POST /portal/accounts/{account_id}/workspaces/{tenant_id}/delete`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/workspaces/{tenant_id}/delete", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("tenant_id" = String, Path, description = "The workspace (`t-…`)")),
    responses((status = 303, description = "Back to the section with `notice` or `problem`")))]
pub(super) async fn delete_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath((raw_account, raw_tenant)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let account_id = &current.account.account_id;
    let deleted = match TenantId::parse(&raw_tenant) {
        Ok(tenant_id) => delete_workspace(
            state.store.as_ref(),
            &state.catalog,
            account_id,
            &user.user_id,
            &tenant_id,
            metadata(user.user_id.as_str()),
        )
        .await
        .map(|()| "deleted"),
        Err(refusal) => Err(refusal.into()),
    };
    back_to(account_id.as_str(), Section::Workspaces, deleted)
}

/// `POST /portal/accounts/{account_id}/workspaces/{tenant_id}/open`: to the workspace.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/workspaces/{tenant_id}/open", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("tenant_id" = String, Path, description = "The workspace (`t-…`)")),
    responses((status = 303, description = "To the workspace's `/auth/cloud-handoff` with a 60-second token, or back with `problem`")))]
pub(super) async fn open_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath((raw_account, raw_tenant)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let account_id = &current.account.account_id;
    let opened = match TenantId::parse(&raw_tenant) {
        Ok(tenant_id) => {
            open_workspace(
                state.store.as_ref(),
                &state.keys,
                account_id,
                &user,
                &tenant_id,
                chrono::Utc::now(),
            )
            .await
        }
        Err(refusal) => Err(refusal.into()),
    };
    match opened {
        Ok(handoff) => Ok(see_other(&handoff.url)),
        Err(refusal) => back_to(account_id.as_str(), Section::Workspaces, Err(refusal)),
    }
}
