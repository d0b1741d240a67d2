//! DOMAIN.md §10 and §11 — hosted accounts: roles, invitations, tenants and their caps.

mod support;

use aggregates::account::{
    Account, AccountCommand, AccountEvent, AccountKind, Role, TenantState,
    PROVISIONING_STUCK_SECONDS,
};
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email, InvitationId, SecretHash, TenantId, UserId};
use aggregates::subscription::SubscriptionState;
use support::{at, given, t0};

fn user(n: u64) -> UserId {
    UserId::from_entropy(n)
}

fn email(n: u64) -> Email {
    Email::parse(&format!("user{n}@example.com")).unwrap()
}

fn tenant(n: u64) -> TenantId {
    TenantId::from_entropy(n)
}

fn opened(kind: AccountKind) -> Vec<AccountEvent> {
    vec![
        AccountEvent::AccountOpened {
            account_id: AccountId::from_entropy(1),
            kind,
            display_name: String::from("Acme"),
        },
        AccountEvent::MemberJoined {
            user_id: user(1),
            email: email(1),
            role: Role::Owner,
            invitation_id: None,
            at: Some(t0()),
        },
    ]
}

fn joined(n: u64, role: Role) -> AccountEvent {
    AccountEvent::MemberJoined {
        user_id: user(n),
        email: email(n),
        role,
        invitation_id: None,
        at: Some(t0()),
    }
}

/// Owner 1, Admin 2, Tech 3, Read-only 4, and (optionally) a second owner 5.
fn team(second_owner: bool) -> Vec<AccountEvent> {
    let mut events = opened(AccountKind::Individual);
    events.extend([
        joined(2, Role::Admin),
        joined(3, Role::Tech),
        joined(4, Role::ReadOnly),
    ]);
    if second_owner {
        events.push(joined(5, Role::Owner));
    }
    events
}

fn billing(plan: &str, state: SubscriptionState) -> AccountEvent {
    AccountEvent::BillingRecorded {
        plan_version: plan.to_owned(),
        state,
        at: t0(),
    }
}

fn provisioned(n: u64) -> AccountEvent {
    AccountEvent::TenantProvisioned {
        tenant_id: tenant(n),
        provisioned_by: user(1),
        at: t0(),
        refresh_token_hash: Some(token_hash(n)),
        display_name: None,
    }
}

fn token_hash(n: u64) -> SecretHash {
    SecretHash::parse(&format!("{:02x}", n as u8).repeat(32)).unwrap()
}

#[test]
fn opening_an_account_makes_its_creator_the_owner() {
    let state = given::<Account>(vec![])
        .when(AccountCommand::Open {
            account_id: AccountId::from_entropy(1),
            kind: AccountKind::Msp,
            display_name: String::from(" Acme "),
            owner: user(1),
            owner_email: email(1),
        })
        .then(opened(AccountKind::Msp));
    let account = state.account.unwrap();
    assert_eq!(account.members[&user(1)].role, Role::Owner);
    assert_eq!(account.kind.label(), "MSP");
}

#[test]
fn roles_are_shown_as_owner_admin_tech_read_only_and_map_to_tenant_roles() {
    let table = [
        (Role::Owner, "Owner", "owner", true),
        (Role::Admin, "Admin", "admin", true),
        (Role::Tech, "Tech", "editor", false),
        (Role::ReadOnly, "Read-only", "viewer", false),
    ];
    for (role, display, tenant_role, manages) in table {
        assert_eq!(
            (role.display(), role.tenant_role(), role.can_manage()),
            (display, tenant_role, manages)
        );
    }
}

fn change_role(actor: u64, member: u64, role: Role) -> AccountCommand {
    AccountCommand::ChangeRole {
        actor: user(actor),
        member: user(member),
        role,
    }
}

#[test]
fn the_role_rules_decision_table() {
    use Role::*;
    // (actor, target member, new role, expected error code or None for allowed)
    let table: [(u64, u64, Role, Option<&str>); 12] = [
        (1, 3, Admin, None),                   // owner promotes tech
        (2, 3, ReadOnly, None),                // admin demotes tech
        (2, 4, Owner, Some("owner_required")), // admin cannot grant owner
        (2, 1, Admin, Some("owner_required")), // admin cannot touch an owner row
        (3, 4, Tech, Some("forbidden")),       // tech changes nothing
        (4, 3, ReadOnly, Some("forbidden")),   // read-only changes nothing
        (1, 4, Owner, None),                   // owner grants owner
        (1, 1, Admin, Some("last_owner")),     // the last owner cannot be demoted
        (1, 2, Admin, None),                   // no change is allowed and does nothing
        (2, 2, Tech, None),                    // an admin may step down
        (3, 3, Admin, Some("forbidden")),      // a tech cannot promote themself
        (9, 3, Admin, Some("forbidden")),      // a stranger changes nothing
    ];
    for (actor, member, role, expected) in table {
        let result = given::<Account>(team(false))
            .when(change_role(actor, member, role))
            .result();
        match expected {
            None => assert!(
                result.is_ok(),
                "{actor} -> {member} as {role:?}: {result:?}"
            ),
            Some(code) => assert_eq!(
                result.unwrap_err().code(),
                code,
                "{actor} -> {member} as {role:?}"
            ),
        }
    }
}

#[test]
fn an_owner_may_be_demoted_while_another_owner_remains() {
    given::<Account>(team(true))
        .when(change_role(5, 1, Role::Admin))
        .then(vec![AccountEvent::MemberRoleChanged {
            user_id: user(1),
            from: Role::Owner,
            to: Role::Admin,
            changed_by: user(5),
        }]);
}

#[test]
fn the_last_owner_cannot_be_removed_and_only_an_owner_removes_an_owner() {
    let remove = |actor, member| AccountCommand::RemoveMember {
        actor: user(actor),
        member: user(member),
    };
    given::<Account>(team(false))
        .when(remove(1, 1))
        .then_err(DomainError::LastOwner);
    given::<Account>(team(true))
        .when(remove(2, 5))
        .then_err(DomainError::OwnerRequired);
    given::<Account>(team(true))
        .when(remove(1, 5))
        .then(vec![AccountEvent::MemberRemoved {
            user_id: user(5),
            removed_by: user(1),
        }]);
    given::<Account>(team(false))
        .when(remove(3, 4))
        .then_err(DomainError::Forbidden {
            action: "remove members",
        });
}

fn invite(actor: u64, n: u64, role: Role, existing: bool) -> AccountCommand {
    AccountCommand::Invite {
        actor: user(actor),
        invitation_id: InvitationId::from_entropy(n),
        email: email(n),
        role,
        existing_user: existing.then(|| user(n)),
    }
}

#[test]
fn inviting_an_unknown_email_creates_a_pending_invitation() {
    given::<Account>(team(false))
        .when(invite(2, 7, Role::Tech, false))
        .then(vec![AccountEvent::MemberInvited {
            invitation_id: InvitationId::from_entropy(7),
            email: email(7),
            role: Role::Tech,
            invited_by: user(2),
            at: Some(t0()),
        }]);
}

#[test]
fn inviting_a_known_user_makes_them_a_member_at_once() {
    given::<Account>(team(false))
        .when(invite(1, 7, Role::Admin, true))
        .then(vec![joined(7, Role::Admin)]);
}

#[test]
fn inviting_a_member_again_is_refused() {
    given::<Account>(team(false))
        .when(invite(1, 3, Role::Tech, true))
        .then_err(DomainError::AlreadyMember);
}

#[test]
fn only_an_owner_invites_an_owner_and_only_managers_invite() {
    given::<Account>(team(false))
        .when(invite(2, 7, Role::Owner, false))
        .then_err(DomainError::OwnerRequired);
    given::<Account>(team(false))
        .when(invite(3, 7, Role::Tech, false))
        .then_err(DomainError::Forbidden {
            action: "invite members",
        });
}

#[test]
fn accepting_an_invitation_joins_with_its_role() {
    let mut history = team(false);
    history.push(AccountEvent::MemberInvited {
        invitation_id: InvitationId::from_entropy(7),
        email: email(7),
        role: Role::Tech,
        invited_by: user(2),
        at: Some(t0()),
    });
    let state = given::<Account>(history)
        .when(AccountCommand::AcceptInvitation {
            invitation_id: InvitationId::from_entropy(7),
            user_id: user(7),
        })
        .then(vec![AccountEvent::MemberJoined {
            user_id: user(7),
            email: email(7),
            role: Role::Tech,
            invitation_id: Some(InvitationId::from_entropy(7)),
            at: Some(t0()),
        }]);
    assert!(state.account.unwrap().invitations.is_empty());
}

fn provision(actor: u64, n: u64) -> AccountCommand {
    AccountCommand::ProvisionTenant {
        actor: user(actor),
        tenant_id: tenant(n),
        refresh_token_hash: token_hash(n),
        display_name: None,
    }
}

#[test]
fn creating_a_workspace_needs_a_billing_record() {
    given::<Account>(team(false))
        .when(provision(1, 1))
        .then_err(DomainError::NoBillingRecord);
}

#[test]
fn creating_a_workspace_on_a_canceled_subscription_is_refused() {
    let mut history = team(false);
    history.push(billing("cloud_power", SubscriptionState::Canceled));
    given::<Account>(history)
        .when(provision(1, 1))
        .then_err(DomainError::SubscriptionCanceled);
}

#[test]
fn the_workspace_cap_is_the_plans_and_reports_current_and_limit() {
    let mut history = team(false);
    history.push(billing("cloud_power", SubscriptionState::Active));
    given::<Account>(history.clone())
        .at(at(1))
        .when(provision(2, 1))
        .then(vec![AccountEvent::TenantProvisioned {
            tenant_id: tenant(1),
            provisioned_by: user(2),
            at: at(1),
            refresh_token_hash: Some(token_hash(1)),
            display_name: None,
        }]);
    history.push(provisioned(1));
    given::<Account>(history)
        .when(provision(1, 2))
        .then_err(DomainError::WorkspaceLimitReached {
            current: 1,
            limit: 1,
        });
}

#[test]
fn canceled_deleting_and_deleted_workspaces_do_not_count() {
    let mut history = team(false);
    history.push(billing("msp-starter", SubscriptionState::Active));
    for n in 1..=10 {
        history.push(provisioned(n));
    }
    given::<Account>(history.clone())
        .when(provision(1, 11))
        .then_err(DomainError::WorkspaceLimitReached {
            current: 10,
            limit: 10,
        });
    history.push(AccountEvent::TenantStateChanged {
        tenant_id: tenant(3),
        from: TenantState::Provisioning,
        to: TenantState::Canceled,
        reason: String::from("r"),
        at: t0(),
    });
    assert!(given::<Account>(history)
        .when(provision(1, 11))
        .result()
        .is_ok());
}

#[test]
fn an_unknown_plan_allows_one_workspace() {
    let mut history = team(false);
    history.push(billing("enterprise_custom", SubscriptionState::Active));
    history.push(provisioned(1));
    given::<Account>(history)
        .when(provision(1, 2))
        .then_err(DomainError::WorkspaceLimitReached {
            current: 1,
            limit: 1,
        });
}

#[test]
fn tech_and_read_only_cannot_create_workspaces() {
    let mut history = team(false);
    history.push(billing("msp_growth", SubscriptionState::Active));
    for actor in [3, 4] {
        given::<Account>(history.clone())
            .when(provision(actor, 1))
            .then_err(DomainError::Forbidden {
                action: "create workspaces",
            });
    }
}

#[test]
fn an_msp_subscription_applies_to_all_its_tenants() {
    let mut history = opened(AccountKind::Msp);
    history.push(billing("msp_growth", SubscriptionState::Active));
    for n in 1..=3 {
        history.push(provisioned(n));
        history.push(AccountEvent::TenantStateChanged {
            tenant_id: tenant(n),
            from: TenantState::Provisioning,
            to: TenantState::Active,
            reason: String::from("up"),
            at: t0(),
        });
    }
    let account = given::<Account>(history.clone()).state().account.unwrap();
    assert!((1..=3).all(|n| account.tenant_entitled(&tenant(n))));
    history.push(billing("msp_growth", SubscriptionState::Canceled));
    let account = given::<Account>(history).state().account.unwrap();
    assert!((1..=3).all(|n| !account.tenant_entitled(&tenant(n))));
}

#[test]
fn provisioning_for_fifteen_minutes_becomes_failed() {
    let mut history = team(false);
    history.push(billing("msp_growth", SubscriptionState::Active));
    history.push(provisioned(1));
    given::<Account>(history.clone())
        .at(at(PROVISIONING_STUCK_SECONDS - 1))
        .when(AccountCommand::FailStuckProvisioning)
        .then(vec![]);
    given::<Account>(history)
        .at(at(PROVISIONING_STUCK_SECONDS))
        .when(AccountCommand::FailStuckProvisioning)
        .then(vec![AccountEvent::TenantStateChanged {
            tenant_id: tenant(1),
            from: TenantState::Provisioning,
            to: TenantState::Failed,
            reason: String::from("provisioning for 15 minutes or more"),
            at: at(PROVISIONING_STUCK_SECONDS),
        }]);
}

#[test]
fn tenant_moves_outside_the_table_are_refused() {
    let mut history = team(false);
    history.push(billing("msp_growth", SubscriptionState::Active));
    history.push(provisioned(1));
    let change = |to| AccountCommand::ChangeTenantState {
        tenant_id: tenant(1),
        to,
        reason: String::from("ops"),
    };
    given::<Account>(history.clone())
        .when(change(TenantState::Deleted))
        .then_err(DomainError::InvalidTransition {
            from: "provisioning",
            to: "deleted",
        });
    assert!(given::<Account>(history)
        .when(change(TenantState::Active))
        .result()
        .is_ok());
}

#[test]
fn hosted_grace_of_fourteen_days_cancels_the_subscription_and_its_tenants() {
    let mut history = opened(AccountKind::Msp);
    history.push(billing("msp_growth", SubscriptionState::Active));
    history.push(provisioned(1));
    history.push(AccountEvent::TenantStateChanged {
        tenant_id: tenant(1),
        from: TenantState::Provisioning,
        to: TenantState::Active,
        reason: String::from("up"),
        at: t0(),
    });
    history.push(billing("msp_growth", SubscriptionState::Grace));
    let fourteen_days = 14 * 86_400;
    given::<Account>(history.clone())
        .at(at(fourteen_days - 1))
        .when(AccountCommand::EnforceGrace)
        .then(vec![]);
    given::<Account>(history)
        .at(at(fourteen_days))
        .when(AccountCommand::EnforceGrace)
        .then(vec![
            AccountEvent::BillingRecorded {
                plan_version: String::from("msp_growth"),
                state: SubscriptionState::Canceled,
                at: at(fourteen_days),
            },
            AccountEvent::TenantStateChanged {
                tenant_id: tenant(1),
                from: TenantState::Active,
                to: TenantState::Canceled,
                reason: String::from("hosted grace ended unpaid"),
                at: at(fourteen_days),
            },
        ]);
}

fn active_tenant(n: u64) -> AccountEvent {
    AccountEvent::TenantStateChanged {
        tenant_id: tenant(n),
        from: TenantState::Provisioning,
        to: TenantState::Active,
        reason: String::from("up"),
        at: t0(),
    }
}

fn lease(n: u64, host: &str, token: u64) -> AccountCommand {
    AccountCommand::IssueLease {
        tenant_id: tenant(n),
        instance_host: host.to_owned(),
        refresh_token_hash: token_hash(token),
    }
}

fn leasing_account(state: SubscriptionState) -> Vec<AccountEvent> {
    let mut history = opened(AccountKind::Msp);
    history.push(billing("msp_growth", state));
    history.push(provisioned(1));
    history.push(active_tenant(1));
    history
}

#[test]
fn a_lease_carries_the_accounts_plan_and_pins_the_first_host() {
    let events = given::<Account>(leasing_account(SubscriptionState::Active))
        .at(at(60))
        .when(lease(1, "Acme.Cloud.Example", 1))
        .result()
        .unwrap();
    assert_eq!(
        events[0],
        AccountEvent::InstanceHostPinned {
            tenant_id: tenant(1),
            instance_host: String::from("acme.cloud.example")
        }
    );
    let AccountEvent::LeaseIssued { claims } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        (
            aggregates::account::LEASE_ISSUER,
            aggregates::account::LEASE_AUDIENCE
        )
    );
    assert_eq!(
        (
            claims.plan_version.as_str(),
            claims.subscription_state.as_str()
        ),
        ("msp_growth", "active")
    );
    assert_eq!(claims.limits.max_monitored_systems, 150);
    assert_eq!(claims.sub, tenant(1).to_string());
    assert_eq!(claims.email, email(1).to_string());
    assert_eq!(
        claims.exp - claims.iat,
        24 * 3_600,
        "a paid lease lives 24 hours"
    );
    assert!(claims.capabilities.contains(&String::from("multi_tenant")));
}

#[test]
fn a_lease_refresh_from_another_host_or_with_another_token_is_refused() {
    let mut history = leasing_account(SubscriptionState::Active);
    history.push(AccountEvent::InstanceHostPinned {
        tenant_id: tenant(1),
        instance_host: String::from("acme.cloud.example"),
    });
    given::<Account>(history.clone())
        .when(lease(1, "evil.example", 1))
        .then_err(DomainError::LeaseTokenInvalid);
    given::<Account>(history.clone())
        .when(lease(1, "acme.cloud.example", 2))
        .then_err(DomainError::LeaseTokenInvalid);
    given::<Account>(history)
        .when(lease(9, "acme.cloud.example", 1))
        .then_err(DomainError::LeaseTokenInvalid);
}

#[test]
fn no_lease_for_an_inactive_tenant_or_a_non_granting_subscription() {
    let mut provisioning = opened(AccountKind::Msp);
    provisioning.push(billing("msp_growth", SubscriptionState::Active));
    provisioning.push(provisioned(1));
    given::<Account>(provisioning)
        .when(lease(1, "h", 1))
        .then_err(DomainError::LeaseUnavailable {
            reason: "tenant_inactive",
        });
    let mut canceled = leasing_account(SubscriptionState::Active);
    canceled.push(billing("msp_growth", SubscriptionState::Canceled));
    given::<Account>(canceled)
        .when(lease(1, "h", 1))
        .then_err(DomainError::LeaseUnavailable {
            reason: "non_granting_state",
        });
}

fn stripe_status(id: &str, seconds: i64, status: &str, price: Option<&str>) -> AccountCommand {
    AccountCommand::ApplyStripeStatus {
        stripe_event_id: id.to_owned(),
        created: at(seconds),
        status: status.to_owned(),
        plan_source: price.map(|p| aggregates::catalog::StripePlanSource {
            price_id: Some(p.to_owned()),
            ..Default::default()
        }),
    }
}

#[test]
fn stripe_moves_hosted_billing_and_an_older_snapshot_changes_nothing() {
    let history = leasing_account(SubscriptionState::Active);
    let events = given::<Account>(history.clone())
        .at(at(100))
        .when(stripe_status("evt_2", 100, "past_due", None))
        .result()
        .unwrap();
    assert_eq!(
        events[1],
        AccountEvent::BillingRecorded {
            plan_version: String::from("msp_growth"),
            state: SubscriptionState::Grace,
            at: at(100)
        }
    );
    let mut later = history;
    later.extend(events);
    let account = given::<Account>(later.clone()).state().account.unwrap();
    assert_eq!(
        account.billing.as_ref().unwrap().grace_started_at,
        Some(at(100))
    );
    given::<Account>(later)
        .when(stripe_status("evt_1", 50, "active", None))
        .then(vec![AccountEvent::StripeEventIgnored {
            stripe_event_id: String::from("evt_1"),
            reason: String::from("older than the newest snapshot applied"),
        }]);
}

#[test]
fn a_new_price_from_stripe_changes_the_hosted_plan() {
    let events = given::<Account>(leasing_account(SubscriptionState::Active))
        .at(at(10))
        .when(stripe_status(
            "evt_3",
            10,
            "active",
            Some("price_1T5kgWBrHBocJIGHo40iFeRd"),
        ))
        .result()
        .unwrap();
    assert_eq!(
        events[1],
        AccountEvent::BillingRecorded {
            plan_version: String::from("msp_scale"),
            state: SubscriptionState::Active,
            at: at(10)
        }
    );
}

fn trial_account() -> Vec<AccountEvent> {
    let mut history = opened(AccountKind::Individual);
    history.push(AccountEvent::TrialGranted {
        started_at: t0(),
        ends_at: at(14 * 86_400),
    });
    history.push(provisioned(1));
    history.push(active_tenant(1));
    history
}

#[test]
fn a_trial_lease_carries_the_trial_and_lives_until_it_ends() {
    let events = given::<Account>(trial_account())
        .at(at(60))
        .when(lease(1, "h.example", 1))
        .result()
        .unwrap();
    let AccountEvent::LeaseIssued { claims } = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (
            claims.plan_version.as_str(),
            claims.subscription_state.as_str()
        ),
        ("trial", "trial")
    );
    assert_eq!(claims.limits.max_monitored_systems, 15);
    assert_eq!(
        (claims.trial_started_at, claims.trial_ends_at),
        (Some(t0().timestamp()), Some(at(14 * 86_400).timestamp()))
    );
    assert_eq!(
        claims.exp,
        at(14 * 86_400).timestamp(),
        "a trial lease lives until the trial ends"
    );
}

#[test]
fn no_lease_once_the_trial_is_over() {
    given::<Account>(trial_account())
        .at(at(14 * 86_400))
        .when(lease(1, "h.example", 1))
        .then_err(DomainError::LeaseUnavailable {
            reason: "trial_over",
        });
}

#[test]
fn an_account_with_an_active_subscription_gets_no_trial() {
    given::<Account>(leasing_account(SubscriptionState::Active))
        .when(AccountCommand::GrantTrial {
            started_at: t0(),
            ends_at: at(100),
        })
        .then_err(DomainError::TrialNotAvailable {
            reason: "subscription_active",
        });
}

fn pending(n: u64, role: Role) -> AccountEvent {
    AccountEvent::MemberInvited {
        invitation_id: InvitationId::from_entropy(n),
        email: email(n),
        role,
        invited_by: user(1),
        at: Some(t0()),
    }
}

fn withdraw(actor: u64, n: u64) -> AccountCommand {
    AccountCommand::WithdrawInvitation {
        actor: user(actor),
        invitation_id: InvitationId::from_entropy(n),
    }
}

#[test]
fn a_manager_withdraws_a_pending_invitation() {
    let mut history = team(false);
    history.push(pending(7, Role::Tech));
    let state = given::<Account>(history).when(withdraw(2, 7)).then(vec![
        AccountEvent::InvitationWithdrawn {
            invitation_id: InvitationId::from_entropy(7),
            withdrawn_by: user(2),
        },
    ]);
    assert!(state.account.unwrap().invitations.is_empty());
}

#[test]
fn only_an_owner_withdraws_an_owner_invitation_and_tech_withdraws_none() {
    let mut history = team(false);
    history.extend([pending(7, Role::Owner), pending(8, Role::Tech)]);
    given::<Account>(history.clone())
        .when(withdraw(2, 7))
        .then_err(DomainError::OwnerRequired);
    given::<Account>(history.clone())
        .when(withdraw(1, 7))
        .then(vec![AccountEvent::InvitationWithdrawn {
            invitation_id: InvitationId::from_entropy(7),
            withdrawn_by: user(1),
        }]);
    given::<Account>(history)
        .when(withdraw(3, 8))
        .then_err(DomainError::Forbidden {
            action: "withdraw invitations",
        });
}

#[test]
fn a_withdrawn_invitation_cannot_be_accepted_or_withdrawn_again() {
    let mut history = team(false);
    history.extend([
        pending(7, Role::Tech),
        AccountEvent::InvitationWithdrawn {
            invitation_id: InvitationId::from_entropy(7),
            withdrawn_by: user(2),
        },
    ]);
    given::<Account>(history.clone())
        .when(withdraw(2, 7))
        .then_err(DomainError::NotFound {
            entity: "invitation",
        });
    given::<Account>(history)
        .when(AccountCommand::AcceptInvitation {
            invitation_id: InvitationId::from_entropy(7),
            user_id: user(7),
        })
        .then_err(DomainError::NotFound {
            entity: "invitation",
        });
}

#[test]
fn inviting_a_pending_email_with_another_role_replaces_its_invitation() {
    let mut history = team(false);
    history.push(pending(7, Role::Tech));
    let state = given::<Account>(history)
        .when(AccountCommand::Invite {
            actor: user(1),
            invitation_id: InvitationId::from_entropy(8),
            email: email(7),
            role: Role::Admin,
            existing_user: None,
        })
        .then(vec![
            AccountEvent::InvitationWithdrawn {
                invitation_id: InvitationId::from_entropy(7),
                withdrawn_by: user(1),
            },
            AccountEvent::MemberInvited {
                invitation_id: InvitationId::from_entropy(8),
                email: email(7),
                role: Role::Admin,
                invited_by: user(1),
                at: Some(t0()),
            },
        ]);
    let invitations = state.account.unwrap().invitations;
    assert_eq!(invitations.len(), 1, "one pending invitation per email");
}

#[test]
fn inviting_a_pending_email_with_the_same_role_changes_nothing() {
    let mut history = team(false);
    history.push(pending(7, Role::Tech));
    given::<Account>(history)
        .when(invite(1, 7, Role::Tech, false))
        .then(vec![]);
}

#[test]
fn a_user_invited_while_an_invitation_is_pending_joins_through_it() {
    let mut history = team(false);
    history.push(pending(7, Role::Tech));
    let state = given::<Account>(history)
        .when(invite(1, 7, Role::Tech, true))
        .then(vec![AccountEvent::MemberJoined {
            user_id: user(7),
            email: email(7),
            role: Role::Tech,
            invitation_id: Some(InvitationId::from_entropy(7)),
            at: Some(t0()),
        }]);
    assert!(state.account.unwrap().invitations.is_empty());
}

#[test]
fn a_workspace_can_be_named() {
    let mut history = team(false);
    history.push(billing("cloud_power", SubscriptionState::Active));
    let state = given::<Account>(history)
        .when(AccountCommand::ProvisionTenant {
            actor: user(2),
            tenant_id: tenant(1),
            refresh_token_hash: token_hash(1),
            display_name: Some(String::from("  Staging  ")),
        })
        .then(vec![AccountEvent::TenantProvisioned {
            tenant_id: tenant(1),
            provisioned_by: user(2),
            at: t0(),
            refresh_token_hash: Some(token_hash(1)),
            display_name: Some(String::from("Staging")),
        }]);
    let account = state.account.unwrap();
    assert_eq!(
        account.tenants[&tenant(1)].display_name.as_deref(),
        Some("Staging")
    );
}

fn remove_tenant(actor: u64, n: u64) -> AccountCommand {
    AccountCommand::RemoveTenant {
        actor: user(actor),
        tenant_id: tenant(n),
    }
}

#[test]
fn a_manager_deletes_a_running_workspace_and_frees_its_place() {
    let mut history = team(false);
    history.extend([
        billing("cloud_power", SubscriptionState::Active),
        provisioned(1),
        AccountEvent::TenantStateChanged {
            tenant_id: tenant(1),
            from: TenantState::Provisioning,
            to: TenantState::Active,
            reason: String::from("booted"),
            at: t0(),
        },
    ]);
    let state = given::<Account>(history.clone())
        .at(at(5))
        .when(remove_tenant(2, 1))
        .then(vec![AccountEvent::TenantStateChanged {
            tenant_id: tenant(1),
            from: TenantState::Active,
            to: TenantState::Deleting,
            reason: String::from("deleted by an Admin"),
            at: at(5),
        }]);
    let account = state.account.unwrap();
    let context = aggregates::decider::Context::new(at(5), &support::CATALOG);
    assert_eq!(
        account.workspace_usage(&context).0,
        0,
        "a deleting workspace does not count"
    );
}

#[test]
fn deleting_a_workspace_never_booted_cancels_it() {
    let mut history = team(false);
    history.extend([
        billing("cloud_power", SubscriptionState::Active),
        provisioned(1),
    ]);
    given::<Account>(history)
        .when(remove_tenant(1, 1))
        .then(vec![AccountEvent::TenantStateChanged {
            tenant_id: tenant(1),
            from: TenantState::Provisioning,
            to: TenantState::Canceled,
            reason: String::from("deleted by an Owner"),
            at: t0(),
        }]);
}

#[test]
fn only_a_manager_deletes_a_workspace_and_once() {
    let mut history = team(false);
    history.extend([
        billing("cloud_power", SubscriptionState::Active),
        provisioned(1),
    ]);
    given::<Account>(history.clone())
        .when(remove_tenant(3, 1))
        .then_err(DomainError::Forbidden {
            action: "delete workspaces",
        });
    given::<Account>(history.clone())
        .when(remove_tenant(1, 9))
        .then_err(DomainError::NotFound { entity: "tenant" });
    history.push(AccountEvent::TenantStateChanged {
        tenant_id: tenant(1),
        from: TenantState::Provisioning,
        to: TenantState::Deleting,
        reason: String::from("deleted"),
        at: t0(),
    });
    given::<Account>(history)
        .when(remove_tenant(1, 1))
        .then(vec![]);
}
