//! The Tidings binary. Thin on purpose: parse the command line, configure, run.
//!
//! - `tidings` or `tidings serve`: runs the server (configured by the environment, read once
//!   by `settings`; every variable is in docs/operations.md).
//! - `tidings seed --audit-rows N`: adds N synthetic audit rows to `DATABASE_URL`'s database.
//! - `tidings export …`: streams a server's audit log to a file (see `cli::export`).
//! - `tidings tail URL` and `tidings chat`: follow an event stream, chat in a terminal
//!   (`cli::tail`, `cli::chat`).
//! - `tidings ask "question"`: an AI answer streamed to the terminal (`cli::ask`).
//! - `tidings users add NAME [--admin]`: creates an account in `DATABASE_URL`'s database.

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::{Parser, Subcommand};
    use tidings::server::observe::telemetry;

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
        /// Add synthetic rows to DATABASE_URL's database, for demos and benchmarks.
        Seed {
            /// How many audit-log rows to add.
            #[arg(long, value_name = "N")]
            audit_rows: u64,
        },
        /// Stream a server's audit log to a file: verified, with a progress bar, resuming by
        /// itself after a dropped connection.
        Export(tidings::cli::export::ExportArgs),
        /// Follow a Server-Sent Events stream (a job, or any SSE URL), resuming after drops.
        Tail(tidings::cli::tail::TailArgs),
        /// Chat in a room over the WebSocket: type to send, `/join <room>`, `/quit`;
        /// reconnects and resumes by itself.
        Chat(tidings::cli::chat::ChatArgs),
        /// Write a self-signed certificate for localhost and 127.0.0.1: `DIR/cert.pem` and
        /// `DIR/key.pem`, for TIDINGS_TLS_CERT and TIDINGS_TLS_KEY.
        DevCert {
            /// The folder to write them in (made if missing).
            #[arg(long)]
            out: std::path::PathBuf,
        },
        /// Ask the assistant: the answer streams to the terminal (through Tidings, resuming
        /// after drops; or straight from a provider with --upstream URL --api-key-env VAR).
        Ask(tidings::cli::ask::AskArgs),
        /// API keys for other servers (admin): `create NAME`, `list`, `revoke ID`.
        Keys(tidings::cli::keys::KeysArgs),
        /// Manage accounts in DATABASE_URL's database (`users add NAME [--admin]`).
        #[command(subcommand)]
        Users(tidings::auth::users::UsersCommand),
    }

    let _ = dotenvy::dotenv();
    telemetry::init();
    let result = match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Seed { audit_rows } => seed(audit_rows).await,
        Command::Export(args) => tidings::cli::export::run(args).await.map(|_| ()),
        Command::Tail(args) => tidings::cli::tail::run(args).await.map(|_| ()),
        Command::Chat(args) => tidings::cli::chat::run(args).await,
        Command::Keys(args) => tidings::cli::keys::run(args).await,
        Command::Ask(args) => tidings::cli::ask::run(args).await.map(|_| ()),
        Command::DevCert { out } => tidings::server::edge::tls::write_dev_cert(&out).map(|f| {
            println!("wrote {} and {}", f.cert.display(), f.key.display());
            println!(
                "serve HTTPS with TIDINGS_TLS_CERT={} TIDINGS_TLS_KEY={}",
                f.cert.display(),
                f.key.display()
            );
        }),
        Command::Users(command) => tidings::auth::users::run(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tidings: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "ssr")]
async fn serve() -> anyhow::Result<()> {
    use leptos::config::get_configuration;
    use tidings::{
        server::{AppState, Shutdown},
        settings::Settings,
    };

    let settings = Settings::from_env()?;
    // A certificate that cannot serve stops the start here, with the file named.
    if let Some(files) = &settings.server.tls {
        tidings::server::edge::tls::acceptor(files)?;
    }
    let leptos_options = get_configuration(None)?.leptos_options;
    let addr = leptos_options.site_addr;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let state = AppState::new(settings.server.clone(), leptos_options, shutdown).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!("listening on {scheme}://{}", listener.local_addr()?);
    tidings::routes::serve(listener, state, settings).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "ssr")]
async fn seed(audit_rows: u64) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    use tidings::{
        export::seed::seed_audit_rows,
        server::{storage::redact, storage::Store, Config},
    };

    let config = Config::from_env()?;
    let store = Store::connect(&config.database_url).await?;
    let bar = ProgressBar::new(audit_rows).with_style(ProgressStyle::with_template(
        "seeding [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, {eta} left",
    )?);
    let started = std::time::Instant::now();
    let written = seed_audit_rows(&store, audit_rows, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {written} audit rows into {} in {secs:.1} s ({:.0} rows/s)",
        redact(&config.database_url),
        written as f64 / secs.max(1e-9)
    );
    store.close().await;
    Ok(())
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser build is a library (`hydrate`); there is nothing to run without `ssr`.
}
