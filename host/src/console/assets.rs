//! The console's script and stylesheet, embedded in the binary at build time.
//!
//! Pages link them with a content hash in the query (`?v=...`), so they can be cached for a
//! year and a new build is fetched at once.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::state::AppState;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const CACHE: &str = "public, max-age=31536000, immutable";

fn versioned(path: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    format!("{path}?v={}", hex::encode(&digest[..6]))
}

/// The stylesheet's URL.
pub static CSS_PATH: LazyLock<String> =
    LazyLock::new(|| versioned("/console/assets/console.css", CSS));
/// The script's URL.
pub static JS_PATH: LazyLock<String> =
    LazyLock::new(|| versioned("/console/assets/console.js", JS));

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console/assets/console.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, CACHE),
                    ],
                    CSS,
                )
                    .into_response()
            }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, CACHE),
                    ],
                    JS,
                )
                    .into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_stays_small() {
        assert!(
            super::JS.len() < 100 * 1024,
            "the console ships under 100 KB of JavaScript"
        );
    }
}
