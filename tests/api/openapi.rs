//! The OpenAPI document (issue 13): served at `/openapi.json` as OpenAPI 3.1, generated from the
//! handlers the router runs. The router's own table of paths (read from the router itself, not
//! from a list kept here) must equal the document's paths, so a route added without its
//! description fails here; and every documented operation is one the router takes.

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;
use serde_json::Value;
use std::collections::BTreeSet;

on_both_stores!(
    the_document_is_openapi_3_1_and_lists_exactly_the_routers_paths,
    every_documented_operation_is_one_the_router_takes,
);

/// The document as the service serves it.
pub(crate) async fn document(app: &TestApp) -> Value {
    let (status, document) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    document
}

/// Every path of the router, read from the router's own route table (its `Debug` form lists
/// each route's path, then the fallback's, which is not a route).
fn router_paths(app: &TestApp) -> BTreeSet<String> {
    let table = format!("{:?}", pulse_account::http::router(app.state.clone()));
    let routes = table
        .split("fallback_router")
        .next()
        .expect("the route table comes first");
    let mut paths = BTreeSet::new();
    let mut rest = routes;
    while let Some(at) = rest.find("): \"/") {
        let start = at + "): \"".len();
        let end = start + rest[start..].find('"').expect("a closing quote");
        paths.insert(rest[start..end].to_owned());
        rest = &rest[end..];
    }
    paths
}

async fn the_document_is_openapi_3_1_and_lists_exactly_the_routers_paths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = document(&app).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "Pulse Account");
    for scheme in [
        "installation_token",
        "staff_token",
        "session",
        "stripe_signature",
    ] {
        assert!(
            document["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let served = router_paths(&app);
    assert!(served.len() > 40, "the router's table was read: {served:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in /openapi.json but not served: {unserved:?}"
    );
    let activate = &document["paths"]["/v1/activate"]["post"];
    assert!(
        activate["requestBody"]["content"]["application/json"]["schema"].is_object(),
        "{activate}"
    );
    assert!(activate["responses"]["409"].is_object());
    app.stop().await;
}

/// `path` with each `{parameter}` replaced by a sample value.
pub(crate) fn sample(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The methods the document lists for each path.
pub(crate) fn operations(document: &Value) -> Vec<(String, Vec<String>)> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(|k| k.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

async fn every_documented_operation_is_one_the_router_takes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = document(&app).await;
    for (path, methods) in operations(&document) {
        assert!(!methods.is_empty(), "{path} documents no operation");
        for method in methods {
            let response = app
                .client
                .request(
                    method.parse().unwrap(),
                    format!("{}{}", app.base, sample(&path)),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status, 405,
                "{method} {path}: documented, but the router refuses the method"
            );
            assert!(
                !(status == 404 && body["message"] == "No route matches this path."),
                "{method} {path}: documented, but no route matches"
            );
        }
    }
    app.stop().await;
}
