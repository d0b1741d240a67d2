//! The portal's web pages (`../shared/design/PORTAL.md` §5): server-rendered HTML over the same use
//! cases as the JSON API (`crate::flows::access`, `crate::flows::sign_in`), with no script.
//!
//! - `GET /` sends a browser to `/portal`.
//! - `GET /portal`: signed out, the sign-in form; signed in, the landing section of the account
//!   (`?account=` picks one): Workspaces when it has hosted workspaces, else Billing.
//! - `GET /portal/accounts/{id}/{section}`: the account shell (switcher, sections) with one of
//!   Workspaces (Clients for an MSP), Access, Billing, Support, and Activity (the account's own
//!   history from the log).
//! - Forms post to `/portal/accounts/{id}/…` and answer 303 back to their section with a notice or
//!   a problem named by a fixed code (no text from the request is echoed); opening a workspace
//!   answers 303 to the workspace itself.
//!
//! Permission-honest: a Tech or Read-only member sees no mutation control, and the server refuses
//! a forged one anyway (the account decider decides). Every page carries the strict CSP of
//! [`super::pages`].

mod access;
mod billing;
mod self_hosted;
mod signup;
mod upgrade;
mod workspaces;

pub(super) use billing::return_url as billing_return_url;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::pages::{nonce, render};
use super::session::cleared_session_cookie;
use super::AppState;
use crate::flows::access::{accounts_of, member_account, MemberAccount};
use crate::flows::sign_in::{check_session, SessionCheck};
use aggregates::account::{AccountKind, OpenAccount};
use aggregates::ids::AccountId;
use aggregates::user::RegisteredUser;
use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use self_hosted::{SelfHostedJobs, Service};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the web portal.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(home))
        .routes(routes!(portal))
        .routes(routes!(section))
        .merge(access::router())
        .merge(workspaces::router())
        .merge(billing::router())
        .merge(self_hosted::router())
        .merge(signup::router())
        .merge(upgrade::router())
}

/// The signed-in user of a page, if any: a page shows the sign-in form instead of an error when
/// there is no live session.
pub(super) struct PageUser(Option<RegisteredUser>);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = super::session::cookie_value(parts) else {
            return Ok(PageUser(None));
        };
        let check = check_session(
            state.store.as_ref(),
            &state.keys,
            &value,
            chrono::Utc::now(),
        )
        .await?;
        Ok(PageUser(match check {
            SessionCheck::Live { user, .. } => Some(user),
            SessionCheck::Invalid | SessionCheck::Expired | SessionCheck::Revoked => None,
        }))
    }
}

/// A section of the account shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Section {
    /// Hosted workspaces (Clients for an MSP).
    Workspaces,
    /// Members and invitations.
    Access,
    /// The subscription.
    Billing,
    /// Where to get help.
    Support,
    /// What changed, when, by whom.
    Activity,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::Workspaces,
        Section::Access,
        Section::Billing,
        Section::Support,
        Section::Activity,
    ];

    fn slug(self) -> &'static str {
        match self {
            Section::Workspaces => "workspaces",
            Section::Access => "access",
            Section::Billing => "billing",
            Section::Support => "support",
            Section::Activity => "activity",
        }
    }

    fn label(self, kind: AccountKind) -> &'static str {
        match (self, kind) {
            (Section::Workspaces, AccountKind::Msp) => "Clients",
            (Section::Workspaces, AccountKind::Individual) => "Workspaces",
            (Section::Access, _) => "Access",
            (Section::Billing, _) => "Billing",
            (Section::Support, _) => "Support",
            (Section::Activity, _) => "Activity",
        }
    }

    /// The landing rule: hosted workspaces → Workspaces, else Billing.
    fn landing(account: &OpenAccount) -> Section {
        if account.tenants.is_empty() {
            Section::Billing
        } else {
            Section::Workspaces
        }
    }
}

/// One account in the switcher.
pub(super) struct AccountChoice {
    id: String,
    name: String,
    kind_label: &'static str,
}

/// A link of the section navigation.
pub(super) struct SectionLink {
    href: String,
    label: &'static str,
    current: bool,
}

/// What every page of the account shell shows around its section.
pub(super) struct Shell {
    account_id: String,
    account_name: String,
    kind_label: &'static str,
    role_label: &'static str,
    can_manage: bool,
    email: String,
    accounts: Vec<AccountChoice>,
    sections: Vec<SectionLink>,
    notice: Option<&'static str>,
    problem: Option<&'static str>,
}

/// What a page's query may carry: the outcome of the form that led here, as a fixed code.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Outcome {
    notice: Option<String>,
    problem: Option<String>,
    service: Option<String>,
}

/// The sentence a notice code stands for.
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "invited" => "Invitation sent. They join when they first sign in with that email.",
        "joined" => "They already had a Pulse Account and are a member now.",
        "role_changed" => "Role changed.",
        "removed" => "Removed.",
        "created" => "Created. It is being set up and opens once it runs.",
        "deleted" => "Deleted.",
        "refunded" => "Refunded: the payment goes back to your card, and the license is revoked.",
        "local_billing" => {
            "Local checkout mode: no Stripe account is configured, so there is no billing portal and no money is involved."
        }
        _ => return None,
    })
}

/// The sentence a refusal code stands for.
fn problem_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "forbidden" => "Your role does not allow that: an Owner or Admin is required.",
        "owner_required" => "Only an Owner grants or changes the Owner role.",
        "last_owner" => "An account keeps at least one Owner: make someone else Owner first.",
        "already_member" => "That email is a member already.",
        "invalid_email" => "That is not an email address.",
        "not_found" => "That member or invitation is no longer there.",
        "invalid_request" => "That request was not valid.",
        "stripe_unavailable" => "Stripe did not answer; try again in a moment.",
        "workspace_limit_reached" => {
            "Every place of your plan is in use: upgrade or delete one first."
        }
        "no_billing_record" => "This account has no subscription yet.",
        "subscription_canceled" => "The subscription is canceled: nothing new can be created.",
        "workspace_not_ready" => "That one is not running yet; it opens once it runs.",
        "refund_window_passed" => "The refund window after its first payment is over.",
        "refund_already_refunded" => "That license was refunded already.",
        "refund_not_paid" => "No payment of that license has been recorded yet.",
        "refund_revoked" => "That license is revoked.",
        "refund_in_progress" => "A refund of that license is being made; look again in a minute.",
        "no_license_billing" => "No license of yours has a Stripe customer to manage.",
        "confirm_required" => "Tick the box to confirm: deleting cannot be undone.",
        _ => return None,
    })
}

impl Shell {
    fn new(
        user: &RegisteredUser,
        accounts: &[MemberAccount],
        current: &MemberAccount,
        section: Section,
        outcome: &Outcome,
    ) -> Shell {
        let account = &current.account;
        let account_id = account.account_id.to_string();
        Shell {
            sections: Section::ALL
                .iter()
                .map(|s| SectionLink {
                    href: format!("/portal/accounts/{account_id}/{}", s.slug()),
                    label: s.label(account.kind),
                    current: *s == section,
                })
                .collect(),
            account_name: account.display_name.clone(),
            kind_label: account.kind.label(),
            role_label: current.role.display(),
            can_manage: current.role.can_manage(),
            email: user.email.to_string(),
            accounts: accounts
                .iter()
                .map(|a| AccountChoice {
                    id: a.account.account_id.to_string(),
                    name: a.account.display_name.clone(),
                    kind_label: a.account.kind.label(),
                })
                .collect(),
            notice: outcome.notice.as_deref().and_then(notice_text),
            problem: outcome.problem.as_deref().and_then(problem_text),
            account_id,
        }
    }
}

/// A redirect (303) to `location`.
pub(super) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Where a form's outcome sends the browser: back to `section` with a notice or a problem code.
pub(super) fn back_to(
    account_id: &str,
    section: Section,
    outcome: Result<&'static str, crate::flows::FlowError>,
) -> Result<Response, ApiError> {
    use crate::engine::command::CommandError;
    use crate::flows::FlowError;
    let query = match outcome {
        Ok(notice) => format!("notice={notice}"),
        Err(FlowError::Domain(refusal) | FlowError::Command(CommandError::Domain(refusal))) => {
            format!("problem={}", refusal.code())
        }
        Err(other) => return Err(other.into()),
    };
    Ok(see_other(&format!(
        "/portal/accounts/{account_id}/{}?{query}",
        section.slug()
    )))
}

/// `GET /`: the portal.
#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 303, description = "To `/portal`")))]
pub(super) async fn home() -> Response {
    see_other("/portal")
}

#[derive(Template)]
#[template(path = "portal/sign_in.html")]
struct SignInPage<'a> {
    nonce: &'a str,
}

#[derive(Template)]
#[template(path = "portal/self_hosted.html")]
struct SelfHostedPage<'a> {
    nonce: &'a str,
    email: &'a str,
    support_email: &'a str,
    jobs: SelfHostedJobs,
    notice: Option<&'static str>,
    problem: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "portal/no_account.html")]
struct NoAccountPage<'a> {
    nonce: &'a str,
    email: &'a str,
    support_email: &'a str,
}

/// Which account `/portal` opens, and for a person with self-hosted licenses only, the job
/// panel open and the outcome of the form that led here; a purchase handoff from Pulse opens the
/// Upgrade job instead.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PortalQuery {
    account: Option<String>,
    portal_handoff_id: Option<String>,
    service: Option<String>,
    notice: Option<String>,
    problem: Option<String>,
}

/// `GET /portal`: the sign-in form, or the landing section of an account.
#[utoipa::path(get, path = "/portal", tag = "pages",
    params(("account" = Option<String>, Query, description = "The account to open (`a_…`)"),
           ("portal_handoff_id" = Option<String>, Query, description = "A purchase handed in by Pulse: to the Upgrade job (`/portal/upgrade`)"),
           ("service" = Option<String>, Query, description = "A self-hosted job to open: `manage`, `retrieve`, `refund`, `data` (an account's Billing, for a member)"),
           ("notice" = Option<String>, Query, description = "The outcome of the form that led here"),
           ("problem" = Option<String>, Query, description = "The refusal of the form that led here")),
    responses(
        (status = 200, description = "Signed out: the sign-in form; signed in with no hosted account: their self-hosted licenses, or what to do", content_type = "text/html"),
        (status = 303, description = "Signed in: to the account's landing section")))]
pub(super) async fn portal(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiQuery(query): ApiQuery<PortalQuery>,
) -> Result<Response, ApiError> {
    if let Some(handoff_id) = query
        .portal_handoff_id
        .as_deref()
        .and_then(|raw| crate::flows::purchase::parse_handoff_id(raw).ok())
    {
        return Ok(see_other(&format!(
            "/portal/upgrade?portal_handoff_id={handoff_id}"
        )));
    }
    let nonce = nonce();
    let Some(user) = user else {
        let page = SignInPage { nonce: &nonce };
        let mut response = render(StatusCode::OK, &page, &nonce);
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cleared_session_cookie());
        return Ok(response);
    };
    let accounts = accounts_of(state.store.as_ref(), &user).await?;
    let chosen = accounts
        .iter()
        .find(|a| Some(a.account.account_id.as_str()) == query.account.as_deref())
        .or(accounts.first());
    let service = Service::parse(query.service.as_deref());
    Ok(match chosen {
        Some(member) => {
            let account_id = &member.account.account_id;
            match service {
                Some(service) => see_other(&format!(
                    "/portal/accounts/{account_id}/billing?service={}",
                    service.slug()
                )),
                None => see_other(&format!(
                    "/portal/accounts/{account_id}/{}",
                    Section::landing(&member.account).slug()
                )),
            }
        }
        None => {
            let licenses = crate::flows::owned_licenses::licenses_of(
                state.store.as_ref(),
                &state.catalog,
                &user.email,
            )
            .await?;
            match SelfHostedJobs::of(&state, user.email.as_str(), licenses, "/portal", service) {
                None => {
                    let page = NoAccountPage {
                        nonce: &nonce,
                        email: user.email.as_str(),
                        support_email: &state.support_email,
                    };
                    render(StatusCode::OK, &page, &nonce)
                }
                Some(jobs) => {
                    let page = SelfHostedPage {
                        nonce: &nonce,
                        email: user.email.as_str(),
                        support_email: &state.support_email,
                        jobs,
                        notice: query.notice.as_deref().and_then(notice_text),
                        problem: query.problem.as_deref().and_then(problem_text),
                    };
                    render(StatusCode::OK, &page, &nonce)
                }
            }
        }
    })
}

/// A signed-in member's view of one account, or the answer that replaces the page (to sign in,
/// or refused).
pub(super) async fn member_view(
    state: &AppState,
    user: Option<RegisteredUser>,
    raw_account: &str,
) -> Result<Result<(RegisteredUser, Vec<MemberAccount>, MemberAccount), Response>, ApiError> {
    let Some(user) = user else {
        return Ok(Err(see_other("/portal")));
    };
    let Ok(account_id) = AccountId::parse(raw_account) else {
        return Ok(Err(see_other("/portal")));
    };
    let store = state.store.as_ref();
    let Ok(current) = member_account(store, &account_id, &user.user_id).await else {
        return Ok(Err(see_other("/portal")));
    };
    let accounts = accounts_of(store, &user).await?;
    Ok(Ok((user, accounts, current)))
}

#[derive(Template)]
#[template(path = "portal/billing.html")]
struct BillingPage<'a> {
    nonce: &'a str,
    shell: Shell,
    billing: Option<BillingFacts>,
    jobs: Option<SelfHostedJobs>,
}

struct BillingFacts {
    plan: String,
    state: String,
    grace: Option<String>,
    trial: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/activity.html")]
struct ActivityPage<'a> {
    nonce: &'a str,
    shell: Shell,
    entries: Vec<crate::flows::activity::ActivityEntry>,
}

#[derive(Template)]
#[template(path = "portal/support.html")]
struct SupportPage<'a> {
    nonce: &'a str,
    shell: Shell,
    support_email: &'a str,
    has_licenses: bool,
}

/// `GET /portal/accounts/{account_id}/{section}`: one section of the account shell.
#[utoipa::path(get, path = "/portal/accounts/{account_id}/{section}", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("section" = String, Path, description = "`workspaces`, `access`, `billing`, `support` or `activity`"),
           ("notice" = Option<String>, Query, description = "The outcome of the form that led here"),
           ("problem" = Option<String>, Query, description = "The refusal of the form that led here"),
           ("service" = Option<String>, Query, description = "Billing: the self-hosted job to open (`manage`, `retrieve`, `refund`, `data`), shown when the email owns a license")),
    responses(
        (status = 200, description = "The section", content_type = "text/html"),
        (status = 303, description = "Signed out or not a member: to `/portal`"),
        (status = 404, description = "No such section", body = super::error::ErrorBody)))]
pub(super) async fn section(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath((raw_account, raw_section)): ApiPath<(String, String)>,
    ApiQuery(outcome): ApiQuery<Outcome>,
) -> Result<Response, ApiError> {
    let Some(section) = Section::ALL.into_iter().find(|s| s.slug() == raw_section) else {
        return Err(ApiError::new(
            super::error::ErrorCode::NotFound,
            "The portal has no such section.",
        ));
    };
    let (user, accounts, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let shell = Shell::new(&user, &accounts, &current, section, &outcome);
    let nonce = nonce();
    Ok(match section {
        Section::Access => access::page(&nonce, shell, &current),
        Section::Workspaces => workspaces::page(&state, &nonce, shell, &current),
        Section::Billing => {
            let licenses = crate::flows::owned_licenses::licenses_of(
                state.store.as_ref(),
                &state.catalog,
                &user.email,
            )
            .await?;
            let back = format!("/portal/accounts/{}/billing", current.account.account_id);
            let service = Service::parse(outcome.service.as_deref());
            let jobs = SelfHostedJobs::of(&state, user.email.as_str(), licenses, &back, service);
            billing_page(&nonce, shell, &current.account, jobs)
        }
        Section::Activity => {
            let entries = crate::flows::activity::account_activity(
                state.store.as_ref(),
                &state.catalogs,
                &current.account.account_id,
                &user.user_id,
            )
            .await?;
            render(
                StatusCode::OK,
                &ActivityPage {
                    nonce: &nonce,
                    shell,
                    entries,
                },
                &nonce,
            )
        }
        Section::Support => {
            let has_licenses =
                crate::flows::access::has_self_hosted_commercial(state.store.as_ref(), &user.email)
                    .await?;
            render(
                StatusCode::OK,
                &SupportPage {
                    nonce: &nonce,
                    shell,
                    support_email: &state.support_email,
                    has_licenses,
                },
                &nonce,
            )
        }
    })
}

fn billing_page(
    nonce: &str,
    shell: Shell,
    account: &OpenAccount,
    jobs: Option<SelfHostedJobs>,
) -> Response {
    let billing = account.billing.as_ref().map(|billing| BillingFacts {
        plan: billing.plan_version.clone(),
        state: billing.state.as_str().to_owned(),
        grace: billing.grace_started_at.map(|at| {
            let ends = aggregates::subscription::grace_ends_at(
                at,
                aggregates::subscription::HOSTED_GRACE_DAYS,
            );
            format!(
                "payment failed on {}; unless a payment succeeds, the subscription and its workspaces are canceled on {}",
                at.format("%Y-%m-%d"),
                ends.format("%Y-%m-%d")
            )
        }),
        trial: billing
            .trial_ends_at
            .map(|at| format!("ends {}", at.format("%Y-%m-%d"))),
    });
    render(
        StatusCode::OK,
        &BillingPage {
            nonce,
            shell,
            billing,
            jobs,
        },
        nonce,
    )
}
