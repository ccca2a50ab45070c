//! Where the command line finds its server and API key: profiles stored by `wasmhook login` in
//! `$XDG_CONFIG_HOME/wasmhook/config.toml` (else `~/.config/wasmhook/config.toml`), readable by
//! the owner only, and the `WASMHOOK_URL` / `WASMHOOK_API_KEY` variables that override them.
//!
//! The XDG layout is used on every platform (as `gh`, `svix` and `cargo` do), so the file is in
//! the same place for a person and for a script; no platform-specific directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// A server and the API key to use on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// An API key of the account (`whk_...`).
    pub api_key: String,
}

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProfilesFile {
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// The config directory from the environment: `$XDG_CONFIG_HOME/wasmhook` when that is an
/// absolute path (the XDG rule: relative values are ignored), else `$HOME/.config/wasmhook`.
pub fn config_dir_from(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let xdg = xdg_config_home
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from);
    let base = xdg.or_else(|| {
        home.filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".config"))
    })?;
    Some(base.join("wasmhook"))
}

/// The profiles file's path for this process's environment.
pub fn config_path() -> Result<PathBuf, CliError> {
    let xdg = std::env::var("XDG_CONFIG_HOME").ok();
    let home = std::env::var("HOME").ok();
    config_dir_from(xdg.as_deref(), home.as_deref())
        .map(|d| d.join("config.toml"))
        .ok_or_else(|| {
            CliError::Invalid(
                "cannot find a config directory: set HOME or XDG_CONFIG_HOME, or use \
                 WASMHOOK_URL and WASMHOOK_API_KEY"
                    .into(),
            )
        })
}

impl ProfilesFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<ProfilesFile, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProfilesFile::default()),
            Err(e) => Err(CliError::io(path, e)),
        }
    }

    /// Writes the file readable and writable by the owner only (mode 0600, directory 0700),
    /// replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let dir = path.parent().expect("the config path has a directory");
        create_private_dir(dir).map_err(|e| CliError::io(dir, e))?;
        let text = toml::to_string(self).expect("profiles serialize");
        let tmp = path.with_extension("toml.tmp");
        write_private(&tmp, &text).map_err(|e| CliError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| CliError::io(path, e))
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The server and key to use: the named profile (or `default`), with `WASMHOOK_URL` and
/// `WASMHOOK_API_KEY` overriding its fields; either may stand alone without a profile.
pub fn resolve(
    profile: Option<&str>,
    stored: &ProfilesFile,
    env_url: Option<String>,
    env_key: Option<String>,
) -> Result<Profile, CliError> {
    let name = profile.unwrap_or(DEFAULT_PROFILE);
    let found = stored.profiles.get(name);
    if profile.is_some() && found.is_none() && (env_url.is_none() || env_key.is_none()) {
        return Err(CliError::Invalid(format!(
            "no profile {name:?}: run `wasmhook login --profile {name} --url URL --api-key KEY`"
        )));
    }
    let url = env_url.or_else(|| found.map(|p| p.url.clone()));
    let api_key = env_key.or_else(|| found.map(|p| p.api_key.clone()));
    match (url, api_key) {
        (Some(url), Some(api_key)) => Ok(Profile { url, api_key }),
        _ => Err(CliError::Invalid(
            "not logged in: run `wasmhook login --url URL --api-key KEY`, or set WASMHOOK_URL \
             and WASMHOOK_API_KEY"
                .into(),
        )),
    }
}

/// [`resolve`] with this process's environment and profiles file.
pub fn current(profile: Option<&str>) -> Result<Profile, CliError> {
    let stored = ProfilesFile::load(&config_path()?)?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    resolve(
        profile,
        &stored,
        env("WASMHOOK_URL"),
        env("WASMHOOK_API_KEY"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_dir_follows_xdg() {
        let dir = |x, h| config_dir_from(x, h).map(|p| p.display().to_string());
        assert_eq!(
            dir(Some("/x/conf"), Some("/home/a")).as_deref(),
            Some("/x/conf/wasmhook")
        );
        // Unset, empty or relative XDG_CONFIG_HOME: ~/.config.
        for xdg in [None, Some(""), Some("relative/conf")] {
            assert_eq!(
                dir(xdg, Some("/home/a")).as_deref(),
                Some("/home/a/.config/wasmhook")
            );
        }
        assert_eq!(dir(None, None), None);
    }

    #[test]
    fn env_vars_override_the_profile() {
        let mut stored = ProfilesFile::default();
        let p = |u: &str, k: &str| Profile {
            url: u.into(),
            api_key: k.into(),
        };
        stored
            .profiles
            .insert("default".into(), p("http://a", "ka"));
        stored
            .profiles
            .insert("staging".into(), p("http://s", "ks"));
        assert_eq!(
            resolve(None, &stored, None, None).unwrap(),
            p("http://a", "ka")
        );
        assert_eq!(
            resolve(Some("staging"), &stored, None, None).unwrap(),
            p("http://s", "ks")
        );
        assert_eq!(
            resolve(Some("staging"), &stored, Some("http://e".into()), None).unwrap(),
            p("http://e", "ks")
        );
        assert_eq!(
            resolve(
                None,
                &ProfilesFile::default(),
                Some("http://e".into()),
                Some("ke".into())
            )
            .unwrap(),
            p("http://e", "ke")
        );
        assert!(resolve(None, &ProfilesFile::default(), None, None).is_err());
        assert!(resolve(Some("nope"), &stored, None, None).is_err());
    }

    #[test]
    fn the_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/wasmhook/config.toml");
        let mut file = ProfilesFile::default();
        file.profiles.insert(
            "default".into(),
            Profile {
                url: "http://127.0.0.1:8080".into(),
                api_key: "whk_x".into(),
            },
        );
        file.save(&path).unwrap();
        file.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = ProfilesFile::load(&path).unwrap();
        assert_eq!(back.profiles, file.profiles);
    }
}
