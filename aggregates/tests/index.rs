//! DOMAIN.md §2 — secret indexes: a keyed hash opens exactly one thing, bound once.

mod support;

use aggregates::error::DomainError;
use aggregates::ids::{InstallationId, LicenseId};
use aggregates::index::{
    ActivationKeyEvent, ActivationKeyIndex, BindActivationKey, BindInstallationToken,
    InstallationTokenEvent, InstallationTokenIndex,
};
use support::given;

#[test]
fn an_activation_key_binds_to_one_license_once() {
    let bound = ActivationKeyEvent::ActivationKeyBound {
        license_id: LicenseId::from_entropy(1),
    };
    given::<ActivationKeyIndex>(vec![])
        .when(BindActivationKey {
            license_id: LicenseId::from_entropy(1),
        })
        .then(vec![bound.clone()]);
    given::<ActivationKeyIndex>(vec![bound.clone()])
        .when(BindActivationKey {
            license_id: LicenseId::from_entropy(1),
        })
        .then(vec![]);
    given::<ActivationKeyIndex>(vec![bound])
        .when(BindActivationKey {
            license_id: LicenseId::from_entropy(2),
        })
        .then_err(DomainError::AlreadyExists {
            entity: "activation key",
        });
}

#[test]
fn an_installation_token_binds_to_one_installation_once() {
    let bind = |n| BindInstallationToken {
        license_id: LicenseId::from_entropy(1),
        installation_id: InstallationId::from_entropy(n),
    };
    let bound = InstallationTokenEvent::InstallationTokenBound {
        license_id: LicenseId::from_entropy(1),
        installation_id: InstallationId::from_entropy(1),
    };
    given::<InstallationTokenIndex>(vec![])
        .when(bind(1))
        .then(vec![bound.clone()]);
    given::<InstallationTokenIndex>(vec![bound])
        .when(bind(2))
        .then_err(DomainError::AlreadyExists {
            entity: "installation token",
        });
}

#[test]
fn a_checkout_session_belongs_to_one_handoff() {
    use aggregates::ids::HandoffId;
    use aggregates::index::{BindCheckoutSession, CheckoutSessionEvent, CheckoutSessionIndex};
    let bound = CheckoutSessionEvent::CheckoutSessionBound {
        handoff_id: HandoffId::from_entropy(1),
    };
    given::<CheckoutSessionIndex>(vec![])
        .when(BindCheckoutSession {
            handoff_id: HandoffId::from_entropy(1),
        })
        .then(vec![bound.clone()]);
    given::<CheckoutSessionIndex>(vec![bound])
        .when(BindCheckoutSession {
            handoff_id: HandoffId::from_entropy(2),
        })
        .then_err(DomainError::AlreadyExists {
            entity: "checkout session",
        });
}

#[test]
fn a_stripe_object_links_to_the_latest_license_or_account() {
    use aggregates::ids::AccountId;
    use aggregates::index::{LinkStripeObject, StripeObjectEvent, StripeObjectIndex, StripeTarget};
    let license = |n| StripeTarget::License(LicenseId::from_entropy(n));
    let linked = |target| StripeObjectEvent::StripeObjectLinked { target };
    given::<StripeObjectIndex>(vec![])
        .when(LinkStripeObject { target: license(1) })
        .then(vec![linked(license(1))]);
    given::<StripeObjectIndex>(vec![linked(license(1))])
        .when(LinkStripeObject { target: license(1) })
        .then(vec![]);
    let account = StripeTarget::Account(AccountId::from_entropy(2));
    let state = given::<StripeObjectIndex>(vec![linked(license(1))])
        .when(LinkStripeObject {
            target: account.clone(),
        })
        .then(vec![linked(account.clone())]);
    assert_eq!(state.target, Some(account));
}

#[test]
fn a_lease_refresh_token_belongs_to_one_tenant() {
    use aggregates::ids::{AccountId, TenantId};
    use aggregates::index::{BindLeaseRefresh, LeaseRefreshEvent, LeaseRefreshIndex};
    let bind = |n| BindLeaseRefresh {
        account_id: AccountId::from_entropy(1),
        tenant_id: TenantId::from_entropy(n),
    };
    let bound = LeaseRefreshEvent::LeaseRefreshBound {
        account_id: AccountId::from_entropy(1),
        tenant_id: TenantId::from_entropy(1),
    };
    given::<LeaseRefreshIndex>(vec![])
        .when(bind(1))
        .then(vec![bound.clone()]);
    given::<LeaseRefreshIndex>(vec![bound])
        .when(bind(2))
        .then_err(DomainError::AlreadyExists {
            entity: "lease refresh token",
        });
}
