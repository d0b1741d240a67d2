//! DOMAIN.md §9 — each Stripe event id takes effect once, and is recorded whether handled or not.

mod support;

use aggregates::stripe_event::{RecordStripeEvent, StripeEventReceipt, StripeEventRecord};
use support::{given, t0};

fn record(ignored: Option<&str>) -> RecordStripeEvent {
    RecordStripeEvent {
        event_type: String::from("customer.created"),
        created: t0(),
        ignored_because: ignored.map(str::to_owned),
    }
}

#[test]
fn an_unhandled_event_is_recorded_as_ignored_with_its_reason() {
    given::<StripeEventReceipt>(vec![])
        .when(record(Some("not a type the ledger handles")))
        .then(vec![
            StripeEventRecord::StripeEventReceived {
                stripe_type: String::from("customer.created"),
                created: t0(),
            },
            StripeEventRecord::StripeEventIgnored {
                reason: String::from("not a type the ledger handles"),
            },
        ]);
}

#[test]
fn an_event_already_received_takes_no_effect_again() {
    let received = vec![StripeEventRecord::StripeEventReceived {
        stripe_type: String::from("customer.created"),
        created: t0(),
    }];
    given::<StripeEventReceipt>(received)
        .when(record(None))
        .then(vec![]);
}
