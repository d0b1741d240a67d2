//! Staff routes for support (`/v1/staff/…`), and the extractor every staff and service route
//! authenticates with: a `Bearer stf_….…` token whose request is recorded in the log before it is
//! answered ([`crate::flows::staff`]). Support reads an account's home (billing, workspaces and what each
//! is entitled to, members, its owners' licenses, actions needed) and licenses with their billing
//! state and entitlements, and replays them: the timeline with what each event changed, the state
//! as of a position or a time, and why each field is what it is ([`crate::flows::support`]).

use super::consistency::ReadAfter;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, Bearer};
use super::licensing::metadata;
use super::AppState;
use crate::engine::store::READ_PAGE_MAX;
use crate::flows::staff::{authenticate, record_access, StaffPrincipal};
use crate::flows::support::{history, SubjectKind};
use crate::flows::FlowError;
use aggregates::account::OpenAccount;
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email, LicenseId};
use aggregates::license::IssuedLicense;
use aggregates::staff::StaffRole;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::account_home::{account_home, LicenseBilling};
use projections::accounts::Accounts;
use projections::entitlements::license_entitlements;
use projections::licenses::{Licenses, LicensesByEmail, OwnedLicenses};
use projections::replay::{Cut, Step};
use projections::DocumentProjection;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this area.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(licenses_by_email))
        .routes(routes!(license))
        .routes(routes!(license_timeline))
        .routes(routes!(license_as_of))
        .routes(routes!(license_why))
        .routes(routes!(account_timeline))
        .routes(routes!(account_as_of))
        .routes(routes!(account_why))
}

/// Most licenses one staff answer lists; an owner with more is told the list was cut.
const STAFF_LICENSES_MAX: usize = 100;

/// An authenticated staff or service caller whose request has been recorded.
pub(super) struct Staff(pub StaffPrincipal);

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Bearer(token) = Bearer::from_request_parts(parts, state).await?;
        let principal = authenticate(state.store.as_ref(), &state.keys, &token).await?;
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        record_access(
            state.store.as_ref(),
            &state.keys,
            &principal,
            parts.method.as_str(),
            path,
            metadata(&principal.actor()),
        )
        .await?;
        Ok(Staff(principal))
    }
}

impl Staff {
    /// Refuses (403) unless the caller has `role`.
    pub(super) fn require(&self, role: StaffRole, action: &'static str) -> Result<(), ApiError> {
        Ok(self.0.require(role, action)?)
    }
}

/// One document of a projection's active generation.
pub(super) async fn document<P: DocumentProjection>(
    state: &AppState,
    key: &str,
) -> Result<Option<P::Document>, FlowError> {
    match state.store.read_document(P::NAME, key).await? {
        Some(body) => decoded(body, P::NAME).map(Some),
        None => Ok(None),
    }
}

/// The licenses `emails` own, at most [`STAFF_LICENSES_MAX`]; and whether the list was cut.
async fn licenses_of(
    state: &AppState,
    emails: impl IntoIterator<Item = String>,
) -> Result<(Vec<IssuedLicense>, bool), FlowError> {
    let mut licenses = Vec::new();
    for email in emails {
        let owned: Option<OwnedLicenses> = document::<LicensesByEmail>(state, &email).await?;
        for license_id in owned.map(|o| o.license_ids).unwrap_or_default() {
            if licenses.len() == STAFF_LICENSES_MAX {
                return Ok((licenses, true));
            }
            licenses.extend(document::<Licenses>(state, &license_id).await?);
        }
    }
    Ok((licenses, false))
}

/// `GET /v1/staff/accounts/{account_id}` (support): the account home.
#[utoipa::path(get, path = "/v1/staff/accounts/{account_id}", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "The account home: billing, workspaces and their entitlements, members, invitations, the owners' licenses, `actions_needed`"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn account(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(account_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "read accounts")?;
    let not_found = || ApiError::flow(DomainError::NotFound { entity: "account" }.into());
    AccountId::parse(&account_id).map_err(|_| not_found())?;
    let account: OpenAccount = document::<Accounts>(&state, &account_id)
        .await?
        .ok_or_else(not_found)?;
    let owners = account
        .members
        .values()
        .filter(|m| m.role == aggregates::account::Role::Owner)
        .map(|m| m.email.to_string())
        .collect::<Vec<_>>();
    let (licenses, truncated) = licenses_of(&state, owners).await?;
    let mut body = json!(account_home(
        &account,
        &licenses,
        &state.catalog,
        Utc::now()
    ));
    body["licenses_truncated"] = json!(truncated);
    Ok(Json(body))
}

/// `GET /v1/staff/licenses/{license_id}` (support): a license's billing state and entitlements.
#[utoipa::path(get, path = "/v1/staff/licenses/{license_id}", tag = "staff",
    security(("staff_token" = [])),
    params(("license_id" = String, Path, description = "The license (`lic_…`)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "The license with its billing state and entitlements"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn license(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(license_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "read licenses")?;
    let not_found = || ApiError::flow(DomainError::NotFound { entity: "license" }.into());
    LicenseId::parse(&license_id).map_err(|_| not_found())?;
    let license = document::<Licenses>(&state, &license_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(license_body(&state, &license)))
}

fn license_body(state: &AppState, license: &IssuedLicense) -> Value {
    json!({
        "billing": LicenseBilling::of(license, &state.catalog),
        "entitlements": license_entitlements(license, &state.catalog, Utc::now(), None),
    })
}

/// What `GET /v1/staff/licenses` filters by.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LicensesQuery {
    email: String,
}

/// `GET /v1/staff/licenses?email=` (support): the licenses an email owns.
#[utoipa::path(get, path = "/v1/staff/licenses", tag = "staff",
    security(("staff_token" = [])),
    params(("email" = String, Query, description = "The owner's email (recorded as the person's id, never the address)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "The licenses the email owns, each with its billing state and entitlements"),
        (status = 403, description = "`forbidden`", body = ErrorBody)))]
pub(super) async fn licenses_by_email(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiQuery(query): ApiQuery<LicensesQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "read licenses")?;
    let email = Email::parse(&query.email)?;
    let (licenses, truncated) = licenses_of(&state, [email.to_string()]).await?;
    let licenses: Vec<Value> = licenses.iter().map(|l| license_body(&state, l)).collect();
    Ok(Json(json!({
        "email": email,
        "licenses": licenses,
        "truncated": truncated,
    })))
}

/// Decodes a stored JSON document into its type; one that does not decode is a broken invariant.
pub(super) fn decoded<T: DeserializeOwned>(body: Value, what: &str) -> Result<T, FlowError> {
    serde_json::from_value(body).map_err(|e| {
        crate::engine::store::StoreError::Invariant(format!("unreadable {what} document: {e}"))
            .into()
    })
}

/// Which kind of subject a replay route is for (`…/licenses/…` or `…/accounts/…`).
pub(super) trait ReplayRoute {
    /// The kind.
    const KIND: SubjectKind;
}

/// Replay routes under `/v1/staff/licenses/{id}/…`.
pub(super) struct LicenseRoutes;
impl ReplayRoute for LicenseRoutes {
    const KIND: SubjectKind = SubjectKind::License;
}

/// Replay routes under `/v1/staff/accounts/{id}/…`.
pub(super) struct AccountRoutes;
impl ReplayRoute for AccountRoutes {
    const KIND: SubjectKind = SubjectKind::Account;
}

/// Steps per timeline page unless the caller asks for fewer.
const TIMELINE_PAGE_DEFAULT: usize = 100;

/// A page of a timeline: the steps after a position, at most `limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelinePage {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/staff/{licenses|accounts}/{id}/timeline?after=&limit=` (support): every event of the
/// subject's streams in global order, with actor, causation, recorded and effective time, and the
/// fields of its billing state and entitlements the event changed (before → after).
async fn timeline<R: ReplayRoute>(
    state: AppState,
    staff: Staff,
    id: String,
    page: TimelinePage,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "replay history")?;
    let limit = page.limit.unwrap_or(TIMELINE_PAGE_DEFAULT);
    if !(1..=READ_PAGE_MAX).contains(&limit) {
        return Err(ApiError::flow(
            DomainError::invalid("limit", format!("must be 1 to {READ_PAGE_MAX}")).into(),
        ));
    }
    let history = history(state.store.as_ref(), R::KIND, &id).await?;
    let steps: Vec<Step> = history
        .timeline(&state.catalogs)?
        .into_iter()
        .filter(|step| page.after.is_none_or(|after| step.position > after))
        .take(limit + 1)
        .collect();
    let more = steps.len() > limit;
    let steps = &steps[..steps.len().min(limit)];
    Ok(Json(json!({
        "kind": R::KIND,
        "id": id,
        "steps": steps,
        "next_after": more.then(|| steps.last().map(|s| s.position)).flatten(),
        "streams_truncated": history.streams_truncated,
    })))
}

/// Where an as-of question cuts: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AsOfQuery {
    position: Option<i64>,
    recorded_at: Option<DateTime<Utc>>,
    effective_at: Option<DateTime<Utc>>,
}

/// `GET /v1/staff/{licenses|accounts}/{id}/as-of?position=|recorded_at=|effective_at=` (support):
/// the billing state and entitlements as they were then (`null` before the subject existed).
async fn as_of<R: ReplayRoute>(
    state: AppState,
    staff: Staff,
    id: String,
    query: AsOfQuery,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "replay history")?;
    let cut = match (query.position, query.recorded_at, query.effective_at) {
        (Some(position), None, None) => Cut::Position(position),
        (None, Some(at), None) => Cut::RecordedAt(at),
        (None, None, Some(at)) => Cut::EffectiveAt(at),
        _ => {
            return Err(ApiError::flow(
                DomainError::invalid(
                    "as_of",
                    "give exactly one of position, recorded_at, effective_at",
                )
                .into(),
            ))
        }
    };
    let history = history(state.store.as_ref(), R::KIND, &id).await?;
    let view = history.as_of(&state.catalogs, cut)?;
    Ok(Json(json!({ "kind": R::KIND, "id": id, "view": view })))
}

/// `GET /v1/staff/{licenses|accounts}/{id}/why` (support): for every field of the billing state and
/// entitlements now, its value and the event that last set it.
async fn why<R: ReplayRoute>(
    state: AppState,
    staff: Staff,
    id: String,
) -> Result<Json<Value>, ApiError> {
    staff.require(StaffRole::Support, "replay history")?;
    let history = history(state.store.as_ref(), R::KIND, &id).await?;
    let fields = history.why(&state.catalogs)?;
    Ok(Json(json!({ "kind": R::KIND, "id": id, "fields": fields })))
}

/// `GET /v1/staff/licenses/{license_id}/timeline` (support).
#[utoipa::path(get, path = "/v1/staff/licenses/{license_id}/timeline", tag = "staff",
    security(("staff_token" = [])),
    params(("license_id" = String, Path, description = "The license (`lic_…`)"),
           ("after" = Option<i64>, Query, description = "Steps after this position"),
           ("limit" = Option<usize>, Query, description = "At most this many steps"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "`{steps[], next_after}`: each event of the subject's streams with actor, causation, times and the fields it changed"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn license_timeline(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<TimelinePage>,
) -> Result<Json<Value>, ApiError> {
    timeline::<LicenseRoutes>(state, staff, id, page).await
}

/// `GET /v1/staff/licenses/{license_id}/as-of` (support).
#[utoipa::path(get, path = "/v1/staff/licenses/{license_id}/as-of", tag = "staff",
    security(("staff_token" = [])),
    params(("license_id" = String, Path, description = "The license (`lic_…`)"),
           ("position" = Option<i64>, Query, description = "As of this log position"),
           ("recorded_at" = Option<String>, Query, description = "As recorded at this time (RFC 3339)"),
           ("effective_at" = Option<String>, Query, description = "As in effect at this time (RFC 3339)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "The billing state and entitlements as they were then (`null` before the subject existed)"),
        (status = 400, description = "`invalid_request`: exactly one of the three", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn license_as_of(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<Json<Value>, ApiError> {
    as_of::<LicenseRoutes>(state, staff, id, query).await
}

/// `GET /v1/staff/licenses/{license_id}/why` (support).
#[utoipa::path(get, path = "/v1/staff/licenses/{license_id}/why", tag = "staff",
    security(("staff_token" = [])),
    params(("license_id" = String, Path, description = "The license (`lic_…`)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "For every field now: its value and the event that last set it"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn license_why(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    why::<LicenseRoutes>(state, staff, id).await
}

/// `GET /v1/staff/accounts/{account_id}/timeline` (support).
#[utoipa::path(get, path = "/v1/staff/accounts/{account_id}/timeline", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("after" = Option<i64>, Query, description = "Steps after this position"),
           ("limit" = Option<usize>, Query, description = "At most this many steps"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "`{steps[], next_after}`: each event of the subject's streams with actor, causation, times and the fields it changed"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn account_timeline(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<TimelinePage>,
) -> Result<Json<Value>, ApiError> {
    timeline::<AccountRoutes>(state, staff, id, page).await
}

/// `GET /v1/staff/accounts/{account_id}/as-of` (support).
#[utoipa::path(get, path = "/v1/staff/accounts/{account_id}/as-of", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("position" = Option<i64>, Query, description = "As of this log position"),
           ("recorded_at" = Option<String>, Query, description = "As recorded at this time (RFC 3339)"),
           ("effective_at" = Option<String>, Query, description = "As in effect at this time (RFC 3339)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "The billing state and entitlements as they were then (`null` before the subject existed)"),
        (status = 400, description = "`invalid_request`: exactly one of the three", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn account_as_of(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<Json<Value>, ApiError> {
    as_of::<AccountRoutes>(state, staff, id, query).await
}

/// `GET /v1/staff/accounts/{account_id}/why` (support).
#[utoipa::path(get, path = "/v1/staff/accounts/{account_id}/why", tag = "staff",
    security(("staff_token" = [])),
    params(("account_id" = String, Path, description = "The account (`a_…`)"), ("x-min-log-position" = Option<i64>, Header, description = "Answer only once every read model has folded this position (read-your-writes)")),
    responses(
        (status = 200, description = "For every field now: its value and the event that last set it"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody)))]
pub(super) async fn account_why(
    State(state): State<AppState>,
    _: ReadAfter,
    staff: Staff,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    why::<AccountRoutes>(state, staff, id).await
}
