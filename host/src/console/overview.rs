//! The overview, the console's first page: queue depth, the last hour's deliveries by outcome,
//! failing subscriptions with the time left before they are disabled, plugins with recent
//! failures; each links to the filtered list.

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use maud::html;

use super::Page;
use super::layout::{self, Nav, badge, seg, short};
use super::session::Signed;
use crate::clock::now_ms;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/console", get(show))
}

/// "3 d 4 h", "12 min": a coarse duration for people.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

async fn show(State(state): State<AppState>, s: Signed) -> Page {
    let now = now_ms();
    let o = state
        .store
        .overview(s.account.clone(), now, now - 24 * 3_600_000)
        .await?;
    let disable_after = state.config.disable_after.as_millis() as i64;
    Ok(layout::page(
        &s.csrf,
        "Overview",
        Nav::Overview,
        html! {
            div.stats {
                a.stat href="/console/deliveries?status=pending" data-test="queue-depth" {
                    span.n { (o.queue_depth) }
                    "deliveries waiting"
                }
                @for (status, n) in &o.last_hour {
                    a.stat href={ "/console/deliveries?window=1h&status=" (status.as_str()) }
                        data-test={ "last-hour-" (status.as_str()) } {
                        span.n { (n) }
                        (status.as_str()) " in the last hour"
                    }
                }
                @if o.last_hour.is_empty() {
                    div.stat data-test="last-hour-none" { span.n { "0" } "deliveries in the last hour" }
                }
            }
            h2 { "Failing subscriptions" }
            @if o.failing.is_empty() {
                p data-test="no-failing" { "None: every subscription delivered its latest events, or has nothing to deliver." }
            } @else {
                div.table-wrap {
                    table.responsive data-test="failing-subscriptions" {
                        thead { tr { th { "Subscription" } th { "Target" } th { "Failing since" } th { "Disabled in" } } }
                        tbody {
                            @for (id, target, since) in &o.failing {
                                tr {
                                    td data-label="Subscription" { a href={ "/console/subscriptions/" (seg(id)) "?status=failed" } { (id) } }
                                    td.wrap.mono data-label="Target" { (short(target, 80)) }
                                    td data-label="Failing since" { (layout::time(*since)) }
                                    td data-label="Disabled in" data-test="time-left" { (human(since + disable_after - now)) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Plugins with failures in the last 24 hours" }
            @if o.plugin_errors.is_empty() {
                p data-test="no-plugin-failures" { "None." }
            } @else {
                ul data-test="plugin-failures" {
                    @for (id, name, n) in &o.plugin_errors {
                        li { a href={ "/console/plugins/" (seg(id)) "#logs" } { (name) } " " (badge("error")) " " (n) " error lines" }
                    }
                }
            }
            p.hint { a href="/console/deliveries" { "All deliveries" } ", or open a subscription on the " a href="/console/integrations" { "Integrations" } " page and filter its deliveries." }
        },
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_coarsely() {
        assert_eq!(super::human(5_000), "5 s");
        assert_eq!(super::human(3 * 60_000), "3 min");
        assert_eq!(super::human(3_600_000 + 120_000), "1 h 2 min");
        assert_eq!(super::human(5 * 86_400_000), "5 d 0 h");
        assert_eq!(super::human(-1), "0 s");
    }
}
