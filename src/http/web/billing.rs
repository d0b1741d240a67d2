//! The portal's "Manage billing": an Owner or Admin is sent (303) to a Stripe Billing Portal
//! session for the account, or, in local checkout mode, to this service's stand-in page that
//! says plainly there is no Stripe behind it.

use super::{back_to, member_view, see_other, PageUser, Section, Shell};
use crate::flows::billing_portal::{manage_billing, ManageBilling};
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::http::pages::{nonce, render};
use crate::http::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of Manage billing.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manage_form))
        .routes(routes!(local_portal))
}

/// Where the billing portal returns: this account's Billing section.
pub(in crate::http) fn return_url(state: &AppState, account_id: &str) -> String {
    format!(
        "{}/portal/accounts/{account_id}/billing",
        state.public_url.trim_end_matches('/')
    )
}

/// `POST /portal/accounts/{account_id}/billing/manage`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/billing/manage", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    responses((status = 303, description = "To Stripe's billing portal (or the offline stand-in), or back with `problem`")))]
pub(super) async fn manage_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath(raw_account): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let account_id = &current.account.account_id;
    let opened = manage_billing(
        state.store.as_ref(),
        &state.stripe,
        account_id,
        &user.user_id,
        &return_url(&state, account_id.as_str()),
    )
    .await;
    match opened {
        Ok(ManageBilling::Stripe(url)) => Ok(see_other(&url)),
        Ok(ManageBilling::Local) => Ok(see_other(&format!(
            "/portal/accounts/{account_id}/billing/local"
        ))),
        Err(refusal) => back_to(account_id.as_str(), Section::Billing, Err(refusal)),
    }
}

#[derive(Template)]
#[template(path = "portal/billing_local.html")]
struct LocalPortalPage<'a> {
    nonce: &'a str,
    shell: Shell,
}

/// `GET /portal/accounts/{account_id}/billing/local`: the offline stand-in.
#[utoipa::path(get, path = "/portal/accounts/{account_id}/billing/local", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    responses(
        (status = 200, description = "Local checkout mode's stand-in for Stripe's billing portal", content_type = "text/html"),
        (status = 303, description = "Signed out or not a member: to `/portal`")))]
pub(super) async fn local_portal(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath(raw_account): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (user, accounts, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let nonce = nonce();
    let shell = Shell::new(
        &user,
        &accounts,
        &current,
        Section::Billing,
        &super::Outcome::default(),
    );
    Ok(render(
        StatusCode::OK,
        &LocalPortalPage {
            nonce: &nonce,
            shell,
        },
        &nonce,
    ))
}
