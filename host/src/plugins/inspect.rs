//! What `wasmhook plugin check` reports about a component without a server: the upload's own
//! validation (header, the bytes, the world's names), what its compilation and linking would
//! say (imports the host provides, the handler export), and the
//! component's imported and exported interfaces with their functions.

use wasmtime::component::types::ComponentItem;

use super::PluginRuntime;
use super::artifacts::PluginError;
use super::validate::{check_header, validate};

/// An interface (or a lone function) a component imports or exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interface {
    /// Its name, e.g. `wasmhook:plugin/host@0.1.0`.
    pub name: String,
    /// The functions in it (for a lone function, its own name).
    pub functions: Vec<String>,
}

/// A component's imports and exports, in the component's order.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ComponentInterface {
    /// What it imports.
    pub imports: Vec<Interface>,
    /// What it exports.
    pub exports: Vec<Interface>,
}

/// The outcome of a check: the interface when the component compiles, and the reason an
/// upload would be refused, if it would.
#[derive(Debug)]
pub struct Checked {
    /// Present when the bytes compile as a component.
    pub interface: Option<ComponentInterface>,
    /// Why an upload would be refused.
    pub refused: Option<PluginError>,
}

fn interface(engine: &wasmtime::Engine, name: &str, item: &ComponentItem) -> Interface {
    let functions = match item {
        ComponentItem::ComponentInstance(instance) => instance
            .exports(engine)
            .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
            .map(|(f, _)| f.to_string())
            .collect(),
        ComponentItem::ComponentFunc(_) => vec![name.to_string()],
        _ => Vec::new(),
    };
    Interface {
        name: name.to_string(),
        functions,
    }
}

impl PluginRuntime {
    /// Checks `wasm` exactly as an upload would, and describes its interface. Blocking:
    /// compiling takes a while.
    pub fn check_component(&self, wasm: &[u8]) -> Checked {
        if let Err(e) = check_header(wasm) {
            return Checked {
                interface: None,
                refused: Some(e),
            };
        }
        let component = match self.compile(wasm) {
            Ok(c) => c,
            Err(e) => {
                return Checked {
                    interface: None,
                    refused: Some(e),
                };
            }
        };
        let ty = component.component_type();
        let described = ComponentInterface {
            imports: ty
                .imports(&self.engine)
                .map(|(name, e)| interface(&self.engine, name, &e.ty))
                .collect(),
            exports: ty
                .exports(&self.engine)
                .map(|(name, e)| interface(&self.engine, name, &e.ty))
                .collect(),
        };
        // What the upload's request refuses, else what its compilation would fail with.
        Checked {
            interface: Some(described),
            refused: validate(wasm).err().or_else(|| self.pre(&component).err()),
        }
    }
}
