//! Profiles, keys, output modes, errors, help and completions.

use serde_json::{Value, json};

use super::terminal::*;
use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_a_private_profile_and_whoami_checks_the_key() {
    let s = TestServer::start().await;
    let (acc_a, key_a) = s.account("Acme support").await;
    let (acc_b, key_b) = s.account("Beta").await;
    let mut term = Term::new();

    // Not logged in yet.
    let out = term.fails(&["whoami"]).await;
    assert!(out.stderr.contains("not logged in"), "{out:?}");

    // A wrong key is refused with the API's message, and nothing is stored.
    let out = term
        .fails(&["login", "--url", &s.base, "--api-key", "whk_wrong"])
        .await;
    assert_eq!(out.stderr.trim(), "error: invalid or revoked API key");
    assert!(!term.config_file().exists());

    let out = term
        .ok(&["login", "--url", &s.base, "--api-key", &key_a])
        .await;
    assert!(out.stdout.contains("Acme support"), "{out:?}");
    let text = std::fs::read_to_string(term.config_file()).unwrap();
    assert!(text.contains(&key_a) && text.contains(&s.base), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(term.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the profile file is private");
    }

    let me = term.json(&["whoami"]).await;
    assert_eq!(me["id"], acc_a.as_str());
    assert_eq!(me["name"], "Acme support");
    let table = term.ok(&["whoami"]).await.stdout;
    assert!(table.starts_with("ACCOUNT"), "{table}");
    assert!(table.contains(&acc_a) && table.contains(&s.base), "{table}");

    // A second profile; --profile and WASMHOOK_PROFILE choose it.
    term.ok(&[
        "login",
        "--profile",
        "beta",
        "--url",
        &s.base,
        "--api-key",
        &key_b,
    ])
    .await;
    assert_eq!(
        term.json(&["whoami", "--profile", "beta"]).await["id"],
        acc_b.as_str()
    );
    assert_eq!(term.json(&["whoami"]).await["id"], acc_a.as_str());
    term.set("WASMHOOK_PROFILE", "beta");
    assert_eq!(term.json(&["whoami"]).await["id"], acc_b.as_str());
    term.unset("WASMHOOK_PROFILE");
    let out = term.fails(&["whoami", "--profile", "nope"]).await;
    assert!(out.stderr.contains("no profile \"nope\""), "{out:?}");

    // The environment overrides the stored profile's key, and its URL.
    term.set("WASMHOOK_API_KEY", &key_b);
    assert_eq!(term.json(&["whoami"]).await["id"], acc_b.as_str());
    term.set("WASMHOOK_URL", "http://127.0.0.1:1");
    let out = term.fails(&["whoami"]).await;
    assert!(
        out.stderr.contains("cannot reach http://127.0.0.1:1"),
        "{out:?}"
    );

    // Without any profile file, the environment alone is enough; without XDG_CONFIG_HOME the
    // profile goes to ~/.config/wasmhook.
    let mut bare = Term::new();
    bare.unset("XDG_CONFIG_HOME");
    bare.set("WASMHOOK_URL", &s.base);
    bare.set("WASMHOOK_API_KEY", &key_a);
    assert_eq!(bare.json(&["whoami"]).await["id"], acc_a.as_str());
    bare.unset("WASMHOOK_URL");
    bare.unset("WASMHOOK_API_KEY");
    bare.login(&s, &key_b).await;
    assert!(
        bare.home
            .path()
            .join(".config/wasmhook/config.toml")
            .exists()
    );
    assert_eq!(bare.json(&["whoami"]).await["id"], acc_b.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_print_the_api_message_and_exit_non_zero() {
    let s = TestServer::start().await;
    let (_, key) = s.account("A").await;
    let term = Term::new();
    term.login(&s, &key).await;

    let out = term.fails(&["sub", "get", "sub_missing"]).await;
    assert_eq!(out.stderr.trim(), "error: subscription not found");
    assert_eq!(out.stdout, "");
    let out = term
        .fails(&["sub", "get", "sub_missing", "-o", "json"])
        .await;
    let body: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "not_found", "message": "subscription not found"}})
    );
    // Validation errors are the server's own.
    let out = term
        .fails(&["sub", "create", "https://example.com/h", "-e", "Not A Type"])
        .await;
    assert!(out.stderr.contains("event_types[0]"), "{out:?}");
    // Usage errors are clap's, with exit code 2.
    let out = term.run(&["sub", "create"]).await;
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_help_with_an_example_and_completions_exist() {
    let term = Term::new();
    for path in [
        &["login"][..],
        &["whoami"],
        &["sub"],
        &["sub", "create"],
        &["sub", "list"],
        &["sub", "get"],
        &["sub", "enable"],
        &["sub", "disable"],
        &["sub", "delete"],
        &["sub", "secret"],
        &["send"],
        &["events", "list"],
        &["events", "get"],
        &["deliveries", "list"],
        &["deliveries", "get"],
        &["retry"],
        &["recover"],
        &["plugin", "push"],
        &["plugin", "list"],
        &["plugin", "config"],
        &["plugin", "logs"],
        &["plugin", "attach"],
        &["completion"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let out = term.ok(&args).await;
        assert!(
            out.stdout.contains("Example") && out.stdout.contains("wasmhook "),
            "{path:?} --help has no example: {}",
            out.stdout
        );
    }
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef"),
        ("fish", "complete -c wasmhook"),
    ] {
        let out = term.ok(&["completion", shell]).await;
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("deliveries"), "{shell}");
    }
}
