//! DOMAIN.md §5.4 — the legacy v5 exchange and every failure outcome decided here.

mod support;

use aggregates::catalog::BillingCycle;
use aggregates::error::DomainError;
use aggregates::exchange::{
    ExchangeEvent, ExchangeLegacyLicense, LegacyExchange, LegacyLicense, LegacyTokenCheck,
    EXCHANGE_ATTEMPTS_MAX,
};
use aggregates::ids::{Email, LicenseId};
use support::{at, given};

fn legacy(revoked: bool, renewed: bool, migratable: bool) -> LegacyTokenCheck {
    LegacyTokenCheck::Verified(LegacyLicense {
        legacy_license_id: String::from("v5-lic-1"),
        email: Email::parse("owner@example.com").unwrap(),
        billing_cycle: BillingCycle::Annual,
        revoked,
        renewed_key_available: renewed,
        migratable,
    })
}

fn exchange(check: LegacyTokenCheck, new_id: u64) -> ExchangeLegacyLicense {
    ExchangeLegacyLicense {
        check,
        new_license_id: LicenseId::from_entropy(new_id),
    }
}

fn succeeded(license: u64, first: bool, seconds: i64) -> ExchangeEvent {
    ExchangeEvent::LegacyExchangeSucceeded {
        legacy_license_id: String::from("v5-lic-1"),
        license_id: LicenseId::from_entropy(license),
        plan_version: String::from("v5_pro_annual_grandfathered"),
        email: Email::parse("owner@example.com").unwrap(),
        first,
        at: at(seconds),
    }
}

#[test]
fn a_valid_migratable_token_becomes_a_license_on_its_grandfathered_plan() {
    given::<LegacyExchange>(vec![])
        .when(exchange(legacy(false, false, true), 7))
        .then(vec![succeeded(7, true, 0)]);
}

#[test]
fn exchanging_again_lands_on_the_same_license() {
    given::<LegacyExchange>(vec![succeeded(7, true, 0)])
        .at(at(5))
        .when(exchange(legacy(false, false, true), 8))
        .then(vec![succeeded(7, false, 5)]);
}

#[test]
fn each_failure_is_recorded_with_its_code() {
    let cases = [
        (
            LegacyTokenCheck::Malformed,
            DomainError::ExchangeMalformed,
            "exchange_malformed",
        ),
        (
            LegacyTokenCheck::Invalid,
            DomainError::ExchangeInvalid,
            "exchange_invalid",
        ),
        (
            legacy(true, false, true),
            DomainError::ExchangeRevoked,
            "exchange_revoked",
        ),
        (
            legacy(false, true, true),
            DomainError::RenewedKeyAvailable,
            "RENEWED_KEY_AVAILABLE",
        ),
        (
            legacy(false, false, false),
            DomainError::ExchangeNotMigratable,
            "exchange_not_migratable",
        ),
    ];
    for (check, error, code) in cases {
        let events = given::<LegacyExchange>(vec![])
            .when(exchange(check, 1))
            .result()
            .unwrap();
        assert_eq!(
            events,
            vec![ExchangeEvent::LegacyExchangeFailed {
                code: code.to_owned(),
                at: at(0)
            }]
        );
        assert_eq!(events[0].failure(), Some(error));
    }
}

#[test]
fn too_many_attempts_in_an_hour_are_rate_limited() {
    let attempts: Vec<_> = (0..EXCHANGE_ATTEMPTS_MAX as i64)
        .map(|n| ExchangeEvent::LegacyExchangeFailed {
            code: String::from("exchange_invalid"),
            at: at(n * 60),
        })
        .collect();
    given::<LegacyExchange>(attempts)
        .at(at(600))
        .when(exchange(legacy(false, false, true), 1))
        .then_err(DomainError::ExchangeRateLimited {
            retry_after_seconds: 3000,
        });
}
