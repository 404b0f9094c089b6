//! The agent as a whole, wiring only: the shared parts of a configuration
//! ([`core`]), one task per interface running its VRRP instances
//! ([`interface`]), what a reload restarts ([`reload`]), and an orderly
//! shutdown in which every master resigns.
//!
//! A reload never risks the running node: the new file is read, parsed and
//! checked against the host ([`crate::preflight`]), and everything that can
//! fail is built, before anything running is touched. Any failure keeps the
//! running configuration untouched (no advert changes, no resignation) and
//! is reported in the log, `status`, the metrics and systemd's `STATUS=`.

mod core;
pub mod handover;
mod interface;
pub mod reload;

use std::{collections::BTreeMap, future::Future, sync::Arc};

use lbha_common::event::MAX_ALLOWED_SOURCES;
use thiserror::Error;
use tokio::{sync::mpsc, task::JoinHandle};

pub use self::interface::vrid_config;
use self::{
    core::{Core, CoreSetup, HeartbeatLink},
    interface::Group,
    reload::interfaces_of,
};
use crate::{
    cloud::FollowError,
    config::{Config, ConfigErrors, Diagnostic, Loaded},
    health::script::{ScriptError, ScriptPolicy},
    heartbeat,
    preflight::{self, Held},
    recv::ReceiveError,
    status::{self, Telemetry},
    vrrp::{
        net::{Addresses, NetError},
        notify_fifo::NotifyFifos,
    },
};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("script settings")]
    Script(#[from] ScriptError),
    #[error("receive path")]
    Receive(#[from] ReceiveError),
    #[error("instance {instance}")]
    Net {
        instance: String,
        #[source]
        source: NetError,
    },
    #[error("opening the netlink connection")]
    Netlink(#[source] std::io::Error),
    #[error("instance {instance}: use_vmac")]
    Vmac {
        instance: String,
        #[source]
        source: crate::vrrp::vmac::VmacError,
    },
    #[error("instance {instance} tracks unknown check {check}")]
    UnknownCheck { instance: String, check: String },
    #[error(
        "instance {instance}: {peers} unicast peers are more than the {MAX_ALLOWED_SOURCES} whose adverts lbha can check (set check_unicast_src = false)"
    )]
    TooManyPeers { instance: String, peers: usize },
    #[error(transparent)]
    FloatingIp(#[from] FollowError),
    #[error("starting an interface: {0}")]
    Startup(String),
    #[error("this host cannot run the configuration:\n{}", list(.0))]
    Host(Vec<Diagnostic>),
    #[error("heartbeat: {0}")]
    Heartbeat(String),
}

fn report_heartbeat(
    telemetry: &Telemetry,
    config: &Config,
    running: Option<&heartbeat::Heartbeat>,
) {
    telemetry.set_heartbeat(
        running
            .zip(config.heartbeat.as_ref())
            .map(|(hb, settings)| {
                (
                    hb.peers.clone(),
                    hb.counters.clone(),
                    settings.peers.clone(),
                )
            }),
    );
}

/// Starts the heartbeat `config` asks for (none: a link without peers).
async fn start_heartbeat(
    config: &Config,
    local: heartbeat::Local,
) -> Result<(Option<heartbeat::Heartbeat>, HeartbeatLink), String> {
    let Some(settings) = &config.heartbeat else {
        return Ok((
            None,
            HeartbeatLink {
                local,
                ..HeartbeatLink::default()
            },
        ));
    };
    let path = settings.key_file.clone();
    let key = tokio::task::spawn_blocking(move || heartbeat::read_key(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| crate::error_chain(&e))?;
    let known_droplet = config
        .floating_ip
        .as_ref()
        .and_then(|f| f.settings.droplet_id)
        .unwrap_or(0);
    let (droplet_tx, droplet_rx) = tokio::sync::watch::channel(known_droplet);
    let running = heartbeat::Heartbeat::start(settings, &key, local.clone(), droplet_rx)
        .await
        .map_err(|e| format!("binding {}: {e}", settings.listen))?;
    let link = HeartbeatLink {
        local,
        peers: Some(running.peers.clone()),
        droplet: Some(Arc::new(droplet_tx)),
    };
    Ok((Some(running), link))
}

fn list(problems: &[Diagnostic]) -> String {
    problems
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads the configuration again for a reload (the file the agent was
/// started with, command-line overrides applied). Blocking: the daemon
/// calls it on the blocking pool.
pub type LoadConfig = Arc<dyn Fn() -> Result<Loaded, ConfigErrors> + Send + Sync>;

/// The host checks, on the blocking pool.
async fn check_host_off_thread(loaded: Loaded, running: Option<Config>) -> Vec<Diagnostic> {
    tokio::task::spawn_blocking(move || {
        preflight::check_host(
            &loaded,
            Held {
                running: running.as_ref(),
            },
        )
    })
    .await
    .unwrap_or_else(|join| vec![loaded_less_diagnostic(&join.to_string())])
}

fn loaded_less_diagnostic(message: &str) -> Diagnostic {
    Diagnostic {
        file: "(host checks)".into(),
        line: None,
        message: message.to_owned(),
    }
}

/// The running daemon: the configuration, its shared core, one group per
/// interface, and the status and metrics servers.
struct Daemon {
    config: Config,
    core: Core,
    heartbeat: Option<crate::heartbeat::Heartbeat>,
    link: HeartbeatLink,
    groups: BTreeMap<String, Group>,
    addresses: Addresses,
    telemetry: Telemetry,
    /// keepalived's notify FIFOs: open for the daemon's life, reopened only
    /// when a reload changes them.
    fifos: Arc<NotifyFifos>,
    status_server: JoinHandle<()>,
    metrics_server: Option<JoinHandle<()>>,
    /// Handover requests from the status socket, and where it sends them.
    control_tx: mpsc::UnboundedSender<status::socket::ControlRequest>,
    control_rx: mpsc::UnboundedReceiver<status::socket::ControlRequest>,
    /// A handover is running (one at a time).
    handover_busy: Arc<std::sync::atomic::AtomicBool>,
}

fn serve_status(
    config: &Config,
    telemetry: &Telemetry,
    control: &mpsc::UnboundedSender<status::socket::ControlRequest>,
) -> JoinHandle<()> {
    let (path, telemetry) = (config.global.status_socket.clone(), telemetry.clone());
    let control = control.clone();
    tokio::spawn(async move {
        if let Err(error) = status::socket::serve(path.clone(), telemetry, Some(control)).await {
            tracing::error!(socket = %path.display(), %error, "status socket unavailable");
        }
    })
}

fn serve_metrics(config: &Config, telemetry: &Telemetry) -> Option<JoinHandle<()>> {
    config.global.metrics_listen.map(|addr| {
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(error) = status::metrics::serve(addr, telemetry).await {
                tracing::error!(%addr, %error, "metrics listener unavailable");
            }
        })
    })
}

/// Opens the configuration's notify FIFOs (closing those open), on the
/// blocking pool: user look-ups, mkfifo and spawning the scripts block.
async fn configure_fifos(fifos: &Arc<NotifyFifos>, config: &Config, policy: &ScriptPolicy) {
    let (fifos, wanted, policy) = (
        fifos.clone(),
        config.global.notify_fifos.clone(),
        policy.clone(),
    );
    if let Err(error) = tokio::task::spawn_blocking(move || fifos.configure(&wanted, &policy)).await
    {
        tracing::error!(%error, "notify FIFOs not opened");
    }
}

/// Installs the accept-mode tables afresh when an instance needs them
/// (removing what a crashed run left), else removes any left behind. A
/// failure is logged, never fatal: the node still fails over, its
/// addresses answering.
async fn configure_firewall(config: &Config) {
    use crate::sys::firewall;
    if firewall::needed(config) {
        match firewall::apply(firewall::install_script()).await {
            Ok(()) => tracing::info!(
                table = firewall::TABLE,
                "accept mode off: nftables drop rules installed (addresses added while Master)"
            ),
            Err(error) => tracing::error!(
                %error,
                "accept mode off (`no_accept`, or `vrrp_strict` without `accept`), but the nftables rules could not be installed: the virtual addresses will answer while Master"
            ),
        }
    } else {
        match firewall::apply(firewall::remove_script()).await {
            // Without nft there is nothing of ours to remove.
            Ok(()) | Err(firewall::FirewallError::Spawn(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "could not remove the accept-mode nftables tables");
            }
        }
    }
}

/// On stop: no rule of ours stays behind.
async fn remove_firewall(config: &Config) {
    use crate::sys::firewall;
    if firewall::needed(config)
        && let Err(error) = firewall::apply(firewall::remove_script()).await
    {
        tracing::warn!(%error, "could not remove the accept-mode nftables tables");
    }
}

impl Daemon {
    async fn start(loaded: &Loaded) -> Result<Self, DaemonError> {
        let problems = check_host_off_thread(loaded.clone(), None).await;
        if !problems.is_empty() {
            return Err(DaemonError::Host(problems));
        }
        let config = loaded.config.clone();
        let addresses = Addresses::open().map_err(DaemonError::Netlink)?;
        let telemetry = Telemetry::default();
        let setup = CoreSetup::prepare_off_thread(&config, false).await?;
        let (heartbeat, link) = start_heartbeat(&config, heartbeat::Local::default())
            .await
            .map_err(DaemonError::Heartbeat)?;
        report_heartbeat(&telemetry, &config, heartbeat.as_ref());
        let fifos = Arc::new(NotifyFifos::default());
        configure_fifos(&fifos, &config, setup.policy()).await;
        let core = setup.start(&telemetry, &link, &fifos);
        configure_firewall(&config).await;
        // Every interface's receive path is loaded before any instance
        // starts: the verifier takes hundreds of milliseconds of CPU per
        // interface, and a Master already advertising on one interface while
        // the next loaded sent its adverts late on a busy machine (1,020
        // VRIDs on 4 interfaces: the peer took over and both flapped).
        let mut paths = Vec::new();
        for interface in interfaces_of(&config) {
            match Group::load(&config, &interface).await {
                Ok(path) => paths.push((interface, path)),
                Err(error) => {
                    core.stop().await;
                    return Err(error);
                }
            }
        }
        let mut groups = BTreeMap::new();
        for (interface, path) in paths {
            match Group::start_loaded(&config, &interface, path, &core, &addresses, &telemetry)
                .await
            {
                Ok(group) => {
                    groups.insert(interface, group);
                }
                Err(error) => {
                    for (_, group) in groups {
                        group.stop().await;
                    }
                    core.stop().await;
                    remove_firewall(&config).await;
                    return Err(error);
                }
            }
        }
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let status_server = serve_status(&config, &telemetry, &control_tx);
        let metrics_server = serve_metrics(&config, &telemetry);
        Ok(Self {
            control_tx,
            control_rx,
            handover_busy: Arc::default(),
            config,
            core,
            heartbeat,
            link,
            groups,
            addresses,
            telemetry,
            fifos,
            status_server,
            metrics_server,
        })
    }

    /// One reload: read, check, prepare, then swap. `Err` says why the
    /// running configuration was kept (or, after the swap, which
    /// interfaces could not start).
    async fn reload(&mut self, load: &LoadConfig) -> Result<(), String> {
        let load = load.clone();
        // The double-assign check reads the notify scripts: off the
        // runtime thread, like the file itself.
        let (loaded, double_assign) = tokio::task::spawn_blocking(move || {
            load().map(|loaded| {
                let warnings = crate::preflight::double_assign_warnings(&loaded);
                (loaded, warnings)
            })
        })
        .await
        .map_err(|join| join.to_string())?
        .map_err(|errors| errors.to_string())?;
        for warning in loaded.warnings.iter().chain(&double_assign) {
            tracing::warn!("{warning}");
        }
        let problems = check_host_off_thread(loaded.clone(), Some(self.config.clone())).await;
        if !problems.is_empty() {
            return Err(DaemonError::Host(problems).to_string());
        }
        let new = loaded.config;
        let plan = reload::plan(&self.config, &new);
        if plan.is_noop() {
            tracing::info!("configuration reloaded: nothing changed");
            self.config = new;
            return Ok(());
        }
        if plan.restart_all {
            // Built before anything running stops: if this fails, nothing changed.
            let setup = CoreSetup::prepare_off_thread(&new, true)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            tracing::info!(
                "configuration reloaded: checks, [global] or [floating_ip] changed; restarting every instance"
            );
            for (_, group) in std::mem::take(&mut self.groups) {
                group.stop().await;
            }
            self.telemetry.clear();
            if new.heartbeat != self.config.heartbeat {
                // The old heartbeat goes first: the new one may bind its address.
                if let Some(old) = self.heartbeat.take() {
                    old.stop();
                }
                match start_heartbeat(&new, self.link.local.clone()).await {
                    Ok((heartbeat, link)) => (self.heartbeat, self.link) = (heartbeat, link),
                    Err(error) => {
                        // Checked before the swap; should the socket be gone
                        // since, run without it rather than not at all.
                        tracing::error!(%error, "heartbeat not started; running without it");
                        self.link = HeartbeatLink {
                            local: self.link.local.clone(),
                            ..HeartbeatLink::default()
                        };
                    }
                }
            }
            report_heartbeat(&self.telemetry, &new, self.heartbeat.as_ref());
            // After the old instances' STOP lines, before the new ones'.
            if new.global.notify_fifos != self.config.global.notify_fifos {
                configure_fifos(&self.fifos, &new, setup.policy()).await;
            }
            let started = setup.start(&self.telemetry, &self.link, &self.fifos);
            let old = std::mem::replace(&mut self.core, started);
            // AH sequence numbers survive a reload, as keepalived keeps them.
            self.core.ah_counters = old.ah_counters.clone();
            old.stop().await;
            self.restart_servers(&new);
        } else {
            for interface in &plan.stop {
                if let Some(group) = self.groups.remove(interface) {
                    tracing::info!(
                        interface,
                        "configuration reloaded: restarting the instances of this interface"
                    );
                    self.telemetry.forget_interface(interface);
                    group.stop().await;
                }
            }
        }
        if crate::sys::firewall::needed(&new) != crate::sys::firewall::needed(&self.config) {
            // The instances that blocked have restarted (their
            // configuration changed), so no element is lost.
            configure_firewall(&new).await;
        }
        let mut failed = Vec::new();
        // Every interface without a running group starts: the plan's, and
        // any that failed to start on an earlier reload.
        for interface in interfaces_of(&new) {
            if self.groups.contains_key(&interface) {
                continue;
            }
            match Group::start(
                &new,
                &interface,
                &self.core,
                &self.addresses,
                &self.telemetry,
            )
            .await
            {
                Ok(group) => {
                    self.groups.insert(interface, group);
                }
                Err(error) => {
                    let error = crate::error_chain(&error);
                    tracing::error!(interface, %error, "could not start the reloaded instances");
                    failed.push(format!("{interface}: {error}"));
                }
            }
        }
        self.config = new;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "applied, but these interfaces could not start: {}",
                failed.join("; ")
            ))
        }
    }

    /// Rebinds the status socket or the metrics listener when their
    /// settings changed.
    fn restart_servers(&mut self, new: &Config) {
        if new.global.status_socket != self.config.global.status_socket {
            self.status_server.abort();
            self.status_server = serve_status(new, &self.telemetry, &self.control_tx);
        }
        if new.global.metrics_listen != self.config.global.metrics_listen {
            if let Some(server) = self.metrics_server.take() {
                server.abort();
            }
            self.metrics_server = serve_metrics(new, &self.telemetry);
        }
    }

    /// Starts a handover (or a release) in a task of its own: the run
    /// loop keeps taking reloads and the shutdown meanwhile.
    fn start_handover(&self, request: status::socket::ControlRequest) {
        use std::sync::atomic::Ordering;
        let status::socket::ControlRequest { request, replies } = request;
        if !request.release && self.handover_busy.swap(true, Ordering::SeqCst) {
            let message = format!("refused, nothing changed: {}", handover::Refusal::Busy);
            let _ = replies.send(status::socket::Reply::Done { ok: false, message });
            return;
        }
        let ctx = handover::Context {
            cloud: self.core.handover_cloud(),
            commands: self.core.commands.clone(),
            telemetry: self.telemetry.clone(),
            peers: self.core.peers.clone(),
            vrids: self
                .config
                .instances
                .iter()
                .map(|i| (i.name.clone(), crate::vrrp::driver::vrid_key(i)))
                .collect(),
        };
        let busy = (!request.release).then(|| self.handover_busy.clone());
        tokio::spawn(async move {
            handover::run(request, ctx, replies).await;
            if let Some(busy) = busy {
                busy.store(false, Ordering::SeqCst);
            }
        });
    }

    async fn stop(self) {
        if let Some(heartbeat) = self.heartbeat {
            heartbeat.stop();
        }
        self.status_server.abort();
        if let Some(server) = self.metrics_server {
            server.abort();
        }
        tracing::info!("shutting down");
        for (_, group) in self.groups {
            group.stop().await;
        }
        self.core.stop().await;
        remove_firewall(&self.config).await;
    }
}

/// Runs the configuration until `shutdown` completes, then resigns every
/// master (priority-0 advert, addresses removed) and returns.
///
/// Every message on `reloads` (SIGHUP) reads the configuration again with
/// `load` and replaces the running one as [`reload::plan`] decides: instances
/// whose interface group is unchanged keep running (and keep mastership);
/// changed groups restart; a change to the checks, `[global]` or
/// `[floating_ip]` restarts everything. A file that does not parse or that
/// this host cannot run is refused and the running configuration kept.
///
/// `ready` is called once every interface is receiving and every instance
/// has started (the moment to tell systemd `READY=1`).
pub async fn run(
    initial: Loaded,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
    load: LoadConfig,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let mut daemon = Daemon::start(&initial).await?;
    crate::sys::memory::release_freed_heap();
    ready();

    tokio::pin!(shutdown);
    loop {
        // The systemd watchdog pings only while these tasks run; none while
        // a reload stops and restarts them.
        crate::ops::systemd::watch_tasks(daemon.groups.values().map(|g| g.task.abort_handle()));
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reloads.recv() => {}
            Some(request) = daemon.control_rx.recv() => {
                daemon.start_handover(request);
                continue;
            }
        }
        crate::ops::systemd::watch_tasks([]);
        crate::ops::systemd::reloading();
        let result = daemon.reload(&load).await;
        crate::sys::memory::release_freed_heap();
        match &result {
            Ok(()) => {
                tracing::info!("SIGHUP: configuration reloaded");
                crate::ops::systemd::ready(&crate::ops::running_status(&daemon.config));
            }
            Err(error) => {
                tracing::error!(
                    "SIGHUP: configuration not reloaded, keeping the running one: {error}"
                );
                crate::ops::systemd::ready(&format!(
                    "reload refused, running the previous configuration: {}",
                    error.lines().next().unwrap_or_default()
                ));
            }
        }
        daemon.telemetry.reload_result(result);
    }
    daemon.stop().await;
    Ok(())
}
