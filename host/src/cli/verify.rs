//! `verify URL`: what subscribing would run against a URL (the `webhook:verify` handshake, or
//! one signed test delivery), run by the server before anything is saved, with what was sent,
//! what came back and why it failed (`POST /v1/webhook-checks`).

use std::collections::BTreeMap;

use clap::Args;

use super::output::{cut, print_json};
use super::subs::format_arg;
use super::{CliError, Ctx, key_value};
use crate::api::webhook_checks::CheckIn;
use crate::delivery::check::{CheckMode, CheckReport};
use crate::model::Format;

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The URL to try.
    url: String,
    /// The body format the subscription would use (papercups implies the handshake).
    #[arg(long, value_parser = format_arg(), default_value = "standard")]
    format: Format,
    /// A custom header the subscription would send (repeatable).
    #[arg(short = 'H', long = "header", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Run the `webhook:verify` handshake (as a subscription created with --verify would).
    #[arg(long)]
    verify: bool,
}

/// Runs the check and prints the report; exit 1 when it failed.
pub async fn verify(args: VerifyArgs, ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client()?;
    let report: CheckReport = client
        .post(
            "/v1/webhook-checks",
            &CheckIn {
                url: args.url,
                format: args.format,
                headers: args.headers.into_iter().collect::<BTreeMap<_, _>>(),
                verify: args.verify,
            },
        )
        .await?;
    if ctx.json() {
        print_json(&report);
    } else {
        print_report(&report);
    }
    match (&report.ok, &report.reason) {
        (true, _) => Ok(()),
        (false, reason) => Err(CliError::Failed(format!(
            "check failed: {}",
            reason.as_deref().unwrap_or("no reason given")
        ))),
    }
}

fn print_report(r: &CheckReport) {
    let what = match r.mode {
        CheckMode::Verification => "the webhook:verify handshake",
        CheckMode::TestDelivery => "a signed test delivery",
    };
    println!("Sent {what}:");
    println!("  {} {}", r.request.method, r.request.url);
    for (k, v) in &r.request.headers {
        println!("  {k}: {v}");
    }
    println!();
    println!("  {}", r.request.body);
    println!(
        "  (signed with the throwaway secret {})",
        r.request.signing_secret
    );
    println!();
    match r.status_code {
        Some(code) => {
            println!("Received HTTP {code} after {} ms:", r.duration_ms);
            let body = r.response_excerpt.as_deref().unwrap_or("");
            println!(
                "  {}",
                if body.is_empty() {
                    "(empty body)".to_string()
                } else {
                    cut(body, 2000)
                }
            );
        }
        None => println!("No response (after {} ms).", r.duration_ms),
    }
    println!();
    match (&r.ok, &r.reason, &r.error_kind) {
        (true, _, _) => println!("OK: subscribing this URL would succeed."),
        (false, Some(reason), Some(kind)) => println!("FAILED ({kind}): {reason}"),
        (false, Some(reason), None) => println!("FAILED: {reason}"),
        (false, None, _) => println!("FAILED"),
    }
}
