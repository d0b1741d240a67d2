//! The self-hosted jobs of Billing (`../shared/design/PORTAL.md` §4–5) for a signed-in owner of
//! licenses: a job picker (`?service=manage|retrieve|refund|data` opens one panel) shown only when
//! the email owns a license, and the forms the panels post. The session proves the email, so no
//! code is asked; the jobs are the same use cases the code-confirmed API runs
//! (`crate::flows::recovery`, `crate::flows::self_refund`).
//!
//! - `POST /portal/self-hosted/manage`: 303 to Stripe's billing portal for the licenses' customer
//!   (in local checkout mode, back with a notice that there is none);
//! - `POST /portal/self-hosted/retrieve`: a page with every license and its activation key;
//! - `POST /portal/self-hosted/refund {license_id}`: the self-refund, back with its outcome;
//! - `POST /portal/self-hosted/export`: the signed export, as a JSON download;
//! - `POST /portal/self-hosted/delete {confirm=yes}`: revokes the licenses, erases the person, and
//!   answers a page saying so (the session is gone with the person).
//!
//! Each form names the page it came from (`back`: `/portal` or an account's Billing); it is
//! checked, and the answer goes back there with a fixed notice or problem code.

use super::{see_other, PageUser};
use crate::flows::billing_portal::ManageBilling;
use crate::flows::owned_licenses::LicenseView;
use crate::flows::recovery::{self, Deleted, RetrievedLicense};
use crate::flows::FlowError;
use crate::http::error::ApiError;
use crate::http::extract::ApiForm;
use crate::http::licensing::metadata;
use crate::http::pages::{nonce, render};
use crate::http::session::cleared_session_cookie;
use crate::http::AppState;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, LicenseId};
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the self-hosted jobs.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manage_form))
        .routes(routes!(retrieve_form))
        .routes(routes!(refund_form))
        .routes(routes!(export_form))
        .routes(routes!(delete_form))
}

/// A self-hosted job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Service {
    /// Stripe's billing portal for the licenses.
    Manage,
    /// The activation keys.
    Retrieve,
    /// The self-refund.
    Refund,
    /// Export or delete the person's data.
    Data,
}

impl Service {
    const ALL: [Service; 4] = [
        Service::Manage,
        Service::Retrieve,
        Service::Refund,
        Service::Data,
    ];

    pub(super) fn slug(self) -> &'static str {
        match self {
            Service::Manage => "manage",
            Service::Retrieve => "retrieve",
            Service::Refund => "refund",
            Service::Data => "data",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Service::Manage => "Manage billing",
            Service::Retrieve => "Retrieve license key",
            Service::Refund => "Request a refund",
            Service::Data => "Your data",
        }
    }

    /// The job a `?service=` names, if any.
    pub(super) fn parse(raw: Option<&str>) -> Option<Service> {
        Service::ALL.into_iter().find(|s| Some(s.slug()) == raw)
    }
}

/// A link of the job picker.
pub(super) struct ServiceLink {
    pub(super) href: String,
    pub(super) label: &'static str,
    pub(super) current: bool,
}

/// The self-hosted part of a Billing page: the licenses, the job picker and the open panel.
pub(super) struct SelfHostedJobs {
    pub(super) email: String,
    pub(super) licenses: Vec<LicenseView>,
    pub(super) back: String,
    pub(super) service: Option<Service>,
    pub(super) services: Vec<ServiceLink>,
    pub(super) window_days: u32,
}

impl SelfHostedJobs {
    /// The jobs of `email`'s `licenses` on the page at `back`, with `service` open; `None` when
    /// the email owns no license (the jobs do not appear).
    pub(super) fn of(
        state: &AppState,
        email: &str,
        licenses: Vec<LicenseView>,
        back: &str,
        service: Option<Service>,
    ) -> Option<SelfHostedJobs> {
        if licenses.is_empty() {
            return None;
        }
        Some(SelfHostedJobs {
            email: email.to_owned(),
            licenses,
            back: back.to_owned(),
            service,
            services: Service::ALL
                .iter()
                .map(|s| ServiceLink {
                    href: format!("{back}?service={}", s.slug()),
                    label: s.label(),
                    current: Some(*s) == service,
                })
                .collect(),
            window_days: state.recovery.self_refund_window_days,
        })
    }
}

/// The page a form came from, if it is one the jobs are shown on; else `/portal`.
fn checked_back(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return String::from("/portal");
    };
    let account_billing = raw
        .strip_prefix("/portal/accounts/")
        .and_then(|rest| rest.strip_suffix("/billing"))
        .is_some_and(|id| AccountId::parse(id).is_ok());
    if raw == "/portal" || account_billing {
        raw.to_owned()
    } else {
        String::from("/portal")
    }
}

/// 303 back to the job's panel with a fixed outcome code.
fn back_with(back: &str, service: Service, outcome: &str) -> Response {
    see_other(&format!("{back}?service={}&{outcome}", service.slug()))
}

/// What most job forms post.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobForm {
    back: Option<String>,
}

/// `POST /portal/self-hosted/manage`.
#[utoipa::path(post, path = "/portal/self-hosted/manage", tag = "pages",
    request_body(content = JobForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "To Stripe's billing portal for the licenses' customer, or back with `problem` (`no_billing_record`) or, in local checkout mode, `notice=local_billing`")))]
pub(super) async fn manage_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiForm(form): ApiForm<JobForm>,
) -> Result<Response, ApiError> {
    let Some(user) = user else {
        return Ok(see_other("/portal"));
    };
    let back = checked_back(form.back.as_deref());
    let return_url = format!(
        "{}{back}?service=manage",
        state.public_url.trim_end_matches('/')
    );
    match recovery::manage(
        state.store.as_ref(),
        &state.stripe,
        &user.email,
        &return_url,
    )
    .await
    {
        Ok(ManageBilling::Stripe(url)) => Ok(see_other(&url)),
        Ok(ManageBilling::Local) => Ok(back_with(&back, Service::Manage, "notice=local_billing")),
        Err(FlowError::Domain(DomainError::NoBillingRecord)) => Ok(back_with(
            &back,
            Service::Manage,
            "problem=no_license_billing",
        )),
        Err(FlowError::Stripe(_)) => Ok(back_with(
            &back,
            Service::Manage,
            "problem=stripe_unavailable",
        )),
        Err(other) => Err(other.into()),
    }
}

#[derive(Template)]
#[template(path = "portal/license_keys.html")]
struct KeysPage<'a> {
    nonce: &'a str,
    licenses: Vec<RetrievedLicense>,
    back: &'a str,
    support_email: &'a str,
}

/// `POST /portal/self-hosted/retrieve`.
#[utoipa::path(post, path = "/portal/self-hosted/retrieve", tag = "pages",
    request_body(content = JobForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Every license of the signed-in email with its activation key (never cached)", content_type = "text/html"),
        (status = 303, description = "Signed out: to `/portal`")))]
pub(super) async fn retrieve_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiForm(form): ApiForm<JobForm>,
) -> Result<Response, ApiError> {
    let Some(user) = user else {
        return Ok(see_other("/portal"));
    };
    let back = checked_back(form.back.as_deref());
    let licenses = recovery::retrieve(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &user.email,
    )
    .await?;
    let nonce = nonce();
    let page = KeysPage {
        nonce: &nonce,
        licenses,
        back: &format!("{back}?service=retrieve"),
        support_email: &state.support_email,
    };
    Ok(render(StatusCode::OK, &page, &nonce))
}

/// What the refund form posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundForm {
    back: Option<String>,
    license_id: String,
}

/// `POST /portal/self-hosted/refund`.
#[utoipa::path(post, path = "/portal/self-hosted/refund", tag = "pages",
    request_body(content = RefundForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to the refund panel with `notice=refunded`, or `problem=` `refund_window_passed`, `refund_already_refunded`, `refund_not_paid`, `refund_revoked`, `refund_in_progress`, `not_found`, `stripe_unavailable`")))]
pub(super) async fn refund_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiForm(form): ApiForm<RefundForm>,
) -> Result<Response, ApiError> {
    let Some(user) = user else {
        return Ok(see_other("/portal"));
    };
    let back = checked_back(form.back.as_deref());
    let Ok(license_id) = LicenseId::parse(&form.license_id) else {
        return Ok(back_with(&back, Service::Refund, "problem=not_found"));
    };
    let metadata = metadata(user.user_id.as_str());
    // Its own task: once Stripe is asked, its answer is recorded even if the browser goes away.
    let refunded = tokio::spawn(async move {
        let refunds = state.self_refunds();
        refunds
            .refund_license(&user.email, &license_id, metadata)
            .await
    })
    .await
    .map_err(|_| FlowError::Broken("the self-refund task ended without an answer"))?;
    let outcome = match refunded {
        Ok(_) => String::from("notice=refunded"),
        Err(FlowError::Domain(DomainError::RefundNotEligible { reason })) => {
            format!("problem=refund_{}", reason.as_str())
        }
        Err(FlowError::Domain(DomainError::RefundInProgress)) => {
            String::from("problem=refund_in_progress")
        }
        Err(FlowError::UnknownActivationKey) => String::from("problem=not_found"),
        Err(FlowError::Stripe(_)) => String::from("problem=stripe_unavailable"),
        Err(other) => return Err(other.into()),
    };
    Ok(back_with(&back, Service::Refund, &outcome))
}

/// What the export form posts (nothing).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportForm {}

/// `POST /portal/self-hosted/export`.
#[utoipa::path(post, path = "/portal/self-hosted/export", tag = "pages",
    request_body(content = ExportForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`{export, signature}` as the API's `POST /v1/gdpr/export` answers it, as a download", content_type = "application/json"),
        (status = 303, description = "Signed out: to `/portal`")))]
pub(super) async fn export_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiForm(_): ApiForm<ExportForm>,
) -> Result<Response, ApiError> {
    let Some(user) = user else {
        return Ok(see_other("/portal"));
    };
    let signed = recovery::export(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &user.email,
        chrono::Utc::now(),
    )
    .await?;
    let mut response = axum::Json(signed).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"pulse-account-data.json\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What the delete form posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteForm {
    back: Option<String>,
    confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/data_deleted.html")]
struct DeletedPage<'a> {
    nonce: &'a str,
    deleted: Deleted,
}

/// `POST /portal/self-hosted/delete`.
#[utoipa::path(post, path = "/portal/self-hosted/delete", tag = "pages",
    request_body(content = DeleteForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The licenses are revoked and the person erased (signed out everywhere): a page saying so, and what Stripe still holds", content_type = "text/html"),
        (status = 303, description = "Signed out: to `/portal`; without the confirmation box: back with `problem=confirm_required`")))]
pub(super) async fn delete_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiForm(form): ApiForm<DeleteForm>,
) -> Result<Response, ApiError> {
    let Some(user) = user else {
        return Ok(see_other("/portal"));
    };
    if form.confirm.as_deref() != Some("yes") {
        let back = checked_back(form.back.as_deref());
        return Ok(back_with(&back, Service::Data, "problem=confirm_required"));
    }
    let metadata = metadata(user.user_id.as_str());
    // Its own task: a browser that goes away must not cut an erasure short.
    let deleted = tokio::spawn(async move {
        recovery::delete(state.eraser(), &user.email, user.user_id.as_str(), metadata).await
    })
    .await
    .map_err(|_| FlowError::Broken("the erasure task ended without an answer"))??;
    let nonce = nonce();
    let mut response = render(
        StatusCode::OK,
        &DeletedPage {
            nonce: &nonce,
            deleted,
        },
        &nonce,
    );
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_session_cookie());
    Ok(response)
}
