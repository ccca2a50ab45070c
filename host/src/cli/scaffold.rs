//! `plugin new NAME --lang rust|python|js`: a plugin project that builds out of the box, with a
//! README of the three commands (build, run locally, push).
//!
//! The Rust project depends on the SDK by path: the SDK is not published to a registry, so the
//! path is `--sdk PATH` when given, else the `plugin-sdk/` of the checkout this binary was built
//! from (when it is still there). Python and JavaScript projects get the WIT the server was
//! built with (embedded in the binary), so they build against exactly the host's interface.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output::print_json;
use super::{CliError, Ctx};

/// The WIT this binary's host implements.
const WIT: &str = include_str!("../../../wit/plugin.wit");
const GITIGNORE: &str = include_str!("templates/gitignore");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with the wasmhook-plugin-sdk crate (`cargo build --target wasm32-wasip2`).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with ComponentizeJS.
    Js,
}

/// Arguments of `plugin new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits and `-`); also the directory made.
    name: String,
    /// The language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to make the project directory (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rust only: the path of the SDK crate (`plugin-sdk/` of a wasmhook checkout).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// What `plugin new -o json` prints.
#[derive(Debug, Serialize)]
struct Created {
    name: String,
    lang: &'static str,
    dir: String,
    files: Vec<String>,
    /// The component the build writes, relative to `dir`.
    component: String,
    /// The command that builds it, run in `dir`.
    build: String,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

/// `my-plugin` → `MyPlugin`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// The SDK's directory: `--sdk`, else the checkout this binary was built from.
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match given {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"),
    };
    let dir = dir.canonicalize().map_err(|_| {
        CliError::Invalid(format!(
            "the SDK is not at {}: pass --sdk PATH (the plugin-sdk directory of a wasmhook checkout)",
            dir.display()
        ))
    })?;
    if !dir.join("Cargo.toml").exists() {
        return Err(CliError::Invalid(format!(
            "{} has no Cargo.toml: pass --sdk PATH (the plugin-sdk directory of a wasmhook checkout)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Makes the project; refuses to write into an existing directory.
pub fn new(args: NewArgs, ctx: &Ctx) -> Result<(), CliError> {
    if !valid_name(&args.name) {
        return Err(CliError::Invalid(format!(
            "{:?}: a plugin name is lowercase letters, digits and '-', starting with a letter",
            args.name
        )));
    }
    let root = args.dir.join(&args.name);
    if root.exists() {
        return Err(CliError::Invalid(format!(
            "{} already exists",
            root.display()
        )));
    }
    let crate_name = args.name.replace('-', "_");
    let type_name = type_name(&args.name);
    let (sdk_dependency, sdk_note) = match args.lang {
        Lang::Rust => {
            let dir = sdk_dir(args.sdk.as_deref())?;
            let shown = dir.display().to_string();
            (
                format!("wasmhook-plugin-sdk = {{ path = {shown:?} }}"),
                format!(
                    "a path to `{shown}` (the SDK is not published to a registry; move the \
                     path if you move the checkout)"
                ),
            )
        }
        _ => (String::new(), String::new()),
    };
    let vars = [
        ("name", args.name.as_str()),
        ("crate_name", crate_name.as_str()),
        ("type_name", type_name.as_str()),
        ("sdk_dependency", sdk_dependency.as_str()),
        ("sdk_note", sdk_note.as_str()),
    ];
    let (files, component, build): (Vec<(&str, &str, bool)>, String, String) = match args.lang {
        Lang::Rust => (
            vec![
                (
                    "Cargo.toml",
                    include_str!("templates/rust/Cargo.toml"),
                    false,
                ),
                ("build.rs", include_str!("templates/rust/build.rs"), false),
                ("src/lib.rs", include_str!("templates/rust/lib.rs"), false),
                ("README.md", include_str!("templates/rust/README.md"), false),
            ],
            format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
            "cargo build --release --target wasm32-wasip2".into(),
        ),
        Lang::Python => (
            vec![
                ("app.py", include_str!("templates/python/app.py"), false),
                ("build.sh", include_str!("templates/python/build.sh"), true),
                (
                    "README.md",
                    include_str!("templates/python/README.md"),
                    false,
                ),
                ("wit/plugin.wit", WIT, false),
            ],
            format!("{crate_name}.wasm"),
            "./build.sh".into(),
        ),
        Lang::Js => (
            vec![
                ("app.js", include_str!("templates/js/app.js"), false),
                ("build.sh", include_str!("templates/js/build.sh"), true),
                (
                    "package.json",
                    include_str!("templates/js/package.json"),
                    false,
                ),
                ("README.md", include_str!("templates/js/README.md"), false),
                ("wit/plugin.wit", WIT, false),
            ],
            format!("{crate_name}.wasm"),
            "./build.sh".into(),
        ),
    };
    let mut written = Vec::new();
    for (path, template, executable) in files.into_iter().chain([(".gitignore", GITIGNORE, false)])
    {
        let target = root.join(path);
        let parent = target.parent().expect("files live in the project");
        std::fs::create_dir_all(parent).map_err(|e| CliError::io(parent, e))?;
        let text = if path == "wit/plugin.wit" {
            template.to_string()
        } else {
            fill(template, &vars)
        };
        std::fs::write(&target, text).map_err(|e| CliError::io(&target, e))?;
        #[cfg(unix)]
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| CliError::io(&target, e))?;
        }
        #[cfg(not(unix))]
        let _ = executable;
        written.push(path.to_string());
    }
    let created = Created {
        name: args.name.clone(),
        lang: match args.lang {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        },
        dir: root.display().to_string(),
        files: written,
        component,
        build,
    };
    if ctx.json() {
        print_json(&created);
    } else {
        println!("Created {} in {}", created.name, created.dir);
        println!();
        println!("  cd {}", created.dir);
        println!("  {}", created.build);
        println!(
            "  wasmhook plugin run {} --example message:created",
            created.component
        );
        println!(
            "  wasmhook plugin push {} --name {}",
            created.component, created.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_type_names() {
        assert!(valid_name("reply-bot2"));
        for bad in ["", "Reply", "2bot", "bot-", "a_b", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(type_name("reply-bot"), "ReplyBot");
        assert_eq!(fill("{{a}}-{{b}}", &[("a", "x"), ("b", "y")]), "x-y");
    }
}
