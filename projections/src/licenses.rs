//! License read models: the billing state of each license, and the licenses of each owner email.
//!
//! The license document is the license as its own decider folds it (`License::evolve`), so the
//! read model can never disagree with the rules; the tests check it equals a fresh fold of the
//! stream. The email index serves the portal's and support's "which licenses does this person have".

use crate::{DocumentProjection, FoldError};
use aggregates::decider::{decode, Decider};
use aggregates::license::{IssuedLicense, License, LicenseEvent, LicenseState};
use aggregates::log::RecordedEvent;
use serde::{Deserialize, Serialize};

fn license_event(event: &RecordedEvent) -> Result<LicenseEvent, FoldError> {
    decode(&event.event_type, &event.payload).map_err(|e| FoldError::new(e.to_string()))
}

fn is_license(event: &RecordedEvent) -> bool {
    event.stream.stream_type() == License::STREAM_TYPE
}

/// The license projection: one document per license, keyed by license id.
pub struct Licenses;

impl DocumentProjection for Licenses {
    const NAME: &'static str = "licenses";
    type Document = IssuedLicense;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if is_license(event) {
            vec![event.stream.stream_id().to_owned()]
        } else {
            Vec::new()
        }
    }

    fn apply(
        _key: &str,
        document: Option<IssuedLicense>,
        event: &RecordedEvent,
    ) -> Result<Option<IssuedLicense>, FoldError> {
        let state = LicenseState { issued: document };
        Ok(License::evolve(state, &license_event(event)?).issued)
    }
}

/// The licenses one email owns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedLicenses {
    /// The owner's email.
    pub email: String,
    /// Their license ids, in issue order.
    pub license_ids: Vec<String>,
}

/// The owner-email index: one document per email, keyed by the email.
pub struct LicensesByEmail;

impl DocumentProjection for LicensesByEmail {
    const NAME: &'static str = "licenses_by_email";
    type Document = OwnedLicenses;

    fn document_keys(event: &RecordedEvent) -> Vec<String> {
        if !is_license(event) || event.event_type != "license_issued" {
            return Vec::new();
        }
        match event.payload["owner_email"].as_str() {
            Some(email) => vec![email.to_owned()],
            None => Vec::new(),
        }
    }

    fn apply(
        key: &str,
        document: Option<OwnedLicenses>,
        event: &RecordedEvent,
    ) -> Result<Option<OwnedLicenses>, FoldError> {
        let LicenseEvent::LicenseIssued { license_id, .. } = license_event(event)? else {
            return Ok(document);
        };
        let mut owned = document.unwrap_or_else(|| OwnedLicenses {
            email: key.to_owned(),
            license_ids: Vec::new(),
        });
        if !owned.license_ids.iter().any(|id| id == license_id.as_str()) {
            owned.license_ids.push(license_id.to_string());
        }
        Ok(Some(owned))
    }
}
