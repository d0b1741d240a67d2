//! The plan catalog (`DOMAIN.md` §3): tiers and capabilities, plans and limits, aliases, the Stripe
//! price table and plan derivation from Stripe objects.
//!
//! The catalog is data shipped in the repository (`aggregates/catalog/v1.json`), checked when it is
//! parsed, and published into the log as an event (the [`CatalogPublication`] decider) so that a
//! replay knows which version was in force. Everything here is a pure lookup: no clock, no IO.

use crate::decider::{Context, Decider, DomainEvent};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The catalog file of version 1, as shipped.
pub const CATALOG_V1_JSON: &str = include_str!("../catalog/v1.json");

/// A billing cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    /// Billed every month.
    Monthly,
    /// Billed every year.
    Annual,
}

impl BillingCycle {
    /// Both cadences.
    pub const ALL: [BillingCycle; 2] = [BillingCycle::Monthly, BillingCycle::Annual];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingCycle::Monthly => "monthly",
            BillingCycle::Annual => "annual",
        }
    }
}

/// An amount of money in integer minor units (cents) of one currency. Never a float.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units, e.g. 2900 for $29.00.
    pub amount_minor: i64,
    /// ISO 4217 code, lower case as Stripe writes it.
    pub currency: String,
}

/// One tier, with its capabilities resolved through the tiers it includes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The tier key, e.g. `pro`.
    pub key: String,
    /// The name customers see, e.g. `Pro`.
    pub display: String,
    /// Every capability of the tier, including those of the tiers it includes.
    pub capabilities: BTreeSet<String>,
    /// Days of history the tier keeps.
    pub history_days: u32,
}

/// One plan of the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The canonical plan key, e.g. `cloud_power`.
    pub key: String,
    /// Its tier key.
    pub tier: String,
    /// The only live limit key.
    pub max_monitored_systems: u32,
    /// Hosted workspaces allowed; `None` for self-hosted plans.
    pub max_workspaces: Option<u32>,
    /// Whether checkout may sell it.
    pub purchasable: bool,
    /// Grandfathered plans can never be bought again.
    pub grandfathered: bool,
}

/// One Stripe price of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    /// The Stripe price id (`price_1…`).
    pub id: String,
    /// The plan it buys.
    pub plan: String,
    /// What it costs per period.
    pub amount: Money,
    /// Its cadence.
    pub cycle: BillingCycle,
}

/// What a Stripe object says about its plan (subscription, checkout session, invoice line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripePlanSource {
    /// The object's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The price id of its (first) item, if any.
    #[serde(default)]
    pub price_id: Option<String>,
}

/// Why a catalog file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogError(pub String);

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid catalog: {}", self.0)
    }
}

impl std::error::Error for CatalogError {}

/// The opaque plan prefix for a Stripe price the table does not know.
pub const OPAQUE_PRICE_PREFIX: &str = "stripe_price:";
/// The opaque plan of a Stripe object that names no price at all.
pub const OPAQUE_STRIPE_PLAN: &str = "stripe";

/// A parsed, checked catalog version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    version: u32,
    tiers: BTreeMap<String, Tier>,
    plans: BTreeMap<String, Plan>,
    aliases: BTreeMap<String, String>,
    prices: BTreeMap<String, Price>,
    unknown_max_monitored_systems: u32,
    unknown_max_workspaces: u32,
    non_granting_history_days: u32,
    internal_capabilities: BTreeSet<String>,
    legacy_limit_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    tiers: Vec<RawTier>,
    non_granting_history_days: u32,
    internal_capabilities: Vec<String>,
    plans: Vec<RawPlan>,
    unknown_plan: RawUnknownPlan,
    aliases: BTreeMap<String, String>,
    legacy_limit_keys: Vec<String>,
    prices: Vec<RawPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    key: String,
    display: String,
    includes: Option<String>,
    adds: Vec<String>,
    history_days: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    key: String,
    tier: String,
    max_monitored_systems: u32,
    max_workspaces: Option<u32>,
    purchasable: bool,
    #[serde(default)]
    grandfathered: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnknownPlan {
    max_monitored_systems: u32,
    max_workspaces: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    id: String,
    plan: String,
    amount_minor: i64,
    currency: String,
    interval: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

fn resolve_tiers(raw: &[RawTier]) -> Result<BTreeMap<String, Tier>, CatalogError> {
    let by_key: BTreeMap<&str, &RawTier> = raw.iter().map(|t| (t.key.as_str(), t)).collect();
    if by_key.len() != raw.len() {
        return Err(CatalogError(String::from("a tier key appears twice")));
    }
    let mut tiers = BTreeMap::new();
    for tier in raw {
        let mut capabilities = BTreeSet::new();
        let mut current = Some(tier);
        let mut depth = 0;
        while let Some(step) = current {
            depth += 1;
            if depth > raw.len() {
                return Err(CatalogError(format!("tier {} includes itself", tier.key)));
            }
            capabilities.extend(step.adds.iter().cloned());
            current = match &step.includes {
                Some(parent) => Some(by_key.get(parent.as_str()).copied().ok_or_else(|| {
                    CatalogError(format!("tier {} includes unknown {parent}", step.key))
                })?),
                None => None,
            };
        }
        tiers.insert(
            tier.key.clone(),
            Tier {
                key: tier.key.clone(),
                display: tier.display.clone(),
                capabilities,
                history_days: tier.history_days,
            },
        );
    }
    Ok(tiers)
}

impl Catalog {
    /// Catalog version 1 as shipped. The file is checked by the tests, so a failure here is a
    /// broken build, not an operating error.
    pub fn v1() -> Catalog {
        Catalog::parse(CATALOG_V1_JSON).expect("the shipped catalog v1 is valid")
    }

    /// Parses and checks a catalog document: unique keys, known tiers, aliases and prices that
    /// point at plans, an acyclic tier chain.
    pub fn parse(json: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog =
            serde_json::from_str(json).map_err(|e| CatalogError(e.to_string()))?;
        let tiers = resolve_tiers(&raw.tiers)?;
        let mut plans = BTreeMap::new();
        for plan in raw.plans {
            if !tiers.contains_key(&plan.tier) {
                return Err(CatalogError(format!(
                    "plan {} has unknown tier {}",
                    plan.key, plan.tier
                )));
            }
            if plan.grandfathered && plan.purchasable {
                return Err(CatalogError(format!(
                    "grandfathered plan {} cannot be purchasable",
                    plan.key
                )));
            }
            let key = plan.key.clone();
            let parsed = Plan {
                key: plan.key,
                tier: plan.tier,
                max_monitored_systems: plan.max_monitored_systems,
                max_workspaces: plan.max_workspaces,
                purchasable: plan.purchasable,
                grandfathered: plan.grandfathered,
            };
            if plans.insert(key.clone(), parsed).is_some() {
                return Err(CatalogError(format!("plan {key} appears twice")));
            }
        }
        for (alias, target) in &raw.aliases {
            if !plans.contains_key(target) {
                return Err(CatalogError(format!(
                    "alias {alias} points at unknown plan {target}"
                )));
            }
        }
        let mut prices = BTreeMap::new();
        for price in raw.prices {
            if !plans.contains_key(&price.plan) {
                return Err(CatalogError(format!(
                    "price {} buys unknown plan {}",
                    price.id, price.plan
                )));
            }
            if !price.id.starts_with("price_1") || price.amount_minor <= 0 {
                return Err(CatalogError(format!("price {} is malformed", price.id)));
            }
            let cycle = match price.interval.as_str() {
                "month" => BillingCycle::Monthly,
                "year" => BillingCycle::Annual,
                other => {
                    return Err(CatalogError(format!(
                        "price {} has interval {other}",
                        price.id
                    )))
                }
            };
            let id = price.id.clone();
            let parsed = Price {
                id: price.id,
                plan: price.plan,
                amount: Money {
                    amount_minor: price.amount_minor,
                    currency: price.currency,
                },
                cycle,
            };
            if prices.insert(id.clone(), parsed).is_some() {
                return Err(CatalogError(format!("price {id} appears twice")));
            }
        }
        Ok(Catalog {
            version: raw.version,
            tiers,
            plans,
            aliases: raw.aliases,
            prices,
            unknown_max_monitored_systems: raw.unknown_plan.max_monitored_systems,
            unknown_max_workspaces: raw.unknown_plan.max_workspaces,
            non_granting_history_days: raw.non_granting_history_days,
            internal_capabilities: raw.internal_capabilities.into_iter().collect(),
            legacy_limit_keys: raw.legacy_limit_keys,
        })
    }

    /// The catalog version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Canonicalises a plan string (§3.3): trimmed, matched case-insensitively against plan keys
    /// and aliases; anything else passes through trimmed.
    pub fn canonical_plan(&self, raw: &str) -> String {
        let trimmed = raw.trim();
        let lower = trimmed.to_ascii_lowercase();
        if let Some(target) = self.aliases.get(&lower) {
            return target.clone();
        }
        if self.plans.contains_key(&lower) {
            return lower;
        }
        trimmed.to_owned()
    }

    /// The plan a string names, after canonicalisation; `None` for anything unknown.
    pub fn plan(&self, raw: &str) -> Option<&Plan> {
        self.plans.get(&self.canonical_plan(raw))
    }

    /// A tier by key.
    pub fn tier(&self, key: &str) -> Option<&Tier> {
        self.tiers.get(key)
    }

    /// The monitored-system limit of a plan: the catalog value for a known plan (never an embedded
    /// one), 10 for anything unknown or missing (fail closed).
    pub fn max_monitored_systems(&self, plan: Option<&str>) -> u32 {
        plan.and_then(|p| self.plan(p))
            .map_or(self.unknown_max_monitored_systems, |p| {
                p.max_monitored_systems
            })
    }

    /// The workspace cap of a plan: its catalog value, or 1 for an unknown plan or one without
    /// hosted workspaces (fail closed).
    pub fn max_workspaces(&self, plan: Option<&str>) -> u32 {
        plan.and_then(|p| self.plan(p))
            .and_then(|p| p.max_workspaces)
            .unwrap_or(self.unknown_max_workspaces)
    }

    /// The capabilities a plan grants: none in a non-granting state; the tier's set otherwise; the
    /// Community set for an unknown plan (fail closed). Internal capabilities never appear.
    pub fn capabilities(&self, plan: Option<&str>, granting: bool) -> BTreeSet<String> {
        if !granting {
            return BTreeSet::new();
        }
        let tier = plan
            .and_then(|p| self.plan(p))
            .and_then(|p| self.tiers.get(&p.tier))
            .or_else(|| self.tiers.get("free"));
        tier.map(|t| {
            t.capabilities
                .difference(&self.internal_capabilities)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
    }

    /// Whether any tier grants this capability (internal capabilities excluded).
    pub fn is_capability(&self, key: &str) -> bool {
        !self.internal_capabilities.contains(key)
            && self.tiers.values().any(|t| t.capabilities.contains(key))
    }

    /// Days of history a plan keeps: the non-granting figure when not granting.
    pub fn history_days(&self, plan: Option<&str>, granting: bool) -> u32 {
        if !granting {
            return self.non_granting_history_days;
        }
        plan.and_then(|p| self.plan(p))
            .and_then(|p| self.tiers.get(&p.tier))
            .map_or(self.non_granting_history_days, |t| t.history_days)
    }

    /// A price of the table.
    pub fn price(&self, price_id: &str) -> Option<&Price> {
        self.prices.get(price_id.trim())
    }

    /// Every plan, by key.
    pub fn plans(&self) -> impl Iterator<Item = &Plan> + '_ {
        self.plans.values()
    }

    /// The price that buys `plan` at `cycle`, if the table has one.
    pub fn price_for(&self, plan: &str, cycle: BillingCycle) -> Option<&Price> {
        let plan = self.canonical_plan(plan);
        self.prices
            .values()
            .find(|p| p.plan == plan && p.cycle == cycle)
    }

    /// Derives the plan of a Stripe object (§3.4), first hit wins: `metadata.plan_version`,
    /// `metadata.plan`, `metadata.price_id` / `metadata.plan_id` as a price, the object's price by
    /// the table, the opaque `stripe_price:<id>`, else `stripe`. An opaque result for an unchanged
    /// price keeps the stored plan.
    pub fn derive_plan(
        &self,
        source: &StripePlanSource,
        stored_plan: Option<&str>,
        stored_price_id: Option<&str>,
    ) -> String {
        let derived = self.derive_plan_fresh(source);
        let opaque = derived == OPAQUE_STRIPE_PLAN || derived.starts_with(OPAQUE_PRICE_PREFIX);
        let price_unchanged =
            source.price_id.as_deref().map(str::trim) == stored_price_id.map(str::trim);
        match stored_plan {
            Some(stored) if opaque && price_unchanged => self.canonical_plan(stored),
            _ => derived,
        }
    }

    fn derive_plan_fresh(&self, source: &StripePlanSource) -> String {
        let meta = |key: &str| {
            source
                .metadata
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        if let Some(plan) = meta("plan_version").or_else(|| meta("plan")) {
            return self.canonical_plan(plan);
        }
        let metadata_price = meta("price_id").or_else(|| meta("plan_id"));
        let object_price = source
            .price_id
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        for price in [metadata_price, object_price].into_iter().flatten() {
            if let Some(known) = self.price(price) {
                return known.plan.clone();
            }
        }
        match object_price.or(metadata_price) {
            Some(price) => format!("{OPAQUE_PRICE_PREFIX}{price}"),
            None => String::from(OPAQUE_STRIPE_PLAN),
        }
    }

    /// Reads a monitored-system limit from old input (§3.2): the canonical key wins, else each
    /// legacy alias in order (`max_agents`, then `max_nodes`). Nothing is ever written with them.
    pub fn decode_limit(&self, limits: &BTreeMap<String, i64>) -> Option<i64> {
        std::iter::once("max_monitored_systems")
            .chain(self.legacy_limit_keys.iter().map(String::as_str))
            .find_map(|key| limits.get(key).copied())
    }
}

/// The catalog's own stream: each published version is an event.
pub struct CatalogPublication;

/// The published catalog versions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishedCatalogs {
    /// The newest published version, if any.
    pub latest: Option<u32>,
}

/// Publish a catalog document.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishCatalog {
    /// The document, exactly as shipped.
    pub document: String,
}

/// Events of the catalog stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
pub enum CatalogEvent {
    /// A catalog version came into force.
    CatalogPublished {
        /// Its version.
        version: u32,
        /// The document, exactly as shipped.
        document: serde_json::Value,
    },
}

impl DomainEvent for CatalogEvent {}

impl Decider for CatalogPublication {
    const STREAM_TYPE: &'static str = "catalog";
    type State = PublishedCatalogs;
    type Command = PublishCatalog;
    type Event = CatalogEvent;
    type Error = DomainError;

    fn decide(
        state: &PublishedCatalogs,
        command: &PublishCatalog,
        _: &Context<'_>,
    ) -> Result<Vec<CatalogEvent>, DomainError> {
        let catalog =
            Catalog::parse(&command.document).map_err(|e| DomainError::invalid("document", e.0))?;
        if let Some(latest) = state.latest {
            if catalog.version() <= latest {
                return Err(DomainError::CatalogVersionNotNewer { latest });
            }
        }
        let document = serde_json::from_str(&command.document)
            .map_err(|e| DomainError::invalid("document", e.to_string()))?;
        Ok(vec![CatalogEvent::CatalogPublished {
            version: catalog.version(),
            document,
        }])
    }

    fn evolve(state: PublishedCatalogs, event: &CatalogEvent) -> PublishedCatalogs {
        match event {
            CatalogEvent::CatalogPublished { version, .. } => PublishedCatalogs {
                latest: Some(state.latest.map_or(*version, |latest| latest.max(*version))),
            },
        }
    }
}

/// The catalog versions in force over the log's history: each published version from the position
/// of its publication on, and before the first publication the shipped version 1 (a ledger in
/// force before publications were recorded ran on it). A replay asks, for each event, the
/// version in force when it happened.
#[derive(Clone, Debug)]
pub struct CatalogHistory {
    /// Published versions, by the global position of their publication, rising.
    published: Vec<(i64, std::sync::Arc<Catalog>)>,
    before_any: std::sync::Arc<Catalog>,
}

impl CatalogHistory {
    /// A history in which nothing was published yet: version 1 in force throughout.
    pub fn shipped() -> CatalogHistory {
        CatalogHistory {
            published: Vec::new(),
            before_any: std::sync::Arc::new(Catalog::v1()),
        }
    }

    /// Records the publication at `position` of `document` (a `catalog_published` event's).
    pub fn publish(
        &mut self,
        position: i64,
        document: &serde_json::Value,
    ) -> Result<(), CatalogError> {
        let catalog = Catalog::parse(&document.to_string())?;
        if self
            .published
            .last()
            .is_some_and(|(last, _)| *last >= position)
        {
            return Err(CatalogError(format!(
                "publication at position {position} is not after the previous one"
            )));
        }
        self.published
            .push((position, std::sync::Arc::new(catalog)));
        Ok(())
    }

    /// The version in force at global position `position`.
    pub fn at(&self, position: i64) -> &Catalog {
        self.published
            .iter()
            .rev()
            .find(|(published, _)| *published <= position)
            .map_or(&self.before_any, |(_, catalog)| catalog)
    }

    /// The version in force now.
    pub fn current(&self) -> std::sync::Arc<Catalog> {
        self.published
            .last()
            .map_or(&self.before_any, |(_, catalog)| catalog)
            .clone()
    }
}
