//! Realistic histories, decided by the real deciders: licenses bought at Checkout, activated on one
//! to three installations, refreshing grants, renewed month after month, some changing plan; and a
//! hosted account whose tenant refreshes its lease over and over (for account replay).

use aggregates::account::{Account, AccountCommand, AccountKind, TenantState};
use aggregates::catalog::{BillingCycle, Catalog};
use aggregates::decider::{encode, Context, Decider};
use aggregates::ids::{AccountId, Email, InstallationId, LicenseId, SecretHash, TenantId, UserId};
use aggregates::license::{
    ActivateInstallation, ChangeSource, IssueLicense, License, LicenseCommand, LicenseOrigin,
};
use aggregates::log::StreamName;
use aggregates::subscription::SubscriptionState;
use chrono::{DateTime, Duration, Utc};
use pulse_account::engine::command::decide_all;
use pulse_account::engine::store::StreamAppend;

/// Distinct license owners: a few own several licenses.
const OWNERS: u64 = 5_000;

fn hash(n: u64) -> SecretHash {
    SecretHash::parse(&format!("{n:064x}")).expect("64 hex digits")
}

/// License `n`'s whole history, as one stream's append (at most 100 events, so one append).
pub(crate) fn license_history(n: u64, catalog: &Catalog, start: DateTime<Utc>) -> StreamAppend {
    let license_id = LicenseId::from_entropy(n);
    let installations = 1 + n % 3;
    let renewals = 6 + n % 12;
    let mut commands = vec![LicenseCommand::Issue(Box::new(IssueLicense {
        license_id: license_id.clone(),
        owner_email: Email::parse(&format!("owner{}@example.com", n % OWNERS)).unwrap(),
        plan_version: String::from("pro"),
        billing_cycle: Some(BillingCycle::Monthly),
        state: SubscriptionState::Active,
        current_period_end: Some(start + Duration::days(30)),
        origin: LicenseOrigin::Checkout {
            session_id: format!("cs_bench_{n}"),
        },
        stripe_price_id: Some(String::from("price_bench_pro_monthly")),
        activation_key_prefix: String::from("ppk_live_BENCH"),
        activation_key_hash: hash(n),
    }))];
    for i in 0..installations {
        commands.push(LicenseCommand::ActivateInstallation(Box::new(
            ActivateInstallation {
                installation_id: InstallationId::from_entropy(n * 8 + i),
                fingerprint: format!("fp-{n}-{i}"),
                instance_name: format!("rack-{n}-{i}"),
                token_hash: hash(n * 8 + i + 1),
                client_version: String::from("6.0.1"),
            },
        )));
    }
    for month in 1..=renewals {
        commands.push(LicenseCommand::RecordPaymentSucceeded {
            stripe_event_id: format!("evt_bench_{n}_{month}"),
            current_period_end: Some(start + Duration::days(30 * (month as i64 + 1))),
            payment: None,
        });
        for i in 0..installations {
            commands.push(LicenseCommand::IssueGrant {
                installation_id: InstallationId::from_entropy(n * 8 + i),
                token_hash: hash(n * 8 + i + 1),
                jti: format!("jti-{n}-{month}-{i}"),
            });
        }
        if n.is_multiple_of(4) && month == 3 {
            commands.push(LicenseCommand::ChangePlan {
                plan_version: String::from("relay"),
                billing_cycle: Some(BillingCycle::Monthly),
                reason: String::from("downgrade requested"),
                source: ChangeSource::Customer,
            });
        }
    }
    let context = Context::new(start, catalog);
    let (events, _) = decide_all::<License>(Default::default(), &commands, &context)
        .unwrap_or_else(|error| panic!("license {n}'s history decides: {error:?}"));
    StreamAppend {
        stream: StreamName::parse(License::STREAM_TYPE, license_id.as_str()).unwrap(),
        expected_version: aggregates::log::StreamVersion::EMPTY,
        events: events.iter().map(|event| encode(event).unwrap()).collect(),
    }
}

/// A hosted account of `total` events: opened, billed, one tenant booted, and its runtime
/// refreshing its lease ever since; as appends of at most 100 events each.
pub(crate) fn account_history(
    n: u64,
    total: usize,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> (StreamName, Vec<StreamAppend>) {
    let account_id = AccountId::from_entropy(n);
    let owner = UserId::from_entropy(n);
    let tenant_id = TenantId::from_entropy(n);
    let setup = [
        AccountCommand::Open {
            account_id: account_id.clone(),
            kind: AccountKind::Individual,
            display_name: String::from("example.com"),
            owner: owner.clone(),
            owner_email: Email::parse(&format!("cloud{n}@example.com")).unwrap(),
        },
        AccountCommand::RecordBilling {
            plan_version: String::from("cloud_starter"),
            state: SubscriptionState::Active,
        },
        AccountCommand::ProvisionTenant {
            actor: owner,
            tenant_id: tenant_id.clone(),
            refresh_token_hash: hash(n),
            display_name: None,
        },
        AccountCommand::ChangeTenantState {
            tenant_id: tenant_id.clone(),
            to: TenantState::Active,
            reason: String::from("booted"),
        },
    ];
    let context = Context::new(now, catalog);
    let decided = |state, commands: &[AccountCommand]| {
        decide_all::<Account>(state, commands, &context)
            .unwrap_or_else(|error| panic!("account {n}'s history decides: {error:?}"))
    };
    let (mut events, state) = decided(Default::default(), &setup);
    let leases: Vec<_> = (events.len()..total)
        .map(|_| AccountCommand::IssueLease {
            tenant_id: tenant_id.clone(),
            instance_host: format!("t{n}.cloud.pulse.example"),
            refresh_token_hash: hash(n),
        })
        .collect();
    events.extend(decided(state, &leases).0);
    events.truncate(total);
    let stream = StreamName::parse(Account::STREAM_TYPE, account_id.as_str()).unwrap();
    let appends = events
        .chunks(pulse_account::engine::store::APPEND_EVENTS_MAX)
        .enumerate()
        .map(|(chunk, events)| StreamAppend {
            stream: stream.clone(),
            expected_version: aggregates::log::StreamVersion(
                (chunk * pulse_account::engine::store::APPEND_EVENTS_MAX) as i64,
            ),
            events: events.iter().map(|event| encode(event).unwrap()).collect(),
        })
        .collect();
    (stream, appends)
}
