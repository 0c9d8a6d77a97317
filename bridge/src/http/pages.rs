//! The pages mqws serves from its own binary (contract section 5): the browser client
//! `/mqws.js` and the dashboard at `/` with its script and style. The files live in
//! `bridge/assets/` and are compiled in, so there is no build step and nothing to deploy
//! beside the binary.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// One embedded file: its route, content type and bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../assets/index.html"),
    ),
    (
        "/mqws.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/mqws.js"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    ),
    (
        "/dashboard-model.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard-model.js"),
    ),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard.css"),
    ),
];

/// Adds the embedded pages to `router`. `no-cache` makes browsers revalidate, so a new binary's
/// client is picked up on the next load.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    for &(path, kind, body) in FILES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, kind),
                        (header::CACHE_CONTROL, "no-cache"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    ],
                    body,
                )
                    .into_response()
            }),
        );
    }
    router
}
