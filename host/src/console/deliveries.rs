//! The account's deliveries across subscriptions, most recently changed first, by status and
//! time window: where the overview's figures lead.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use super::Page;
use super::layout::{self, Nav};
use super::session::Signed;
use super::subscription::deliveries_table;
use crate::clock::now_ms;
use crate::model::DeliveryStatus;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/console/deliveries", get(list))
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    /// `1h`, `24h`, or all time.
    window: Option<String>,
    /// `<updated_at>-<seq>` of the previous page's last row.
    after: Option<String>,
}

fn window_ms(window: Option<&str>) -> Option<i64> {
    match window? {
        "1h" => Some(3_600_000),
        "24h" => Some(24 * 3_600_000),
        _ => None,
    }
}

async fn list(State(state): State<AppState>, s: Signed, Query(dq): Query<DeliveriesQuery>) -> Page {
    let status = dq.status.as_deref().and_then(DeliveryStatus::parse);
    let window = dq
        .window
        .as_deref()
        .filter(|w| window_ms(Some(w)).is_some());
    let since = window_ms(window).map(|w| now_ms() - w);
    let after = dq.after.as_deref().and_then(|a| {
        let (at, seq) = a.split_once('-')?;
        Some((at.parse().ok()?, seq.parse().ok()?))
    });
    let (items, next) = state
        .store
        .account_deliveries(s.account.clone(), status, since, 50, after)
        .await?;
    let title = match status {
        Some(st) => format!("Deliveries: {}", st.as_str()),
        None => "Deliveries".to_string(),
    };
    Ok(layout::page(
        &s.csrf,
        &title,
        Nav::Overview,
        html! {
            form.filters method="get" action="/console/deliveries" {
                div {
                    label for="d-status" { "Status" }
                    select #d-status name="status" data-test="deliveries-status" {
                        option value="" selected[status.is_none()] { "Any" }
                        @for st in [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed, DeliveryStatus::Filtered] {
                            option value=(st.as_str()) selected[status == Some(st)] { (st.as_str()) }
                        }
                    }
                }
                div {
                    label for="d-window" { "Changed" }
                    select #d-window name="window" data-test="deliveries-window" {
                        option value="" selected[window.is_none()] { "any time" }
                        option value="1h" selected[window == Some("1h")] { "in the last hour" }
                        option value="24h" selected[window == Some("24h")] { "in the last 24 hours" }
                    }
                }
                button.secondary type="submit" { "Filter" }
            }
            p.hint { "Every subscription's deliveries, most recently changed first." }
            (deliveries_table(&items, &s.csrf, "account-deliveries-body"))
            @if let Some((at, seq)) = next {
                p.pager { a data-test="next-page" href={ "/console/deliveries?after=" (at) "-" (seq)
                    @if let Some(st) = status { "&status=" (st.as_str()) }
                    @if let Some(w) = window { "&window=" (w) } } { "Older →" } }
            }
        },
    )
    .into_response())
}
