//! Lookup indexes kept in the log: an activation key to its license, an installation token to its
//! installation, a Stripe Checkout Session to its handoff. Each is a stream named by what is looked
//! up, holding one binding event, so a lookup is a strongly consistent stream read, written in the
//! same atomic append as the fact it indexes, and a binding can never be taken twice. Secrets are
//! named by their keyed hash (HMAC under a server key), so the log never holds anything that opens
//! a door.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{AccountId, HandoffId, InstallationId, LicenseId, TenantId};
use serde::{Deserialize, Serialize};

/// The activation-key index: `activation_key/<hash>` → license.
pub struct ActivationKeyIndex;

/// What an activation-key index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivationKeyBinding {
    /// The license the key activates.
    pub license_id: Option<LicenseId>,
}

/// Bind an activation key to its license.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindActivationKey {
    /// The license.
    pub license_id: LicenseId,
}

/// Events of the activation-key index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum ActivationKeyEvent {
    /// The key now activates this license.
    ActivationKeyBound {
        /// The license.
        license_id: LicenseId,
    },
}

impl DomainEvent for ActivationKeyEvent {}

impl Decider for ActivationKeyIndex {
    const STREAM_TYPE: &'static str = "activation_key";
    type State = ActivationKeyBinding;
    type Command = BindActivationKey;
    type Event = ActivationKeyEvent;
    type Error = DomainError;

    fn decide(
        state: &ActivationKeyBinding,
        command: &BindActivationKey,
        _: &Context<'_>,
    ) -> Result<Vec<ActivationKeyEvent>, DomainError> {
        match &state.license_id {
            Some(bound) if bound == &command.license_id => Ok(Vec::new()),
            Some(_) => Err(DomainError::AlreadyExists {
                entity: "activation key",
            }),
            None => Ok(vec![ActivationKeyEvent::ActivationKeyBound {
                license_id: command.license_id.clone(),
            }]),
        }
    }

    fn evolve(state: ActivationKeyBinding, event: &ActivationKeyEvent) -> ActivationKeyBinding {
        match event {
            ActivationKeyEvent::ActivationKeyBound { license_id } => ActivationKeyBinding {
                license_id: state.license_id.or_else(|| Some(license_id.clone())),
            },
        }
    }
}

/// The installation-token index: `installation_token/<hash>` → license and installation.
pub struct InstallationTokenIndex;

/// What an installation-token index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallationTokenBinding {
    /// The license and installation the token belongs to.
    pub bound: Option<(LicenseId, InstallationId)>,
}

/// Bind an installation token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindInstallationToken {
    /// The license.
    pub license_id: LicenseId,
    /// The installation.
    pub installation_id: InstallationId,
}

/// Events of the installation-token index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum InstallationTokenEvent {
    /// The token now belongs to this installation.
    InstallationTokenBound {
        /// The license.
        license_id: LicenseId,
        /// The installation.
        installation_id: InstallationId,
    },
}

impl DomainEvent for InstallationTokenEvent {}

impl Decider for InstallationTokenIndex {
    const STREAM_TYPE: &'static str = "installation_token";
    type State = InstallationTokenBinding;
    type Command = BindInstallationToken;
    type Event = InstallationTokenEvent;
    type Error = DomainError;

    fn decide(
        state: &InstallationTokenBinding,
        command: &BindInstallationToken,
        _: &Context<'_>,
    ) -> Result<Vec<InstallationTokenEvent>, DomainError> {
        let wanted = (command.license_id.clone(), command.installation_id.clone());
        match &state.bound {
            Some(bound) if bound == &wanted => Ok(Vec::new()),
            Some(_) => Err(DomainError::AlreadyExists {
                entity: "installation token",
            }),
            None => Ok(vec![InstallationTokenEvent::InstallationTokenBound {
                license_id: command.license_id.clone(),
                installation_id: command.installation_id.clone(),
            }]),
        }
    }

    fn evolve(
        state: InstallationTokenBinding,
        event: &InstallationTokenEvent,
    ) -> InstallationTokenBinding {
        match event {
            InstallationTokenEvent::InstallationTokenBound {
                license_id,
                installation_id,
            } => InstallationTokenBinding {
                bound: state
                    .bound
                    .or_else(|| Some((license_id.clone(), installation_id.clone()))),
            },
        }
    }
}

/// The checkout-session index: `checkout_session/<session id>` → the handoff that started it.
pub struct CheckoutSessionIndex;

/// What a checkout-session index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckoutSessionBinding {
    /// The handoff the session belongs to.
    pub handoff_id: Option<HandoffId>,
}

/// Bind a Checkout Session to its handoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindCheckoutSession {
    /// The handoff.
    pub handoff_id: HandoffId,
}

/// Events of the checkout-session index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum CheckoutSessionEvent {
    /// The session belongs to this handoff.
    CheckoutSessionBound {
        /// The handoff.
        handoff_id: HandoffId,
    },
}

impl DomainEvent for CheckoutSessionEvent {}

impl Decider for CheckoutSessionIndex {
    const STREAM_TYPE: &'static str = "checkout_session";
    type State = CheckoutSessionBinding;
    type Command = BindCheckoutSession;
    type Event = CheckoutSessionEvent;
    type Error = DomainError;

    fn decide(
        state: &CheckoutSessionBinding,
        command: &BindCheckoutSession,
        _: &Context<'_>,
    ) -> Result<Vec<CheckoutSessionEvent>, DomainError> {
        match &state.handoff_id {
            Some(bound) if bound == &command.handoff_id => Ok(Vec::new()),
            Some(_) => Err(DomainError::AlreadyExists {
                entity: "checkout session",
            }),
            None => Ok(vec![CheckoutSessionEvent::CheckoutSessionBound {
                handoff_id: command.handoff_id.clone(),
            }]),
        }
    }

    fn evolve(
        state: CheckoutSessionBinding,
        event: &CheckoutSessionEvent,
    ) -> CheckoutSessionBinding {
        match event {
            CheckoutSessionEvent::CheckoutSessionBound { handoff_id } => CheckoutSessionBinding {
                handoff_id: state.handoff_id.or_else(|| Some(handoff_id.clone())),
            },
        }
    }
}

/// The Stripe-object index: `stripe_object/<Stripe id>` → the license or hosted account a
/// subscription, customer or charge belongs to. Stripe ids are unique across object types (`sub_`,
/// `cus_`, `ch_` …), so one stream type serves them all. The latest link wins: a customer who buys
/// again links to the newer purchase.
pub struct StripeObjectIndex;

/// What a Stripe object belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum StripeTarget {
    /// A self-hosted license.
    License(LicenseId),
    /// A hosted account.
    Account(AccountId),
}

/// What a Stripe-object index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StripeObjectLink {
    /// What the object belongs to now.
    pub target: Option<StripeTarget>,
}

/// Link a Stripe object to a license or an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStripeObject {
    /// The license or account.
    pub target: StripeTarget,
}

/// Events of the Stripe-object index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum StripeObjectEvent {
    /// The object belongs to this license or account from now on.
    StripeObjectLinked {
        /// The license or account.
        target: StripeTarget,
    },
}

impl DomainEvent for StripeObjectEvent {}

impl Decider for StripeObjectIndex {
    const STREAM_TYPE: &'static str = "stripe_object";
    type State = StripeObjectLink;
    type Command = LinkStripeObject;
    type Event = StripeObjectEvent;
    type Error = DomainError;

    fn decide(
        state: &StripeObjectLink,
        command: &LinkStripeObject,
        _: &Context<'_>,
    ) -> Result<Vec<StripeObjectEvent>, DomainError> {
        if state.target.as_ref() == Some(&command.target) {
            return Ok(Vec::new());
        }
        Ok(vec![StripeObjectEvent::StripeObjectLinked {
            target: command.target.clone(),
        }])
    }

    fn evolve(_: StripeObjectLink, event: &StripeObjectEvent) -> StripeObjectLink {
        match event {
            StripeObjectEvent::StripeObjectLinked { target } => StripeObjectLink {
                target: Some(target.clone()),
            },
        }
    }
}

/// The lease-refresh index: `lease_refresh/<token hash>` → the account and tenant the hosted refresh
/// token belongs to.
pub struct LeaseRefreshIndex;

/// What a lease-refresh index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRefreshBinding {
    /// The account and tenant.
    pub bound: Option<(AccountId, TenantId)>,
}

/// Bind a lease refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindLeaseRefresh {
    /// The account.
    pub account_id: AccountId,
    /// The tenant.
    pub tenant_id: TenantId,
}

/// Events of the lease-refresh index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum LeaseRefreshEvent {
    /// The token now belongs to this tenant.
    LeaseRefreshBound {
        /// The account.
        account_id: AccountId,
        /// The tenant.
        tenant_id: TenantId,
    },
}

impl DomainEvent for LeaseRefreshEvent {}

impl Decider for LeaseRefreshIndex {
    const STREAM_TYPE: &'static str = "lease_refresh";
    type State = LeaseRefreshBinding;
    type Command = BindLeaseRefresh;
    type Event = LeaseRefreshEvent;
    type Error = DomainError;

    fn decide(
        state: &LeaseRefreshBinding,
        command: &BindLeaseRefresh,
        _: &Context<'_>,
    ) -> Result<Vec<LeaseRefreshEvent>, DomainError> {
        let wanted = (command.account_id.clone(), command.tenant_id.clone());
        match &state.bound {
            Some(bound) if bound == &wanted => Ok(Vec::new()),
            Some(_) => Err(DomainError::AlreadyExists {
                entity: "lease refresh token",
            }),
            None => Ok(vec![LeaseRefreshEvent::LeaseRefreshBound {
                account_id: command.account_id.clone(),
                tenant_id: command.tenant_id.clone(),
            }]),
        }
    }

    fn evolve(state: LeaseRefreshBinding, event: &LeaseRefreshEvent) -> LeaseRefreshBinding {
        match event {
            LeaseRefreshEvent::LeaseRefreshBound {
                account_id,
                tenant_id,
            } => LeaseRefreshBinding {
                bound: state
                    .bound
                    .or_else(|| Some((account_id.clone(), tenant_id.clone()))),
            },
        }
    }
}

/// The sign-in token index: `sign_in_token/<hash>` → the person whose magic link carries it
/// (`per_…`, the keyed hash of their email, which names their `magic_link` and `user` streams).
pub struct SignInTokenIndex;

/// What a sign-in token index stream holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignInTokenBinding {
    /// The person, once bound.
    pub person_id: Option<String>,
}

/// Bind a sign-in token to its person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSignInToken {
    /// The person (`per_` and 32 hex digits).
    pub person_id: String,
}

/// Events of the sign-in token index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum SignInTokenEvent {
    /// The token now signs this person in.
    SignInTokenBound {
        /// The person.
        person_id: String,
    },
}

impl DomainEvent for SignInTokenEvent {}

/// Whether `raw` has the shape of a person id: `per_` and 32 lower-case hex digits.
pub fn is_person_id(raw: &str) -> bool {
    raw.strip_prefix("per_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Decider for SignInTokenIndex {
    const STREAM_TYPE: &'static str = "sign_in_token";
    type State = SignInTokenBinding;
    type Command = BindSignInToken;
    type Event = SignInTokenEvent;
    type Error = DomainError;

    fn decide(
        state: &SignInTokenBinding,
        command: &BindSignInToken,
        _: &Context<'_>,
    ) -> Result<Vec<SignInTokenEvent>, DomainError> {
        if !is_person_id(&command.person_id) {
            return Err(DomainError::invalid(
                "person_id",
                "must be per_ and 32 lower-case hex digits",
            ));
        }
        match &state.person_id {
            Some(bound) if bound == &command.person_id => Ok(Vec::new()),
            Some(_) => Err(DomainError::AlreadyExists {
                entity: "sign-in token",
            }),
            None => Ok(vec![SignInTokenEvent::SignInTokenBound {
                person_id: command.person_id.clone(),
            }]),
        }
    }

    fn evolve(state: SignInTokenBinding, event: &SignInTokenEvent) -> SignInTokenBinding {
        match event {
            SignInTokenEvent::SignInTokenBound { person_id } => SignInTokenBinding {
                person_id: state.person_id.or_else(|| Some(person_id.clone())),
            },
        }
    }
}
