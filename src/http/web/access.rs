//! The portal's Access section: the roster with each row's controls as the viewer's role allows
//! (an Owner edits every row but their own last-owner row is still refused by the domain; an
//! Admin edits non-owner rows; Tech and Read-only see no control), the invite form, and the form
//! posts, each answered 303 back to the section with a notice or a problem code.

use super::{back_to, member_view, see_other, PageUser, Section, Shell};
use crate::flows::access::{change_role, invite, remove, Invited, MemberAccount, NewMember};
use crate::http::error::ApiError;
use crate::http::extract::{ApiForm, ApiPath};
use crate::http::licensing::metadata;
use crate::http::pages::render;
use crate::http::AppState;
use aggregates::account::Role;
use aggregates::ids::{AccountId, Email};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of the Access forms.
pub(super) fn router() -> OpenApiRouter<crate::http::AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite_form))
        .routes(routes!(role_form))
        .routes(routes!(remove_form))
}

/// Roles with their API value and the name customers see.
const ROLES: [(&str, &str); 4] = [
    ("owner", "Owner"),
    ("admin", "Admin"),
    ("tech", "Tech"),
    ("read_only", "Read-only"),
];

struct MemberRow {
    subject_id: String,
    email: String,
    role: &'static str,
    role_label: &'static str,
    pending: bool,
    editable: bool,
    roles: Vec<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "portal/access.html")]
struct AccessPage<'a> {
    nonce: &'a str,
    shell: Shell,
    members: Vec<MemberRow>,
    invite_roles: Vec<(&'static str, &'static str)>,
}

fn role_value(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Tech => "tech",
        Role::ReadOnly => "read_only",
    }
}

/// The roles `viewer` may give.
fn grantable(viewer: Role) -> Vec<(&'static str, &'static str)> {
    ROLES
        .iter()
        .copied()
        .filter(|(value, _)| viewer == Role::Owner || *value != "owner")
        .collect()
}

/// The Access section.
pub(super) fn page(nonce: &str, shell: Shell, current: &MemberAccount) -> Response {
    let viewer = current.role;
    let manages = viewer.can_manage();
    let editable = |role: Role| manages && (viewer == Role::Owner || role != Role::Owner);
    let account = &current.account;
    let members = account.members.iter().map(|(user_id, member)| MemberRow {
        subject_id: user_id.to_string(),
        email: member.email.to_string(),
        role: role_value(member.role),
        role_label: member.role.display(),
        pending: false,
        editable: editable(member.role),
        roles: grantable(viewer),
    });
    let invitations =
        account
            .invitations
            .iter()
            .filter(|_| manages)
            .map(|(invitation_id, invitation)| MemberRow {
                subject_id: invitation_id.to_string(),
                email: invitation.email.to_string(),
                role: role_value(invitation.role),
                role_label: invitation.role.display(),
                pending: true,
                editable: editable(invitation.role),
                roles: Vec::new(),
            });
    let page = AccessPage {
        nonce,
        members: members.chain(invitations).collect(),
        invite_roles: grantable(viewer),
        shell,
    };
    render(StatusCode::OK, &page, nonce)
}

/// The invite form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InviteForm {
    email: String,
    /// `owner`, `admin`, `tech` or `read_only`.
    #[schema(value_type = String)]
    role: Role,
}

/// `POST /portal/accounts/{account_id}/access/invite`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/access/invite", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)")),
    request_body(content = InviteForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to Access with `notice` or `problem`")))]
pub(super) async fn invite_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath(raw_account): ApiPath<String>,
    ApiForm(form): ApiForm<InviteForm>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let account_id: &AccountId = &current.account.account_id;
    let Ok(email) = Email::parse(&form.email) else {
        return Ok(see_other(&format!(
            "/portal/accounts/{account_id}/access?problem=invalid_email"
        )));
    };
    let invited = invite(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        account_id,
        &user.user_id,
        NewMember {
            email: &email,
            role: form.role,
        },
        metadata(user.user_id.as_str()),
    )
    .await
    .map(|invited| match invited {
        Invited::Joined(_) => "joined",
        Invited::Pending(_) => "invited",
    });
    back_to(account_id.as_str(), Section::Access, invited)
}

/// The role form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleForm {
    /// `owner`, `admin`, `tech` or `read_only`.
    #[schema(value_type = String)]
    role: Role,
}

/// `POST /portal/accounts/{account_id}/access/{subject_id}/role`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/access/{subject_id}/role", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("subject_id" = String, Path, description = "The member (`u_…`)")),
    request_body(content = RoleForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Back to Access with `notice` or `problem`")))]
pub(super) async fn role_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath((raw_account, subject)): ApiPath<(String, String)>,
    ApiForm(form): ApiForm<RoleForm>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let changed = change_role(
        state.store.as_ref(),
        &state.catalog,
        &current.account.account_id,
        &user.user_id,
        &subject,
        form.role,
        metadata(user.user_id.as_str()),
    )
    .await
    .map(|()| "role_changed");
    back_to(
        current.account.account_id.as_str(),
        Section::Access,
        changed,
    )
}

/// `POST /portal/accounts/{account_id}/access/{subject_id}/remove`.
#[utoipa::path(post, path = "/portal/accounts/{account_id}/access/{subject_id}/remove", tag = "pages",
    params(("account_id" = String, Path, description = "The account (`a_…`)"),
           ("subject_id" = String, Path, description = "A member (`u_…`) or a pending invitation (`ainv_…`)")),
    responses((status = 303, description = "Back to Access with `notice` or `problem`")))]
pub(super) async fn remove_form(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    ApiPath((raw_account, subject)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (user, _, current) = match member_view(&state, user, &raw_account).await? {
        Ok(view) => view,
        Err(answer) => return Ok(answer),
    };
    let removed = remove(
        state.store.as_ref(),
        &state.keys,
        &state.catalog,
        &current.account.account_id,
        &user.user_id,
        &subject,
        metadata(user.user_id.as_str()),
    )
    .await
    .map(|()| "removed");
    back_to(
        current.account.account_id.as_str(),
        Section::Access,
        removed,
    )
}
