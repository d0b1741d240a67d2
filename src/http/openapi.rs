//! The OpenAPI 3.1 document of the whole HTTP API. Each handler describes itself with
//! `#[utoipa::path]` (method, path, parameters, request body, answers, who may call it), and each
//! area registers its handlers through utoipa-axum's `routes!`, which adds the route to the router
//! and its operation to the document in one step; so the document is generated from the code the
//! router runs, and `tests/api/openapi.rs` fails when the router serves a path the document lacks.
//! Served at `GET /openapi.json`.

use super::AppState;
use axum::{Extension, Json};
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The document's fixed parts: what the API is, its error shape and its security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pulse Account",
        description = "The commercial ledger and customer account backend of Pulse: purchases, licenses and grants for self-hosted installations, hosted accounts and leases, Stripe webhooks, the customer portal's sign-in and access, and the staff and auditor routes. Every error is `ErrorBody`.",
        license(name = "UNLICENSED")
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "licensing", description = "Self-hosted installations: activation, grants, entitlements (DOMAIN.md §5, §7, §14)"),
        (name = "purchase", description = "Purchase handoff, Checkout, redemption, Stripe webhooks (§6, §9)"),
        (name = "hosted", description = "Hosted tenants' leases and trials (§8, §10)"),
        (name = "portal", description = "Sign-in by email, sessions and account access (PORTAL.md §2–3)"),
        (name = "staff", description = "Support, auditors and the tenant provisioner (staff tokens)"),
        (name = "operations", description = "Health, readiness, metrics, keys and this document"),
        (name = "pages", description = "The portal's web pages and their forms (HTML)")
    )
)]
pub struct ApiDoc;

/// Who may call what: bearer tokens of installations and staff, the portal's session cookie,
/// Stripe's signature.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "installation_token",
            bearer("An installation token (`pit_live_…`) from activation."),
        );
        components.add_security_scheme(
            "staff_token",
            bearer("A staff or service token (`stf_…`) from `pulse-account staff issue`."),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-pulse_cp_session",
                "The portal's session cookie, set by signing in.",
            ))),
        );
        components.add_security_scheme(
            "stripe_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Stripe-Signature",
                "Stripe's webhook signature over the raw body.",
            ))),
        );
    }
}

/// The route of the document itself.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API")))]
pub(super) async fn openapi(Extension(document): Extension<Arc<Document>>) -> Json<Document> {
    Json(document.as_ref().clone())
}
