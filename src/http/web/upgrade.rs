//! The Upgrade job (`DOMAIN.md` §6.2–6.3, `../shared/design/PORTAL.md` §5): where Pulse hands a
//! purchase into the portal. `GET /portal/upgrade?portal_handoff_id=` (also reached from
//! `/portal?portal_handoff_id=`) looks the handoff up as the browser's lookup of §6.2 does
//! (stamping `resolved_at` once) and offers the self-hosted plans checkout sells
//! (`aggregates::handoff::offers`); its form, `POST /portal/upgrade`, starts the Stripe Checkout
//! for the chosen plan (303 to it) through the same use case as `POST /v1/checkout/session`, under
//! an idempotency key derived from the handoff and the choice, so a double submit reaches the same
//! Checkout Session. No sign-in is needed: Stripe's Checkout asks for the email, as before.

use super::see_other;
use crate::engine::command::CommandError;
use crate::flows::purchase::{parse_handoff_id, StartCheckoutRequest};
use crate::flows::FlowError;
use crate::http::checkout::checkout;
use crate::http::error::ApiError;
use crate::http::extract::{ApiForm, ApiQuery};
use crate::http::licensing::metadata;
use crate::http::pages::{nonce, render};
use crate::http::AppState;
use aggregates::catalog::BillingCycle;
use aggregates::error::DomainError;
use aggregates::handoff::{offers, HandoffStatus};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the Upgrade job.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade_page, upgrade_form))
}

/// One plan the page offers.
struct OfferChoice {
    /// `plan:cycle`, what the form posts.
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "portal/upgrade.html")]
struct UpgradePage<'a> {
    nonce: &'a str,
    /// The handoff, while it can still start a checkout.
    open: Option<String>,
    offers: Vec<OfferChoice>,
    expires: Option<String>,
    closed: &'static str,
    problem: Option<&'static str>,
}

/// The query of the Upgrade page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpgradeQuery {
    portal_handoff_id: String,
    problem: Option<String>,
}

/// The sentence a refused checkout's code stands for.
fn problem_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "handoff_completed" => "This purchase is complete already.",
        "handoff_expired" => "This upgrade page expired: start again from Pulse.",
        "plan_not_purchasable" | "unknown_plan" | "invalid_request" => {
            "That plan cannot be bought here: pick one of the list."
        }
        "stripe_unavailable" => "Stripe did not answer; try again in a moment.",
        _ => return None,
    })
}

fn price_label(amount_minor: i64, currency: &str, cycle: BillingCycle) -> String {
    let per = match cycle {
        BillingCycle::Monthly => "month",
        BillingCycle::Annual => "year",
    };
    format!(
        "{}.{:02} {} a {per}",
        amount_minor / 100,
        amount_minor % 100,
        currency.to_uppercase()
    )
}

/// `GET /portal/upgrade?portal_handoff_id=`.
#[utoipa::path(get, path = "/portal/upgrade", tag = "pages",
    params(("portal_handoff_id" = String, Query, description = "The handoff Pulse created (`cph_…`)"),
           ("problem" = Option<String>, Query, description = "The refusal of the form that led here")),
    responses(
        (status = 200, description = "The plans to pick from, or what became of the handoff (completed, expired)", content_type = "text/html"),
        (status = 404, description = "No such handoff: a page saying so", content_type = "text/html")))]
pub(super) async fn upgrade_page(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UpgradeQuery>,
) -> Result<Response, ApiError> {
    let nonce = nonce();
    let problem = query.problem.as_deref().and_then(problem_text);
    let closed_page = |status, closed| {
        let page = UpgradePage {
            nonce: &nonce,
            open: None,
            offers: Vec::new(),
            expires: None,
            closed,
            problem,
        };
        render(status, &page, &nonce)
    };
    let Ok(handoff_id) = parse_handoff_id(&query.portal_handoff_id) else {
        return Ok(closed_page(
            StatusCode::NOT_FOUND,
            "This upgrade link is not valid: start again from Pulse.",
        ));
    };
    let handoff = match checkout(&state)
        .resolve_handoff(&handoff_id, metadata("browser"))
        .await
    {
        Ok(handoff) => handoff,
        Err(
            FlowError::Domain(DomainError::NotFound { .. })
            | FlowError::Command(CommandError::Domain(DomainError::NotFound { .. })),
        ) => {
            return Ok(closed_page(
                StatusCode::NOT_FOUND,
                "This upgrade link is not valid: start again from Pulse.",
            ))
        }
        Err(other) => return Err(other.into()),
    };
    match handoff.status(chrono::Utc::now()) {
        HandoffStatus::Completed => {
            return Ok(closed_page(
                StatusCode::OK,
                "This purchase is complete: go back to Pulse, which activates the license.",
            ))
        }
        HandoffStatus::Expired => {
            return Ok(closed_page(
                StatusCode::OK,
                "This upgrade page expired: start again from Pulse.",
            ))
        }
        HandoffStatus::Created | HandoffStatus::Resolved | HandoffStatus::CheckoutStarted => {}
    }
    let offers = offers(&state.catalog)
        .into_iter()
        .map(|offer| OfferChoice {
            value: format!("{}:{}", offer.plan_key, offer.billing_cycle.as_str()),
            label: format!(
                "{} — {} monitored systems, {}",
                state
                    .catalog
                    .tier(&offer.tier)
                    .map_or(offer.plan_key.as_str(), |tier| tier.display.as_str()),
                offer.max_monitored_systems,
                price_label(
                    offer.price.amount_minor,
                    &offer.price.currency,
                    offer.billing_cycle
                )
            ),
        })
        .collect();
    let page = UpgradePage {
        nonce: &nonce,
        open: Some(handoff.handoff_id.to_string()),
        offers,
        expires: Some(handoff.expires_at.format("%Y-%m-%d %H:%M").to_string()),
        closed: "",
        problem,
    };
    Ok(render(StatusCode::OK, &page, &nonce))
}

/// What the Upgrade form posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpgradeForm {
    portal_handoff_id: String,
    /// `plan:cycle`, e.g. `pro:monthly`.
    offer: String,
}

/// `POST /portal/upgrade`.
#[utoipa::path(post, path = "/portal/upgrade", tag = "pages",
    request_body(content = UpgradeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the Stripe Checkout of the chosen plan (a local page in local checkout mode), or back to the Upgrade page with `problem` (`handoff_completed`, `handoff_expired`, `plan_not_purchasable`, `stripe_unavailable`)"),
        (status = 403, description = "`cross_site_request`", body = crate::http::error::ErrorBody)))]
pub(super) async fn upgrade_form(
    State(state): State<AppState>,
    ApiForm(form): ApiForm<UpgradeForm>,
) -> Result<Response, ApiError> {
    let Ok(handoff_id) = parse_handoff_id(&form.portal_handoff_id) else {
        return Ok(see_other("/portal"));
    };
    let back = |code: &str| {
        see_other(&format!(
            "/portal/upgrade?portal_handoff_id={handoff_id}&problem={code}"
        ))
    };
    let chosen = form.offer.split_once(':').and_then(|(plan, cycle)| {
        let cycle = BillingCycle::ALL
            .into_iter()
            .find(|c| c.as_str() == cycle)?;
        let plan = state.catalog.plan(plan)?;
        Some((plan.key.clone(), plan.tier.clone(), cycle))
    });
    let Some((plan_key, tier, billing_cycle)) = chosen else {
        return Ok(back("unknown_plan"));
    };
    let key = format!(
        "portal-upgrade:{handoff_id}:{plan_key}:{}",
        billing_cycle.as_str()
    );
    let request = StartCheckoutRequest {
        portal_handoff_id: handoff_id.to_string(),
        plan_key,
        tier,
        billing_cycle,
        trial: false,
    };
    match checkout(&state)
        .start_checkout(&request, Some(&key), metadata("browser"))
        .await
    {
        Ok(started) => Ok(see_other(&started.url)),
        Err(FlowError::Domain(refusal) | FlowError::Command(CommandError::Domain(refusal))) => {
            Ok(back(refusal.code()))
        }
        Err(FlowError::Stripe(_)) => Ok(back("stripe_unavailable")),
        Err(other) => Err(other.into()),
    }
}
