//! The OpenAPI document served at `/openapi.json`: its header, its security schemes, and the
//! error responses operations share.
//!
//! A handler's `#[utoipa::path]` lists what only that handler answers (its success, a 409, a
//! 404 for a resource named in its body). What follows from the shape of an operation is added
//! here, after the routers are merged, so no handler can forget it: an authenticated operation
//! can answer 401, 429 (too many failed authentications) and 503 (shutting down), an
//! admin-only one 403 (`--admin-token none`); one with a body 400, 408 (`--body-timeout`), 413
//! and 415; one with path parameters 404; one with any parameter 400. This module must not
//! describe routes itself, except `/openapi.json`, which is served from the finished document.

use std::collections::BTreeMap;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Response, Schema, Type};
use utoipa::{Modify, OpenApi};

/// The document's header and the schemas no operation reaches by itself.
#[derive(OpenApi)]
#[openapi(
    info(title = "wasmhook", description = "Durable, signed webhooks and WebAssembly plugins for chat events."),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody))
)]
pub(super) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!("`Authorization: Bearer <{what}>`")))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", bearer("an account's API key (whk_...)"));
        components.add_security_scheme(
            "admin_token",
            bearer("the admin token (in the data dir's admin-token file)"),
        );
    }
}

/// Adds the shared error responses to every operation, the plugin limits' bounds, and the
/// `/openapi.json` operation.
pub(super) fn complete(doc: &mut utoipa::openapi::OpenApi) {
    plugin_limit_bounds(doc);
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_shared_responses(op);
        }
    }
    doc.paths.add_path_operation(
        "/openapi.json",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("ops")
            .operation_id(Some("openapi"))
            .summary(Some(
                "This document: every operation, its parameters and answers",
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The OpenAPI 3.1 document")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    ),
            ),
    );
}

/// What each shared status means; the body is always an `ErrorBody`.
fn shared_responses(op: &Operation) -> BTreeMap<&'static str, Response> {
    let mut out = BTreeMap::new();
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    if authenticated {
        out.insert(
            "401",
            error("Missing, malformed, invalid or revoked credentials"),
        );
        out.insert(
            "429",
            error_with_retry_after(
                "Too many requests: failed authentications from this address, or this \
                 endpoint's own quota; `Retry-After` says when to come back",
            ),
        );
        out.insert(
            "503",
            error("The server is shutting down, or its database does not answer"),
        );
    }
    if op.request_body.is_some() || !params.is_empty() {
        out.insert(
            "400",
            error("The request is malformed or a field is invalid; the message names it"),
        );
    }
    if authenticated && security_schemes(op).iter().all(|s| s == "admin_token") {
        out.insert(
            "403",
            error("The admin endpoints are turned off on this server (`--admin-token none`)"),
        );
    }
    if op.request_body.is_some() {
        out.insert(
            "408",
            error("The request body was not received within the server's `--body-timeout`"),
        );
        out.insert(
            "413",
            error("The request body is larger than this endpoint accepts"),
        );
        out.insert(
            "415",
            error("The body's `Content-Type` is not one this endpoint reads"),
        );
    }
    if has(ParameterIn::Path) {
        out.insert(
            "404",
            error("The resource does not exist in this account (another account's is a 404 too)"),
        );
    }
    out
}

/// The names of the security schemes an operation accepts.
fn security_schemes(op: &Operation) -> Vec<String> {
    // `SecurityRequirement` keeps its scheme names private; its JSON form is `{name: scopes}`.
    let json = serde_json::to_value(&op.security).unwrap_or_default();
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|requirement| requirement.as_object())
        .flat_map(|requirement| requirement.keys().cloned())
        .collect()
}

fn add_shared_responses(op: &mut Operation) {
    for (status, response) in shared_responses(op) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    }
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build()
}

fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content())
        .build()
}

fn error_with_retry_after(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content())
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        )
        .build()
}

/// The bounds of each plugin limit override are the runtime's (`plugins::limits::bounds`): set
/// here from that one table rather than repeated as attributes on the record type.
fn plugin_limit_bounds(doc: &mut utoipa::openapi::OpenApi) {
    let Some(RefOr::T(Schema::Object(limits))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("PluginLimits"))
    else {
        return;
    };
    for (name, min, max) in crate::plugins::limits::bounds() {
        if let Some(RefOr::T(Schema::Object(field))) = limits.properties.get_mut(name) {
            field.minimum = Some(utoipa::Number::UInt(min as usize));
            field.maximum = Some(utoipa::Number::UInt(max as usize));
        }
    }
}
