//! The Tidings binary: `tidings` or `tidings serve` runs the server (configured by the
//! environment, see `server::config`). Thin on purpose: parse, configure, bind, run.

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::{Parser, Subcommand};
    use leptos::config::get_configuration;
    use tidings::server::{telemetry, AppState, Config, Shutdown};

    /// Tidings: HTTP streaming, Server-Sent Events and WebSockets, done right.
    #[derive(Parser)]
    #[command(version, about)]
    struct Cli {
        #[command(subcommand)]
        command: Option<Command>,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Run the web server (the default). Listens on LEPTOS_SITE_ADDR.
        Serve,
    }

    let _ = dotenvy::dotenv();
    telemetry::init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let run = async {
                let config = Config::from_env()?;
                let leptos_options = get_configuration(None)?.leptos_options;
                let addr = leptos_options.site_addr;
                let shutdown = Shutdown::new();
                shutdown.trigger_on_signals();
                let state = AppState::new(config, leptos_options, shutdown).await?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                tracing::info!("listening on http://{}", listener.local_addr()?);
                tidings::routes::serve(listener, state).await?;
                tracing::info!("stopped");
                anyhow::Ok(())
            };
            match run.await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("tidings: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser build is a library (`hydrate`); there is nothing to run without `ssr`.
}
