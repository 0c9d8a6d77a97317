//! The guards every HTTP endpoint shares: the Origin policy and CORS headers, the bearer
//! token, the WebSocket subprotocol offer, and the contract's `error` JSON with its HTTP status.
//! It imports no handler and no router, so every handler may import it.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::protocol::ErrorCode;

/// Whether a WebSocket handshake may speak `protocol`: it offers it, or offers no subprotocol
/// at all (a client that offers only others is refused).
pub(crate) fn offers(headers: &HeaderMap, protocol: &str) -> bool {
    let mut offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    offered.peek().is_none() || offered.any(|p| p == protocol)
}

/// The Origin policy against cross-site WebSocket hijacking: no `Origin` (not a browser) is
/// allowed, and so is the same host and port as the `Host` header (mqws's own pages); any
/// other origin must be listed in `http.allowed_origins` (`"*"`: any, `"null"`: file:// pages).
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin_listed(origin, allowed) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let norm = |a: &str| {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    norm(authority) == norm(host)
}

/// Whether `origin` is in `http.allowed_origins` (`"*"` lists every origin).
pub(crate) fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// The token of an `Authorization: Bearer …` header, for the HTTP endpoints that need one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// An error answer of the HTTP endpoints: the contract's `error` JSON with its HTTP status.
pub(crate) fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "code": code.as_str(), "message": message});
    (status, axum::Json(body)).into_response()
}

/// The HTTP status for a contract error code.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// CORS headers for a listed cross-origin caller; none for same-origin or non-browser callers.
pub(crate) fn cors(headers: &HeaderMap, allowed: &[String], response: &mut Response) {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let listed = origin.to_str().is_ok_and(|o| origin_listed(o, allowed));
        if listed {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::VARY, axum::http::HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn same_origin_by_default() {
        assert!(origin_allowed(&headers(None, "example.com"), &[]));
        assert!(origin_allowed(
            &headers(Some("http://example.com"), "example.com"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("https://example.com:443"), "example.com"),
            &[]
        ));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("http://evil.com"), "example.com"),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(Some("http://example.com:81"), "example.com"),
            &[]
        ));
        assert!(!origin_allowed(&headers(Some("null"), "example.com"), &[]));
    }

    #[test]
    fn listed_origins_beside_same_origin() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(
            &headers(Some("https://app.example.com"), "api.example.com"),
            &allowed
        ));
        // mqws's own pages stay allowed when a list is configured.
        assert!(origin_allowed(
            &headers(Some("https://api.example.com"), "api.example.com"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("https://evil.example.com"), "api.example.com"),
            &allowed
        ));
        assert!(origin_allowed(&headers(None, "api.example.com"), &allowed));
    }

    #[test]
    fn star_allows_any_and_null_allows_file_pages() {
        let star = vec!["*".to_owned()];
        assert!(origin_allowed(
            &headers(Some("https://evil.com"), "a.com"),
            &star
        ));
        let null = vec!["null".to_owned()];
        assert!(origin_allowed(&headers(Some("null"), "a.com"), &null));
        assert!(!origin_allowed(
            &headers(Some("https://evil.com"), "a.com"),
            &null
        ));
    }
}
