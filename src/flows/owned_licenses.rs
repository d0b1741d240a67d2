//! The self-hosted licenses a signed-in person owns, for the portal's Billing: each license with
//! its plan, state, period, installations and monitored-system limits (plan limit, grandfather
//! floor, effective limit, `DOMAIN.md` §7). Read from the `licenses_by_email` and `licenses` read
//! models, given a moment to fold the newest event first.

use crate::engine::projection::wait_for_position;
use crate::engine::store::Store;
use crate::flows::FlowError;
use aggregates::catalog::Catalog;
use aggregates::ids::{Email, LicenseId};
use aggregates::license::IssuedLicense;
use chrono::{DateTime, Utc};
use projections::licenses::{Licenses, LicensesByEmail, OwnedLicenses};
use projections::DocumentProjection;
use serde::Serialize;
use std::time::Duration;

/// Licenses listed per person at most.
pub const OWNED_LICENSES_MAX: usize = 100;
/// How long a read waits for the license read models to fold the newest event.
const LICENSE_INDEX_WAIT: Duration = Duration::from_secs(2);

/// One installation as its owner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct InstallationView {
    /// Its id.
    pub installation_id: String,
    /// The name its runtime reported.
    pub instance_name: String,
    /// Whether it holds a seat.
    pub active: bool,
}

/// One license as its owner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct LicenseView {
    /// Its id.
    pub license_id: String,
    /// The plan.
    pub plan_version: String,
    /// The subscription state (`revoked` once revoked).
    pub state: String,
    /// When the paid period ends.
    pub current_period_end: Option<DateTime<Utc>>,
    /// The plan's monitored-system limit.
    pub plan_limit: u32,
    /// The grandfather floor, when one was captured.
    pub grandfathered_floor: Option<u32>,
    /// The limit in force: the larger of the two.
    pub effective_limit: u32,
    /// Its installations.
    pub installations: Vec<InstallationView>,
}

impl LicenseView {
    fn of(license: &IssuedLicense, catalog: &Catalog) -> LicenseView {
        let continuity = license.continuity(catalog);
        LicenseView {
            license_id: license.license_id.to_string(),
            plan_version: license.plan_version.clone(),
            state: if license.revoked.is_some() {
                String::from("revoked")
            } else {
                license.state.as_str().to_owned()
            },
            current_period_end: license.current_period_end,
            plan_limit: continuity.plan_limit,
            grandfathered_floor: continuity.grandfathered_floor,
            effective_limit: continuity.effective_limit,
            installations: license
                .installations
                .values()
                .map(|i| InstallationView {
                    installation_id: i.installation_id.to_string(),
                    instance_name: i.instance_name.clone(),
                    active: i.active,
                })
                .collect(),
        }
    }
}

/// The ids of the licenses `email` owns, in issue order (at most [`OWNED_LICENSES_MAX`]).
pub async fn license_ids_of(store: &dyn Store, email: &Email) -> Result<Vec<LicenseId>, FlowError> {
    let head = store.head_position().await?;
    wait_for_position(store, Licenses::NAME, head, LICENSE_INDEX_WAIT).await?;
    wait_for_position(store, LicensesByEmail::NAME, head, LICENSE_INDEX_WAIT).await?;
    let Some(document) = store
        .read_document(LicensesByEmail::NAME, email.as_str())
        .await?
    else {
        return Ok(Vec::new());
    };
    let owned: OwnedLicenses = serde_json::from_value(document)
        .map_err(|_| FlowError::Broken("an owner-index document does not decode"))?;
    Ok(owned
        .license_ids
        .iter()
        .take(OWNED_LICENSES_MAX)
        .filter_map(|id| LicenseId::parse(id).ok())
        .collect())
}

/// The licenses `email` owns, in issue order.
pub async fn licenses_of(
    store: &dyn Store,
    catalog: &Catalog,
    email: &Email,
) -> Result<Vec<LicenseView>, FlowError> {
    let mut views = Vec::new();
    for license_id in license_ids_of(store, email).await? {
        if let Some(document) = store
            .read_document(Licenses::NAME, license_id.as_str())
            .await?
        {
            let license: IssuedLicense = serde_json::from_value(document)
                .map_err(|_| FlowError::Broken("a license document does not decode"))?;
            views.push(LicenseView::of(&license, catalog));
        }
    }
    Ok(views)
}
