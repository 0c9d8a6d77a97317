//! The `mqws` command: parses the command line, sets up tracing and calls [`mqws::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mqws_config::{ConfigError, Overrides};

#[derive(Parser)]
#[command(
    name = "mqws",
    version,
    about = "MQTT ⇄ WebSocket bridge with durable catch-up"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker, the log and the WebSocket server.
    Serve(Opts),
    /// Validate the configuration and print the effective values.
    CheckConfig(Opts),
    /// Read a password on standard input and print its argon2id hash for `broker.users`.
    HashPassword,
}

#[derive(Args)]
struct Opts {
    /// TOML config file (default: ./mqws.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// MQTT listener (broker.listen).
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<String>,
    /// HTTP/WebSocket listener (http.listen).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Durable log directory (log.dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Log filter when `RUST_LOG` is unset. rumqttd's connection module logs every ordinary MQTT
/// disconnect at ERROR ("router-drop"), so it is silenced by default; broker failures that
/// matter surface through mqws's own checks and logs.
const DEFAULT_LOG: &str = "info,rumqttd=warn,rumqttd::server::broker=off";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (opts, serve) = match cli.command {
        Command::Serve(o) => (o, true),
        Command::CheckConfig(o) => (o, false),
        Command::HashPassword => return hash_password(),
    };
    let config = match load(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !serve {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("cannot render the config: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mqws: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("empty password");
        return ExitCode::from(2);
    }
    match mqws_broker::hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(opts: &Opts) -> Result<mqws_config::Config, ConfigError> {
    let overrides = Overrides {
        mqtt_listen: opts
            .mqtt_listen
            .as_deref()
            .map(|a| addr("broker.listen", a))
            .transpose()?,
        http_listen: opts
            .http_listen
            .as_deref()
            .map(|a| addr("http.listen", a))
            .transpose()?,
        data_dir: opts.data_dir.clone(),
    };
    mqws_config::load(opts.config.as_deref(), &overrides)
}

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key: key.to_owned(),
        value: format!("{value:?}"),
        allowed: "a socket address such as 127.0.0.1:8080 or [::1]:8080".to_owned(),
    })
}

async fn serve_until_signal(config: mqws_config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let http = listen(config.http.listen)
        .with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    let mqtt = listen(config.broker.listen)
        .with_context(|| format!("cannot listen on broker.listen {}", config.broker.listen))?;
    mqws::run(config, mqws::Listeners { http, mqtt }, signal(), |ready| {
        println!("mqws ready http={} mqtt={}", ready.http, ready.mqtt);
    })
    .await?;
    Ok(())
}

/// Pending connections a listener queues before the kernel drops SYNs; tokio's default (128)
/// overflows when a thousand clients reconnect at once.
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops mqws");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
