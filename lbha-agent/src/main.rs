//! `lbha-agent`: command-line entry point.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lbha_agent::config::{self, Loaded};
use serde::Serialize;

mod watch;

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
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
    #[command(flatten)]
    sources: SourceCheckArgs,
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

/// The heartbeat for keepalived.conf users (whose file has no place for
/// it); with `--config` these replace the `[heartbeat]` table.
#[derive(clap::Args)]
#[expect(
    clippy::struct_field_names,
    reason = "the fields are the --heartbeat-* flags, named as on the command line"
)]
struct HeartbeatArgs {
    /// Exchange authenticated heartbeats with the peers on this local
    /// address:port, over another network than VRRP (e.g. the public one).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["heartbeat_peer", "heartbeat_key_file"])]
    heartbeat_listen: Option<std::net::SocketAddr>,
    /// A peer agent's heartbeat address:port (repeatable).
    #[arg(long, value_name = "ADDR:PORT", requires = "heartbeat_listen")]
    heartbeat_peer: Vec<std::net::SocketAddr>,
    /// File holding the shared heartbeat secret (at least 16 bytes).
    #[arg(long, value_name = "FILE", requires = "heartbeat_listen")]
    heartbeat_key_file: Option<PathBuf>,
    /// Seconds between heartbeats (default 0.1).
    #[arg(long, value_name = "SECS", requires = "heartbeat_listen")]
    heartbeat_interval: Option<f64>,
}

impl HeartbeatArgs {
    fn apply(&self, config: &mut config::Config) {
        if let (Some(listen), Some(key_file)) = (self.heartbeat_listen, &self.heartbeat_key_file) {
            config.heartbeat = Some(config::Heartbeat {
                listen,
                peers: self.heartbeat_peer.clone(),
                key_file: key_file.clone(),
                interval: self
                    .heartbeat_interval
                    .filter(|secs| secs.is_finite() && *secs >= 0.01)
                    .map_or(
                        config::Heartbeat::DEFAULT_INTERVAL,
                        std::time::Duration::from_secs_f64,
                    ),
            });
        }
    }
}

/// How to read a keepalived.conf (and, for both formats, source checking):
/// keepalived has no keyword to turn off what it does not do by default,
/// so the command line says it.
#[derive(clap::Args)]
struct SourceCheckArgs {
    /// keepalived's `--config-id` (`-i`): lines starting `@ID` apply only
    /// when ID is this, `@^ID` only when it is not (default: the host name
    /// up to its first dot, as keepalived).
    #[arg(long, value_name = "ID")]
    config_id: Option<String>,
    /// Accept adverts from any source, not only from an instance's unicast
    /// peers (which lbha does by default, as keepalived's
    /// `check_unicast_src`); for --config, overrides every instance's
    /// `check_unicast_src`.
    #[arg(long)]
    no_check_unicast_src: bool,
}

impl SourceCheckArgs {
    /// Reads `file` (`syntax`) with this applied before validation: it
    /// decides whether a long peer list is valid.
    fn load(
        &self,
        file: &std::path::Path,
        syntax: config::Syntax,
    ) -> Result<Loaded, config::ConfigErrors> {
        let options = config::KeepalivedOptions {
            config_id: self.config_id.clone().or_else(config::default_config_id),
        };
        config::load_with(file, syntax, &options, |config: &mut config::Config| {
            if self.no_check_unicast_src {
                for instance in &mut config.instances {
                    instance.check_unicast_src = false;
                }
            }
        })
    }
}

/// The floating IP for keepalived.conf users (whose file has no place for
/// it); with `--config` these override the `[floating_ip]` table.
#[derive(clap::Args)]
struct FloatingIpArgs {
    /// DigitalOcean floating (reserved) IPv4 that follows the first instance's mastership.
    #[arg(long, value_name = "IP")]
    floating_ip: Option<std::net::Ipv4Addr>,
    /// DigitalOcean reserved IPv6 to move too (beside --floating-ip, one
    /// failover moving both), or alone for an IPv6-only service.
    #[arg(long, value_name = "IPV6", value_parser = parse_reserved_ipv6)]
    reserved_ipv6: Option<std::net::Ipv6Addr>,
    /// The instance the reserved IPv6 follows (default: the floating IPv4's,
    /// else the first).
    #[arg(long, value_name = "NAME", requires = "reserved_ipv6")]
    reserved_ipv6_instance: Option<String>,
    /// File holding the DigitalOcean API token (default: $DIGITALOCEAN_TOKEN).
    #[arg(long, value_name = "FILE")]
    do_token_file: Option<PathBuf>,
    /// DigitalOcean API base URL.
    #[arg(long, value_name = "URL")]
    do_api_url: Option<String>,
    /// Droplet metadata service base URL.
    #[arg(long, value_name = "URL")]
    do_metadata_url: Option<String>,
    /// PEM bundle of CA certificates to trust for the API besides the
    /// system's (a private CA, a TLS-inspecting proxy).
    #[arg(long, value_name = "FILE")]
    do_ca_file: Option<PathBuf>,
    /// Seconds between a Backup's keep-alive requests to the API (default
    /// 25; 0: off).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    do_keepalive_interval: Option<std::time::Duration>,
    /// The peer's droplet id, for `lbha-agent handover` when the peer's
    /// heartbeat carries none (`peer_droplet_id` in [floating_ip]).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    do_peer_droplet_id: Option<u64>,
}

/// A reserved IPv6 as the config file's `reserved_ipv6` takes it.
fn parse_reserved_ipv6(text: &str) -> Result<std::net::Ipv6Addr, String> {
    config::ReservedIpv6::parse_address(text).map_err(|e| e.to_string())
}

/// Seconds (integer or fraction), at most a day.
fn parse_secs(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text} is outside 0..=86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

impl FloatingIpArgs {
    /// Applies the flags; refuses a `--reserved-ipv6-instance` that names no
    /// instance of the file (the file's own keys are checked by its parser).
    fn apply(&self, config: &mut config::Config) -> Result<(), String> {
        use lbha_agent::config::{FloatingIpConfig, ReservedIpv6, TokenSource};
        if let Some(name) = &self.reserved_ipv6_instance
            && !config.instances.iter().any(|i| &i.name == name)
        {
            return Err(format!(
                "--reserved-ipv6-instance {name}: no such instance in the configuration"
            ));
        }
        let reserved_ipv6 = self.reserved_ipv6.map(|address| ReservedIpv6 {
            address,
            instance: self.reserved_ipv6_instance.clone(),
        });
        if self.floating_ip.is_some() || reserved_ipv6.is_some() {
            let settings = &mut config
                .floating_ip
                .get_or_insert_with(|| config::FloatingIp {
                    instance: None,
                    settings: FloatingIpConfig::with_addresses(
                        None,
                        None,
                        TokenSource::Env("DIGITALOCEAN_TOKEN".into()),
                    ),
                })
                .settings;
            if let Some(ip) = self.floating_ip {
                settings.ip = Some(ip);
            }
            if let Some(v6) = reserved_ipv6 {
                settings.reserved_ipv6 = Some(v6);
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
            if let Some(path) = &self.do_ca_file {
                settings.ca_file = Some(path.clone());
            }
            if let Some(interval) = self.do_keepalive_interval {
                settings.keepalive_interval = interval;
            }
            if let Some(id) = self.do_peer_droplet_id {
                settings.peer_droplet_id = Some(id);
            }
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file (TOML if it ends in .toml, else
    /// keepalived.conf); report every problem with its line; exit non-zero on errors.
    CheckConfig {
        file: PathBuf,
        /// Skip the checks against this host (users, interfaces, scripts,
        /// token, sockets): for a file meant for another machine.
        #[arg(long)]
        no_host_checks: bool,
        #[command(flatten)]
        sources: SourceCheckArgs,
        #[command(flatten)]
        floating_ip: FloatingIpArgs,
    },
    /// Print the native TOML equivalent of a keepalived.conf.
    ImportKeepalived {
        file: PathBuf,
        #[command(flatten)]
        sources: SourceCheckArgs,
    },
    /// Check what floating IP failover will need from DigitalOcean, with the
    /// daemon's configuration: the metadata service answers, the token reads
    /// the IP and its holder, the token may act on it. Prints each check;
    /// exits non-zero on a problem.
    CheckCloud(CheckCloudArgs),
    /// Show the running agent's instances, checks, receive path and floating IP.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The agent's status socket (the daemon's `--status-socket`).
        #[arg(long = "status-socket", visible_alias = "socket", value_name = "PATH", default_value = lbha_agent::config::DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// Planned handover, on the Master: move the floating IP (and a
    /// reserved IPv6 following the same instance) to the peer without an
    /// outage. Assigns it to the peer's droplet while this node keeps
    /// serving, waits until the API shows the peer as its holder, then
    /// resigns with its priority held low (until `--release` or a restart)
    /// so it does not preempt back. Refuses, changing nothing, unless the
    /// peer is a healthy Backup with a known droplet id (from the
    /// heartbeat); rolls back when the API action fails or times out.
    Handover {
        /// The VRRP instance (default: the one the floating IP follows).
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        /// The peer: its heartbeat address, VRRP address or droplet id
        /// (default: the one peer the heartbeat reports).
        #[arg(long = "to", value_name = "PEER")]
        to: Option<String>,
        /// Bound on each API action (default: `operation_deadline`).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// End the low priority an earlier handover left on this node.
        #[arg(long, conflicts_with_all = ["to", "timeout"])]
        release: bool,
        /// The agent's status socket (the daemon's `--status-socket`).
        #[arg(long = "status-socket", visible_alias = "socket", value_name = "PATH", default_value = lbha_agent::config::DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// Receive VRRP adverts on an interface and print them as JSON lines.
    Watch(watch::WatchArgs),
    /// Detach the XDP programs lbha left pinned in this network namespace
    /// (they stay attached across restarts, passing adverts on while no
    /// agent runs). Use after stopping lbha for good, e.g. when uninstalling.
    Detach {
        /// The bpffs directory the agent pins in (the daemon's `--bpf-pin-dir`).
        #[arg(long = "bpf-pin-dir", visible_alias = "pin-dir", value_name = "DIR", default_value = lbha_agent::config::DEFAULT_BPF_PIN_ROOT)]
        pin_dir: PathBuf,
    },
}

/// The daemon's configuration arguments, for `check-cloud`.
#[derive(clap::Args)]
struct CheckCloudArgs {
    /// lbha's native TOML configuration.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "keepalived_conf",
        required_unless_present = "keepalived_conf"
    )]
    config: Option<PathBuf>,
    /// A keepalived.conf (with --floating-ip).
    #[arg(long, value_name = "FILE")]
    keepalived_conf: Option<PathBuf>,
    #[command(flatten)]
    floating_ip: FloatingIpArgs,
    #[command(flatten)]
    sources: SourceCheckArgs,
}

/// The configuration file the daemon is given: `--config` or
/// `--keepalived-conf`.
#[derive(Clone)]
enum ConfigFile {
    Toml(PathBuf),
    Keepalived(PathBuf),
}

impl ConfigFile {
    fn from_args(config: Option<PathBuf>, keepalived_conf: Option<PathBuf>) -> Option<Self> {
        config
            .map(ConfigFile::Toml)
            .or(keepalived_conf.map(ConfigFile::Keepalived))
    }

    /// Reads it, with the command line's source-check setting applied before
    /// validation and its floating-IP overrides after.
    fn load(
        &self,
        floating_ip: &FloatingIpArgs,
        sources: &SourceCheckArgs,
    ) -> Result<Loaded, config::ConfigErrors> {
        let mut loaded = match self {
            ConfigFile::Toml(file) => sources.load(file, config::Syntax::Toml)?,
            ConfigFile::Keepalived(file) => sources.load(file, config::Syntax::Keepalived)?,
        };
        if let Err(message) = floating_ip.apply(&mut loaded.config) {
            return Err(config::ConfigErrors::only(vec![config::Diagnostic {
                file: loaded.file.clone(),
                line: None,
                message,
            }]));
        }
        Ok(loaded)
    }
}

/// How long one API check may take, retries included, in `check-cloud`
/// (at most the configured operation deadline): an operator is waiting.
const CHECK_CLOUD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

async fn check_cloud(args: CheckCloudArgs) -> anyhow::Result<()> {
    let Some(file) = ConfigFile::from_args(args.config, args.keepalived_conf) else {
        anyhow::bail!("give --config FILE or --keepalived-conf FILE");
    };
    let loaded = file.load(&args.floating_ip, &args.sources)?;
    let Some(floating_ip) = &loaded.config.floating_ip else {
        anyhow::bail!(
            "no floating IP configured: add [floating_ip] to the file, or give --floating-ip IP and/or --reserved-ipv6 IPV6"
        );
    };
    let mut settings = floating_ip.settings.clone();
    settings.operation_deadline = settings.operation_deadline.min(CHECK_CLOUD_DEADLINE);
    let (metadata, api) = lbha_agent::cloud::build_clients(&settings)
        .with_context(|| format!("floating IP {}", settings.describe()))?;
    let report = lbha_agent::cloud::check_cloud(&settings, &metadata, &api).await;
    for check in &report.checks {
        let verdict = if check.ok { "ok" } else { "PROBLEM" };
        println!("{verdict:<8} {check}");
    }
    match report.problems().count() {
        0 => {
            println!(
                "{}: floating IP failover has what it needs",
                settings.describe()
            );
            Ok(())
        }
        n => Err(anyhow::anyhow!(
            "{}: {n} problem(s); floating IP failover may not work",
            settings.describe()
        )),
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Prints each warning once, on stderr.
fn print_warnings(warnings: &[config::Diagnostic]) {
    let mut seen = std::collections::HashSet::new();
    for warning in warnings {
        let text = warning.to_string();
        if seen.insert(text.clone()) {
            eprintln!("warning: {text}");
        }
    }
}

/// Reads `file`; on errors, prints the warnings found with them first, so
/// one run shows everything.
fn load_reporting(
    file: &std::path::Path,
    syntax: config::Syntax,
    sources: &SourceCheckArgs,
) -> anyhow::Result<Loaded> {
    match sources.load(file, syntax) {
        Ok(loaded) => Ok(loaded),
        Err(errors) => {
            print_warnings(&errors.warnings);
            Err(errors.into())
        }
    }
}

fn check_config(
    file: &std::path::Path,
    host_checks: bool,
    sources: &SourceCheckArgs,
    floating_ip: &FloatingIpArgs,
) -> anyhow::Result<()> {
    let mut loaded = load_reporting(file, config::Syntax::of_path(file), sources)?;
    floating_ip
        .apply(&mut loaded.config)
        .map_err(anyhow::Error::msg)?;
    let mut warnings = loaded.warnings.clone();
    warnings.extend(lbha_agent::preflight::double_assign_warnings(&loaded));
    print_warnings(&warnings);
    // The same host checks a start or a reload runs: what passes here, a
    // reload accepts.
    if host_checks {
        let problems =
            lbha_agent::preflight::check_host(&loaded, lbha_agent::preflight::Held::default());
        if !problems.is_empty() {
            return Err(lbha_agent::daemon::DaemonError::Host(problems).into());
        }
    }
    println!(
        "{}: OK ({} instance(s), {} check(s), {} warning(s){})",
        file.display(),
        loaded.config.instances.len(),
        loaded.config.checks.len(),
        warnings.len(),
        if host_checks {
            ""
        } else {
            "; host checks skipped"
        }
    );
    Ok(())
}

fn import_keepalived(file: &std::path::Path, sources: &SourceCheckArgs) -> anyhow::Result<()> {
    let loaded = load_reporting(file, config::Syntax::Keepalived, sources)?;
    print_warnings(&loaded.warnings);
    // Suggestions, not changes: the TOML says what keepalived.conf says.
    for check in &loaded.config.checks {
        if let Some(suggestion) = lbha_agent::health::haproxy::import_suggestion(check) {
            eprintln!("suggestion: {suggestion}");
        }
    }
    print!("{}", config::to_toml(&loaded.config));
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    if let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    } else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Turns every SIGHUP into a reload request for the daemon, which reads,
/// checks and applies the file itself. Requests arriving while one is
/// pending are folded into it: the file is read once, after the last.
fn reload_requests() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    match tx.try_send(()) {
                        Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
                    }
                }
            });
        }
        Err(error) => tracing::error!(%error, "cannot handle SIGHUP; reloading needs a restart"),
    }
    rx
}

async fn run_daemon(loaded: Loaded, load: lbha_agent::daemon::LoadConfig) -> anyhow::Result<()> {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    for warning in lbha_agent::preflight::double_assign_warnings(&loaded) {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        instances = loaded.config.instances.len(),
        checks = loaded.config.checks.len(),
        "lbha-agent starting"
    );
    // The ready hook drops capabilities, sends READY=1 and starts the watchdog.
    let ready = lbha_agent::ops::ready_hook(&loaded.config);
    let shutdown = async {
        termination().await;
        lbha_agent::ops::systemd::stopping();
    };
    lbha_agent::daemon::run(loaded, shutdown, reload_requests(), load, ready).await?;
    Ok(())
}

/// Logs to stderr; when that is journald (under systemd), without our own
/// timestamps (journald adds its own) and with syslog priority prefixes.
/// `init()` also installs the `log` -> tracing bridge (tracing-log), through
/// which the XDP program's aya-log records arrive, under the same filter.
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

/// One malloc arena. glibc gives each thread that allocates its own arena
/// and never returns their memory: the blocking pool's threads each load an
/// interface's XDP program (parsing the kernel's BTF, megabytes) and would
/// keep 6.5 MB apiece for the agent's lifetime (measured: 4 interfaces,
/// 33 MB resident with the default, 13.5 MB with one arena). The daemon's
/// few threads allocate little once running, so one arena costs nothing.
/// (musl, for the static build, has no per-thread arenas.)
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
            (Some(Command::Watch(args)), ..) => watch::run(args).await,
            (Some(Command::CheckConfig { file, no_host_checks, sources, floating_ip }), ..) => {
                check_config(&file, !no_host_checks, &sources, &floating_ip)
            }
            (Some(Command::ImportKeepalived { file, sources }), ..) => {
                import_keepalived(&file, &sources)
            }
            (Some(Command::CheckCloud(args)), ..) => check_cloud(args).await,
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
            (Some(Command::Handover { instance, to, timeout, release, socket }), ..) => {
                let request = lbha_agent::status::socket::HandoverRequest {
                    instance,
                    to,
                    timeout_secs: timeout,
                    release,
                };
                let message = lbha_agent::status::socket::handover(&socket, request, |line| {
                    println!("{line}");
                })
                .await?;
                println!("{message}");
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
                let Some(file) = ConfigFile::from_args(config_file, keepalived_file) else {
                    anyhow::bail!("give --config FILE or --keepalived-conf FILE");
                };
                // Loaded at start and again on every SIGHUP, CLI overrides included.
                let (floating_ip, ops, heartbeat, sources) =
                    (cli.floating_ip, cli.ops, cli.heartbeat, cli.sources);
                let load: lbha_agent::daemon::LoadConfig = std::sync::Arc::new(move || {
                    let mut loaded = file.load(&floating_ip, &sources)?;
                    ops.apply(&mut loaded.config);
                    heartbeat.apply(&mut loaded.config);
                    Ok(loaded)
                });
                let loaded = load()?;
                run_daemon(loaded, load).await
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
