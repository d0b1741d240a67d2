//! PORTAL.md §2 — email delivery: a message is delivered once; failures back off and the last
//! attempt abandons it; a message done changes no more.

mod support;

use aggregates::mail::{
    retry_delay, Mail, MailCommand, MailEvent, MAIL_ATTEMPTS_MAX, MAIL_RETRY_DELAY_SECONDS_MAX,
};
use chrono::Duration;
use support::{at, given};

fn failed(attempt: u32, seconds: i64) -> MailEvent {
    MailEvent::MailDeliveryFailed {
        attempt,
        reason: String::from("451 try later"),
        retry_at: at(seconds) + retry_delay(attempt),
    }
}

fn failure() -> MailCommand {
    MailCommand::RecordFailure {
        reason: String::from("451 try later"),
    }
}

#[test]
fn a_delivery_is_recorded_with_its_attempt() {
    given::<Mail>(vec![failed(1, 0)])
        .at(at(40))
        .when(MailCommand::RecordDelivery)
        .then(vec![MailEvent::MailDelivered {
            attempt: 2,
            at: at(40),
        }]);
}

#[test]
fn a_delivered_message_is_never_delivered_again() {
    given::<Mail>(vec![MailEvent::MailDelivered {
        attempt: 1,
        at: at(0),
    }])
    .when(MailCommand::RecordDelivery)
    .then(vec![]);
}

#[test]
fn failures_back_off_exponentially_up_to_an_hour() {
    assert_eq!(retry_delay(1), Duration::seconds(30));
    assert_eq!(retry_delay(2), Duration::seconds(60));
    assert_eq!(retry_delay(3), Duration::seconds(120));
    assert_eq!(
        retry_delay(30),
        Duration::seconds(MAIL_RETRY_DELAY_SECONDS_MAX)
    );
    given::<Mail>(vec![failed(1, 0)])
        .at(at(30))
        .when(failure())
        .then(vec![failed(2, 30)]);
}

#[test]
fn the_last_failure_abandons_the_message() {
    let history = (1..MAIL_ATTEMPTS_MAX).map(|n| failed(n, 0)).collect();
    given::<Mail>(history).at(at(10)).when(failure()).then(vec![
        failed(MAIL_ATTEMPTS_MAX, 10),
        MailEvent::MailAbandoned {
            reason: format!("gave up after {MAIL_ATTEMPTS_MAX} attempts: 451 try later"),
            at: at(10),
        },
    ]);
}

#[test]
fn an_abandoned_message_is_not_sent() {
    given::<Mail>(vec![MailEvent::MailAbandoned {
        reason: String::from("the link expired"),
        at: at(0),
    }])
    .when(MailCommand::RecordDelivery)
    .then(vec![]);
}

#[test]
fn a_reason_is_kept_short_and_on_one_line() {
    let events = given::<Mail>(vec![])
        .when(MailCommand::RecordFailure {
            reason: format!("550\r\n{}", "x".repeat(1000)),
        })
        .result()
        .unwrap();
    let MailEvent::MailDeliveryFailed { reason, .. } = &events[0] else {
        panic!("a failure is recorded");
    };
    assert!(reason.len() <= 300 && !reason.contains('\n'));
}
