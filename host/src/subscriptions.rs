//! Subscription rules: what a valid subscription is, how secrets are made and rotated.
//!
//! Pure functions over requests and records; the API calls them, the store persists the result.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::clock::{new_id, now_ms};
use crate::delivery::netpolicy::NetPolicy;
use crate::error::ApiError;
use crate::events::{EVENT_TYPE_PATTERN, valid_event_type};
use crate::model::{Circuit, DeliveryOrdering, Format, Subscription, SubscriptionStatus};

/// How long a rotated-out secret keeps signing deliveries.
pub const ROTATION_GRACE_MS: i64 = 24 * 3600 * 1000;
const MAX_URL_LEN: usize = 2048;
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 8192;
const MAX_EVENT_TYPES: usize = 256;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// An entry of `event_types`: an event type or `*`.
const EVENT_TYPE_FILTER_PATTERN: &str = r"^(\*|[a-z][a-z0-9_.:-]{0,127})$";
/// The largest `max_in_flight` a subscription may ask for.
pub const MAX_IN_FLIGHT: u32 = 1000;
/// Header names a subscription may not set: wasmhook owns them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "user-agent",
    "x-airy-content-signature",
];

/// A new signing secret: `whsec_` and the base64 of 32 random bytes (Standard Webhooks).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Checks a delivery URL: http(s), at most 2048 characters, a host, and, when the host is a
/// literal address, one the network policy permits.
pub fn validate_url(raw: &str, policy: &NetPolicy) -> Result<(), ApiError> {
    let literal: Option<IpAddr> = match parse_url(raw)?.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        _ => None,
    };
    if let Some(ip) = literal
        && !policy.permits(ip)
    {
        return Err(ApiError::BadRequest {
            code: "url_not_allowed",
            message: format!(
                "url: {ip} is an internal address, refused by the network policy \
                     (an operator can open it with --allow-network)"
            ),
        });
    }
    Ok(())
}

/// Checks the shape of a delivery URL (http(s), at most 2048 characters, a host, no
/// credentials), not where it points.
pub fn parse_url(raw: &str) -> Result<url::Url, ApiError> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(format!(
            "url: longer than {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw).map_err(|e| ApiError::invalid(format!("url: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ApiError::invalid("url: the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "url: credentials in the URL are not accepted; use headers",
        ));
    }
    if url.host().is_none() {
        return Err(ApiError::invalid("url: a host is required"));
    }
    Ok(url)
}

/// Checks an event-type filter: non-empty, each a valid type or `*`.
pub fn validate_event_types(types: &[String]) -> Result<(), ApiError> {
    if types.is_empty() {
        return Err(ApiError::invalid(
            "event_types: must not be empty (use [\"*\"] for every type)",
        ));
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::invalid(format!(
            "event_types: at most {MAX_EVENT_TYPES} entries"
        )));
    }
    for (i, t) in types.iter().enumerate() {
        if t != "*" && !valid_event_type(t) {
            return Err(ApiError::invalid(format!(
                "event_types[{i}]: {t:?} is not an event type ({EVENT_TYPE_PATTERN}) or \"*\""
            )));
        }
    }
    Ok(())
}

/// Checks custom headers: valid names and values, none that wasmhook sets itself.
pub fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(format!(
            "headers: at most {MAX_HEADERS} headers"
        )));
    }
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::invalid(format!(
                "headers: {name:?} is not a valid header name"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            return Err(ApiError::invalid(format!(
                "headers: {name:?} is reserved; wasmhook sets it"
            )));
        }
        if http::HeaderValue::from_str(value).is_err() || value.len() > MAX_HEADER_VALUE {
            return Err(ApiError::invalid(format!(
                "headers: the value of {name:?} is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// Deserializes a field that may be absent (leave as is), `null` (clear) or a value (set).
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /v1/subscriptions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Where to POST deliveries. Exactly one of `url` and `plugin_id`.
    #[schema(schema_with = schema::url)]
    pub url: Option<String>,
    /// A plugin that receives the events instead of a URL.
    pub plugin_id: Option<String>,
    /// A plugin each event passes through before it is sent to `url`.
    pub transform_plugin_id: Option<String>,
    /// Free text.
    #[serde(default)]
    #[schema(schema_with = schema::description)]
    pub description: String,
    /// Event types to deliver; `["*"]` (the default) for all.
    #[serde(default = "all_types")]
    #[schema(schema_with = schema::event_types)]
    pub event_types: Vec<String>,
    /// Extra request headers.
    #[serde(default)]
    #[schema(schema_with = schema::headers)]
    pub headers: BTreeMap<String, String>,
    /// Body shape; `standard` by default.
    #[serde(default)]
    pub format: Format,
    /// Require the verification handshake before delivering (always on for `papercups`).
    #[serde(default)]
    pub verify: bool,
    /// At most this many deliveries per second; excess deliveries wait.
    #[schema(schema_with = schema::rate)]
    pub rate_limit_per_second: Option<u32>,
    /// At most this many attempts at once (1 to 1000); the server's default
    /// (`--subscription-max-in-flight`) when absent.
    #[schema(schema_with = schema::max_in_flight)]
    pub max_in_flight: Option<u32>,
    /// `conversation` (the default for plugin subscribers): one delivery at a time per
    /// conversation, in ingest order; `none` (the default for URL subscriptions): no order.
    pub ordering: Option<DeliveryOrdering>,
}

fn all_types() -> Vec<String> {
    vec!["*".to_string()]
}

/// Body of `PATCH /v1/subscriptions/{id}`: only the fields given change. Absent fields are not
/// serialized, so a client's `Some(None)` sends `null` (clear) and `None` leaves a field as is.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    /// New URL (requires verification again where verification applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::url)]
    pub url: Option<String>,
    /// New description.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::new_description)]
    pub description: Option<String>,
    /// New event types.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::new_event_types)]
    pub event_types: Option<Vec<String>>,
    /// New headers (replaces the whole map).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::new_headers)]
    pub headers: Option<BTreeMap<String, String>>,
    /// New format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// `active` to (re-)enable, `disabled` to pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<SubscriptionStatus>,
    /// Turn the handshake requirement on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// New transform plugin, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform_plugin_id: Option<Option<String>>,
    /// New rate limit, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::rate)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<Option<u32>>,
    /// New concurrency cap (1 to 1000), or `null` for the server's default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::max_in_flight)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<Option<u32>>,
    /// `conversation` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrdering>,
}

/// The document's schemas of the fields above: the bounds the validation below enforces.
pub(crate) mod schema {
    use utoipa::openapi::{RefOr, Schema};

    use super::*;
    use crate::schema::{Str, array, integer, string_map};

    /// An HTTP header name (RFC 9110 token characters).
    const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
    /// A header value `http` accepts: no control characters but tab.
    const HEADER_VALUE_PATTERN: &str = "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$";

    fn url_of() -> Str {
        Str::new("An http(s) URL without credentials; internal addresses are refused unless the operator allows them.")
            .len(1, MAX_URL_LEN)
            .format("uri")
    }

    pub fn url() -> RefOr<Schema> {
        url_of().nullable().build()
    }

    pub fn required_url() -> RefOr<Schema> {
        url_of().build()
    }

    fn description_of(nullable: bool) -> RefOr<Schema> {
        let s = Str::new("Free text.").len(0, MAX_DESCRIPTION);
        if nullable { s.nullable() } else { s }.build()
    }

    pub fn description() -> RefOr<Schema> {
        description_of(false)
    }

    pub fn new_description() -> RefOr<Schema> {
        description_of(true)
    }

    fn event_types_of(nullable: bool) -> RefOr<Schema> {
        let item = Str::new("An event type, or `*` for every type.")
            .pattern(EVENT_TYPE_FILTER_PATTERN)
            .build();
        array(
            "Event types to deliver; `[\"*\"]` for all.",
            item,
            1,
            MAX_EVENT_TYPES,
            nullable,
        )
    }

    pub fn event_types() -> RefOr<Schema> {
        event_types_of(false)
    }

    pub fn new_event_types() -> RefOr<Schema> {
        event_types_of(true)
    }

    fn headers_of(nullable: bool) -> RefOr<Schema> {
        string_map(
            "Extra request headers; names wasmhook sets itself (`content-type`, `webhook-*`, ...) are refused.",
            Str::new("Header name").pattern(HEADER_NAME_PATTERN),
            Str::new("Header value")
                .len(0, MAX_HEADER_VALUE)
                .pattern(HEADER_VALUE_PATTERN),
            MAX_HEADERS,
            nullable,
        )
    }

    pub fn headers() -> RefOr<Schema> {
        headers_of(false)
    }

    pub fn new_headers() -> RefOr<Schema> {
        headers_of(true)
    }

    pub fn rate() -> RefOr<Schema> {
        integer(
            "At most this many deliveries per second (null: no limit).",
            Some(1),
            Some(u32::MAX.into()),
            true,
        )
    }

    pub fn max_in_flight() -> RefOr<Schema> {
        integer(
            "At most this many attempts at once (null: the server's --subscription-max-in-flight).",
            Some(1),
            Some(MAX_IN_FLIGHT.into()),
            true,
        )
    }
}

/// Whether a subscription in this shape must pass the handshake before receiving events.
pub fn needs_verification(format: Format, verify: bool, has_url: bool) -> bool {
    has_url && (verify || format == Format::Papercups)
}

fn validate_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

fn validate_max_in_flight(n: Option<u32>) -> Result<(), ApiError> {
    if n.is_some_and(|n| !(1..=MAX_IN_FLIGHT).contains(&n)) {
        return Err(ApiError::invalid(format!(
            "max_in_flight: must be between 1 and {MAX_IN_FLIGHT} (or null for the server's default)"
        )));
    }
    Ok(())
}

fn validate_rate(rate: Option<u32>) -> Result<(), ApiError> {
    if rate == Some(0) {
        return Err(ApiError::invalid(
            "rate_limit_per_second: must be at least 1 (or null for no limit)",
        ));
    }
    Ok(())
}

/// Builds a new subscription from a request, validating every field.
pub fn build(
    account_id: &str,
    req: CreateSubscription,
    policy: &NetPolicy,
) -> Result<Subscription, ApiError> {
    match (&req.url, &req.plugin_id) {
        (Some(url), None) => validate_url(url, policy)?,
        (None, Some(_)) if req.transform_plugin_id.is_some() => {
            return Err(ApiError::invalid(
                "transform_plugin_id: only a url subscription can have a transform",
            ));
        }
        (None, Some(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "exactly one of url and plugin_id is required",
            ));
        }
    }
    validate_event_types(&req.event_types)?;
    validate_headers(&req.headers)?;
    validate_rate(req.rate_limit_per_second)?;
    validate_max_in_flight(req.max_in_flight)?;
    validate_description(&req.description)?;
    let now = now_ms();
    // A reacting plugin relies on seeing a conversation's messages one at a time, in order.
    let ordering = req.ordering.unwrap_or(match req.plugin_id {
        Some(_) => DeliveryOrdering::Conversation,
        None => DeliveryOrdering::None,
    });
    let status = if needs_verification(req.format, req.verify, req.url.is_some()) {
        SubscriptionStatus::PendingVerification
    } else {
        SubscriptionStatus::Active
    };
    Ok(Subscription {
        seq: 0,
        id: new_id("sub"),
        account_id: account_id.to_string(),
        url: req.url,
        plugin_id: req.plugin_id,
        transform_plugin_id: req.transform_plugin_id,
        description: req.description,
        event_types: req.event_types,
        headers: req.headers,
        format: req.format,
        status,
        status_reason: None,
        verify: req.verify,
        rate_limit_per_second: req.rate_limit_per_second,
        max_in_flight: req.max_in_flight,
        ordering,
        circuit: Circuit::at(0, None, now),
        listen_expires_at: None,
        secret: new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        airy_api_secret: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    })
}

/// Builds a `wasmhook listen` subscription: no URL or plugin, its deliveries are handed to the
/// command line connected to it; it is deleted once `expires_at` passes with none connected
/// (the server's `--listen-grace` after its last connection).
pub fn build_listener(
    account_id: &str,
    event_types: Vec<String>,
    format: Format,
    description: String,
    now: i64,
    expires_at: i64,
) -> Result<Subscription, ApiError> {
    validate_event_types(&event_types)?;
    validate_description(&description)?;
    Ok(Subscription {
        seq: 0,
        id: new_id("sub"),
        account_id: account_id.to_string(),
        url: None,
        plugin_id: None,
        transform_plugin_id: None,
        description,
        event_types,
        headers: BTreeMap::new(),
        format,
        status: SubscriptionStatus::Active,
        status_reason: None,
        verify: false,
        rate_limit_per_second: None,
        max_in_flight: None,
        ordering: DeliveryOrdering::None,
        circuit: Circuit::at(0, None, now),
        listen_expires_at: Some(expires_at),
        secret: new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        airy_api_secret: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    })
}

/// Validates a patch up front (everything that does not depend on the stored record).
pub fn validate_update(req: &UpdateSubscription, policy: &NetPolicy) -> Result<(), ApiError> {
    if let Some(url) = &req.url {
        validate_url(url, policy)?;
    }
    if let Some(types) = &req.event_types {
        validate_event_types(types)?;
    }
    if let Some(headers) = &req.headers {
        validate_headers(headers)?;
    }
    if let Some(rate) = req.rate_limit_per_second {
        validate_rate(rate)?;
    }
    if let Some(n) = req.max_in_flight {
        validate_max_in_flight(n)?;
    }
    if req.status == Some(SubscriptionStatus::PendingVerification) {
        return Err(ApiError::invalid(
            "status: may be set to active or disabled; use POST /v1/subscriptions/{id}/verify to verify",
        ));
    }
    if let Some(d) = &req.description {
        validate_description(d)?;
    }
    Ok(())
}

/// Applies a validated patch. Returns whether the handshake must run (again).
pub fn apply_update(sub: &mut Subscription, req: UpdateSubscription) -> Result<bool, String> {
    if sub.plugin_id.is_some()
        && (req.url.is_some() || matches!(req.transform_plugin_id, Some(Some(_))))
    {
        return Err("a plugin subscription has no url or transform".into());
    }
    if sub.listen_expires_at.is_some()
        && (req.url.is_some() || matches!(req.transform_plugin_id, Some(Some(_))))
    {
        return Err("a `wasmhook listen` subscription has no url or transform".into());
    }
    let url_changed = req
        .url
        .as_ref()
        .is_some_and(|u| Some(u) != sub.url.as_ref());
    if let Some(url) = req.url {
        sub.url = Some(url);
    }
    if let Some(d) = req.description {
        sub.description = d;
    }
    if let Some(t) = req.event_types {
        sub.event_types = t;
    }
    if let Some(h) = req.headers {
        sub.headers = h;
    }
    let format_changed = req.format.is_some_and(|f| f != sub.format);
    if let Some(f) = req.format {
        sub.format = f;
    }
    let verify_turned_on = req.verify == Some(true) && !sub.verify;
    if let Some(v) = req.verify {
        sub.verify = v;
    }
    if let Some(t) = req.transform_plugin_id {
        sub.transform_plugin_id = t;
    }
    if let Some(r) = req.rate_limit_per_second {
        sub.rate_limit_per_second = r;
    }
    if let Some(n) = req.max_in_flight {
        sub.max_in_flight = n;
    }
    if let Some(o) = req.ordering {
        sub.ordering = o;
    }
    let needs = needs_verification(sub.format, sub.verify, sub.url.is_some());
    let mut verify_now = false;
    match req.status {
        Some(SubscriptionStatus::Disabled) => {
            sub.status = SubscriptionStatus::Disabled;
            sub.status_reason = Some("disabled by request".into());
        }
        Some(SubscriptionStatus::Active) | None => {
            let reenable = req.status == Some(SubscriptionStatus::Active)
                && sub.status != SubscriptionStatus::Active;
            let reverify = needs && (url_changed || verify_turned_on || format_changed);
            if reverify || (reenable && needs) {
                sub.status = SubscriptionStatus::PendingVerification;
                sub.status_reason = Some("waiting for the verification handshake".into());
                verify_now = true;
            } else if reenable || (!needs && sub.status == SubscriptionStatus::PendingVerification)
            {
                sub.status = SubscriptionStatus::Active;
                sub.status_reason = None;
            }
            if reenable {
                sub.failing_since = None;
            }
        }
        Some(SubscriptionStatus::PendingVerification) => unreachable!("refused by validate_update"),
    }
    sub.updated_at = now_ms();
    Ok(verify_now)
}

/// Rotates the signing secret; the old one keeps signing until the returned time.
pub fn rotate_secret(sub: &mut Subscription, now: i64) -> i64 {
    let until = now + ROTATION_GRACE_MS;
    sub.previous_secret = Some(std::mem::replace(&mut sub.secret, new_secret()));
    sub.previous_secret_expires_at = Some(until);
    sub.updated_at = now;
    until
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let p = NetPolicy::default();
        assert!(validate_url("https://example.com/hook", &p).is_ok());
        for bad in [
            "ftp://example.com",
            "not a url",
            "http://127.0.0.1:9000/x",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://10.0.0.8/",
            "https://user:pw@example.com/",
        ] {
            assert!(validate_url(bad, &p).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://example.com/{}", "a".repeat(2048)), &p).is_err());
        // Names are checked after DNS resolution, at connect time, not here.
        assert!(validate_url("http://localhost:3000/", &p).is_ok());
        let open = NetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(validate_url("http://127.0.0.1:9000/x", &open).is_ok());
    }

    #[test]
    fn headers_are_checked() {
        let ok: BTreeMap<_, _> = [("X-Custom".to_string(), "v".to_string())].into();
        assert!(validate_headers(&ok).is_ok());
        for (k, v) in [
            ("Host", "x"),
            ("content-type", "x"),
            ("Webhook-Id", "x"),
            ("bad name", "x"),
            ("x-ok", "a\nb"),
        ] {
            let h: BTreeMap<_, _> = [(k.to_string(), v.to_string())].into();
            assert!(validate_headers(&h).is_err(), "{k}");
        }
    }

    #[test]
    fn event_type_filters_are_checked() {
        assert!(validate_event_types(&["*".into()]).is_ok());
        assert!(validate_event_types(&["message:created".into()]).is_ok());
        assert!(validate_event_types(&[]).is_err());
        assert!(validate_event_types(&["Message".into()]).is_err());
    }

    #[test]
    fn secrets_follow_standard_webhooks() {
        let s = new_secret();
        let raw = STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert!(raw.len() >= 24);
    }

    #[test]
    fn changing_the_url_of_a_verified_subscription_requires_verification_again() {
        let req = CreateSubscription {
            url: Some("https://a.example/".into()),
            plugin_id: None,
            transform_plugin_id: None,
            description: String::new(),
            event_types: all_types(),
            headers: BTreeMap::new(),
            format: Format::Papercups,
            verify: false,
            rate_limit_per_second: None,
            max_in_flight: None,
            ordering: None,
        };
        let mut sub = build("acc", req, &NetPolicy::default()).unwrap();
        assert_eq!(sub.status, SubscriptionStatus::PendingVerification);
        sub.status = SubscriptionStatus::Active;
        let patch = UpdateSubscription {
            url: Some("https://b.example/".into()),
            ..Default::default()
        };
        assert!(apply_update(&mut sub, patch).unwrap());
        assert_eq!(sub.status, SubscriptionStatus::PendingVerification);
    }
}
