//! DOMAIN.md §10, §12 — the account home: billing, workspaces and what each is entitled to,
//! members, the owners' licenses, and the actions someone must take, at an instant.

use aggregates::account::{Account, AccountCommand, AccountKind, OpenAccount, Role, TenantState};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::ids::{AccountId, Email, InvitationId, SecretHash, TenantId, UserId};
use aggregates::license::{IssueLicense, IssuedLicense, License, LicenseCommand, LicenseOrigin};
use aggregates::subscription::SubscriptionState;
use chrono::{DateTime, Duration, TimeZone, Utc};
use projections::account_home::account_home;
use std::sync::LazyLock;

static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::v1);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap()
}

fn owner() -> UserId {
    UserId::from_entropy(1)
}

fn tenant(n: u64) -> TenantId {
    TenantId::from_entropy(n)
}

/// The account the commands leave, each decided at its own instant.
fn given(commands: &[(DateTime<Utc>, AccountCommand)]) -> OpenAccount {
    let state = commands
        .iter()
        .fold(Default::default(), |state, (now, command)| {
            let events = Account::decide(&state, command, &Context::new(*now, &CATALOG))
                .unwrap_or_else(|e| panic!("{command:?}: {e:?}"));
            events.iter().fold(state, Account::evolve)
        });
    state.account.expect("the account is open")
}

fn opened(kind: AccountKind) -> (DateTime<Utc>, AccountCommand) {
    (
        t0(),
        AccountCommand::Open {
            account_id: AccountId::from_entropy(1),
            kind,
            display_name: String::from("Acme Ops"),
            owner: owner(),
            owner_email: Email::parse("ops@acme.example").unwrap(),
        },
    )
}

fn billing(
    at: DateTime<Utc>,
    plan: &str,
    state: SubscriptionState,
) -> (DateTime<Utc>, AccountCommand) {
    (
        at,
        AccountCommand::RecordBilling {
            plan_version: plan.to_owned(),
            state,
        },
    )
}

fn provisioned(n: u64) -> (DateTime<Utc>, AccountCommand) {
    (
        t0(),
        AccountCommand::ProvisionTenant {
            actor: owner(),
            tenant_id: tenant(n),
            refresh_token_hash: SecretHash::parse(&format!("{n:064x}")).unwrap(),
            display_name: None,
        },
    )
}

fn tenant_state(at: DateTime<Utc>, n: u64, to: TenantState) -> (DateTime<Utc>, AccountCommand) {
    (
        at,
        AccountCommand::ChangeTenantState {
            tenant_id: tenant(n),
            to,
            reason: String::from("provisioner"),
        },
    )
}

fn codes(actions: &[projections::account_home::ActionNeeded]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .map(|a| (a.code, a.subject.as_str()))
        .collect()
}

#[test]
fn a_paid_msp_account_shows_its_billing_workspaces_entitlements_and_members_with_nothing_to_do() {
    let account = given(&[
        opened(AccountKind::Msp),
        billing(t0(), "msp_growth", SubscriptionState::Active),
        provisioned(1),
        provisioned(2),
        tenant_state(t0(), 1, TenantState::Active),
    ]);
    let home = account_home(&account, &[], &CATALOG, t0() + Duration::hours(1));
    assert_eq!(
        (home.kind, home.kind_label, home.name.as_str()),
        (AccountKind::Msp, "MSP", "Acme Ops")
    );
    let billing = home.billing.as_ref().unwrap();
    assert_eq!(
        (
            billing.plan_version.as_str(),
            billing.tier.as_deref(),
            billing.state
        ),
        ("msp_growth", Some("msp"), SubscriptionState::Active)
    );
    assert_eq!(home.workspaces.current, 2);
    assert_eq!(
        home.workspaces.limit,
        CATALOG.max_workspaces(Some("msp_growth")) as usize
    );
    let active = &home
        .tenants
        .iter()
        .find(|t| t.tenant_id == tenant(1).as_str())
        .unwrap();
    let granted = active
        .entitlements
        .as_ref()
        .expect("an active tenant of a paid MSP is entitled");
    assert_eq!(granted.limits.max_monitored_systems, 150);
    assert_eq!(granted.owner_email, "ops@acme.example");
    let booting = &home
        .tenants
        .iter()
        .find(|t| t.tenant_id == tenant(2).as_str())
        .unwrap();
    assert_eq!(
        (
            booting.state,
            booting.entitlements.is_none(),
            booting.lease_unavailable
        ),
        ("provisioning", true, Some("tenant_inactive"))
    );
    assert_eq!(home.members.len(), 1);
    assert_eq!(
        (home.members[0].email.as_str(), home.members[0].role),
        ("ops@acme.example", "Owner"),
        "roles are shown as the portal names them"
    );
    assert!(home.actions_needed.is_empty(), "{:?}", home.actions_needed);
}

#[test]
fn a_failed_payment_asks_for_a_new_payment_method_before_the_hosted_grace_of_14_days_ends() {
    let failed_at = t0() + Duration::days(2);
    let account = given(&[
        opened(AccountKind::Individual),
        billing(t0(), "cloud_starter", SubscriptionState::Active),
        billing(failed_at, "cloud_starter", SubscriptionState::Grace),
    ]);
    let home = account_home(&account, &[], &CATALOG, failed_at + Duration::days(1));
    let account_id = home.account_id.clone();
    assert_eq!(
        codes(&home.actions_needed),
        vec![("payment_failed", account_id.as_str())]
    );
    assert_eq!(
        home.actions_needed[0].due_at,
        Some(failed_at + Duration::days(14))
    );
    assert_eq!(
        home.billing.unwrap().grace_period_end,
        Some(failed_at + Duration::days(14))
    );
}

#[test]
fn a_trial_asks_for_a_decision_in_its_last_three_days_and_is_over_at_its_end() {
    let ends = t0() + Duration::days(14);
    let account = given(&[
        opened(AccountKind::Individual),
        (
            t0(),
            AccountCommand::GrantTrial {
                started_at: t0(),
                ends_at: ends,
            },
        ),
        provisioned(1),
        tenant_state(t0(), 1, TenantState::Active),
    ]);
    let id = account.account_id.to_string();
    let early = account_home(&account, &[], &CATALOG, ends - Duration::days(4));
    assert_eq!(
        codes(&early.actions_needed),
        vec![("workspace_limit_reached", id.as_str())],
        "the trial's one workspace is in use; nothing else to do yet"
    );
    assert!(early.tenants[0].entitlements.is_some());
    let late = account_home(&account, &[], &CATALOG, ends - Duration::days(3));
    assert_eq!(late.actions_needed[0].code, "trial_ending");
    assert_eq!(late.actions_needed[0].due_at, Some(ends));
    let over = account_home(&account, &[], &CATALOG, ends);
    assert_eq!(over.actions_needed[0].code, "trial_over");
    assert_eq!(
        (
            over.tenants[0].entitlements.as_ref(),
            over.tenants[0].lease_unavailable
        ),
        (None, Some("trial_over")),
        "the tenant is entitled to nothing once the trial is over"
    );
}

#[test]
fn a_canceled_subscription_and_an_account_without_billing_each_say_so() {
    let canceled = given(&[
        opened(AccountKind::Individual),
        billing(t0(), "cloud_starter", SubscriptionState::Canceled),
    ]);
    let home = account_home(&canceled, &[], &CATALOG, t0());
    assert_eq!(home.actions_needed[0].code, "subscription_canceled");
    let unbilled = given(&[opened(AccountKind::Individual)]);
    let home = account_home(&unbilled, &[], &CATALOG, t0());
    assert_eq!(home.actions_needed[0].code, "no_billing_record");
    assert!(home.billing.is_none());
}

#[test]
fn a_failed_workspace_a_full_plan_and_a_pending_invitation_are_actions() {
    let invitation = InvitationId::from_entropy(9);
    let account = given(&[
        opened(AccountKind::Individual),
        billing(t0(), "cloud_starter", SubscriptionState::Active),
        provisioned(1),
        tenant_state(t0(), 1, TenantState::Failed),
        (
            t0(),
            AccountCommand::Invite {
                actor: owner(),
                invitation_id: invitation.clone(),
                email: Email::parse("tech@acme.example").unwrap(),
                role: Role::Tech,
                existing_user: None,
            },
        ),
    ]);
    let home = account_home(&account, &[], &CATALOG, t0());
    assert_eq!(
        (home.workspaces.current, home.workspaces.limit),
        (1, 1),
        "a failed workspace still counts against the cap"
    );
    let expected = vec![
        ("workspace_failed", tenant(1).to_string()),
        ("workspace_limit_reached", home.account_id.clone()),
        ("invitation_pending", invitation.to_string()),
    ];
    let got: Vec<(&str, String)> = home
        .actions_needed
        .iter()
        .map(|a| (a.code, a.subject.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(home.invitations[0].role, "Tech");
}

#[test]
fn the_workspace_limit_is_an_action_once_every_workspace_of_the_plan_is_in_use() {
    let limit = CATALOG.max_workspaces(Some("cloud_starter")) as u64;
    let mut commands = vec![
        opened(AccountKind::Individual),
        billing(t0(), "cloud_starter", SubscriptionState::Active),
    ];
    commands.extend((1..limit).map(provisioned));
    let below = account_home(&given(&commands), &[], &CATALOG, t0());
    assert!(
        below.actions_needed.is_empty(),
        "{:?}",
        below.actions_needed
    );
    commands.push(provisioned(limit));
    let home = account_home(&given(&commands), &[], &CATALOG, t0());
    assert_eq!(
        codes(&home.actions_needed),
        vec![("workspace_limit_reached", home.account_id.as_str())]
    );
    assert_eq!(home.workspaces.current, limit as usize);
}

fn license_in_grace(failed_at: DateTime<Utc>) -> IssuedLicense {
    let issue = LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: aggregates::ids::LicenseId::from_entropy(5),
        owner_email: Email::parse("ops@acme.example").unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: Some(aggregates::catalog::BillingCycle::Monthly),
        state: SubscriptionState::Active,
        current_period_end: Some(t0() + Duration::days(30)),
        origin: LicenseOrigin::Checkout {
            session_id: String::from("cs_1"),
        },
        stripe_price_id: None,
        activation_key_prefix: String::from("PULSE-AB12"),
        activation_key_hash: SecretHash::parse(&format!("{:064x}", 77)).unwrap(),
    }));
    let failed = LicenseCommand::RecordPaymentFailed {
        stripe_event_id: String::from("evt_1"),
    };
    let state = [(t0(), issue), (failed_at, failed)].iter().fold(
        Default::default(),
        |state, (now, command)| {
            let events = License::decide(&state, command, &Context::new(*now, &CATALOG))
                .unwrap_or_else(|e| panic!("{command:?}: {e:?}"));
            events.iter().fold(state, License::evolve)
        },
    );
    state.issued.unwrap()
}

#[test]
fn an_owners_license_in_grace_is_shown_with_its_billing_and_asks_for_payment_within_7_days() {
    let failed_at = t0() + Duration::days(3);
    let license = license_in_grace(failed_at);
    let account = given(&[
        opened(AccountKind::Individual),
        billing(t0(), "cloud_starter", SubscriptionState::Active),
    ]);
    let home = account_home(
        &account,
        std::slice::from_ref(&license),
        &CATALOG,
        failed_at,
    );
    let shown = &home.licenses[0];
    assert_eq!(
        (
            shown.plan_version.as_str(),
            shown.tier.as_deref(),
            shown.state
        ),
        ("pro", Some("pro"), SubscriptionState::Grace)
    );
    assert_eq!(shown.grace_period_end, Some(failed_at + Duration::days(7)));
    assert_eq!(
        codes(&home.actions_needed),
        vec![("payment_failed", license.license_id.as_str())]
    );
}
