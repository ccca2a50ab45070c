//! `login` and `whoami`: storing a server and key as a profile, and checking a key.

use clap::Args;

use super::output::{Table, print_json, time};
use super::profile::{self, DEFAULT_PROFILE, Profile, ProfilesFile};
use super::{CliError, Client, Ctx};
use crate::model::Account;

/// Arguments of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// An API key of the account (`whk_...`).
    #[arg(long)]
    api_key: String,
}

/// Checks the key against the server, then stores the profile (file mode 0600).
pub async fn login(args: LoginArgs, ctx: &Ctx) -> Result<(), CliError> {
    let new = Profile {
        url: args.url.trim_end_matches('/').to_string(),
        api_key: args.api_key,
    };
    let account: Account = Client::new(&new)?.get("/v1/account").await?;
    let path = profile::config_path()?;
    let mut file = ProfilesFile::load(&path)?;
    let name = ctx
        .profile
        .as_deref()
        .unwrap_or(DEFAULT_PROFILE)
        .to_string();
    file.profiles.insert(name.clone(), new);
    file.save(&path)?;
    if ctx.json() {
        print_json(&account);
    } else {
        println!(
            "Logged in to {} as {} ({}); profile {name:?} stored in {}",
            args.url,
            account.name,
            account.id,
            path.display()
        );
    }
    Ok(())
}

/// Shows the account the key belongs to.
pub async fn whoami(ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let account: Account = client.get("/v1/account").await?;
    if ctx.json() {
        print_json(&account);
    } else {
        let mut t = Table::new(["ACCOUNT", "NAME", "SERVER", "CREATED"]);
        t.row([
            account.id,
            account.name,
            client.base().to_string(),
            time(account.created_at),
        ]);
        t.print("");
    }
    Ok(())
}
