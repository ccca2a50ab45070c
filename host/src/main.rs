//! The `wasmhook` command.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmhook::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "wasmhook",
    version,
    about = "Durable, signed webhooks and WebAssembly plugins for chat events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Config),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WASMHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_logging(config.log_format);
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            wasmhook::run(config, listener, shutdown_signal()).await
        }
    }
}
