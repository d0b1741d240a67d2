//! Cross-site request refusal for the browser-facing routes (`../shared/design/PORTAL.md` §2):
//! a state-changing request (any method but GET, HEAD and OPTIONS) to the portal, sign-in or
//! public-signup routes passes when its `Sec-Fetch-Site` is `same-origin` or `none`, or, without
//! that header, when its `Origin` is this service's public origin. A request with neither header
//! is not from a browser (browsers send one on every such request) and passes. Anything else is
//! 403 `cross_site_request` and changes nothing. No route changes state on GET.

use super::error::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Path prefixes a browser posts to: the routes this check guards.
pub const BROWSER_ROUTE_PREFIXES: &[&str] = &[
    "/auth/",
    "/api/portal/",
    "/api/accounts/",
    "/api/public/",
    "/portal",
];

/// The origin (`scheme://host[:port]`) of a public base URL.
pub fn origin_of(public_url: &str) -> String {
    let (scheme, rest) = public_url
        .split_once("://")
        .unwrap_or(("https", public_url));
    let authority = rest.split('/').next().unwrap_or_default();
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

/// Whether a request may change state: see the module documentation.
fn allowed(request: &Request, origin: &str) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return true;
    }
    let path = request.uri().path();
    if !BROWSER_ROUTE_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return true;
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or("").to_ascii_lowercase())
    };
    match (header("sec-fetch-site"), header("origin")) {
        (Some(site), _) => site == "same-origin" || site == "none",
        (None, Some(from)) => from == origin,
        (None, None) => true,
    }
}

/// The layer: refuses a cross-site state change before any handler runs.
pub async fn refuse_cross_site(
    State(origin): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    if allowed(&request, &origin) {
        return next.run(request).await;
    }
    ApiError::new(
        ErrorCode::CrossSiteRequest,
        "This request came from another site; it was refused and changed nothing.",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_origin_of_a_public_url_is_its_scheme_and_authority() {
        assert_eq!(
            origin_of("https://Account.Pulse.test/x"),
            "https://account.pulse.test"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }

    #[test]
    fn a_cross_site_post_to_a_browser_route_is_refused() {
        let origin = "https://account.pulse.test";
        let post = |headers: &[(&str, &str)]| {
            allowed(&request(Method::POST, "/auth/logout", headers), origin)
        };
        assert!(!post(&[("sec-fetch-site", "cross-site")]));
        assert!(!post(&[("sec-fetch-site", "same-site")]));
        assert!(!post(&[("origin", "https://evil.example")]));
        assert!(!post(&[("origin", "null")]));
        assert!(post(&[("sec-fetch-site", "same-origin")]));
        assert!(post(&[("sec-fetch-site", "none")]));
        assert!(post(&[("origin", origin)]));
        assert!(post(&[]));
    }

    #[test]
    fn reads_and_machine_routes_are_not_checked() {
        let origin = "https://account.pulse.test";
        let cross = [("sec-fetch-site", "cross-site")];
        assert!(allowed(&request(Method::GET, "/portal", &cross), origin));
        assert!(allowed(
            &request(Method::POST, "/v1/activate", &cross),
            origin
        ));
    }
}
