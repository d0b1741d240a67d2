//! Sign-in by email (`../shared/design/PORTAL.md` §1–2): issuing magic links, signing in by a
//! link's token or its code, the sessions that follow, and signing out everywhere.
//!
//! Who may get a link: an existing user, an email with a pending invitation, or an email that owns
//! a license; anyone else gets the same answer and nothing is recorded or sent. A link's token
//! (`ml1_…`) and code (6 digits) are derived from its id under the server secret, so the log holds
//! only their keyed hashes and the outbox (`crate::flows::mail`) can still send them.
//!
//! Signing in is one decision over the person's `magic_link` and `user` streams and every account
//! that invited them: the link is consumed, the user registered if new, each pending invitation
//! turned into a membership, and a session started, in one append. Two consumers of one link race
//! on the `magic_link` stream; the loser decides again on fresh state and is refused.
//!
//! A session cookie is `<person id>.<secret>`: the person id names the `user` stream that holds
//! the keyed hash of the secret, so a request's session is one stream read.

use crate::crypto::personal::person_id;
use crate::crypto::secrets::{Secret, SecretHasher};
use crate::crypto::KeyMaterial;
use crate::engine::command::{decide_all, handle, load, Command};
use crate::engine::decision::{run, Attempt, Decided, Decision, Reads};
use crate::engine::projection::wait_for_position;
use crate::engine::store::Store;
use crate::flows::queue::{decide_each, OffPathQueue, OffPathRequests};
use crate::flows::{stream, FlowError};
use aggregates::account::{Account, AccountCommand, AccountEvent, AccountState};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::{AccountId, Email, InvitationId, SecretHash, UserId};
use aggregates::index::{is_person_id, BindSignInToken, SignInTokenIndex};
use aggregates::log::{EventMetadata, StreamName};
use aggregates::magic_link::{MagicLink, MagicLinkCommand, MagicLinkEvent, MagicLinkState};
use aggregates::user::{RegisteredUser, SessionStatus, User, UserCommand, UserState};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::licenses::LicensesByEmail;
use projections::DocumentProjection;
use rand::RngCore;
use std::collections::BTreeMap;

/// The prefix of a magic link's token.
pub const SIGN_IN_TOKEN_PREFIX: &str = "ml1_";
/// The prefix of a session's secret.
pub const SESSION_SECRET_PREFIX: &str = "pcs_";
/// How long a sign-in request waits for the license-owner index to fold the newest event.
const OWNER_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Accounts whose invitations one sign-in accepts at most: the rest stay noted and the next
/// sign-in accepts them. With the person's link and user stream, the sign-in's append stays within
/// the store's bound on streams per append.
pub const INVITING_ACCOUNTS_PER_SIGN_IN_MAX: usize = 12;
const _: () =
    assert!(2 + INVITING_ACCOUNTS_PER_SIGN_IN_MAX <= crate::engine::store::APPEND_STREAMS_MAX);
/// Digits of a sign-in code.
pub const SIGN_IN_CODE_DIGITS: usize = 6;

/// The person an email names: `per_…`, the keyed hash that names their streams.
pub fn person_of(keys: &KeyMaterial, email: &Email) -> String {
    person_id(&keys.hasher, email.as_str())
}

/// The token of a magic link, derived from its id under the server secret.
pub fn link_token(hasher: &SecretHasher, link_id: &str) -> Secret {
    hasher.derive(SIGN_IN_TOKEN_PREFIX, &format!("magic-link:{link_id}"))
}

/// The 6-digit code of a magic link, derived from its id under the server secret.
pub fn link_code(hasher: &SecretHasher, link_id: &str) -> String {
    six_digits(hasher, &format!("magic-link-code:{link_id}"))
}

/// A 6-digit code derived from `context` under the server secret (sign-in and recovery codes).
pub(crate) fn six_digits(hasher: &SecretHasher, context: &str) -> String {
    let hex = hasher.derive_hex("", context, 15);
    let number = u64::from_str_radix(hex.expose(), 16).expect("15 hex digits fit in a u64");
    format!("{:06}", number % 1_000_000)
}

/// The keyed hash under which a link's code is recorded: bound to the link, so equal codes of two
/// links never share a hash.
fn code_hash(hasher: &SecretHasher, link_id: &str, code: &str) -> SecretHash {
    hasher.hash(&format!("magic-link-code:{link_id}:{code}"))
}

/// Whether `code` has the shape of a sign-in or recovery code.
pub fn is_code(code: &str) -> bool {
    code.len() == SIGN_IN_CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Issues a magic link to `email` if the email may sign in and is under its hourly limit. The
/// caller answers the same whatever happened here; the outbox sends the link.
#[tracing::instrument(skip_all)]
pub async fn request_link(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    email: &Email,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let person = person_of(keys, email);
    if !may_sign_in(store, &person, email).await? {
        tracing::debug!("a sign-in link was asked for an email that may not sign in");
        return Ok(());
    }
    let attempt = RequestAttempt {
        keys,
        email: email.clone(),
        context: Context::new(metadata.effective_at, catalog),
    };
    run(store, &metadata, None, &attempt).await?;
    Ok(())
}

/// Whether `email` may get a sign-in link: a user, an invited email, or a license owner. The owner
/// index is a read model: it is given a moment to fold the newest event first, so a buyer who asks
/// right after paying is not turned away (this runs off the request path, so the wait tells no
/// one anything).
async fn may_sign_in(store: &dyn Store, person: &str, email: &Email) -> Result<bool, FlowError> {
    let (user, _) = load::<User>(store, &stream(User::STREAM_TYPE, person)?).await?;
    if user.user.is_some() || !user.invitations.is_empty() {
        return Ok(true);
    }
    let head = store.head_position().await?;
    wait_for_position(store, LicensesByEmail::NAME, head, OWNER_INDEX_WAIT).await?;
    Ok(store
        .read_document(LicensesByEmail::NAME, email.as_str())
        .await?
        .is_some())
}

/// Issuing a link: the person's links, and the new token's index entry.
struct RequestAttempt<'a> {
    keys: &'a KeyMaterial,
    email: Email,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for RequestAttempt<'_> {
    type Answer = ();
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<()>, FlowError> {
        issue_link_into(
            reads,
            self.keys,
            &self.context,
            &self.email,
            Decision::answer(()),
        )
        .await
    }
}

/// Issues a sign-in link to `email` into `decision` (unless its hourly limit is reached): the
/// link on the person's stream and its token's index entry. The outbox sends it.
pub(crate) async fn issue_link_into<T>(
    reads: &mut Reads<'_>,
    keys: &KeyMaterial,
    context: &Context<'_>,
    email: &Email,
    decision: Decision<T>,
) -> Result<Decision<T>, FlowError> {
    let person = person_of(keys, email);
    let person_stream = stream(MagicLink::STREAM_TYPE, &person)?;
    let links = reads.load::<MagicLink>(&person_stream).await?;
    let link_id = format!("ml_{}", hex::encode(random_bytes::<12>()));
    let token_hash = keys
        .hasher
        .hash(link_token(&keys.hasher, &link_id).expose());
    let code = link_code(&keys.hasher, &link_id);
    let request = MagicLinkCommand::Request {
        link_id: link_id.clone(),
        email: email.clone(),
        token_hash: token_hash.clone(),
        code_hash: code_hash(&keys.hasher, &link_id, &code),
    };
    let (events, _) = decide_all::<MagicLink>(links, &[request], context)?;
    if events.is_empty() {
        return Ok(decision);
    }
    let bind = BindSignInToken { person_id: person };
    let (bound, _) = decide_all::<SignInTokenIndex>(Default::default(), &[bind], context)?;
    Ok(decision
        .append::<MagicLink>(person_stream, &events)?
        .create::<SignInTokenIndex>(
            stream(SignInTokenIndex::STREAM_TYPE, token_hash.as_str())?,
            &bound,
        )?)
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Sign-in requests, decided off the request path ([`decide_requests`]) so that the answer, and
/// its timing, are the same whether the email is known or not.
pub type SignInQueue = OffPathQueue<Email>;

/// Decides queued sign-in requests one after another until the queue closes or `stopped` turns
/// true.
pub async fn decide_requests(
    requests: OffPathRequests<Email>,
    store: std::sync::Arc<dyn Store>,
    keys: std::sync::Arc<KeyMaterial>,
    catalog: std::sync::Arc<Catalog>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    decide_each(requests, stopped, "sign-in", |email, metadata| {
        let (store, keys, catalog) = (&store, &keys, &catalog);
        async move { request_link(store.as_ref(), keys, catalog, &email, metadata).await }
    })
    .await;
}

/// Whom a link's token signs in, if the token is one the ledger issued.
pub async fn person_of_token(
    store: &dyn Store,
    keys: &KeyMaterial,
    token: &str,
) -> Result<Option<String>, FlowError> {
    if !SecretHasher::well_formed(SIGN_IN_TOKEN_PREFIX, token) {
        return Ok(None);
    }
    let index = stream(
        SignInTokenIndex::STREAM_TYPE,
        keys.hasher.hash(token).as_str(),
    )?;
    Ok(load::<SignInTokenIndex>(store, &index).await?.0.person_id)
}

/// The email a still usable link's token would sign in, for the confirmation page (which must not
/// consume it: mail scanners open links).
pub async fn pending_sign_in(
    store: &dyn Store,
    keys: &KeyMaterial,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Email>, FlowError> {
    let Some(person) = person_of_token(store, keys, token).await? else {
        return Ok(None);
    };
    let (links, _) = load::<MagicLink>(store, &stream(MagicLink::STREAM_TYPE, &person)?).await?;
    let token_hash = keys.hasher.hash(token);
    Ok(links
        .link
        .filter(|link| link.usable(now) && link.token_hash == token_hash)
        .map(|link| link.email))
}

/// What a sign-in presents.
pub enum Proof<'a> {
    /// The link's token (the confirmation page's POST).
    Token(&'a str),
    /// The email and the code typed.
    Code {
        /// The email the code was sent to.
        email: &'a Email,
        /// The code.
        code: &'a str,
    },
}

/// A signed-in person, with the cookie value of their new session.
pub struct SignedIn {
    /// `<person id>.<session secret>`: the session cookie's value.
    pub cookie: Secret,
    /// The user.
    pub user: RegisteredUser,
}

/// Signs a person in by a link's token or code: one decision (see the module documentation). A
/// bad, used or expired proof is [`DomainError::InvalidToken`]; a wrong code is recorded first.
#[tracing::instrument(skip_all)]
pub async fn sign_in(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    proof: Proof<'_>,
    metadata: EventMetadata,
) -> Result<SignedIn, FlowError> {
    let person = match &proof {
        Proof::Token(token) => person_of_token(store, keys, token)
            .await?
            .ok_or(DomainError::InvalidToken)?,
        Proof::Code { email, code } => {
            if !is_code(code) {
                return Err(DomainError::InvalidToken.into());
            }
            person_of(keys, email)
        }
    };
    let attempt = SignInAttempt {
        keys,
        links: stream(MagicLink::STREAM_TYPE, &person)?,
        user: stream(User::STREAM_TYPE, &person)?,
        person,
        proof,
        context: Context::new(metadata.effective_at, catalog),
    };
    match run(store, &metadata, None, &attempt).await? {
        Decided::Appended { answer, .. } | Decided::Unchanged(answer) => Ok(answer?),
        Decided::Replayed(_) => Err(FlowError::Broken("a sign-in has no idempotency key")),
    }
}

/// Signing in: the person's links and user, and the accounts that invited them.
struct SignInAttempt<'a> {
    keys: &'a KeyMaterial,
    person: String,
    links: StreamName,
    user: StreamName,
    proof: Proof<'a>,
    context: Context<'a>,
}

#[async_trait]
impl Attempt for SignInAttempt<'_> {
    type Answer = Result<SignedIn, DomainError>;
    type Error = FlowError;

    async fn attempt(&self, reads: &mut Reads<'_>) -> Result<Decision<Self::Answer>, FlowError> {
        let links = reads.load::<MagicLink>(&self.links).await?;
        let consume = self.consume_command(&links)?;
        let (link_events, links_after) = decide_all::<MagicLink>(links, &[consume], &self.context)?;
        if let Some(refusal) = link_events.iter().find_map(MagicLinkEvent::refusal) {
            return Ok(Decision::answer(Err(refusal))
                .append::<MagicLink>(self.links.clone(), &link_events)?);
        }
        let email = links_after
            .link
            .map(|link| link.email)
            .ok_or(FlowError::Broken("a consumed link without its email"))?;
        if crate::crypto::personal::reads_as_erased(email.as_str()) {
            // The person was erased after the link was sent: it signs no one in.
            return Ok(Decision::answer(Err(DomainError::InvalidToken)));
        }
        let user = reads.load::<User>(&self.user).await?;
        let user_id = user.user.as_ref().map_or_else(
            || UserId::from_entropy(rand::rngs::OsRng.next_u64()),
            |u| u.user_id.clone(),
        );
        let secret = self.keys.hasher.generate(SESSION_SECRET_PREFIX);
        let (joined, settled) = self.accept_invitations(reads, &user, &user_id).await?;
        let mut decision =
            Decision::answer(()).append::<MagicLink>(self.links.clone(), &link_events)?;
        for (account_stream, events) in joined {
            decision = decision.append::<Account>(account_stream, &events)?;
        }
        let commands = [
            UserCommand::Register {
                user_id: user_id.clone(),
                email: email.clone(),
            },
            UserCommand::SettleInvitations {
                invitation_ids: settled,
            },
            UserCommand::StartSession {
                session_hash: self.keys.hasher.hash(secret.expose()),
            },
        ];
        let (user_events, _) = decide_all::<User>(user, &commands, &self.context)?;
        let signed_in = SignedIn {
            cookie: Secret::scoped(&self.person, &secret),
            user: RegisteredUser { user_id, email },
        };
        Ok(decision
            .append::<User>(self.user.clone(), &user_events)?
            .map_answer(|()| Ok(signed_in)))
    }
}

impl SignInAttempt<'_> {
    fn consume_command(&self, links: &MagicLinkState) -> Result<MagicLinkCommand, FlowError> {
        Ok(match &self.proof {
            Proof::Token(token) => MagicLinkCommand::ConsumeToken {
                token_hash: self.keys.hasher.hash(token),
            },
            Proof::Code { code, .. } => {
                let link_id = links.link.as_ref().map_or("", |link| link.link_id.as_str());
                MagicLinkCommand::EnterCode {
                    code_hash: code_hash(&self.keys.hasher, link_id, code),
                }
            }
        })
    }

    /// Each invitation noted for the person becomes a membership of its account where it is still
    /// pending; every one looked at is settled either way. Invitations of one account are decided
    /// one after another on its evolving state, so the account gets one coherent append; at most
    /// [`INVITING_ACCOUNTS_PER_SIGN_IN_MAX`] accounts are looked at, the rest wait for the next
    /// sign-in.
    async fn accept_invitations(
        &self,
        reads: &mut Reads<'_>,
        user: &UserState,
        user_id: &UserId,
    ) -> Result<(Vec<(StreamName, Vec<AccountEvent>)>, Vec<InvitationId>), FlowError> {
        let mut accounts: BTreeMap<StreamName, (AccountState, Vec<AccountEvent>)> = BTreeMap::new();
        let mut settled = Vec::new();
        for (invitation_id, account_id) in &user.invitations {
            let stream = account_stream(account_id)?;
            if !accounts.contains_key(&stream) {
                if accounts.len() == INVITING_ACCOUNTS_PER_SIGN_IN_MAX {
                    continue;
                }
                let state = reads.load::<Account>(&stream).await?;
                accounts.insert(stream.clone(), (state, Vec::new()));
            }
            let (state, events) = accounts.get_mut(&stream).expect("loaded just above");
            let accept = AccountCommand::AcceptInvitation {
                invitation_id: invitation_id.clone(),
                user_id: user_id.clone(),
            };
            match decide_all::<Account>(state.clone(), &[accept], &self.context) {
                Ok((decided, after)) => {
                    events.extend(decided);
                    *state = after;
                }
                Err(DomainError::NotFound { .. } | DomainError::AlreadyMember) => {}
                Err(other) => return Err(other.into()),
            }
            settled.push(invitation_id.clone());
        }
        let joined = accounts
            .into_iter()
            .map(|(stream, (_, events))| (stream, events))
            .collect();
        Ok((joined, settled))
    }
}

fn account_stream(account_id: &AccountId) -> Result<StreamName, DomainError> {
    stream(Account::STREAM_TYPE, account_id.as_str())
}

/// What a presented session cookie is.
#[derive(Debug)]
pub enum SessionCheck {
    /// It signs this user in.
    Live {
        /// The person (names the user's streams).
        person_id: String,
        /// The user.
        user: RegisteredUser,
    },
    /// Malformed, or no such session.
    Invalid,
    /// Its twelve hours are over.
    Expired,
    /// A sign-out ended it.
    Revoked,
}

/// What the session cookie `value` is at `now`.
pub async fn check_session(
    store: &dyn Store,
    keys: &KeyMaterial,
    value: &str,
    now: DateTime<Utc>,
) -> Result<SessionCheck, FlowError> {
    let Some((person, secret)) = value.split_once('.') else {
        return Ok(SessionCheck::Invalid);
    };
    if !is_person_id(person) || !SecretHasher::well_formed(SESSION_SECRET_PREFIX, secret) {
        return Ok(SessionCheck::Invalid);
    }
    let (user, _) = load::<User>(store, &stream(User::STREAM_TYPE, person)?).await?;
    Ok(match user.session(&keys.hasher.hash(secret), now) {
        SessionStatus::Live(user) => SessionCheck::Live {
            person_id: person.to_owned(),
            user,
        },
        SessionStatus::Expired => SessionCheck::Expired,
        SessionStatus::Revoked => SessionCheck::Revoked,
        SessionStatus::Unknown => SessionCheck::Invalid,
    })
}

/// Ends every session of the person ("sign out everywhere").
#[tracing::instrument(skip_all)]
pub async fn sign_out(
    store: &dyn Store,
    catalog: &Catalog,
    person_id: &str,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let command = Command::<User> {
        stream_id: person_id,
        command: &UserCommand::EndSessions,
        context: Context::new(metadata.effective_at, catalog),
        metadata,
        idempotency: None,
    };
    handle::<User>(store, command).await?;
    Ok(())
}
