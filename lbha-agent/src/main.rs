//! `lbha-agent`: command-line entry point.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lbha_agent::{
    bpf::Counters,
    config::{self, Loaded},
    recv::{AdvertReceiver, ReceivePathChoice},
};
use lbha_common::{
    AdvertEvent, VridConfig,
    event::{ReceivePath, change},
    vrrp::{AUTH_NONE, AUTH_PASS, encode::auth_data},
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "lbha-agent",
    version,
    about = "VRRP + HAProxy liveness + floating IP failover",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run the daemon with lbha's native TOML configuration.
    #[arg(long, value_name = "FILE", conflicts_with = "keepalived_conf")]
    config: Option<PathBuf>,
    /// Run the daemon with a keepalived.conf, as keepalived would.
    #[arg(long, value_name = "FILE")]
    keepalived_conf: Option<PathBuf>,
    #[command(flatten)]
    floating_ip: FloatingIpArgs,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Operations settings, mainly for keepalived.conf users; with `--config`
/// these override `[global]`.
#[derive(clap::Args)]
struct OpsArgs {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Unix socket for `lbha-agent status`.
    #[arg(long, value_name = "PATH")]
    status_socket: Option<PathBuf>,
    /// bpffs directory to pin the XDP program in, so it stays attached
    /// across restarts (default /sys/fs/bpf/lbha, mounted when absent).
    #[arg(long, value_name = "DIR", conflicts_with = "no_bpf_pin")]
    bpf_pin_dir: Option<PathBuf>,
    /// Do not pin: the XDP program is detached when lbha stops.
    #[arg(long)]
    no_bpf_pin: bool,
}

impl OpsArgs {
    fn apply(&self, config: &mut config::Config) {
        if let Some(addr) = self.metrics_listen {
            config.global.metrics_listen = Some(addr);
        }
        if let Some(path) = &self.status_socket {
            config.global.status_socket = path.clone();
        }
        if let Some(dir) = &self.bpf_pin_dir {
            config.global.bpf_pin_dir = Some(dir.clone());
        }
        if self.no_bpf_pin {
            config.global.bpf_pin_dir = None;
        }
    }
}

/// The floating IP for keepalived.conf users (whose file has no place for
/// it); with `--config` these override the `[floating_ip]` table.
#[derive(clap::Args)]
struct FloatingIpArgs {
    /// DigitalOcean floating (reserved) IP that follows the first instance's mastership.
    #[arg(long, value_name = "IP")]
    floating_ip: Option<std::net::Ipv4Addr>,
    /// File holding the DigitalOcean API token (default: $DIGITALOCEAN_TOKEN).
    #[arg(long, value_name = "FILE")]
    do_token_file: Option<PathBuf>,
    /// DigitalOcean API base URL.
    #[arg(long, value_name = "URL")]
    do_api_url: Option<String>,
    /// Droplet metadata service base URL.
    #[arg(long, value_name = "URL")]
    do_metadata_url: Option<String>,
}

impl FloatingIpArgs {
    fn apply(&self, config: &mut config::Config) {
        use lbha_agent::cloud::{FloatingIpConfig, TokenSource};
        if let Some(ip) = self.floating_ip {
            let token = TokenSource::Env("DIGITALOCEAN_TOKEN".into());
            match &mut config.floating_ip {
                Some(existing) => existing.settings.ip = ip,
                None => {
                    config.floating_ip = Some(config::FloatingIp {
                        instance: None,
                        settings: FloatingIpConfig::new(ip, token),
                    })
                }
            }
        }
        if let Some(floating_ip) = &mut config.floating_ip {
            let settings = &mut floating_ip.settings;
            if let Some(path) = &self.do_token_file {
                settings.token = TokenSource::File(path.clone());
            }
            if let Some(url) = &self.do_api_url {
                settings.api_url = url.clone();
            }
            if let Some(url) = &self.do_metadata_url {
                settings.metadata_url = url.clone();
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file (TOML if it ends in .toml, else
    /// keepalived.conf); report every problem with its line; exit non-zero on errors.
    CheckConfig { file: PathBuf },
    /// Print the native TOML equivalent of a keepalived.conf.
    ImportKeepalived { file: PathBuf },
    /// Show the running agent's instances, checks, receive path and floating IP.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The agent's status socket.
        #[arg(long, default_value = lbha_agent::status::socket::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Receive VRRP adverts on an interface and print them as JSON lines.
    Watch(WatchArgs),
    /// Detach the XDP programs lbha left pinned in this network namespace
    /// (they stay attached across restarts, passing adverts on while no
    /// agent runs). Use after stopping lbha for good, e.g. when uninstalling.
    Detach {
        /// The bpffs directory the agent pins in (`bpf_pin_dir`).
        #[arg(long, default_value = lbha_agent::bpf::DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct WatchArgs {
    /// Interface to receive adverts on.
    #[arg(long, short)]
    interface: String,
    /// VRID to accept: `VRID`, `VRID:v2`, `VRID:v3` or `VRID:v2:pass=SECRET`
    /// (repeatable). Version defaults to 3.
    #[arg(long = "vrid", required = true, value_parser = parse_vrid_spec)]
    vrids: Vec<(u8, VridConfig)>,
    /// Receive path: XDP with raw-socket fallback, XDP only, or raw socket only.
    #[arg(long, value_enum, default_value = "auto")]
    receive_path: ReceivePathChoice,
    /// Also print adverts the kernel queued without waking us, checking every
    /// this many milliseconds (0: only print adverts that changed something).
    #[arg(long, default_value = "1000")]
    drain_ms: u64,
    /// Exit after this many adverts.
    #[arg(long)]
    count: Option<u64>,
    /// Exit with an error if `--count` adverts have not arrived after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
}

/// Parses `51`, `51:v2`, `51:v3`, `51:v2:pass=secret`.
fn parse_vrid_spec(spec: &str) -> Result<(u8, VridConfig), String> {
    let mut parts = spec.split(':');
    let vrid: u8 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("VRID must be 1-255 in {spec:?}"))?;
    if vrid == 0 {
        return Err(format!("VRID must be 1-255 in {spec:?}"));
    }
    let mut version = 3;
    let mut auth = (AUTH_NONE, [0u8; 8]);
    for part in parts {
        match part {
            "v2" => version = 2,
            "v3" => version = 3,
            _ => match part.strip_prefix("pass=") {
                Some(pass) if !pass.is_empty() => auth = (AUTH_PASS, auth_data(pass.as_bytes())),
                _ => return Err(format!("unknown VRID option {part:?} in {spec:?}")),
            },
        }
    }
    if version == 3 && auth.0 != AUTH_NONE {
        return Err(format!("VRRPv3 has no authentication ({spec:?})"));
    }
    Ok((vrid, VridConfig::new(version, auth.0, auth.1)))
}

#[derive(Serialize)]
struct AdvertJson {
    timestamp_ns: u64,
    src: String,
    dst: String,
    first_vip: String,
    ifindex: u32,
    vrid: u8,
    priority: u8,
    version: u8,
    interval_cs: u16,
    count_addr: u8,
    changes: Vec<&'static str>,
    receive_path: &'static str,
}

impl From<&AdvertEvent> for AdvertJson {
    fn from(e: &AdvertEvent) -> Self {
        const NAMES: [(u8, &str); 6] = [
            (change::NEW_SOURCE, "new_source"),
            (change::PRIORITY, "priority"),
            (change::RESIGN, "resign"),
            (change::INTERVAL, "interval"),
            (change::AFTER_SILENCE, "after_silence"),
            (change::VERSION, "version"),
        ];
        Self {
            timestamp_ns: e.timestamp_ns,
            src: std::net::Ipv4Addr::from(e.src_addr).to_string(),
            dst: std::net::Ipv4Addr::from(e.dst_addr).to_string(),
            first_vip: std::net::Ipv4Addr::from(e.first_vip).to_string(),
            ifindex: e.ifindex,
            vrid: e.vrid,
            priority: e.priority,
            version: e.version,
            interval_cs: e.interval_cs,
            count_addr: e.count_addr,
            changes: NAMES
                .iter()
                .filter(|(bit, _)| e.flags & bit != 0)
                .map(|(_, name)| *name)
                .collect(),
            receive_path: match ReceivePath::from_u8(e.receive_path) {
                Some(ReceivePath::Xdp) => "xdp",
                Some(ReceivePath::RawSocket) => "raw-socket",
                None => "unknown",
            },
        }
    }
}

/// The kernel's "no advert for three intervals" cue to the agent: not an
/// advert, so `watch` does not print it.
fn is_silence_report(event: &AdvertEvent) -> bool {
    event.flags & change::SILENCE != 0
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[derive(Serialize)]
struct Summary<'a> {
    receive_path: &'a str,
    adverts: u64,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    // A diagnostic tool: never leaves anything attached behind it.
    let mut receiver = AdvertReceiver::open(&args.interface, &args.vrids, args.receive_path, None)
        .with_context(|| format!("opening the VRRP receive path on {}", args.interface))?;
    let path = receiver.path_name();
    tracing::info!(interface = %args.interface, receive_path = path, "watching VRRP adverts");
    eprintln!("receive path: {path}");

    let deadline = args
        .timeout
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let mut drain = (args.drain_ms > 0).then(|| {
        let mut tick = tokio::time::interval(Duration::from_millis(args.drain_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut seen = 0u64;
    let done = |seen| args.count.is_some_and(|n| seen >= n);
    let result = loop {
        if done(seen) {
            break Ok(());
        }
        let event = tokio::select! {
            event = receiver.next() => Some(event?),
            _ = async { drain.as_mut().expect("checked").tick().await }, if drain.is_some() => None,
            _ = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() => {
                break Err(anyhow::anyhow!("timed out after {seen} adverts"));
            }
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        for event in event
            .into_iter()
            .chain(std::iter::from_fn(|| receiver.try_next()))
            .filter(|event| !is_silence_report(event))
        {
            print_json(&AdvertJson::from(&event))?;
            seen += 1;
            if done(seen) {
                break;
            }
        }
    };
    // Adverts the kernel queued silently since the last drain are still
    // reported, so the summary and the printed events agree.
    while !done(seen)
        && let Some(event) = receiver.try_next()
    {
        if is_silence_report(&event) {
            continue;
        }
        print_json(&AdvertJson::from(&event))?;
        seen += 1;
    }
    let counters: Counters = receiver.counters()?;
    print_json(&Summary {
        receive_path: path,
        adverts: seen,
        counters: counters.iter().collect(),
    })?;
    result
}

/// Logs the warnings of a loaded configuration and returns it.
fn load(result: Result<Loaded, config::ConfigErrors>) -> anyhow::Result<config::Config> {
    let loaded = result?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(loaded.config)
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let loaded = config::load_any(file)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: OK ({} instance(s), {} check(s), {} warning(s))",
        file.display(),
        loaded.config.instances.len(),
        loaded.config.checks.len(),
        loaded.warnings.len()
    );
    Ok(())
}

fn import_keepalived(file: &std::path::Path) -> anyhow::Result<()> {
    let loaded = config::load_keepalived(file)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", config::to_toml(&loaded.config));
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads the configuration on every SIGHUP and hands it to the daemon; a
/// configuration with errors is reported and the running one kept.
fn reload_on_sighup(
    load_config: impl Fn() -> anyhow::Result<config::Config> + Send + 'static,
) -> tokio::sync::mpsc::Receiver<config::Config> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    lbha_agent::ops::systemd::reloading();
                    match load_config() {
                        Ok(config) => {
                            tracing::info!("SIGHUP: configuration reloaded");
                            if tx.send(config).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::error!(
                                "SIGHUP: configuration not reloaded, keeping the running one: {error:#}"
                            )
                        }
                    }
                    lbha_agent::ops::systemd::ready("configuration reloaded");
                }
            });
        }
        Err(error) => tracing::error!(%error, "cannot handle SIGHUP; reloading needs a restart"),
    }
    rx
}

async fn run_daemon(
    config: config::Config,
    load_config: impl Fn() -> anyhow::Result<config::Config> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(
        instances = config.instances.len(),
        checks = config.checks.len(),
        "lbha-agent starting"
    );
    // The ready hook drops capabilities, sends READY=1 and starts the watchdog.
    let ready = lbha_agent::ops::ready_hook(&config);
    let shutdown = async {
        termination().await;
        lbha_agent::ops::systemd::stopping();
    };
    let reload = reload_on_sighup(load_config);
    lbha_agent::daemon::run(config, shutdown, reload, ready).await?;
    Ok(())
}

/// Logs to stderr; when that is journald (under systemd), without our own
/// timestamps (journald adds its own) and with syslog priority prefixes.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if lbha_agent::ops::systemd::stderr_is_journal() {
        builder
            .with_ansi(false)
            .without_time()
            .map_event_format(lbha_agent::ops::systemd::JournalPrefix)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn main() -> ExitCode {
    init_logging();
    // SAFETY: no other thread exists yet (the runtime starts below).
    unsafe { lbha_agent::ops::systemd::take_from_env() };
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (cli.command, cli.config, cli.keepalived_conf) {
            (Some(Command::Watch(args)), ..) => watch(args).await,
            (Some(Command::CheckConfig { file }), ..) => check_config(&file),
            (Some(Command::ImportKeepalived { file }), ..) => import_keepalived(&file),
            (Some(Command::Detach { pin_dir }), ..) => {
                let removed = lbha_agent::bpf::pin::remove_namespace_pins(&pin_dir)
                    .with_context(|| format!("removing pins under {}", pin_dir.display()))?;
                for dir in &removed {
                    println!("unpinned {}", dir.display());
                }
                if removed.is_empty() {
                    println!("nothing pinned under {} for this network namespace", pin_dir.display());
                }
                Ok(())
            }
            (Some(Command::Status { json, socket }), ..) => {
                let status = lbha_agent::status::socket::query(&socket).await?;
                if json {
                    print_json(&status)?;
                } else {
                    print!("{}", lbha_agent::status::render_table(&status));
                }
                Ok(())
            }
            (None, config_file, keepalived_file) if config_file.is_some() || keepalived_file.is_some() => {
                // Loaded at start and again on every SIGHUP, CLI overrides included.
                let load_config = move || -> anyhow::Result<config::Config> {
                    let mut config = match (&config_file, &keepalived_file) {
                        (Some(file), _) => load(config::load_toml(file))?,
                        (None, Some(file)) => load(config::load_keepalived(file))?,
                        (None, None) => unreachable!("checked by the match guard"),
                    };
                    cli.floating_ip.apply(&mut config);
                    cli.ops.apply(&mut config);
                    Ok(config)
                };
                let config = load_config()?;
                run_daemon(config, load_config).await
            }
            (None, ..) => Err(anyhow::anyhow!(
                "nothing to do: give --config FILE, --keepalived-conf FILE or a subcommand (see --help)"
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
