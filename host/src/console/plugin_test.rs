//! The plugin page's **Test run**: run the plugin on a recent event or an example payload and
//! see its decision, logs, messages and key-value writes, with no side effects.
//!
//! Wired to the test-run service (`POST /v1/plugins/{id}/test`) once it is in the tree.

use maud::{Markup, html};

use crate::model::Plugin;

/// The test-run section of a plugin's page.
pub fn section(_plugin: &Plugin, _csrf: &str) -> Markup {
    html! {
        section.card data-test="test-run" {
            h2 { "Test run" }
            p.hint { "Running a plugin on a sample event from the console is not available in this build yet." }
        }
    }
}
