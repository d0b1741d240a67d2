//! Account access for the portal (`DOMAIN.md` §11, `../shared/design/PORTAL.md` §3): which
//! accounts a signed-in user belongs to, the roster, inviting, changing roles and removing.
//!
//! The rules (who may change what, the last owner) are the account decider's; this module loads
//! what a decision needs. An invitation to an email that is already a user makes a membership at
//! once; to one that is not, a pending invitation noted on that person's stream (so their first
//! sign-in accepts it), sent by the outbox. A user who is not a member of an account is refused
//! every route of it with `forbidden`, whether or not the account exists.

use crate::crypto::KeyMaterial;
use crate::engine::command::{decide_all, load};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::projection::wait_for_position;
use crate::engine::store::Store;
use crate::flows::sign_in::person_of;
use crate::flows::{stream, FlowError};
use aggregates::account::{Account, AccountCommand, AccountEvent, OpenAccount, Role};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email, InvitationId, UserId};
use aggregates::log::{EventMetadata, StreamName};
use aggregates::user::{RegisteredUser, User, UserCommand};
use async_trait::async_trait;
use projections::accounts::{AccountsByMemberEmail, Memberships};
use projections::licenses::LicensesByEmail;
use projections::DocumentProjection;
use rand::RngCore;
use std::time::Duration;

/// Accounts listed for one user at most (the portal's switcher).
pub const ACCOUNTS_PER_USER_MAX: usize = 100;
/// How long a portal read waits for the member index to fold the newest event, so a page loaded
/// right after signing in (which may have accepted invitations) shows them.
const MEMBER_INDEX_WAIT: Duration = Duration::from_secs(2);

/// An account as one of its members sees it.
pub struct MemberAccount {
    /// The account.
    pub account: OpenAccount,
    /// The member's role in it.
    pub role: Role,
}

/// Every account `user` is a member of, in joining order.
pub async fn accounts_of(
    store: &dyn Store,
    user: &RegisteredUser,
) -> Result<Vec<MemberAccount>, FlowError> {
    let head = store.head_position().await?;
    wait_for_position(store, AccountsByMemberEmail::NAME, head, MEMBER_INDEX_WAIT).await?;
    let Some(document) = store
        .read_document(AccountsByMemberEmail::NAME, user.email.as_str())
        .await?
    else {
        return Ok(Vec::new());
    };
    let memberships: Memberships = serde_json::from_value(document)
        .map_err(|_| FlowError::Broken("a member-index document does not decode"))?;
    let mut accounts = Vec::new();
    for account_id in memberships.account_ids.iter().take(ACCOUNTS_PER_USER_MAX) {
        let Ok(account_id) = AccountId::parse(account_id) else {
            continue;
        };
        if let Ok(member) = member_account(store, &account_id, &user.user_id).await {
            accounts.push(member);
        }
    }
    Ok(accounts)
}

/// The account `account_id` as its member `user_id` sees it; `forbidden` when they are no member
/// (or there is no such account).
pub async fn member_account(
    store: &dyn Store,
    account_id: &AccountId,
    user_id: &UserId,
) -> Result<MemberAccount, FlowError> {
    let (state, _) = load::<Account>(store, &account_stream(account_id)?).await?;
    let account = state.account.ok_or_else(not_a_member)?;
    let role = account
        .members
        .get(user_id)
        .map(|member| member.role)
        .ok_or_else(not_a_member)?;
    Ok(MemberAccount { account, role })
}

/// Whether `user_id` is a member of the (opened) account.
fn is_member(account: &aggregates::account::AccountState, user_id: &UserId) -> bool {
    account
        .account
        .as_ref()
        .is_some_and(|a| a.members.contains_key(user_id))
}

fn not_a_member() -> DomainError {
    DomainError::Forbidden {
        action: "use an account you are not a member of",
    }
}

fn account_stream(account_id: &AccountId) -> Result<StreamName, DomainError> {
    stream(Account::STREAM_TYPE, account_id.as_str())
}

/// Whether `email` owns a self-hosted license.
pub async fn has_self_hosted_commercial(
    store: &dyn Store,
    email: &Email,
) -> Result<bool, FlowError> {
    Ok(store
        .read_document(LicensesByEmail::NAME, email.as_str())
        .await?
        .is_some())
}

/// What an invitation made.
#[derive(Debug)]
pub enum Invited {
    /// The email was a user: they are a member now.
    Joined(UserId),
    /// The email was no user: a pending invitation, emailed.
    Pending(InvitationId),
}

/// Whom an invitation asks in, and as what.
pub struct NewMember<'a> {
    /// Their email.
    pub email: &'a Email,
    /// Their role.
    pub role: Role,
}

/// Invites a new member into `account_id` on behalf of `actor`.
#[tracing::instrument(skip_all, fields(account_id = %account_id))]
pub async fn invite(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    account_id: &AccountId,
    actor: &UserId,
    new_member: NewMember<'_>,
    metadata: EventMetadata,
) -> Result<Invited, FlowError> {
    let NewMember { email, role } = new_member;
    let attempt = InviteAttempt {
        account: account_stream(account_id)?,
        account_id,
        person: stream(User::STREAM_TYPE, &person_of(keys, email))?,
        actor,
        email,
        role,
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => answer,
        Decided::Replayed(_) => Err(FlowError::Broken("an invitation has no idempotency key")),
    }
}

/// An invitation: the account, and the invited person's stream.
struct InviteAttempt<'a> {
    account: StreamName,
    account_id: &'a AccountId,
    person: StreamName,
    actor: &'a UserId,
    email: &'a Email,
    role: Role,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for InviteAttempt<'_> {
    type Answer = Result<Invited, FlowError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let account = reads.load::<Account>(&self.account).await?;
        if !is_member(&account, self.actor) {
            return Ok(Decision::answer(Err(not_a_member().into())));
        }
        let person = reads.load::<User>(&self.person).await?;
        let invitation_id = InvitationId::from_entropy(rand::rngs::OsRng.next_u64());
        let invite = AccountCommand::Invite {
            actor: self.actor.clone(),
            invitation_id: invitation_id.clone(),
            email: self.email.clone(),
            role: self.role,
            existing_user: person.user.as_ref().map(|u| u.user_id.clone()),
        };
        let (events, after) = match decide_all::<Account>(account, &[invite], &self.context) {
            Ok(decided) => decided,
            Err(refusal) => return Ok(Decision::answer(Err(refusal.into()))),
        };
        let (person_events, _) =
            decide_all::<User>(person, &self.person_commands(&events), &self.context)?;
        let answer = invited(&events, after.account.as_ref(), self.email)?;
        Ok(Decision::answer(Ok(answer))
            .append::<Account>(self.account.clone(), &events)?
            .append::<User>(self.person.clone(), &person_events)?)
    }
}

impl InviteAttempt<'_> {
    /// What the invited person's stream records of the account's events: a new pending
    /// invitation is noted (their first sign-in accepts it), a replaced or accepted one settled.
    fn person_commands(&self, events: &[AccountEvent]) -> Vec<UserCommand> {
        events
            .iter()
            .filter_map(|event| match event {
                AccountEvent::MemberInvited { invitation_id, .. } => {
                    Some(UserCommand::NoteInvitation {
                        account_id: self.account_id.clone(),
                        invitation_id: invitation_id.clone(),
                    })
                }
                AccountEvent::InvitationWithdrawn { invitation_id, .. }
                | AccountEvent::MemberJoined {
                    invitation_id: Some(invitation_id),
                    ..
                } => Some(UserCommand::SettleInvitations {
                    invitation_ids: vec![invitation_id.clone()],
                }),
                _ => None,
            })
            .collect()
    }
}

/// What an invitation made: the member who joined, or the email's pending invitation (new, or
/// the one already there when nothing changed).
fn invited(
    events: &[AccountEvent],
    after: Option<&OpenAccount>,
    email: &Email,
) -> Result<Invited, FlowError> {
    if let Some(AccountEvent::MemberJoined { user_id, .. }) = events
        .iter()
        .find(|e| matches!(e, AccountEvent::MemberJoined { .. }))
    {
        return Ok(Invited::Joined(user_id.clone()));
    }
    after
        .and_then(|account| {
            account
                .invitations
                .iter()
                .find(|(_, invitation)| &invitation.email == email)
        })
        .map(|(id, _)| Invited::Pending(id.clone()))
        .ok_or(FlowError::Broken(
            "an invitation left no member and no pending row",
        ))
}

/// Changes a member's role (a pending invitation's role cannot change: withdraw and invite again).
pub async fn change_role(
    store: &dyn Store,
    catalog: &Catalog,
    account_id: &AccountId,
    actor: &UserId,
    subject: &str,
    role: Role,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let member = UserId::parse(subject).map_err(|_| {
        DomainError::invalid(
            "subject_id",
            "a pending invitation's role cannot change: withdraw it and invite again",
        )
    })?;
    let command = AccountCommand::ChangeRole {
        actor: actor.clone(),
        member,
        role,
    };
    account_decision(store, catalog, account_id, actor, command, metadata).await
}

/// Removes a member (`u_…`) or withdraws a pending invitation (`ainv_…`; the invitee's stream
/// settles it in the same append, so their email no longer qualifies for a sign-in link).
pub async fn remove(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    account_id: &AccountId,
    actor: &UserId,
    subject: &str,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    match (UserId::parse(subject), InvitationId::parse(subject)) {
        (Ok(member), _) => {
            let command = AccountCommand::RemoveMember {
                actor: actor.clone(),
                member,
            };
            account_decision(store, catalog, account_id, actor, command, metadata).await
        }
        (_, Ok(invitation_id)) => {
            let attempt = WithdrawAttempt {
                keys,
                account: account_stream(account_id)?,
                actor,
                invitation_id,
                context: Context::new(metadata.effective_at, catalog),
            };
            match run(store, &metadata, None, &attempt).await? {
                Decided::Appended { answer, .. } | Decided::Unchanged(answer) => answer,
                Decided::Replayed(_) => {
                    Err(FlowError::Broken("a withdrawal has no idempotency key"))
                }
            }
        }
        _ => Err(DomainError::invalid("subject_id", "must be a u_… or ainv_… id").into()),
    }
}

/// Withdrawing an invitation: the account, and the invitee's stream.
struct WithdrawAttempt<'a> {
    keys: &'a KeyMaterial,
    account: StreamName,
    actor: &'a UserId,
    invitation_id: InvitationId,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for WithdrawAttempt<'_> {
    type Answer = Result<(), FlowError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let account = reads.load::<Account>(&self.account).await?;
        let Some(open) = account
            .account
            .as_ref()
            .filter(|a| a.members.contains_key(self.actor))
        else {
            return Ok(Decision::answer(Err(not_a_member().into())));
        };
        let invitee = open
            .invitations
            .get(&self.invitation_id)
            .map(|invitation| invitation.email.clone());
        let withdraw = AccountCommand::WithdrawInvitation {
            actor: self.actor.clone(),
            invitation_id: self.invitation_id.clone(),
        };
        let events = match decide_all::<Account>(account, &[withdraw], &self.context) {
            Ok((events, _)) => events,
            Err(refusal) => return Ok(Decision::answer(Err(refusal.into()))),
        };
        let Some(email) = invitee else {
            return Err(FlowError::Broken(
                "a withdrawn invitation without its email",
            ));
        };
        let person = stream(User::STREAM_TYPE, &person_of(self.keys, &email))?;
        let settle = UserCommand::SettleInvitations {
            invitation_ids: vec![self.invitation_id.clone()],
        };
        let user = reads.load::<User>(&person).await?;
        let (settled, _) = decide_all::<User>(user, &[settle], &self.context)?;
        Ok(Decision::answer(Ok(()))
            .append::<Account>(self.account.clone(), &events)?
            .append::<User>(person, &settled)?)
    }
}

/// One command on an account by one of its members (a non-member is refused `forbidden`).
pub(crate) async fn account_decision(
    store: &dyn Store,
    catalog: &Catalog,
    account_id: &AccountId,
    actor: &UserId,
    command: AccountCommand,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let attempt = MemberCommand {
        account: account_stream(account_id)?,
        actor,
        command,
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => answer,
        Decided::Replayed(_) => Err(FlowError::Broken("an access change has no idempotency key")),
    }
}

/// A command on an account whose actor must be one of its members.
struct MemberCommand<'a> {
    account: StreamName,
    actor: &'a UserId,
    command: AccountCommand,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for MemberCommand<'_> {
    type Answer = Result<(), FlowError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let account = reads.load::<Account>(&self.account).await?;
        if !is_member(&account, self.actor) {
            return Ok(Decision::answer(Err(not_a_member().into())));
        }
        Ok(
            match decide_all::<Account>(account, std::slice::from_ref(&self.command), &self.context)
            {
                Ok((events, _)) => {
                    Decision::answer(Ok(())).append::<Account>(self.account.clone(), &events)?
                }
                Err(refusal) => Decision::answer(Err(refusal.into())),
            },
        )
    }
}
