//! Support replay (issue 5): a license's or an account's history event by event — what each event
//! changed in its billing state and entitlements, the state as of any position, recorded time or
//! effective time, and, for everything it has now, the event that made it so.
//!
//! One pure engine serves all three. A subject's *view* is its billing state and entitlements as
//! JSON at an instant (the fields that only count down with the clock — days remaining — are left
//! out, so a diff shows what events changed, not what time did), flattened to `field path → value`
//! (objects nest with `.`, keyed collections such as tenants are objects keyed by id, lists of
//! values are one value). Replaying folds the subject's own stream with its decider's `evolve` and
//! diffs the view before and after each event; events of the subject's other streams (its lookup
//! indexes, its handoff, its Stripe receipts) appear in the timeline with no changes of their own.

use crate::account_home::{account_home, LicenseBilling};
use crate::entitlements::license_entitlements;
use crate::FoldError;
use aggregates::account::{Account, AccountState};
use aggregates::catalog::{Catalog, CatalogHistory};
use aggregates::decider::{decode, Decider};
use aggregates::license::{License, LicenseState};
use aggregates::log::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A view flattened to `field path → value`.
pub type FlatView = BTreeMap<String, Value>;

/// A subject support can replay: a decider whose stream is the subject, and its view.
pub trait ReplaySubject: Decider {
    /// The subject's billing state and entitlements at `at`, as JSON; `Value::Null` before the
    /// subject exists.
    fn view(state: &Self::State, catalog: &Catalog, at: DateTime<Utc>) -> Value;
}

impl ReplaySubject for License {
    fn view(state: &LicenseState, catalog: &Catalog, at: DateTime<Utc>) -> Value {
        let Some(license) = &state.issued else {
            return Value::Null;
        };
        let mut entitlements = json!(license_entitlements(license, catalog, at, None));
        strip_clock_fields(&mut entitlements);
        json!({
            "billing": LicenseBilling::of(license, catalog),
            "entitlements": entitlements,
            "installations": license.installations.iter().map(|(id, installation)| {
                (id.to_string(), json!(installation))
            }).collect::<Map<_, _>>(),
        })
    }
}

impl ReplaySubject for Account {
    fn view(state: &AccountState, catalog: &Catalog, at: DateTime<Utc>) -> Value {
        let Some(account) = &state.account else {
            return Value::Null;
        };
        let home = account_home(account, &[], catalog, at);
        let keyed = |items: Vec<Value>, key: &str| -> Map<String, Value> {
            items
                .into_iter()
                .map(|mut item| {
                    let id = item[key].as_str().unwrap_or_default().to_owned();
                    if let Some(object) = item.as_object_mut() {
                        object.remove(key);
                    }
                    (id, item)
                })
                .collect()
        };
        json!({
            "name": home.name,
            "kind": home.kind,
            "billing": home.billing,
            "workspaces": home.workspaces,
            "tenants": keyed(home.tenants.iter().map(|t| json!(t)).collect(), "tenant_id"),
            "members": keyed(home.members.iter().map(|m| json!(m)).collect(), "id"),
            "invitations": keyed(home.invitations.iter().map(|i| json!(i)).collect(), "id"),
        })
    }
}

/// Entitlement fields that change with the clock alone.
fn strip_clock_fields(entitlements: &mut Value) {
    if let Some(object) = entitlements.as_object_mut() {
        object.remove("days_remaining");
        object.remove("trial_days_remaining");
    }
}

/// Flattens a view: nested objects join with `.`; anything else is one value.
pub fn flatten(view: &Value) -> FlatView {
    fn walk(prefix: &str, value: &Value, out: &mut FlatView) {
        match value {
            Value::Object(object) if !object.is_empty() => {
                for (key, value) in object {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            Value::Null if !prefix.is_empty() => {}
            _ if prefix.is_empty() => {}
            _ => {
                out.insert(prefix.to_owned(), value.clone());
            }
        }
    }
    let mut out = FlatView::new();
    walk("", view, &mut out);
    out
}

/// One field an event changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The field path.
    pub field: String,
    /// Its value before the event (`None`: not set).
    pub before: Option<Value>,
    /// Its value after the event (`None`: no longer set).
    pub after: Option<Value>,
}

/// The fields whose values differ between two views, in field order.
pub fn diff(before: &FlatView, after: &FlatView) -> Vec<Change> {
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| before.get(*field) != after.get(*field))
        .map(|field| Change {
            field: field.clone(),
            before: before.get(field).cloned(),
            after: after.get(field).cloned(),
        })
        .collect()
}

/// One event of a timeline, with who, why and when, and what it changed in the subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Its global position.
    pub position: i64,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub stream_version: i64,
    /// Its type.
    pub event_type: String,
    /// Who caused it.
    pub actor: String,
    /// What directly caused it.
    pub causation_id: Option<String>,
    /// The business flow it belongs to.
    pub correlation_id: Option<String>,
    /// The HTTP request that led to it.
    pub request_id: Option<String>,
    /// When the ledger recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When it took effect.
    pub effective_at: DateTime<Utc>,
    /// The catalog version in force when it happened, which its view was read with.
    pub catalog_version: u32,
    /// What it changed in the subject's view (empty for events of the subject's other streams).
    pub changes: Vec<Change>,
}

fn is_subject_event<D: Decider>(event: &RecordedEvent, subject_id: &str) -> bool {
    event.stream.stream_type() == D::STREAM_TYPE && event.stream.stream_id() == subject_id
}

fn folded<D: Decider>(state: D::State, event: &RecordedEvent) -> Result<D::State, FoldError> {
    let decoded: D::Event = decode(&event.event_type, &event.payload)
        .map_err(|e| FoldError::new(format!("position {}: {e}", event.global_position)))?;
    Ok(D::evolve(state, &decoded))
}

/// The timeline of subject `subject_id` from `events` (its streams' events, in global order): every
/// event with what it changed in the subject's view at its effective time.
pub fn timeline<D: ReplaySubject>(
    subject_id: &str,
    events: &[RecordedEvent],
    catalogs: &CatalogHistory,
) -> Result<Vec<Step>, FoldError> {
    let mut state = D::State::default();
    let mut steps = Vec::with_capacity(events.len());
    for event in events {
        let at = event.metadata.effective_at;
        let catalog = catalogs.at(event.global_position.0);
        let changes = if is_subject_event::<D>(event, subject_id) {
            let before = flatten(&D::view(&state, catalog, at));
            state = folded::<D>(state, event)?;
            diff(&before, &flatten(&D::view(&state, catalog, at)))
        } else {
            Vec::new()
        };
        steps.push(Step {
            position: event.global_position.0,
            stream: event.stream.to_string(),
            stream_version: event.stream_version.0,
            event_type: event.event_type.clone(),
            actor: event.metadata.actor.clone(),
            causation_id: event.metadata.causation_id.clone(),
            correlation_id: event.metadata.correlation_id.clone(),
            request_id: event.metadata.request_id.clone(),
            recorded_at: event.recorded_at,
            effective_at: at,
            catalog_version: catalog.version(),
            changes,
        });
    }
    Ok(steps)
}

/// Where an as-of question cuts the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Events up to this global position.
    Position(i64),
    /// Events the ledger had recorded by then.
    RecordedAt(DateTime<Utc>),
    /// Events that had taken effect by then (in log order, whenever they were recorded).
    EffectiveAt(DateTime<Utc>),
}

/// The subject's view as of `cut`: its own stream folded up to the cut, seen at the cut's instant
/// (for a position, the effective time of the last event folded). `Value::Null` if it did not
/// exist yet.
pub fn as_of<D: ReplaySubject>(
    subject_id: &str,
    events: &[RecordedEvent],
    catalogs: &CatalogHistory,
    cut: Cut,
) -> Result<Value, FoldError> {
    let mut state = D::State::default();
    let mut instant = None;
    let mut last_position = None;
    for event in events
        .iter()
        .filter(|e| is_subject_event::<D>(e, subject_id))
    {
        let included = match cut {
            Cut::Position(position) => event.global_position.0 <= position,
            Cut::RecordedAt(at) => event.recorded_at <= at,
            Cut::EffectiveAt(at) => event.metadata.effective_at <= at,
        };
        if included {
            state = folded::<D>(state, event)?;
            instant = Some(event.metadata.effective_at);
            last_position = Some(event.global_position.0);
        }
    }
    // The version in force at the cut: at the last event folded for a position or a time.
    let catalog = catalogs.at(match cut {
        Cut::Position(position) => position,
        Cut::RecordedAt(_) | Cut::EffectiveAt(_) => last_position.unwrap_or(0),
    });
    let at = match cut {
        Cut::Position(_) => instant,
        Cut::RecordedAt(at) | Cut::EffectiveAt(at) => Some(at),
    };
    Ok(at.map_or(Value::Null, |at| D::view(&state, catalog, at)))
}

/// What made a field what it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// The field's value now.
    pub value: Value,
    /// The event that last set it.
    pub position: i64,
    /// Its type.
    pub event_type: String,
    /// When it took effect.
    pub effective_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: String,
}

/// For every field of the subject's view after `steps`, the event that last changed it.
pub fn why(steps: &[Step]) -> BTreeMap<String, Cause> {
    let mut causes = BTreeMap::new();
    for step in steps {
        for change in &step.changes {
            match &change.after {
                Some(value) => {
                    causes.insert(
                        change.field.clone(),
                        Cause {
                            value: value.clone(),
                            position: step.position,
                            event_type: step.event_type.clone(),
                            effective_at: step.effective_at,
                            actor: step.actor.clone(),
                        },
                    );
                }
                None => {
                    causes.remove(&change.field);
                }
            }
        }
    }
    causes
}
