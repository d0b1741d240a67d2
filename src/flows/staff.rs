//! Staff and service tokens in the service: issuing and revoking them (the `staff` CLI command),
//! authenticating a presented token, and recording every request made with one.
//!
//! A token reads `stf_XXXXXXXXXX.<52 base32>`: its public id, a dot, and 32 random bytes. The log
//! holds only the keyed hash of the whole token, in the token's own stream (`staff_token/<id>`), so
//! authenticating is one strongly consistent stream read. Each request made with a token is
//! recorded before it is answered, as one event in a stream of its own (`staff_access/<id>`): a
//! request whose record cannot be written is refused, so no staff read goes unrecorded.

use crate::crypto::personal::person_id;
use crate::crypto::secrets::{Secret, SecretHasher};
use crate::crypto::KeyMaterial;
use crate::engine::command::{handle, load, Command};
use crate::engine::store::Store;
use crate::flows::{stream, FlowError};
use aggregates::catalog::Catalog;
use aggregates::decider::{Context, Decider};
use aggregates::error::DomainError;
use aggregates::ids::StaffTokenId;
use aggregates::log::EventMetadata;
use aggregates::staff::{staff_access, StaffAccessLog, StaffRole, StaffToken, StaffTokenCommand};
use rand::RngCore;

/// Who is calling with a valid staff token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffPrincipal {
    /// The token's id.
    pub token_id: StaffTokenId,
    /// Its role.
    pub role: StaffRole,
}

impl StaffPrincipal {
    /// Refuses (403) unless the token has `role`.
    pub fn require(&self, role: StaffRole, action: &'static str) -> Result<(), DomainError> {
        if self.role == role {
            Ok(())
        } else {
            Err(DomainError::Forbidden { action })
        }
    }

    /// The actor recorded on events this principal causes.
    pub fn actor(&self) -> String {
        format!("staff:{}", self.token_id)
    }
}

fn secret_prefix(token_id: &StaffTokenId) -> String {
    format!("{token_id}.")
}

/// Issues a token with `role`; returns its id and the token, which is shown once and never stored.
pub async fn issue(
    store: &dyn Store,
    keys: &KeyMaterial,
    catalog: &Catalog,
    name: &str,
    role: StaffRole,
    metadata: EventMetadata,
) -> Result<(StaffTokenId, Secret), FlowError> {
    let token_id = StaffTokenId::from_entropy(rand::rngs::OsRng.next_u64());
    let token = keys.hasher.generate(&secret_prefix(&token_id));
    let command = StaffTokenCommand::Issue {
        token_id: token_id.clone(),
        name: name.to_owned(),
        role,
        token_hash: keys.hasher.hash(token.expose()),
    };
    handle::<StaffToken>(
        store,
        Command {
            stream_id: token_id.as_str(),
            command: &command,
            context: Context::new(metadata.effective_at, catalog),
            metadata,
            idempotency: None,
        },
    )
    .await?;
    Ok((token_id, token))
}

/// Revokes a token for good; revoking a revoked token changes nothing.
pub async fn revoke(
    store: &dyn Store,
    catalog: &Catalog,
    token_id: &StaffTokenId,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    handle::<StaffToken>(
        store,
        Command {
            stream_id: token_id.as_str(),
            command: &StaffTokenCommand::Revoke,
            context: Context::new(metadata.effective_at, catalog),
            metadata,
            idempotency: None,
        },
    )
    .await?;
    Ok(())
}

/// The principal of a presented token, or [`FlowError::UnknownStaffToken`] for anything that is
/// not a live token (malformed, unknown, wrong secret, revoked).
#[tracing::instrument(skip_all, fields(staff_token = tracing::field::Empty))]
pub async fn authenticate(
    store: &dyn Store,
    keys: &KeyMaterial,
    presented: &str,
) -> Result<StaffPrincipal, FlowError> {
    let token_id = presented
        .split_once('.')
        .and_then(|(id, _)| StaffTokenId::parse(id).ok())
        .filter(|id| SecretHasher::well_formed(&secret_prefix(id), presented))
        .ok_or(FlowError::UnknownStaffToken)?;
    tracing::Span::current().record("staff_token", token_id.as_str());
    let (state, _) =
        load::<StaffToken>(store, &stream(StaffToken::STREAM_TYPE, token_id.as_str())?).await?;
    let role = state
        .authorizes(&keys.hasher.hash(presented))
        .ok_or(FlowError::UnknownStaffToken)?;
    Ok(StaffPrincipal { token_id, role })
}

/// Records one request made by `principal` (method and path with its query).
pub async fn record_access(
    store: &dyn Store,
    keys: &KeyMaterial,
    principal: &StaffPrincipal,
    method: &str,
    path: &str,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let mut id = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let path = pseudonymous_path(&keys.hasher, path);
    let record = staff_access(&principal.token_id, principal.role, method, &path);
    let catalog = aggregates::catalog::Catalog::v1();
    handle::<StaffAccessLog>(
        store,
        Command {
            stream_id: &hex::encode(id),
            command: &record,
            context: Context::new(metadata.effective_at, &catalog),
            metadata,
            idempotency: None,
        },
    )
    .await?;
    Ok(())
}

/// The path and query as recorded: an `email` query parameter names the person looked up, so it is
/// recorded as their person id (a keyed hash), never as the address.
fn pseudonymous_path(hasher: &SecretHasher, path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("email", value)) => {
                format!("email={}", person_id(hasher, &percent_decoded(value)))
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A query value with `+` and `%XX` decoded (invalid escapes are kept as written).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_looked_up_is_recorded_as_the_person_id_only() {
        let hasher = SecretHasher::new([3; 32]);
        let recorded = pseudonymous_path(&hasher, "/v1/staff/licenses?email=Ops%40Example.com&x=1");
        assert!(!recorded.to_lowercase().contains("example"), "{recorded}");
        assert_eq!(
            recorded,
            format!(
                "/v1/staff/licenses?email={}&x=1",
                person_id(&hasher, "ops@example.com")
            )
        );
        assert_eq!(
            pseudonymous_path(&hasher, "/v1/staff/licenses/lic_1"),
            "/v1/staff/licenses/lic_1"
        );
    }
}
