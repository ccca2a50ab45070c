//! TODO
use crate::config::Config;
use crate::state::AppState;
use axum::Router;

pub fn router(_config: &Config) -> Router<AppState> {
    Router::new()
}
