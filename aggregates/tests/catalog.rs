//! DOMAIN.md §3 — the plan catalog, rule by rule.

mod support;

use aggregates::catalog::{
    BillingCycle, Catalog, CatalogEvent, CatalogHistory, CatalogPublication, PublishCatalog,
    StripePlanSource, CATALOG_V1_JSON,
};
use aggregates::error::DomainError;
use std::collections::{BTreeMap, BTreeSet};
use support::{given, CATALOG};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const FREE: [&str; 3] = ["update_alerts", "sso", "ai_patrol"];
const RELAY: [&str; 4] = [
    "relay",
    "mobile_app",
    "push_notifications",
    "long_term_metrics",
];
const PRO: [&str; 8] = [
    "advanced_sso",
    "ai_alerts",
    "ai_autofix",
    "kubernetes_ai",
    "agent_profiles",
    "rbac",
    "audit_logging",
    "advanced_reporting",
];

fn pro_set() -> BTreeSet<String> {
    set(&[&FREE[..], &RELAY[..], &PRO[..]].concat())
}

#[test]
fn the_shipped_catalog_parses_as_version_1() {
    assert_eq!(Catalog::parse(CATALOG_V1_JSON).unwrap().version(), 1);
}

#[test]
fn each_tier_includes_the_one_above_it() {
    assert_eq!(CATALOG.capabilities(Some("community"), true), set(&FREE));
    assert_eq!(
        CATALOG.capabilities(Some("relay"), true),
        set(&[&FREE[..], &RELAY[..]].concat())
    );
    assert_eq!(CATALOG.capabilities(Some("pro"), true), pro_set());
    let mut msp = pro_set();
    msp.extend(set(&["unlimited", "multi_tenant"]));
    assert_eq!(CATALOG.capabilities(Some("msp_growth"), true), msp);
    let enterprise = CATALOG.tier("enterprise").unwrap();
    assert!(enterprise.capabilities.is_superset(&msp));
    assert!(
        enterprise.capabilities.contains("white_label")
            && enterprise.capabilities.contains("multi_user")
    );
}

#[test]
fn pro_plus_annual_lifetime_and_cloud_get_exactly_the_pro_set() {
    for plan in [
        "pro_plus",
        "pro_annual",
        "lifetime",
        "cloud_power",
        "cloud_starter",
        "trial",
    ] {
        assert_eq!(CATALOG.capabilities(Some(plan), true), pro_set(), "{plan}");
    }
    assert_eq!(CATALOG.tier("pro_plus").unwrap().display, "Pro+");
}

#[test]
fn history_days_follow_the_tier() {
    assert_eq!(CATALOG.history_days(Some("free"), true), 7);
    assert_eq!(CATALOG.history_days(Some("relay"), true), 14);
    assert_eq!(CATALOG.history_days(Some("pro"), true), 90);
    assert_eq!(CATALOG.history_days(Some("msp_scale"), true), 90);
}

#[test]
fn non_granting_states_get_no_capabilities_and_seven_history_days() {
    assert!(CATALOG.capabilities(Some("msp_scale"), false).is_empty());
    assert_eq!(CATALOG.history_days(Some("msp_scale"), false), 7);
}

#[test]
fn demo_fixtures_never_appear_in_any_capability_set() {
    for plan in [
        "free",
        "relay",
        "pro",
        "msp_starter",
        "cloud_max",
        "unknown",
    ] {
        assert!(!CATALOG
            .capabilities(Some(plan), true)
            .contains("demo_fixtures"));
    }
}

#[test]
fn plan_limits_are_the_catalog_values() {
    let table = [
        ("community", 5, None),
        ("free", 5, None),
        ("relay", 8, None),
        ("pro", 15, None),
        ("pro_plus", 50, None),
        ("pro_annual", 15, None),
        ("lifetime", 15, None),
        ("v5_pro_monthly_grandfathered", 10, None),
        ("v5_pro_annual_grandfathered", 10, None),
        ("cloud_starter", 10, Some(1)),
        ("cloud_founding", 10, Some(1)),
        ("cloud_power", 30, Some(1)),
        ("cloud_max", 75, Some(1)),
        ("msp_starter", 50, Some(10)),
        ("msp_growth", 150, Some(25)),
        ("msp_scale", 400, Some(50)),
        ("trial", 15, Some(1)),
    ];
    for (plan, systems, workspaces) in table {
        let found = CATALOG.plan(plan).unwrap();
        assert_eq!(
            (found.max_monitored_systems, found.max_workspaces),
            (systems, workspaces),
            "{plan}"
        );
        assert_eq!(CATALOG.max_monitored_systems(Some(plan)), systems);
    }
}

#[test]
fn an_unknown_or_missing_plan_fails_closed_at_ten_systems_and_one_workspace() {
    assert_eq!(CATALOG.max_monitored_systems(Some("enterprise_custom")), 10);
    assert_eq!(CATALOG.max_monitored_systems(None), 10);
    assert_eq!(CATALOG.max_workspaces(Some("enterprise_custom")), 1);
    assert_eq!(
        CATALOG.max_workspaces(Some("pro")),
        1,
        "a self-hosted plan has no hosted cap: one"
    );
    assert_eq!(
        CATALOG.capabilities(Some("enterprise_custom"), true),
        set(&FREE),
        "unknown grants only Community"
    );
}

#[test]
fn aliases_canonicalise_trimmed_and_case_insensitively() {
    for (alias, canonical) in [
        ("cloud", "cloud_starter"),
        ("starter", "cloud_starter"),
        ("cloud-v1", "cloud_starter"),
        ("cloud_v1", "cloud_starter"),
        ("cloud-starter", "cloud_starter"),
        ("power", "cloud_power"),
        ("cloud-power", "cloud_power"),
        ("max", "cloud_max"),
        ("cloud-max", "cloud_max"),
        ("founding", "cloud_founding"),
        ("cloud-founding", "cloud_founding"),
        ("msp", "msp_starter"),
        ("msp-hosted-v1", "msp_starter"),
        ("msp_hosted_v1", "msp_starter"),
        ("msp-starter", "msp_starter"),
        ("  Cloud-Power ", "cloud_power"),
        ("PRO", "pro"),
    ] {
        assert_eq!(CATALOG.canonical_plan(alias), canonical, "{alias:?}");
    }
    assert_eq!(
        CATALOG.canonical_plan("  Something_Else "),
        "Something_Else",
        "others pass through trimmed"
    );
}

#[test]
fn legacy_limit_keys_decode_only_when_the_canonical_key_is_missing() {
    let limits = |pairs: &[(&str, i64)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        CATALOG.decode_limit(&limits(&[("max_monitored_systems", 3), ("max_agents", 9)])),
        Some(3)
    );
    assert_eq!(
        CATALOG.decode_limit(&limits(&[("max_agents", 9), ("max_nodes", 7)])),
        Some(9)
    );
    assert_eq!(CATALOG.decode_limit(&limits(&[("max_nodes", 7)])), Some(7));
    assert_eq!(CATALOG.decode_limit(&limits(&[])), None);
}

#[test]
fn every_price_of_the_table_maps_to_its_plan_and_amount() {
    let table = [
        (
            "price_1T5kflBrHBocJIGHUqPv1dzV",
            "cloud_starter",
            2900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kfmBrHBocJIGHTS3ymKxM",
            "cloud_starter",
            24900,
            BillingCycle::Annual,
        ),
        (
            "price_1T5kfnBrHBocJIGHATQJr79D",
            "cloud_founding",
            1900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kg2BrHBocJIGHmkoF0zXY",
            "cloud_power",
            4900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kg3BrHBocJIGH2EtzKofV",
            "cloud_power",
            44900,
            BillingCycle::Annual,
        ),
        (
            "price_1T5kg4BrHBocJIGHHa8Ecqho",
            "cloud_max",
            7900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kg5BrHBocJIGH5AIJ4nVc",
            "cloud_max",
            69900,
            BillingCycle::Annual,
        ),
        (
            "price_1T5kgTBrHBocJIGHjOs15LI2",
            "msp_starter",
            14900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kgUBrHBocJIGHT6PiOn6x",
            "msp_starter",
            149000,
            BillingCycle::Annual,
        ),
        (
            "price_1T5kgVBrHBocJIGHulNsCTb1",
            "msp_growth",
            24900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kgWBrHBocJIGHTuaNjnJ2",
            "msp_growth",
            249000,
            BillingCycle::Annual,
        ),
        (
            "price_1T5kgWBrHBocJIGHo40iFeRd",
            "msp_scale",
            39900,
            BillingCycle::Monthly,
        ),
        (
            "price_1T5kgXBrHBocJIGHWlOgTyGV",
            "msp_scale",
            399000,
            BillingCycle::Annual,
        ),
        (
            "price_1ShIsdBrHBocJIGH71yQusLG",
            "v5_pro_monthly_grandfathered",
            900,
            BillingCycle::Monthly,
        ),
        (
            "price_1ShIsnBrHBocJIGHBKkzsZ3T",
            "v5_pro_annual_grandfathered",
            7900,
            BillingCycle::Annual,
        ),
        (
            "price_1SgDxvBrHBocJIGHStaGuiAX",
            "v5_pro_monthly_grandfathered",
            1900,
            BillingCycle::Monthly,
        ),
        (
            "price_1SgDxwBrHBocJIGHTKTsIMLc",
            "v5_pro_annual_grandfathered",
            19000,
            BillingCycle::Annual,
        ),
        (
            "price_1TPmE5BrHBocJIGHdwLp4tTA",
            "relay",
            499,
            BillingCycle::Monthly,
        ),
        (
            "price_1TPmE6BrHBocJIGHHaPwluoM",
            "pro",
            899,
            BillingCycle::Monthly,
        ),
        (
            "price_1T51LIBrHBocJIGHkUjg7sgO",
            "pro_plus",
            1800,
            BillingCycle::Monthly,
        ),
    ];
    for (id, plan, cents, cycle) in table {
        let price = CATALOG.price(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(
            (price.plan.as_str(), price.amount.amount_minor, price.cycle),
            (plan, cents, cycle),
            "{id}"
        );
        assert_eq!(price.amount.currency, "usd");
    }
}

#[test]
fn grandfathered_and_continuity_only_plans_are_not_purchasable() {
    for plan in [
        "v5_pro_monthly_grandfathered",
        "v5_pro_annual_grandfathered",
        "pro_plus",
        "trial",
    ] {
        assert!(!CATALOG.plan(plan).unwrap().purchasable, "{plan}");
    }
    assert!(
        CATALOG
            .plan("v5_pro_monthly_grandfathered")
            .unwrap()
            .grandfathered
    );
    for plan in ["relay", "pro", "cloud_starter", "msp_scale"] {
        assert!(CATALOG.plan(plan).unwrap().purchasable, "{plan}");
    }
}

fn source(metadata: &[(&str, &str)], price: Option<&str>) -> StripePlanSource {
    StripePlanSource {
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        price_id: price.map(str::to_owned),
    }
}

#[test]
fn plan_derivation_takes_the_first_hit_in_the_documented_order() {
    let power = Some("price_1T5kg2BrHBocJIGHmkoF0zXY");
    let cases = [
        (
            source(
                &[
                    ("plan_version", "max"),
                    ("plan", "founding"),
                    ("price_id", "price_1TPmE5BrHBocJIGHdwLp4tTA"),
                ],
                power,
            ),
            "cloud_max",
        ),
        (
            source(
                &[
                    ("plan", "founding"),
                    ("price_id", "price_1TPmE5BrHBocJIGHdwLp4tTA"),
                ],
                power,
            ),
            "cloud_founding",
        ),
        (
            source(
                &[
                    ("plan_version", "  "),
                    ("price_id", "price_1TPmE5BrHBocJIGHdwLp4tTA"),
                ],
                power,
            ),
            "relay",
        ),
        (
            source(&[("plan_id", "price_1TPmE6BrHBocJIGHHaPwluoM")], power),
            "pro",
        ),
        (source(&[], power), "cloud_power"),
        (
            source(&[], Some("price_1Unknown")),
            "stripe_price:price_1Unknown",
        ),
        (source(&[], None), "stripe"),
    ];
    for (source, expected) in cases {
        assert_eq!(
            CATALOG.derive_plan(&source, None, None),
            expected,
            "{source:?}"
        );
    }
}

#[test]
fn an_opaque_derivation_with_an_unchanged_price_keeps_the_stored_plan() {
    let unknown = source(&[], Some("price_1Unknown"));
    assert_eq!(
        CATALOG.derive_plan(&unknown, Some("cloud_power"), Some("price_1Unknown")),
        "cloud_power"
    );
    assert_eq!(
        CATALOG.derive_plan(&unknown, Some("cloud_power"), Some("price_1Other")),
        "stripe_price:price_1Unknown",
        "a changed price is not the stored plan any more"
    );
    let known = source(&[], Some("price_1T5kg4BrHBocJIGHHa8Ecqho"));
    assert_eq!(
        CATALOG.derive_plan(
            &known,
            Some("cloud_power"),
            Some("price_1T5kg4BrHBocJIGHHa8Ecqho")
        ),
        "cloud_max"
    );
}

#[test]
fn a_catalog_with_a_dangling_reference_is_refused() {
    let broken = CATALOG_V1_JSON.replace(
        "\"plan\": \"relay\", \"amount_minor\": 499",
        "\"plan\": \"nope\", \"amount_minor\": 499",
    );
    assert!(Catalog::parse(&broken)
        .unwrap_err()
        .0
        .contains("unknown plan nope"));
    let cyclic = CATALOG_V1_JSON.replace(
        "\"key\": \"free\", \"display\": \"Community\", \"includes\": null",
        "\"key\": \"free\", \"display\": \"Community\", \"includes\": \"enterprise\"",
    );
    assert!(Catalog::parse(&cyclic)
        .unwrap_err()
        .0
        .contains("includes itself"));
}

#[test]
fn publishing_a_catalog_records_its_version_once() {
    let published = given::<CatalogPublication>(vec![])
        .when(PublishCatalog {
            document: CATALOG_V1_JSON.to_owned(),
        })
        .result()
        .unwrap();
    assert!(matches!(
        &published[..],
        [CatalogEvent::CatalogPublished { version: 1, .. }]
    ));
    given::<CatalogPublication>(published)
        .when(PublishCatalog {
            document: CATALOG_V1_JSON.to_owned(),
        })
        .then_err(DomainError::CatalogVersionNotNewer { latest: 1 });
}

#[test]
fn a_replay_reads_each_position_with_the_catalog_version_in_force_then() {
    let mut history = CatalogHistory::shipped();
    assert_eq!(
        history.at(5).version(),
        1,
        "before any publication, the shipped v1"
    );
    let v1: serde_json::Value = serde_json::from_str(CATALOG_V1_JSON).unwrap();
    history.publish(10, &v1).unwrap();
    let mut v2 = v1.clone();
    v2["version"] = serde_json::json!(2);
    history.publish(20, &v2).unwrap();
    assert_eq!(
        [5, 10, 19, 20, 99].map(|position| history.at(position).version()),
        [1, 1, 1, 2, 2]
    );
    assert_eq!(history.current().version(), 2);
    assert!(
        history.publish(15, &v2).is_err(),
        "publications come in log order"
    );
}
