//! The `mqws` command: parses the command line, sets up tracing and calls [`mqws::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mqws_config::{ConfigError, Overrides};

/// jemalloc, which gives memory back once a burst is over (see `Cargo.toml`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    CheckConfig(CheckOpts),
    /// Read a password on standard input and print its argon2id hash for `broker.users`.
    HashPassword,
    /// Subscribe to a running mqws over WebSocket and print what arrives (like mosquitto_sub).
    Sub(SubArgs),
    /// Publish one message to a running mqws over WebSocket (like mosquitto_pub).
    Pub(PubArgs),
    /// Print what a data dir holds (offline: the mqws using it must be stopped).
    Inspect(InspectArgs),
}

/// Where `sub` and `pub` connect, and as whom.
#[derive(Args)]
struct ConnectArgs {
    /// WebSocket URL of the running mqws (ws:// or wss://).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Token sent in hello (when auth is on); never printed.
    #[arg(long, value_name = "TOKEN", env = "MQWS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ConnectArgs {
    fn into_connect(self) -> mqws::tools::Connect {
        mqws::tools::Connect {
            url: self.url,
            token: self.token.filter(|t| !t.is_empty()),
        }
    }
}

#[derive(Args)]
struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Where to start: latest (live only), earliest, EPOCH:SEQ (after that seq) or time:T
    /// (T in ms since the Unix epoch, or an RFC 3339 time).
    #[arg(long, value_name = "FROM", default_value = "latest")]
    from: mqws::tools::Start,
    /// Exit 0 after printing this many messages.
    #[arg(long, short = 'C', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// text: "TOPIC PAYLOAD" lines (gaps on stderr); json: each message and gap frame as one
    /// JSON line.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: mqws::tools::Format,
    /// Print the position at connect and the --from that continues at exit, on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// MQTT topic filters.
    #[arg(value_name = "FILTER", required = true)]
    filters: Vec<String>,
}

#[derive(Args)]
struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// MQTT QoS (0, 1 or 2).
    #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Set the MQTT retain flag.
    #[arg(long, short = 'r')]
    retain: bool,
    /// Topic (no wildcards).
    #[arg(value_name = "TOPIC")]
    topic: String,
    /// Payload; its UTF-8 bytes are published as they are.
    #[arg(value_name = "PAYLOAD")]
    payload: String,
}

#[derive(Args)]
struct InspectArgs {
    /// Most retained topics listed.
    #[arg(long, value_name = "N", default_value_t = 20)]
    topics: usize,
    /// text ("key: value" lines) or json (one object).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: mqws::tools::Format,
    /// The data dir (log.dir).
    #[arg(value_name = "DATA_DIR")]
    dir: PathBuf,
}

#[derive(Args)]
struct CheckOpts {
    #[command(flatten)]
    opts: Opts,
    /// Print every key with its default and what it does (a commented mqws.toml) instead.
    #[arg(long)]
    defaults: bool,
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
    /// Log line format on stderr (logging.format): text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (opts, serve) = match cli.command {
        Command::Serve(o) => (o, true),
        Command::CheckConfig(CheckOpts { defaults: true, .. }) => {
            print!("{}", mqws_config::EXAMPLE);
            return ExitCode::SUCCESS;
        }
        Command::CheckConfig(c) => (c.opts, false),
        Command::HashPassword => return hash_password(),
        Command::Sub(a) => return tool(mqws::tools::sub(&a.into_options())),
        Command::Pub(a) => return tool(mqws::tools::publish(&a.into_options())),
        Command::Inspect(a) => {
            return tool(mqws::tools::inspect(&mqws::tools::InspectOptions {
                dir: a.dir,
                topics: a.topics,
                format: a.format,
            }))
        }
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
    mqws::logging::init(config.logging.format);
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
            tracing::error!("mqws stopped: {}", causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: most of mqws's errors already name
/// their cause in their own text.
fn causes(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

impl SubArgs {
    fn into_options(self) -> mqws::tools::SubOptions {
        mqws::tools::SubOptions {
            connect: self.connect.into_connect(),
            filters: self.filters,
            from: self.from,
            count: self.count,
            format: self.format,
            verbose: self.verbose,
        }
    }
}

impl PubArgs {
    fn into_options(self) -> mqws::tools::PubOptions {
        mqws::tools::PubOptions {
            connect: self.connect.into_connect(),
            topic: self.topic,
            payload: self.payload,
            qos: self.qos,
            retain: self.retain,
        }
    }
}

/// A tool's exit: 0, or `error: …` on stderr and the error's status.
fn tool(result: Result<(), mqws::tools::ToolError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
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
        log_format: opts.log_format.as_deref().map(|f| f.parse()).transpose()?,
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
