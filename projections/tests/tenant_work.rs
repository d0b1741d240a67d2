//! The provisioner's queue: a workspace is in it while it waits for the provisioner (being created
//! or torn down) and leaves it on any other state.

use aggregates::account::{AccountEvent, TenantState};
use aggregates::decider::encode;
use aggregates::ids::{TenantId, UserId};
use aggregates::log::{EventMetadata, Position, RecordedEvent, StreamName, StreamVersion};
use chrono::{TimeZone, Utc};
use projections::tenant_work::TenantWork;
use projections::DocumentProjection;

fn recorded(version: i64, event: &AccountEvent) -> RecordedEvent {
    let encoded = encode(event).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap();
    RecordedEvent {
        global_position: Position(version),
        stream: StreamName::parse("account", "a_0000000001").unwrap(),
        stream_version: StreamVersion(version),
        event_id: format!("event-{version}"),
        event_type: encoded.event_type,
        schema_version: encoded.schema_version,
        payload: encoded.payload,
        metadata: EventMetadata {
            actor: String::from("system"),
            causation_id: None,
            correlation_id: None,
            request_id: None,
            effective_at: at,
        },
        recorded_at: at,
    }
}

/// Folds the events into the queue, as the runner does; returns the queue's keys and states.
fn queue(events: &[AccountEvent]) -> Vec<(String, TenantState)> {
    let mut documents = std::collections::BTreeMap::new();
    for (n, event) in events.iter().enumerate() {
        let recorded = recorded(n as i64 + 1, event);
        for key in TenantWork::document_keys(&recorded) {
            let before = documents.remove(&key);
            if let Some(after) = TenantWork::apply(&key, before, &recorded).unwrap() {
                documents.insert(key, after);
            }
        }
    }
    documents
        .into_iter()
        .map(|(key, document)| (key, document.state))
        .collect()
}

fn provisioned(n: u64) -> AccountEvent {
    AccountEvent::TenantProvisioned {
        tenant_id: TenantId::from_entropy(n),
        provisioned_by: UserId::from_entropy(1),
        at: Utc.with_ymd_and_hms(2026, 4, 1, 12, 0, 0).unwrap(),
        refresh_token_hash: None,
        display_name: None,
    }
}

fn changed(n: u64, from: TenantState, to: TenantState) -> AccountEvent {
    AccountEvent::TenantStateChanged {
        tenant_id: TenantId::from_entropy(n),
        from,
        to,
        reason: String::from("provisioner"),
        at: Utc.with_ymd_and_hms(2026, 4, 1, 12, 5, 0).unwrap(),
    }
}

#[test]
fn a_new_workspace_waits_in_the_queue_until_it_is_booted_or_failed() {
    let key = |n| format!("a_0000000001/{}", TenantId::from_entropy(n));
    assert_eq!(
        queue(&[provisioned(1), provisioned(2)]),
        vec![
            (key(1), TenantState::Provisioning),
            (key(2), TenantState::Provisioning)
        ]
    );
    assert_eq!(
        queue(&[
            provisioned(1),
            provisioned(2),
            changed(1, TenantState::Provisioning, TenantState::Active),
            changed(2, TenantState::Provisioning, TenantState::Failed),
        ]),
        vec![]
    );
}

#[test]
fn a_workspace_being_deleted_returns_to_the_queue_until_it_is_gone() {
    let active = [
        provisioned(1),
        changed(1, TenantState::Provisioning, TenantState::Active),
    ];
    let mut deleting = active.to_vec();
    deleting.push(changed(1, TenantState::Active, TenantState::Deleting));
    assert_eq!(
        queue(&deleting),
        vec![(
            format!("a_0000000001/{}", TenantId::from_entropy(1)),
            TenantState::Deleting
        )]
    );
    deleting.push(changed(1, TenantState::Deleting, TenantState::Deleted));
    assert_eq!(queue(&deleting), vec![]);
}
