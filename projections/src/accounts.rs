//! Hosted-account read models: each account as its own decider folds it (members, invitations,
//! billing, tenants — the account home's data), and the accounts each member email belongs to
//! (what the portal shows a person who signs in).

use crate::{DocumentProjection, FoldError};
use aggregates::account::{Account, AccountEvent, AccountState, OpenAccount};
use aggregates::decider::{decode, Decider};
use aggregates::log::RecordedEvent;
use serde::{Deserialize, Serialize};

fn account_event(event: &RecordedEvent) -> Result<AccountEvent, FoldError> {
    decode(&event.event_type, &event.payload).map_err(|e| FoldError::new(e.to_string()))
}

fn is_account(event: &RecordedEvent) -> bool {
    event.stream.stream_type() == Account::STREAM_TYPE
}

/// The account projection: one document per account, keyed by account id.
pub struct Accounts;

impl DocumentProjection for Accounts {
    const NAME: &'static str = "accounts";
    type Document = OpenAccount;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if is_account(event) {
            vec![event.stream.stream_id().to_owned()]
        } else {
            Vec::new()
        }
    }

    fn apply(
        _key: &str,
        document: Option<OpenAccount>,
        event: &RecordedEvent,
    ) -> Result<Option<OpenAccount>, FoldError> {
        Ok(Account::evolve(AccountState { account: document }, &account_event(event)?).account)
    }
}

/// The accounts one email is a member of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    /// The member's email.
    pub email: String,
    /// Their account ids, in joining order.
    pub account_ids: Vec<String>,
}

/// The member-email index: one document per email, listing every account the email has joined.
/// A removal event names the user, not the email, so readers confirm a membership in the account
/// document before trusting it.
pub struct AccountsByMemberEmail;

impl DocumentProjection for AccountsByMemberEmail {
    const NAME: &'static str = "accounts_by_member_email";
    type Document = Memberships;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if !is_account(event) || event.event_type != "member_joined" {
            return Vec::new();
        }
        event.payload["email"]
            .as_str()
            .map(|email| vec![email.to_owned()])
            .unwrap_or_default()
    }

    fn apply(
        key: &str,
        document: Option<Memberships>,
        event: &RecordedEvent,
    ) -> Result<Option<Memberships>, FoldError> {
        let AccountEvent::MemberJoined { .. } = account_event(event)? else {
            return Ok(document);
        };
        let account_id = event.stream.stream_id().to_owned();
        let mut memberships = document.unwrap_or_else(|| Memberships {
            email: key.to_owned(),
            account_ids: Vec::new(),
        });
        if !memberships.account_ids.contains(&account_id) {
            memberships.account_ids.push(account_id);
        }
        Ok(Some(memberships))
    }
}
