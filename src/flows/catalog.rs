//! The plan catalog as data in the log (`DOMAIN.md` §3, §16): the shipped version is published
//! on first start (once, whichever process starts first), and the versions in force are read
//! back from the log, so the service decides with the version the log says is in force and a
//! replay reads each event with the version in force when it happened.

use crate::engine::command::{handle, Command, CommandError};
use crate::engine::store::{EventStore, Idempotency, READ_PAGE_MAX};
use crate::flows::{stream, FlowError};
use aggregates::catalog::{
    Catalog, CatalogEvent, CatalogHistory, CatalogPublication, PublishCatalog, CATALOG_V1_JSON,
};
use aggregates::decider::{decode, Context, Decider};
use aggregates::error::DomainError;
use aggregates::log::{EventMetadata, StreamVersion};

/// The id of the one catalog stream.
pub const CATALOG_STREAM_ID: &str = "pulse";

/// Publishes the catalog this release ships unless the log already holds it or a newer one.
/// Idempotent: every start asks, one publication is recorded.
pub async fn publish_shipped(
    store: &dyn EventStore,
    metadata: EventMetadata,
) -> Result<(), FlowError> {
    let shipped = Catalog::v1();
    let command = PublishCatalog {
        document: CATALOG_V1_JSON.to_owned(),
    };
    let published = handle::<CatalogPublication>(
        store,
        Command {
            stream_id: CATALOG_STREAM_ID,
            command: &command,
            context: Context::new(metadata.effective_at, &shipped),
            idempotency: Some(Idempotency::scoped(
                "catalog",
                &format!("v{}", shipped.version()),
                &serde_json::json!({ "version": shipped.version() }),
            )),
            metadata,
        },
    )
    .await;
    match published {
        Ok(_) | Err(CommandError::Domain(DomainError::CatalogVersionNotNewer { .. })) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Every catalog version published in the log, by the position of its publication.
pub async fn history(store: &dyn EventStore) -> Result<CatalogHistory, FlowError> {
    let catalog_stream = stream(CatalogPublication::STREAM_TYPE, CATALOG_STREAM_ID)?;
    let mut history = CatalogHistory::shipped();
    let mut next = StreamVersion(1);
    loop {
        let page = store
            .read_stream(&catalog_stream, next, READ_PAGE_MAX)
            .await?;
        for recorded in &page {
            let CatalogEvent::CatalogPublished { document, .. } =
                decode(&recorded.event_type, &recorded.payload)?;
            history
                .publish(recorded.global_position.0, &document)
                .map_err(|_| FlowError::Broken("a catalog published in the log does not parse"))?;
            next = recorded.stream_version.next();
        }
        if page.len() < READ_PAGE_MAX {
            return Ok(history);
        }
    }
}
