//! Account access over HTTP, from outside (`DOMAIN.md` §11, `../shared/design/PORTAL.md` §3,
//! issue 13): invitations (unknown email → 202 pending and an email, known user → 201, member →
//! 409), a pending invitation becoming a membership at its email's first sign-in, the roster each
//! role sees, and a role × route matrix with the exact status for Owner, Admin, Tech, Read-only,
//! a signed-in non-member and a signed-out caller; a member of one account is refused every route
//! of another; the last owner stays; an erased member's email is in no table nor store file, their
//! sessions end and the roster shows them erased.

use crate::helpers::{call, Backend, TestApp};
use crate::hosted::bought_msp;
use crate::on_both_stores;
use crate::sign_in::{bootstrap, signed_in, OWNER};
use serde_json::{json, Value};

on_both_stores!(
    an_invited_email_joins_at_its_first_sign_in_and_each_role_gets_exactly_its_rights,
    the_last_owner_stays_and_only_an_owner_touches_owner_rows,
    an_erased_members_email_is_nowhere_and_the_roster_shows_them_erased,
    inviting_a_pending_email_again_replaces_its_invitation_and_sign_in_still_works,
);

/// Makes `email` a user, as a hosted checkout would (with no account of its own here).
async fn registered_user(app: &TestApp, email: &str) {
    let person = pulse_account::crypto::personal::person_id(&app.state.keys.hasher, email);
    app.command::<aggregates::user::User>(
        &person,
        aggregates::user::UserCommand::Register {
            user_id: aggregates::ids::UserId::from_entropy(9_999),
            email: aggregates::ids::Email::parse(email).unwrap(),
        },
    )
    .await;
}

/// Invites `email` as `role` into `account` as `session`.
async fn invite(
    app: &TestApp,
    account: &str,
    session: &str,
    email: &str,
    role: &str,
) -> (u16, Value) {
    call(
        app,
        reqwest::Method::POST,
        &format!("/api/accounts/{account}/members"),
        Some(session),
        Some(json!({ "email": email, "role": role })),
    )
    .await
}

/// Invites `email` as `role` (by the owner), lets the invitation email arrive, signs them in;
/// returns their session and user id.
async fn member(
    app: &TestApp,
    account: &str,
    owner: &str,
    email: &str,
    role: &str,
) -> (String, String) {
    let (status, body) = invite(app, account, owner, email, role).await;
    assert_eq!(
        status, 202,
        "an unknown email gets a pending invitation: {body}"
    );
    assert_eq!(body["state"], "pending");
    let invitation = app.smtp.wait_for(email, 1).await.pop().unwrap();
    assert!(
        invitation.subject.contains("invited"),
        "{}",
        invitation.subject
    );
    let session = signed_in(app, email).await;
    let (status, me) = bootstrap(app, Some(&session)).await;
    assert_eq!(status, 200);
    let joined = &me["accounts"][0];
    assert_eq!(
        joined["id"], account,
        "the invitation became a membership: {me}"
    );
    assert_eq!(joined["role"], role);
    (session, me["user_id"].as_str().unwrap().to_owned())
}

async fn an_invited_email_joins_at_its_first_sign_in_and_each_role_gets_exactly_its_rights(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = bought_msp(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let (admin, _) = member(&app, &account, &owner, "admin@msp.example", "admin").await;
    let (tech, tech_id) = member(&app, &account, &owner, "tech@msp.example", "tech").await;
    let (read_only, _) = member(&app, &account, &owner, "ro@msp.example", "read_only").await;
    let (status, _) = invite(&app, &account, &owner, "gone@msp.example", "tech").await;
    assert_eq!(status, 202);
    let withdrawn = pending_subject(&app, &account, &owner, "gone@msp.example").await;
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/accounts/{account}/members/{withdrawn}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 204, "a pending invitation is withdrawn");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/public/magic-link/request",
        None,
        Some(json!({ "email": "gone@msp.example" })),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        !app.smtp
            .messages_to("gone@msp.example")
            .iter()
            .any(|m| m.subject.contains("sign-in link")),
        "a withdrawn invitation no longer lets its email sign in"
    );
    registered_user(&app, "outsider@else.example").await;
    let outsider = signed_in(&app, "outsider@else.example").await;
    let (_, me) = bootstrap(&app, Some(&outsider)).await;
    assert_eq!(me["accounts"], json!([]), "a user of no account");

    let (status, body) = invite(&app, &account, &owner, "tech@msp.example", "tech").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_member"))
    );
    let (status, body) = invite(&app, &account, &owner, "outsider@else.example", "read_only").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (201, Some("active")),
        "a known user joins at once: {body}"
    );

    let (status, _) = invite(&app, &account, &owner, "pending@msp.example", "tech").await;
    assert_eq!(status, 202);
    let callers: [(&str, Option<&str>); 5] = [
        ("owner", Some(&owner)),
        ("admin", Some(&admin)),
        ("tech", Some(&tech)),
        ("read_only", Some(&read_only)),
        ("signed out", None),
    ];
    for (name, session) in callers {
        let (roster, body) = call(
            &app,
            reqwest::Method::GET,
            &format!("/api/accounts/{account}/members"),
            session,
            None,
        )
        .await;
        let manages = matches!(name, "owner" | "admin");
        let expected = if session.is_none() { 401 } else { 200 };
        assert_eq!(roster, expected, "{name} reads the roster");
        if roster == 200 {
            let rows = body["members"].as_array().unwrap();
            assert!(
                rows.iter().all(|m| m["created_at"].is_string()),
                "every row says since when: {body}"
            );
            let pending = rows.iter().any(|m| m["state"] == "pending");
            assert_eq!(
                pending, manages,
                "{name} sees pending rows only as Owner or Admin: {body}"
            );
        }
        let tag = name.replace(' ', "-");

        let (status, body) = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/accounts/{account}/members"),
            session,
            Some(json!({ "email": format!("new-{tag}@msp.example"), "role": "read_only" })),
        )
        .await;
        let expected = match (session, manages) {
            (None, _) => 401,
            (_, true) => 202,
            _ => 403,
        };
        assert_eq!(status, expected, "{name} invites: {body}");

        let (status, body) = call(
            &app,
            reqwest::Method::PATCH,
            &format!("/api/accounts/{account}/members/{tech_id}"),
            session,
            Some(json!({ "role": "tech" })),
        )
        .await;
        let expected = match (session, manages) {
            (None, _) => 401,
            (_, true) => 200,
            _ => 403,
        };
        assert_eq!(status, expected, "{name} changes a role: {body}");

        let (_, invited) = invite(
            &app,
            &account,
            &owner,
            &format!("del-{tag}@msp.example"),
            "tech",
        )
        .await;
        let subject = invited["subject_id"].as_str().unwrap().to_owned();
        let (status, body) = call(
            &app,
            reqwest::Method::DELETE,
            &format!("/api/accounts/{account}/members/{subject}"),
            session,
            None,
        )
        .await;
        let expected = match (session, manages) {
            (None, _) => 401,
            (_, true) => 204,
            _ => 403,
        };
        assert_eq!(status, expected, "{name} removes: {body}");
        if status == 403 {
            assert_eq!(body["code"], "forbidden");
        }
    }

    let (other_account, _) = app.open_account(77, "someone@other.example").await;
    for (name, session) in [
        ("owner of A", &owner),
        ("admin of A", &admin),
        ("non-member", &outsider),
    ] {
        let other = other_account.as_str();
        for (method, path, body) in [
            (
                reqwest::Method::GET,
                format!("/api/accounts/{other}/members"),
                None,
            ),
            (
                reqwest::Method::POST,
                format!("/api/accounts/{other}/members"),
                Some(json!({ "email": "x@y.example", "role": "tech" })),
            ),
            (
                reqwest::Method::PATCH,
                format!("/api/accounts/{other}/members/u_0000000001"),
                Some(json!({ "role": "tech" })),
            ),
            (
                reqwest::Method::DELETE,
                format!("/api/accounts/{other}/members/u_0000000001"),
                None,
            ),
        ] {
            let (status, answer) = call(&app, method.clone(), &path, Some(session), body).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (403, Some("forbidden")),
                "{name}: {method} {path}"
            );
        }
    }
    app.stop().await;
}

async fn pending_subject(app: &TestApp, account: &str, session: &str, email: &str) -> String {
    let (_, roster) = call(
        app,
        reqwest::Method::GET,
        &format!("/api/accounts/{account}/members"),
        Some(session),
        None,
    )
    .await;
    roster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == email && m["state"] == "pending")
        .expect("the pending row")["subject_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn the_last_owner_stays_and_only_an_owner_touches_owner_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = bought_msp(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let (_, me) = bootstrap(&app, Some(&owner)).await;
    let owner_id = me["user_id"].as_str().unwrap().to_owned();
    let (admin, _) = member(&app, &account, &owner, "admin@msp.example", "admin").await;
    let member_path = format!("/api/accounts/{account}/members/{owner_id}");

    let (status, body) = call(
        &app,
        reqwest::Method::PATCH,
        &member_path,
        Some(&owner),
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_owner")));
    let (status, body) = call(
        &app,
        reqwest::Method::DELETE,
        &member_path,
        Some(&owner),
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("last_owner")));
    let (status, body) = call(
        &app,
        reqwest::Method::PATCH,
        &member_path,
        Some(&admin),
        Some(json!({ "role": "tech" })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("owner_required"))
    );
    let (status, body) = invite(&app, &account, &admin, "boss@msp.example", "owner").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("owner_required"))
    );
    let (status, body) = call(
        &app,
        reqwest::Method::PATCH,
        &member_path,
        Some(&owner),
        Some(json!({ "role": "superuser" })),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/accounts/{account}/members/nobody"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = call(
        &app,
        reqwest::Method::GET,
        "/api/accounts/a_%00/members",
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (_, roster) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/accounts/{account}/members"),
        Some(&owner),
        None,
    )
    .await;
    let owners = roster["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "owner")
        .count();
    assert_eq!(owners, 1);
    app.stop().await;
}

async fn an_erased_members_email_is_nowhere_and_the_roster_shows_them_erased(backend: Backend) {
    const MEMBER: &str = "zora.quill@msp.example";
    let app = TestApp::spawn(backend).await;
    let (account, _) = bought_msp(&app).await;
    let owner = signed_in(&app, OWNER).await;
    let (session, _) = member(&app, &account, &owner, MEMBER, "tech").await;
    crate::staff::caught_up(&app).await;
    assert!(!app.db.tables_containing(MEMBER).await.is_empty());

    let cwd = tempfile::tempdir().unwrap();
    let data_dir = app.db.data_dir();
    let erase = [
        "erase",
        "--email",
        MEMBER,
        "--reason",
        "member asked",
        "--database-url",
        &app.db.url,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let erased = crate::cli::run(&erase, cwd.path());
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    assert_eq!(
        app.db.tables_containing(MEMBER).await,
        vec![],
        "no table holds the email"
    );
    if backend == Backend::Sqlite {
        for (file, bytes) in app.db.sqlite_files() {
            for needle in [MEMBER, "zora.quill"] {
                assert!(
                    !bytes
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes())),
                    "{file} still holds {needle:?} after erasure"
                );
            }
        }
    }
    let (status, body) = bootstrap(&app, Some(&session)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_session")),
        "an erased person is forgotten, their sessions with them"
    );
    let mails = app.smtp.messages_to(MEMBER).len();
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/public/magic-link/request",
        None,
        Some(json!({ "email": MEMBER })),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        app.smtp.messages_to(MEMBER).len(),
        mails,
        "an erased person gets no sign-in link: they are no user any more"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, roster) = call(
            &app,
            reqwest::Method::GET,
            &format!("/api/accounts/{account}/members"),
            Some(&owner),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let emails: Vec<&str> = roster["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["email"].as_str().unwrap())
            .collect();
        assert!(
            !emails.contains(&MEMBER) || std::time::Instant::now() < deadline,
            "{emails:?}"
        );
        if !emails.contains(&MEMBER) {
            assert!(
                emails.iter().any(|e| e.ends_with("@erased.invalid")),
                "the roster shows the member erased: {emails:?}"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.stop().await;
}

async fn inviting_a_pending_email_again_replaces_its_invitation_and_sign_in_still_works(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (account, _) = bought_msp(&app).await;
    let owner = signed_in(&app, OWNER).await;
    for role in ["tech", "admin"] {
        let (status, body) = invite(&app, &account, &owner, "twice@msp.example", role).await;
        assert_eq!(status, 202, "{body}");
    }
    let (_, roster) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/accounts/{account}/members"),
        Some(&owner),
        None,
    )
    .await;
    let rows: Vec<&Value> = roster["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["email"] == "twice@msp.example")
        .collect();
    assert_eq!(rows.len(), 1, "one pending invitation per email: {roster}");
    assert_eq!(rows[0]["role"], "admin");
    let session = signed_in(&app, "twice@msp.example").await;
    let (status, me) = bootstrap(&app, Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(me["accounts"][0]["role"], "admin", "{me}");
    app.stop().await;
}
