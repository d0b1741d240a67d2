//! Support replay (issue 5): every event with what it changed, the state as of a position, a
//! recorded time or an effective time, and the event behind each field of the state now.

use aggregates::catalog::{BillingCycle, Catalog, CatalogHistory};
use aggregates::decider::{encode, Context, Decider, DomainEvent};
use aggregates::ids::{Email, LicenseId, SecretHash};
use aggregates::index::ActivationKeyEvent;
use aggregates::license::{ChangeSource, IssueLicense, License, LicenseCommand, LicenseOrigin};
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use aggregates::subscription::SubscriptionState;
use chrono::{DateTime, Duration, TimeZone, Utc};
use projections::replay::{as_of, timeline, why, Cut};
use serde_json::json;
use std::sync::LazyLock;

static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::v1);
static CATALOGS: LazyLock<CatalogHistory> = LazyLock::new(CatalogHistory::shipped);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap()
}

fn license_id() -> LicenseId {
    LicenseId::from_entropy(7)
}

/// A log under construction: events recorded one after another, each with its effective time.
#[derive(Default)]
struct Log {
    events: Vec<RecordedEvent>,
}

impl Log {
    fn record<E: DomainEvent>(
        &mut self,
        stream: StreamName,
        event: &E,
        effective_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
    ) {
        let encoded = encode(event).unwrap();
        let version = self.events.iter().filter(|e| e.stream == stream).count() as i64 + 1;
        self.events.push(RecordedEvent {
            global_position: Position(self.events.len() as i64 + 1),
            stream,
            stream_version: StreamVersion(version),
            event_id: format!("e{}", self.events.len() + 1),
            event_type: encoded.event_type,
            schema_version: encoded.schema_version,
            payload: encoded.payload,
            metadata: EventMetadata {
                actor: String::from("stripe"),
                causation_id: Some(String::from("evt_cause")),
                correlation_id: None,
                request_id: None,
                effective_at,
            },
            recorded_at,
        });
    }

    /// Decides `command` on the license as the log has it and records what it decides.
    fn license(
        &mut self,
        command: LicenseCommand,
        effective_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
    ) {
        let stream = StreamName::parse("license", license_id().as_str()).unwrap();
        let state = self
            .events
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| aggregates::decider::decode(&e.event_type, &e.payload).unwrap())
            .fold(Default::default(), |s, e| License::evolve(s, &e));
        let decided =
            License::decide(&state, &command, &Context::new(effective_at, &CATALOG)).unwrap();
        for event in &decided {
            self.record(stream.clone(), event, effective_at, recorded_at);
        }
    }
}

/// Issued at t0 (pro, monthly), its activation key indexed, a payment failing a day later, and a
/// move to annual billing on day 2 (recorded on day 3: the ledger learned it late).
fn history() -> Log {
    let mut log = Log::default();
    log.license(
        LicenseCommand::Issue(Box::new(IssueLicense {
            license_id: license_id(),
            owner_email: Email::parse("owner@example.com").unwrap(),
            plan_version: String::from("pro"),
            billing_cycle: Some(BillingCycle::Monthly),
            state: SubscriptionState::Active,
            current_period_end: Some(t0() + Duration::days(30)),
            origin: LicenseOrigin::Checkout {
                session_id: String::from("cs_1"),
            },
            stripe_price_id: None,
            activation_key_prefix: String::from("PULSE-AB12"),
            activation_key_hash: SecretHash::parse(&format!("{:064x}", 1)).unwrap(),
        })),
        t0(),
        t0(),
    );
    log.record(
        StreamName::parse("activation_key", &format!("{:064x}", 1)).unwrap(),
        &ActivationKeyEvent::ActivationKeyBound {
            license_id: license_id(),
        },
        t0(),
        t0(),
    );
    log.license(
        LicenseCommand::RecordPaymentFailed {
            stripe_event_id: String::from("evt_failed"),
        },
        t0() + Duration::days(1),
        t0() + Duration::days(1),
    );
    log.license(
        LicenseCommand::ChangePlan {
            plan_version: String::from("pro"),
            billing_cycle: Some(BillingCycle::Annual),
            reason: String::from("customer moved to annual"),
            source: ChangeSource::Customer,
        },
        t0() + Duration::days(2),
        t0() + Duration::days(3),
    );
    log
}

#[test]
fn each_event_shows_who_caused_it_and_what_it_changed_and_index_events_change_nothing() {
    let log = history();
    let steps = timeline::<License>(license_id().as_str(), &log.events, &CATALOGS).unwrap();
    assert_eq!(steps.len(), log.events.len());
    assert!(steps.windows(2).all(|w| w[0].position < w[1].position));
    let issued = &steps[0];
    assert_eq!(issued.event_type, "license_issued");
    assert_eq!(
        (issued.actor.as_str(), issued.causation_id.as_deref()),
        ("stripe", Some("evt_cause"))
    );
    let plan = issued
        .changes
        .iter()
        .find(|c| c.field == "billing.plan_version")
        .unwrap();
    assert_eq!(
        (plan.before.clone(), plan.after.clone()),
        (None, Some(json!("pro")))
    );
    let index = steps
        .iter()
        .find(|s| s.event_type == "activation_key_bound")
        .unwrap();
    assert!(index.changes.is_empty(), "{:?}", index.changes);

    let failed: Vec<_> = steps
        .iter()
        .filter(|s| s.effective_at == t0() + Duration::days(1))
        .flat_map(|s| {
            s.changes
                .iter()
                .map(|c| (c.field.as_str(), c.before.clone(), c.after.clone()))
        })
        .collect();
    assert!(
        failed.contains(&("billing.state", Some(json!("active")), Some(json!("grace")))),
        "{failed:?}"
    );
    assert!(failed.contains(&(
        "entitlements.in_grace_period",
        Some(json!(false)),
        Some(json!(true))
    )));
    assert!(
        failed
            .iter()
            .all(|(field, _, _)| !field.contains("days_remaining")),
        "countdowns that change with the clock alone are not diffs"
    );
}

#[test]
fn the_state_as_of_a_position_a_recorded_time_or_an_effective_time() {
    let log = history();
    let id = license_id();
    let at = |cut| as_of::<License>(id.as_str(), &log.events, &CATALOGS, cut).unwrap();
    assert_eq!(
        at(Cut::Position(0)),
        serde_json::Value::Null,
        "before it existed"
    );
    assert_eq!(at(Cut::Position(2))["billing"]["state"], "active");
    let day = |n| t0() + Duration::days(n) + Duration::hours(12);
    assert_eq!(at(Cut::EffectiveAt(day(1)))["billing"]["state"], "grace");
    assert_eq!(
        at(Cut::EffectiveAt(day(2)))["billing"]["billing_cycle"],
        "annual",
        "in effect on day 2"
    );
    assert_eq!(
        at(Cut::RecordedAt(day(2)))["billing"]["billing_cycle"],
        "monthly",
        "but the ledger only learned it on day 3"
    );
    assert_eq!(
        at(Cut::RecordedAt(day(3)))["billing"]["billing_cycle"],
        "annual"
    );
}

#[test]
fn why_names_the_event_behind_each_field_of_the_state_now() {
    let log = history();
    let steps = timeline::<License>(license_id().as_str(), &log.events, &CATALOGS).unwrap();
    let causes = why(&steps);
    let cycle = &causes["billing.billing_cycle"];
    assert_eq!(
        (cycle.value.clone(), cycle.event_type.as_str()),
        (json!("annual"), "plan_changed")
    );
    assert_eq!(
        causes["entitlements.licensed_email"].event_type,
        "license_issued"
    );
    assert_eq!(causes["billing.state"].value, json!("grace"));
    assert_eq!(
        causes["billing.state"].effective_at,
        t0() + Duration::days(1),
        "the failed payment put it in grace"
    );
    let final_view = as_of::<License>(
        license_id().as_str(),
        &log.events,
        &CATALOGS,
        Cut::Position(i64::MAX),
    )
    .unwrap();
    let flat = projections::replay::flatten(&final_view);
    assert_eq!(
        causes.keys().collect::<Vec<_>>(),
        flat.keys().collect::<Vec<_>>(),
        "every field of the state now has its cause"
    );
}
