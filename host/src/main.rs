//! The `wasmhook` command: `serve` runs the server; every other subcommand is the command line
//! ([`wasmhook::cli`]).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasmhook::cli::{Cli, Command};
use wasmhook::config::{Config, LogFormat};

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

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    wasmhook::run(config, listener, shutdown_signal()).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime");
    match cli.command {
        Command::Serve(config) => match runtime.block_on(serve(*config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
        command => runtime.block_on(wasmhook::cli::run(command, cli.global)),
    }
}
