//! Paths of the test plugins compiled to wasm (skeleton: the build step is being written;
//! until then every path is empty).

/// `example-plugins/auto-reply`.
pub const AUTO_REPLY: &str = "";
/// `example-plugins/pii-redactor`.
pub const PII_REDACTOR: &str = "";
/// `example-plugins/router`.
pub const ROUTER: &str = "";
/// `example-plugins/first-contact-greeter`.
pub const FIRST_CONTACT_GREETER: &str = "";
/// `tests/fixture-plugins/noop`.
pub const NOOP: &str = "";
/// `tests/fixture-plugins/hostile`.
pub const HOSTILE: &str = "";
