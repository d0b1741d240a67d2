//! Properties of every decider, over arbitrary command sequences: `decide` never panics, `evolve`
//! is total, folding all produced events from scratch reproduces the state the decider saw at each
//! step, and every event survives the log's encoding unchanged.

mod support;

use aggregates::account::{Account, AccountCommand, AccountKind, Role, TenantState};
use aggregates::catalog::{BillingCycle, StripePlanSource};
use aggregates::decider::{decode, encode, Context, Decider, DomainEvent};
use aggregates::email_code::{EmailCode, EmailCodeCommand, RecoveryJob};
use aggregates::exchange::{
    ExchangeLegacyLicense, LegacyExchange, LegacyLicense, LegacyTokenCheck,
};
use aggregates::handoff::{HandoffCommand, PurchaseHandoff, StartedCheckout};
use aggregates::ids::{
    AccountId, Email, HandoffId, InstallationId, IntentId, InvitationId, LicenseId, SecretHash,
    StaffTokenId, TenantId, UserId,
};
use aggregates::license::{
    ActivateInstallation, ChangeSource, IssueLicense, License, LicenseCommand, LicenseOrigin,
    RevocationReason, StripeSnapshot, MAX_INSTALLATIONS,
};
use aggregates::magic_link::{MagicLink, MagicLinkCommand};
use aggregates::mail::{Mail, MailCommand, MAIL_ATTEMPTS_MAX};
use aggregates::redemption::{Redemption, RedemptionCommand};
use aggregates::staff::{StaffRole, StaffToken, StaffTokenCommand};
use aggregates::subscription::SubscriptionState;
use aggregates::trial::{StartTrial, Trial};
use aggregates::user::{User, UserCommand, SESSIONS_MAX};
use chrono::Duration;
use proptest::prelude::*;
use std::fmt::Debug;
use support::{t0, CATALOG};

/// Runs `commands` (each after `gap` seconds) and checks the properties at every step.
fn check_sequence<D: Decider>(commands: Vec<(i64, D::Command)>)
where
    D::State: PartialEq + Debug,
    D::Event: PartialEq + Debug,
{
    check_sequence_with::<D>(commands, |_, _| {});
}

/// Like [`check_sequence`], also checking `invariant(before, after)` across every step.
fn check_sequence_with<D: Decider>(
    commands: Vec<(i64, D::Command)>,
    invariant: impl Fn(&D::State, &D::State),
) where
    D::State: PartialEq + Debug,
    D::Event: PartialEq + Debug,
{
    let mut state = D::State::default();
    let mut history: Vec<D::Event> = Vec::new();
    let mut now = t0();
    for (gap, command) in commands {
        now += Duration::seconds(gap);
        let Ok(events) = D::decide(&state, &command, &Context::new(now, &CATALOG)) else {
            continue;
        };
        for event in &events {
            let encoded = encode(event).expect("every event encodes");
            let decoded: D::Event =
                decode(&encoded.event_type, &encoded.payload).expect("every event decodes");
            assert_eq!(&decoded, event, "the log's encoding round-trips");
        }
        let before = state.clone();
        state = events.iter().fold(state, D::evolve);
        invariant(&before, &state);
        history.extend(events);
        let replayed = history.iter().fold(D::State::default(), D::evolve);
        assert_eq!(
            replayed, state,
            "replaying the history reproduces the state"
        );
    }
}

fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0_i64),
        1..40_i64,
        3_000..4_000_i64,
        86_400 * 6..86_400 * 31_i64
    ]
}

fn hash(n: u8) -> SecretHash {
    SecretHash::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn plan() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "relay",
        "pro",
        "pro_plus",
        "cloud_power",
        "msp_growth",
        "v5_pro_monthly_grandfathered",
        "nope",
        " Power ",
    ])
    .prop_map(str::to_owned)
}

fn cycle() -> impl Strategy<Value = Option<BillingCycle>> {
    prop::option::of(prop_oneof![
        Just(BillingCycle::Monthly),
        Just(BillingCycle::Annual)
    ])
}

fn state() -> impl Strategy<Value = SubscriptionState> {
    prop::sample::select(SubscriptionState::ALL.to_vec())
}

fn license_command() -> impl Strategy<Value = LicenseCommand> {
    let issue =
        (plan(), cycle(), state(), any::<bool>()).prop_map(|(plan, cycle, state, legacy)| {
            LicenseCommand::Issue(Box::new(IssueLicense {
                license_id: LicenseId::from_entropy(1),
                owner_email: Email::parse("o@example.com").unwrap(),
                plan_version: plan,
                billing_cycle: cycle,
                state,
                current_period_end: Some(t0() + Duration::days(30)),
                origin: if legacy {
                    LicenseOrigin::LegacyExchange {
                        legacy_license_id: String::from("v5"),
                    }
                } else {
                    LicenseOrigin::Checkout {
                        session_id: String::from("cs_1"),
                    }
                },
                stripe_price_id: None,
                activation_key_prefix: String::from("ppk_live_AB"),
                activation_key_hash: hash(1),
            }))
        });
    let status = prop::sample::select(vec![
        "active",
        "trialing",
        "past_due",
        "canceled",
        "paused",
        "incomplete",
    ]);
    let price = prop::option::of(prop::sample::select(vec![
        "price_1TPmE6BrHBocJIGHHaPwluoM",
        "price_1TPmE5BrHBocJIGHdwLp4tTA",
        "price_1Unknown",
    ]));
    let snapshot =
        (status, price, -5_000..5_000_i64, cycle()).prop_map(|(status, price, offset, cycle)| {
            LicenseCommand::ApplyStripeSnapshot(Box::new(StripeSnapshot {
                stripe_event_id: String::from("evt"),
                created: t0() + Duration::seconds(offset),
                status: status.to_owned(),
                current_period_end: Some(t0() + Duration::days(60)),
                plan_source: StripePlanSource {
                    price_id: price.map(str::to_owned),
                    ..Default::default()
                },
                billing_cycle: cycle,
            }))
        });
    let activate = (0..5_u64, 0..5_u8).prop_map(|(n, token)| {
        LicenseCommand::ActivateInstallation(Box::new(ActivateInstallation {
            installation_id: InstallationId::from_entropy(n),
            fingerprint: format!("fp-{n}"),
            instance_name: String::from("pulse"),
            token_hash: hash(token),
            client_version: String::from("6.0"),
        }))
    });
    prop_oneof![
        issue,
        (plan(), cycle()).prop_map(|(plan_version, billing_cycle)| LicenseCommand::ChangePlan {
            plan_version,
            billing_cycle,
            reason: String::from("r"),
            source: ChangeSource::Customer
        }),
        Just(LicenseCommand::Cancel {
            source: ChangeSource::Customer
        }),
        Just(LicenseCommand::ApplyScheduledChange),
        snapshot,
        Just(LicenseCommand::RecordPaymentFailed {
            stripe_event_id: String::from("evt_f")
        }),
        Just(LicenseCommand::RecordPaymentSucceeded {
            stripe_event_id: String::from("evt_p"),
            current_period_end: None,
            payment: None,
        }),
        Just(LicenseCommand::ExpireGrace),
        prop_oneof![
            Just(RevocationReason::Refund),
            Just(RevocationReason::Dispute)
        ]
        .prop_map(|reason| LicenseCommand::Revoke {
            reason,
            reference: String::from("ch_1")
        }),
        activate,
        (0..5_u64).prop_map(|n| LicenseCommand::DeactivateInstallation {
            installation_id: InstallationId::from_entropy(n)
        }),
        (0..5_u64, 0..5_u8).prop_map(|(n, token)| LicenseCommand::IssueGrant {
            installation_id: InstallationId::from_entropy(n),
            token_hash: hash(token),
            jti: String::from("j")
        }),
        (0..100_u32)
            .prop_map(|monitored_systems| LicenseCommand::CaptureFloor { monitored_systems }),
    ]
}

fn handoff_command() -> impl Strategy<Value = HandoffCommand> {
    let create =
        prop::sample::select(vec!["max_monitored_systems", "relay", "bogus"]).prop_map(|feature| {
            HandoffCommand::Create {
                handoff_id: HandoffId::from_entropy(1),
                intent_id: IntentId::from_entropy(1),
                feature: feature.to_owned(),
                success_url: String::from("https://p.example/auth/license-purchase-activate"),
                cancel_url: String::from("https://p.example/"),
                purchase_return_jti: String::from("jti"),
            }
        });
    let start = (
        plan(),
        prop::sample::select(vec!["pro", "relay", "cloud", "msp"]),
        0..3_u8,
    )
        .prop_map(|(plan_key, tier, session)| {
            HandoffCommand::StartCheckout(StartedCheckout {
                session_id: format!("cs_{session}"),
                plan_key,
                tier: tier.to_owned(),
                billing_cycle: BillingCycle::Monthly,
                price_id: String::new(),
                trial: false,
                url: None,
            })
        });
    prop_oneof![
        create,
        Just(HandoffCommand::Resolve),
        start,
        (0..3_u8).prop_map(|session| HandoffCommand::Complete {
            session_id: format!("cs_{session}"),
            license_id: None,
            account_id: None,
        }),
    ]
}

fn redemption_command() -> impl Strategy<Value = RedemptionCommand> {
    let jti = prop::sample::select(vec!["jti-1", "jti-2"]).prop_map(str::to_owned);
    prop_oneof![
        (jti.clone(), 0..2_u8, prop::option::of(1..3_u64)).prop_map(
            |(purchase_return_jti, session, owner)| RedemptionCommand::Begin {
                handoff_id: HandoffId::from_entropy(1),
                purchase_return_jti,
                session_id: format!("cs_{session}"),
                session_handoff: owner.map(HandoffId::from_entropy),
            }
        ),
        jti.clone()
            .prop_map(|purchase_return_jti| RedemptionCommand::MarkActivated {
                purchase_return_jti,
                license_id: None
            }),
        jti.prop_map(|purchase_return_jti| RedemptionCommand::MarkFailed {
            purchase_return_jti,
            failure_reason: String::from("failed"),
            failure_message: String::from("m")
        }),
    ]
}

fn account_command() -> impl Strategy<Value = AccountCommand> {
    let role = prop::sample::select(vec![Role::Owner, Role::Admin, Role::Tech, Role::ReadOnly]);
    let user = || (1..5_u64).prop_map(UserId::from_entropy);
    let tenant_state = prop::sample::select(vec![
        TenantState::Provisioning,
        TenantState::Active,
        TenantState::Suspended,
        TenantState::Canceled,
        TenantState::Deleting,
        TenantState::Deleted,
        TenantState::Failed,
    ]);
    prop_oneof![
        Just(AccountCommand::Open {
            account_id: AccountId::from_entropy(1),
            kind: AccountKind::Msp,
            display_name: String::from("Acme"),
            owner: UserId::from_entropy(1),
            owner_email: Email::parse("u1@example.com").unwrap(),
        }),
        (user(), 1..5_u64, role.clone(), any::<bool>()).prop_map(|(actor, n, role, known)| {
            AccountCommand::Invite {
                actor,
                invitation_id: InvitationId::from_entropy(n),
                email: Email::parse(&format!("u{n}@example.com")).unwrap(),
                role,
                existing_user: known.then(|| UserId::from_entropy(n)),
            }
        }),
        (1..5_u64).prop_map(|n| AccountCommand::AcceptInvitation {
            invitation_id: InvitationId::from_entropy(n),
            user_id: UserId::from_entropy(n)
        }),
        (user(), user(), role).prop_map(|(actor, member, role)| AccountCommand::ChangeRole {
            actor,
            member,
            role
        }),
        (user(), user()).prop_map(|(actor, member)| AccountCommand::RemoveMember { actor, member }),
        (plan(), state()).prop_map(|(plan_version, state)| AccountCommand::RecordBilling {
            plan_version,
            state
        }),
        (user(), 1..4_u64).prop_map(|(actor, n)| AccountCommand::ProvisionTenant {
            actor,
            tenant_id: TenantId::from_entropy(n),
            refresh_token_hash: hash(n as u8),
            display_name: None,
        }),
        (user(), 1..4_u64).prop_map(|(actor, n)| AccountCommand::RemoveTenant {
            actor,
            tenant_id: TenantId::from_entropy(n),
        }),
        (1..4_u64, 1..4_u8).prop_map(|(n, token)| AccountCommand::IssueLease {
            tenant_id: TenantId::from_entropy(n),
            instance_host: String::from("host.example"),
            refresh_token_hash: hash(token),
        }),
        (1..4_u64, tenant_state).prop_map(|(n, to)| AccountCommand::ChangeTenantState {
            tenant_id: TenantId::from_entropy(n),
            to,
            reason: String::from("r")
        }),
        Just(AccountCommand::FailStuckProvisioning),
        (0..100_000_i64).prop_map(|length| AccountCommand::GrantTrial {
            started_at: t0(),
            ends_at: t0() + Duration::seconds(length)
        }),
        (
            prop::sample::select(vec!["active", "past_due", "canceled", "paused"]),
            -5_000..5_000_i64
        )
            .prop_map(|(status, offset)| {
                AccountCommand::ApplyStripeStatus {
                    stripe_event_id: String::from("evt"),
                    created: t0() + Duration::seconds(offset),
                    status: status.to_owned(),
                    plan_source: None,
                }
            }),
        Just(AccountCommand::EnforceGrace),
    ]
}

fn exchange_command() -> impl Strategy<Value = ExchangeLegacyLicense> {
    let check = prop_oneof![
        Just(LegacyTokenCheck::Malformed),
        Just(LegacyTokenCheck::Invalid),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(revoked, renewed, migratable)| {
            LegacyTokenCheck::Verified(LegacyLicense {
                legacy_license_id: String::from("v5"),
                email: Email::parse("o@example.com").unwrap(),
                billing_cycle: BillingCycle::Monthly,
                revoked,
                renewed_key_available: renewed,
                migratable,
            })
        }),
    ];
    (check, 1..4_u64).prop_map(|(check, n)| ExchangeLegacyLicense {
        check,
        new_license_id: LicenseId::from_entropy(n),
    })
}

fn trial_command() -> impl Strategy<Value = StartTrial> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(license_active, subscription_active, signed_up)| StartTrial {
            license_active,
            subscription_active,
            signed_up,
            signup_url: String::from("https://p.example/signup"),
        },
    )
}

fn staff_token_command() -> impl Strategy<Value = StaffTokenCommand> {
    prop_oneof![
        (1..3_u64, 0..3_usize, any::<u8>()).prop_map(|(n, role, h)| StaffTokenCommand::Issue {
            token_id: StaffTokenId::from_entropy(n),
            name: String::from("operator"),
            role: [
                StaffRole::Support,
                StaffRole::Auditor,
                StaffRole::Provisioner
            ][role],
            token_hash: hash(h),
        }),
        Just(StaffTokenCommand::Revoke),
    ]
}

fn magic_link_command() -> impl Strategy<Value = MagicLinkCommand> {
    prop_oneof![
        (0..4_u8).prop_map(|n| MagicLinkCommand::Request {
            link_id: format!("ml_{n}"),
            email: Email::parse("ops@example.com").unwrap(),
            token_hash: hash(n),
            code_hash: hash(100 + n),
        }),
        (0..4_u8).prop_map(|n| MagicLinkCommand::ConsumeToken {
            token_hash: hash(n)
        }),
        (98..104_u8).prop_map(|n| MagicLinkCommand::EnterCode { code_hash: hash(n) }),
    ]
}

fn user_command() -> impl Strategy<Value = UserCommand> {
    prop_oneof![
        (0..3_u64).prop_map(|n| UserCommand::Register {
            user_id: UserId::from_entropy(n),
            email: Email::parse("ops@example.com").unwrap(),
        }),
        (0..4_u64).prop_map(|n| UserCommand::NoteInvitation {
            account_id: AccountId::from_entropy(n),
            invitation_id: InvitationId::from_entropy(n),
        }),
        (0..4_u64).prop_map(|n| UserCommand::SettleInvitations {
            invitation_ids: vec![InvitationId::from_entropy(n)],
        }),
        (0..40_u8).prop_map(|n| UserCommand::StartSession {
            session_hash: hash(n)
        }),
        Just(UserCommand::EndSessions),
        Just(UserCommand::Forget),
    ]
}

fn email_code_command() -> impl Strategy<Value = EmailCodeCommand> {
    let job = prop_oneof![
        Just(RecoveryJob::Manage),
        Just(RecoveryJob::Retrieve),
        Just(RecoveryJob::Export),
        Just(RecoveryJob::Delete),
    ];
    prop_oneof![
        (job.clone(), 0..4_u8).prop_map(|(job, n)| EmailCodeCommand::Request {
            job,
            code_id: format!("ec_{n}"),
            email: Email::parse("ops@example.com").unwrap(),
            code_hash: hash(n),
        }),
        (job, 0..6_u8).prop_map(|(job, n)| EmailCodeCommand::Confirm {
            job,
            code_hash: hash(n)
        }),
    ]
}

fn mail_command() -> impl Strategy<Value = MailCommand> {
    prop_oneof![
        Just(MailCommand::RecordDelivery),
        "[ -~]{0,400}".prop_map(|reason| MailCommand::RecordFailure { reason }),
        Just(MailCommand::Abandon {
            reason: String::from("expired")
        }),
    ]
}

fn sequence<C: Debug>(command: impl Strategy<Value = C>) -> impl Strategy<Value = Vec<(i64, C)>> {
    prop::collection::vec((gap(), command), 0..40)
}

/// A sequence that starts with `first` (the command creating the stream), then arbitrary ones.
fn seeded<C: Debug + Clone>(
    first: C,
    command: impl Strategy<Value = C>,
) -> impl Strategy<Value = Vec<(i64, C)>> {
    sequence(command)
        .prop_map(move |rest| std::iter::once((0, first.clone())).chain(rest).collect())
}

fn valid_issue() -> LicenseCommand {
    LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: LicenseId::from_entropy(1),
        owner_email: Email::parse("o@example.com").unwrap(),
        plan_version: String::from("v5_pro_monthly_grandfathered"),
        billing_cycle: Some(BillingCycle::Monthly),
        state: SubscriptionState::Active,
        current_period_end: Some(t0() + Duration::days(30)),
        origin: LicenseOrigin::LegacyExchange {
            legacy_license_id: String::from("v5"),
        },
        stripe_price_id: None,
        activation_key_prefix: String::from("ppk_live_AB"),
        activation_key_hash: hash(1),
    }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn license_sequences_hold_the_properties(commands in seeded(valid_issue(), license_command())) {
        check_sequence_with::<License>(commands, |before, after| {
            let (Some(before), Some(after)) = (&before.issued, &after.issued) else { return };
            assert!(after.active_installations() <= MAX_INSTALLATIONS, "at most three installations");
            assert!(after.license_version >= before.license_version, "license_version never goes back");
            assert!(before.revoked.is_none() || after.revoked.is_some(), "revocation is final");
            assert!(before.grandfathered_continuity || !after.grandfathered_continuity, "continuity never comes back");
            let continuity = after.continuity(&CATALOG);
            assert!(continuity.effective_limit >= continuity.plan_limit, "the floor only raises the limit");
            assert!(before.floor_captured_at.is_none() || before.floor == after.floor, "a captured floor never changes");
        });
    }

    #[test]
    fn handoff_sequences_hold_the_properties(commands in seeded(HandoffCommand::Create {
        handoff_id: HandoffId::from_entropy(1),
        intent_id: IntentId::from_entropy(1),
        feature: String::from("max_monitored_systems"),
        success_url: String::from("https://p.example/auth/license-purchase-activate"),
        cancel_url: String::from("https://p.example/"),
        purchase_return_jti: String::from("jti"),
    }, handoff_command())) {
        check_sequence::<PurchaseHandoff>(commands);
    }

    #[test]
    fn redemption_sequences_hold_the_properties(commands in sequence(redemption_command())) {
        check_sequence::<Redemption>(commands);
    }

    #[test]
    fn account_sequences_hold_the_properties(commands in seeded(AccountCommand::Open {
        account_id: AccountId::from_entropy(1),
        kind: AccountKind::Msp,
        display_name: String::from("Acme"),
        owner: UserId::from_entropy(1),
        owner_email: Email::parse("u1@example.com").unwrap(),
    }, account_command())) {
        check_sequence::<Account>(commands);
    }

    #[test]
    fn exchange_sequences_hold_the_properties(commands in sequence(exchange_command())) {
        check_sequence::<LegacyExchange>(commands);
    }

    #[test]
    fn trial_sequences_hold_the_properties(commands in sequence(trial_command())) {
        check_sequence::<Trial>(commands);
    }

    #[test]
    fn staff_token_sequences_hold_the_properties(commands in sequence(staff_token_command())) {
        check_sequence::<StaffToken>(commands);
    }

    #[test]
    fn magic_link_sequences_hold_the_properties(commands in sequence(magic_link_command())) {
        check_sequence::<MagicLink>(commands);
    }

    #[test]
    fn user_sequences_hold_the_properties(commands in sequence(user_command())) {
        check_sequence_with::<User>(commands, |_, after| {
            assert!(after.sessions.len() <= SESSIONS_MAX, "sessions are bounded");
        });
    }

    #[test]
    fn email_code_sequences_hold_the_properties(commands in sequence(email_code_command())) {
        check_sequence_with::<EmailCode>(commands, |_, after| {
            assert!(after.codes.len() <= 4, "one code per job");
        });
    }

    #[test]
    fn mail_sequences_hold_the_properties(commands in sequence(mail_command())) {
        check_sequence_with::<Mail>(commands, |before, after| {
            assert!(!before.done || after == before, "a message done changes no more");
            assert!(after.failures <= MAIL_ATTEMPTS_MAX, "attempts are bounded");
        });
    }
}

/// Keeps the helper honest: an `evolve` that depends on anything but the events fails it.
#[test]
#[should_panic(expected = "replaying the history reproduces the state")]
fn the_replay_property_catches_a_state_the_events_do_not_explain() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
    enum Ticked {
        Ticked,
    }
    impl DomainEvent for Ticked {}
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    struct Impure;
    impl Decider for Impure {
        const STREAM_TYPE: &'static str = "impure";
        type State = u32;
        type Command = ();
        type Event = Ticked;
        type Error = ();
        fn decide(_: &u32, _: &(), _: &Context<'_>) -> Result<Vec<Ticked>, ()> {
            Ok(vec![Ticked::Ticked])
        }
        fn evolve(state: u32, _: &Ticked) -> u32 {
            state + CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        }
    }
    check_sequence::<Impure>(vec![(0, ()), (0, ())]);
}
