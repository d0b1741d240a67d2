//! Hosted signup over HTTP (`../shared/design/PORTAL.md` §3): the signup page, its form's target
//! `POST /api/public/signup` (a form gets a 303 to the Checkout Session, a JSON client its URL),
//! and the page the paid checkout returns to.

use crate::flows::signup::{start_signup, SignupRequest};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{FormOrJson, IdempotencyKey};
use crate::http::licensing::metadata;
use crate::http::pages::{nonce, render};
use crate::http::AppState;
use aggregates::catalog::BillingCycle;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of signup.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup_page))
        .routes(routes!(signup))
        .routes(routes!(signup_done))
}

/// The self-serve plans offered, with their names.
const PLANS: [(&str, &str); 5] = [
    ("cloud_starter", "Cloud Starter — 1 workspace, 10 systems"),
    ("cloud_power", "Cloud Power — 1 workspace, 30 systems"),
    ("cloud_max", "Cloud Max — 1 workspace, 75 systems"),
    ("cloud_founding", "Cloud Founding — 1 workspace, 10 systems"),
    ("msp_starter", "MSP Starter — 10 clients, 50 systems"),
];

#[derive(Template)]
#[template(path = "portal/signup.html")]
struct SignupPage<'a> {
    nonce: &'a str,
    plans: &'a [(&'static str, &'static str)],
}

/// `GET /portal/signup`.
#[utoipa::path(get, path = "/portal/signup", tag = "pages",
    responses((status = 200, description = "The signup form", content_type = "text/html")))]
pub(super) async fn signup_page() -> Response {
    let nonce = nonce();
    render(
        StatusCode::OK,
        &SignupPage {
            nonce: &nonce,
            plans: &PLANS,
        },
        &nonce,
    )
}

#[derive(Template)]
#[template(path = "portal/signup_done.html")]
struct DonePage<'a> {
    nonce: &'a str,
}

/// `GET /portal/signup/done`: where a paid signup's checkout returns.
#[utoipa::path(get, path = "/portal/signup/done", tag = "pages",
    params(("session_id" = Option<String>, Query, description = "Stripe's Checkout Session, ignored")),
    responses((status = 200, description = "What happens next", content_type = "text/html")))]
pub(super) async fn signup_done() -> Response {
    let nonce = nonce();
    render(StatusCode::OK, &DonePage { nonce: &nonce }, &nonce)
}

/// What a signup sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignupBody {
    email: String,
    /// The organisation's name (1 to 120 characters): the account's name.
    org_name: String,
    /// A `cloud_*` plan or `msp_starter`.
    plan_key: String,
    /// `monthly` (default) or `annual`.
    #[schema(value_type = Option<String>)]
    billing_cycle: Option<BillingCycle>,
}

/// `POST /api/public/signup`.
#[utoipa::path(post, path = "/api/public/signup", tag = "portal",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry reach the same Checkout Session")),
    request_body(content = SignupBody, description = "JSON, or the signup page's form"),
    responses(
        (status = 200, description = "`{url}`: the Stripe Checkout to pay in (a local page in local checkout mode)"),
        (status = 303, description = "A form: to the Checkout"),
        (status = 400, description = "`invalid_request`, `unknown_plan`, `plan_not_purchasable` (only Cloud plans and MSP Starter are self-serve)", body = ErrorBody),
        (status = 403, description = "`cross_site_request`", body = ErrorBody),
        (status = 502, description = "`stripe_unavailable`", body = ErrorBody)))]
pub(super) async fn signup(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    body: FormOrJson<SignupBody>,
) -> Result<Response, ApiError> {
    let request = SignupRequest {
        email: body.value.email,
        org_name: body.value.org_name,
        plan_key: body.value.plan_key,
        billing_cycle: body.value.billing_cycle.unwrap_or(BillingCycle::Monthly),
    };
    let url = start_signup(
        state.store.as_ref(),
        &state.stripe,
        &state.catalog,
        (&state.public_url, &request),
        key.as_deref(),
        metadata("public"),
    )
    .await?;
    if body.from_form {
        return Ok(super::see_other(&url));
    }
    Ok(Json(json!({ "url": url })).into_response())
}
