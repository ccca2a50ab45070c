//! TODO
use axum::Router;
use crate::config::Config;
use crate::state::AppState;

pub fn router(_config: &Config) -> Router<AppState> {
    Router::new()
}
