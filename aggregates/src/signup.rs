//! Hosted signup (`../shared/design/PORTAL.md` §3): someone asks for a Cloud plan or the
//! self-serve MSP Starter plan with their email and organisation's name, pays in a Stripe Checkout,
//! and the completed checkout opens their account. One stream per Checkout Session,
//! `signup/<session id>`, so the completion finds what was asked for by the session alone.
//!
//! Which plans are self-serve is a rule here: every `cloud` tier plan and `msp_starter`; the
//! larger MSP plans are sold by a person. Grandfathered and continuity-only plans cannot be bought.

use crate::catalog::BillingCycle;
use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use crate::ids::{bounded_text, AccountId, Email};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest organisation name (the account's display name).
pub const ORG_NAME_LEN_MAX: usize = 120;
/// The one MSP plan sold without a person.
pub const SELF_SERVE_MSP_PLAN: &str = "msp_starter";

/// The signups, one per Checkout Session.
pub struct Signup;

/// A signup's plan, priced: what the Checkout Session charges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedSignup {
    /// The canonical plan.
    pub plan_key: String,
    /// Its tier.
    pub tier: String,
    /// Its cadence.
    pub billing_cycle: BillingCycle,
    /// The Stripe price.
    pub price_id: String,
}

/// Prices a self-serve hosted plan (a pure query, asked before the Checkout Session exists).
pub fn price_signup(
    plan_key: &str,
    billing_cycle: BillingCycle,
    context: &Context<'_>,
) -> Result<PricedSignup, DomainError> {
    let canonical = context.catalog.canonical_plan(plan_key);
    let plan = context
        .catalog
        .plan(&canonical)
        .ok_or_else(|| DomainError::UnknownPlan {
            plan: plan_key.to_owned(),
        })?;
    let self_serve = plan.tier == "cloud" || plan.key == SELF_SERVE_MSP_PLAN;
    if plan.grandfathered || !plan.purchasable || !self_serve || plan.max_workspaces.is_none() {
        return Err(DomainError::PlanNotPurchasable {
            plan: plan.key.clone(),
        });
    }
    let price = context
        .catalog
        .price_for(&plan.key, billing_cycle)
        .ok_or_else(|| {
            DomainError::invalid(
                "billing_cycle",
                format!("plan {} has no such price", plan.key),
            )
        })?;
    Ok(PricedSignup {
        plan_key: plan.key.clone(),
        tier: plan.tier.clone(),
        billing_cycle,
        price_id: price.id.clone(),
    })
}

/// What can be asked of a signup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignupCommand {
    /// Record a signup whose Checkout Session was just created.
    Start {
        /// Who signs up (the account's first Owner).
        email: Email,
        /// The organisation's name (the account's display name).
        org_name: String,
        /// The plan, priced.
        priced: PricedSignup,
    },
    /// The checkout completed and opened this account.
    Complete {
        /// The account opened.
        account_id: AccountId,
    },
}

/// Events of a signup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum SignupEvent {
    /// Someone started signing up.
    SignupStarted {
        /// Who (sealed in the log, like every email).
        email: Email,
        /// The organisation's name.
        org_name: String,
        /// The plan, priced.
        priced: PricedSignup,
        /// When.
        at: DateTime<Utc>,
    },
    /// The checkout completed and opened the account.
    SignupCompleted {
        /// The account.
        account_id: AccountId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SignupEvent {}

/// A started signup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedSignup {
    /// Who.
    pub email: Email,
    /// The organisation's name.
    pub org_name: String,
    /// The plan, priced.
    pub priced: PricedSignup,
    /// The account it opened, once completed.
    pub account_id: Option<AccountId>,
}

/// A signup's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignupState {
    /// The signup, once started.
    pub started: Option<StartedSignup>,
}

impl Decider for Signup {
    const STREAM_TYPE: &'static str = "signup";
    type State = SignupState;
    type Command = SignupCommand;
    type Event = SignupEvent;
    type Error = DomainError;

    fn decide(
        state: &SignupState,
        command: &SignupCommand,
        context: &Context<'_>,
    ) -> Result<Vec<SignupEvent>, DomainError> {
        match (command, &state.started) {
            (SignupCommand::Start { .. }, Some(_)) => {
                Err(DomainError::AlreadyExists { entity: "signup" })
            }
            (
                SignupCommand::Start {
                    email,
                    org_name,
                    priced,
                },
                None,
            ) => Ok(vec![SignupEvent::SignupStarted {
                email: email.clone(),
                org_name: bounded_text("org_name", org_name, ORG_NAME_LEN_MAX)?,
                priced: priced.clone(),
                at: context.now,
            }]),
            (SignupCommand::Complete { .. }, None) => {
                Err(DomainError::NotFound { entity: "signup" })
            }
            (SignupCommand::Complete { account_id }, Some(started)) => {
                Ok(match started.account_id {
                    Some(_) => Vec::new(),
                    None => vec![SignupEvent::SignupCompleted {
                        account_id: account_id.clone(),
                        at: context.now,
                    }],
                })
            }
        }
    }

    fn evolve(mut state: SignupState, event: &SignupEvent) -> SignupState {
        match event {
            SignupEvent::SignupStarted {
                email,
                org_name,
                priced,
                ..
            } => {
                state.started.get_or_insert_with(|| StartedSignup {
                    email: email.clone(),
                    org_name: org_name.clone(),
                    priced: priced.clone(),
                    account_id: None,
                });
            }
            SignupEvent::SignupCompleted { account_id, .. } => {
                if let Some(started) = state.started.as_mut() {
                    started.account_id.get_or_insert_with(|| account_id.clone());
                }
            }
        }
        state
    }
}
