//! The chat page's files, compiled into the binary so that `natter serve`
//! alone serves them: no install step, no path to get wrong.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// One file of the page.
pub struct Asset {
    /// Where the browser asks for it.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Scripts and styles only from this server, and connections only back to
/// it: even if some text slipped through as HTML, no script of anyone
/// else's could run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../static/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../static/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../static/style.css"),
    },
];

impl Asset {
    pub fn response(&self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                // The files change with the binary; always ask again.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            self.body,
        )
            .into_response()
    }
}
