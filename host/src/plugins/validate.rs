//! What an upload's request checks before it answers, without compiling: the header, a full
//! validation of the bytes as a component (wasmparser: every nested module's code included), and
//! the names of the plugin world (the handler export, imports only from packages the host
//! provides). Compiling, and linking against the host's exact interface types, come after the
//! request (see `compiler`); what only they can find becomes the version's `failed` reason.

use wasmparser::{Parser, Payload, ValidPayload, Validator, WasmFeatures};

use super::artifacts::PluginError;

/// The export every plugin provides.
pub const HANDLER_EXPORT: &str = "wasmhook:plugin/handler@0.1.0";

/// Namespaces of the interfaces the host's linker defines: WASI 0.2 (with `wasi:http`) and
/// `wasmhook:plugin`. An import from any other is refused at once; one of these the host lacks
/// (e.g. `wasi:keyvalue`) is found when the version is linked, after its compilation.
const PROVIDED_NAMESPACES: &[&str] = &["wasi", "wasmhook"];

/// Checks the header: `\0asm`, then a component's version/layer (`0d 00 01 00`).
pub fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.is_empty() {
        return Err(PluginError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(PluginError::CoreModule),
        other => Err(PluginError::Invalid(format!(
            "unknown WebAssembly version/layer {other:02x?}"
        ))),
    }
}

/// Names a refused import in terms of what the author must change.
pub fn unknown_import(detail: &str) -> PluginError {
    PluginError::Incompatible(format!(
        "the component imports something wasmhook does not provide: {detail}. \
         wasmhook provides wasmhook:plugin/host, wasmhook:plugin/kv, WASI 0.2 and wasi:http/outgoing-handler"
    ))
}

/// The refusal of a component without the handler export.
pub fn no_handler() -> PluginError {
    PluginError::Incompatible(format!(
        "the component does not export {HANDLER_EXPORT}: build it against the `plugin` world in wit/ \
         (with the wasmhook-plugin-sdk crate: implement Plugin and call export_plugin!)"
    ))
}

/// Validates `wasm` as a component of the plugin world, as far as that can be told without
/// compiling it. Every WebAssembly feature is accepted here: whether the engine supports the
/// ones used is the compiler's to say, so a valid component is never refused for a feature.
pub fn validate(wasm: &[u8]) -> Result<(), PluginError> {
    check_header(wasm)?;
    let invalid = |e: wasmparser::BinaryReaderError| PluginError::Invalid(e.to_string());
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut functions = Vec::new();
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nesting depth: only the outer component's own imports and exports are the world's.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section.clone() {
                    imports.push(import.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section.clone() {
                    exports.push(export.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
        if let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(invalid)? {
            functions.push((func, body));
        }
    }
    let mut allocations = Default::default();
    for (func, body) in functions {
        let mut v = func.into_validator(allocations);
        v.validate(&body).map_err(invalid)?;
        allocations = v.into_allocations();
    }
    // Imports first: an unknown import is the more fundamental mismatch to report.
    if let Some(foreign) = imports.iter().find(|name| {
        name.split_once(':')
            .is_some_and(|(ns, _)| !PROVIDED_NAMESPACES.contains(&ns))
    }) {
        return Err(unknown_import(&format!("import `{foreign}`")));
    }
    if !exports.iter().any(|name| name == HANDLER_EXPORT) {
        return Err(no_handler());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert!(matches!(check_header(b""), Err(PluginError::Empty)));
        assert!(matches!(
            check_header(b"hello world"),
            Err(PluginError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(PluginError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn a_truncated_component_is_invalid() {
        // A valid header, then a section that claims more bytes than there are.
        let e = validate(b"\0asm\x0d\0\x01\0\x01\xff\x01").unwrap_err();
        assert!(matches!(e, PluginError::Invalid(_)), "{e}");
    }

    #[test]
    fn the_world_is_checked_by_name() {
        let empty = b"\0asm\x0d\0\x01\0";
        let e = validate(empty).unwrap_err();
        assert!(e.to_string().contains("does not export"), "{e}");
    }
}
