//! The HTTP surface: the router, the state every handler shares, and the cross-cutting layers
//! (request ids, body limits and deadlines, clean request targets, tracing); the server under it
//! is [`server`]. Handlers stay thin: they parse, call the domain through the
//! command handler or read a projection, and map errors in [`error`].

mod checkout;
pub mod client_limit;
pub mod consistency;
pub mod cross_site;
pub mod error;
mod export;
pub mod extract;
pub mod guard;
mod health;
mod hosted;
mod licensing;
pub mod openapi;
pub mod pages;
mod portal;
mod provisioner;
mod recovery;
pub mod server;
pub mod session;
pub mod sign_in;
mod staff;
mod trials;
mod web;

use crate::crypto::KeyMaterial;
use crate::engine::projection::ProjectionFold;
use crate::engine::store::Store;
use crate::gateways::stripe::StripeGateway;
use crate::metrics::Metrics;
use aggregates::catalog::{Catalog, CatalogHistory};
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::Router;
use error::REQUEST_ID_HEADER;
use std::sync::Arc;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Largest request body accepted by default; routes that need more (Stripe webhooks) say so.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// What every handler shares, behind one `Arc`: the router clones the state for every request and
/// every middleware that takes it, so a clone must cost one reference count, not one per field
/// (the per-field clones and drops were a tenth of the entitlement read's profile).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// The state over `shared`.
    pub fn new(shared: SharedState) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The services and settings of [`AppState`].
pub struct SharedState {
    /// The event store and read-model storage.
    pub store: Arc<dyn Store>,
    /// The projections this service runs.
    pub projections: Arc<[Arc<dyn ProjectionFold>]>,
    /// This process's counters.
    pub metrics: Arc<Metrics>,
    /// Most positions a projection may lag behind the log while the service reports ready.
    pub readiness_lag_max: i64,
    /// Signing keys and the bearer-secret hasher.
    pub keys: Arc<KeyMaterial>,
    /// The plan catalog in force (the newest published in the log).
    pub catalog: Arc<Catalog>,
    /// Every catalog version over the log's history, for replays.
    pub catalogs: Arc<CatalogHistory>,
    /// Stripe.
    pub stripe: Arc<StripeGateway>,
    /// The public base URL of this service (links in answers, e.g. the signup URL).
    pub public_url: Arc<str>,
    /// The v5 public key that verifies legacy tokens, when legacy exchange is configured.
    pub legacy: Option<Arc<crate::flows::exchange::LegacyVerifier>>,
    /// Installation tokens this process has seen bound.
    pub token_bindings: Arc<crate::flows::licensing::TokenBindings>,
    /// The licenses this process holds in memory for the installations' reads.
    pub license_cache: Arc<crate::flows::license_cache::LicenseCache>,
    /// Time a request's body has to arrive (`ServerLimits::body_read_timeout`).
    pub body_read_timeout: std::time::Duration,
    /// Sign-in requests waiting to be decided off the request path.
    pub sign_in_queue: Arc<crate::flows::sign_in::SignInQueue>,
    /// Sign-in requests per client address (this process's count).
    pub sign_in_limit: Arc<client_limit::ClientLimit>,
    /// Where the portal sends customers who need a person.
    pub support_email: Arc<str>,
    /// The self-hosted recovery jobs' queue, erasing store and limits.
    pub recovery: Arc<crate::flows::recovery::Recovery>,
}

/// A request's span: its method and path, never its query string (a sign-in link's token
/// travels there).
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Every route of the API, each with its description: what [`router`] serves and
/// `/openapi.json` shows.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(licensing::router())
        .merge(checkout::router())
        .merge(trials::router())
        .merge(hosted::router())
        .merge(staff::router())
        .merge(export::router())
        .merge(provisioner::router())
        .merge(sign_in::router())
        .merge(portal::router())
        .merge(recovery::router())
        .merge(openapi::router())
        .merge(web::router())
}

/// The whole application as one router, usable without a socket in tests.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let body_read_timeout = state.body_read_timeout;
    let origin: Arc<str> = cross_site::origin_of(&state.public_url).into();
    let (routes, document) = api_routes().split_for_parts();
    routes
        .layer(axum::Extension(Arc::new(document)))
        .fallback(guard::not_found)
        .method_not_allowed_fallback(guard::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(move |request, next| {
            guard::body_deadline(body_read_timeout, request, next)
        }))
        .layer(axum::middleware::from_fn_with_state(
            origin,
            cross_site::refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn(guard::clean_targets))
        .layer(axum::middleware::from_fn(consistency::log_position_header))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn(error::request_id_scope))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
