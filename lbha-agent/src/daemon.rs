//! The agent as a whole: tracked checks, one task per interface running its
//! VRRP instances, the notify queue, and an orderly shutdown in which every
//! master resigns.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use lbha_common::{
    VridConfig,
    vrrp::{AUTH_NONE, AUTH_PASS, encode::auth_data},
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::{
    cloud::{FloatingIpManager, SetupError},
    config::Probe,
    config::{self, Config},
    health::{
        probe::{self, ProbeResult},
        process::{ProcessMatch, ProcessWatcher, process_check_of, wrapped_process_check},
        script::{self, ScriptError, ScriptPolicy},
    },
    recv::{AdvertReceiver, ReceiveError},
    status::{self, InstanceStatus, Telemetry},
    vrrp::{
        driver::{InstanceRuntime, InterfaceTask, Shared, TrackRefs},
        link,
        net::{Addresses, AdvertSender, NetError, interface_ipv4},
        notify,
        track::TrackState,
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
    #[error("instance {instance} tracks unknown check {check}")]
    UnknownCheck { instance: String, check: String },
    #[error("floating IP")]
    FloatingIp(#[from] SetupError),
    #[error("[floating_ip] follows instance {0}, which is not configured")]
    UnknownFloatingIpInstance(String),
    #[error("starting an interface: {0}")]
    Startup(String),
}

/// The XDP/raw-socket VRID table entry for an instance.
pub fn vrid_config(instance: &config::Instance) -> VridConfig {
    match &instance.auth_pass {
        Some(pass) if instance.version == 2 => {
            VridConfig::new(2, AUTH_PASS, auth_data(pass.as_bytes()))
        }
        _ => VridConfig::new(instance.version, AUTH_NONE, [0; 8]),
    }
}

type CheckStates = Arc<watch::Sender<Arc<Vec<bool>>>>;

/// Where a check's results go.
struct CheckSink {
    index: usize,
    states: CheckStates,
    telemetry: Telemetry,
}

impl CheckSink {
    /// Records one result (and how long it took); publishes a debounced change.
    fn record(&self, check: &config::Check, state: &mut TrackState, ok: bool, took: Duration) {
        if let Some(up) = state.record(ok, check.rise, check.fall) {
            tracing::info!(check = %check.name, up, "check changed state");
            self.states
                .send_modify(|all| Arc::make_mut(all)[self.index] = up);
        }
        self.telemetry
            .check_result(&check.name, state.is_up(), ok, took);
    }
}

/// Runs one check forever, publishing debounced up/down into `states`.
async fn run_check(
    index: usize,
    check: config::Check,
    policy: ScriptPolicy,
    states: CheckStates,
    telemetry: Telemetry,
) {
    let sink = CheckSink {
        index,
        states,
        telemetry,
    };
    let mut state = TrackState::new(true);
    let process = match &check.probe {
        Some(Probe::Process(name)) => Some(ProcessMatch::Name(name.clone())),
        Some(Probe::Pidfile(path)) => Some(ProcessMatch::Pidfile(path.clone())),
        // `pidof haproxy` and friends, or a tiny shell wrapper around them,
        // are answered from procfs too (unless script security would refuse
        // the wrapper: then it runs, and fails, as a script).
        None => {
            let words = script::split_command(&check.script);
            process_check_of(&words)
                .or_else(|| {
                    wrapped_process_check(&words).filter(|_| {
                        !policy.security
                            || script::check_secure(std::path::Path::new(&words[0])).is_ok()
                    })
                })
                .map(ProcessMatch::Name)
        }
        Some(Probe::Tcp(_) | Probe::Http(_)) => None,
    };
    if let Some(what) = process {
        // A death is seen through the process's pidfd the moment it happens;
        // the interval only paces rescans for restarted processes.
        tracing::info!(check = %check.name, process = ?what, "watching through procfs (no fork)");
        let mut watcher = ProcessWatcher::new(what);
        loop {
            let started = std::time::Instant::now();
            let ok = watcher.refresh();
            sink.record(&check, &mut state, ok, started.elapsed());
            watcher.wait(check.interval).await;
        }
    }
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let ok = match &check.probe {
            Some(Probe::Tcp(addr)) => log_probe(&check, probe::tcp(*addr, check.timeout).await),
            Some(Probe::Http(url)) => {
                log_probe(&check, probe::http(&http, url, check.timeout).await)
            }
            _ => match script::run(&check.script, &[], &policy, check.timeout).await {
                Ok(ok) => ok,
                Err(error) => {
                    tracing::warn!(check = %check.name, %error, "check could not run; counted as failed");
                    false
                }
            },
        };
        sink.record(&check, &mut state, ok, started.elapsed());
    }
}

fn log_probe(check: &config::Check, result: ProbeResult) -> bool {
    if let ProbeResult::Down(why) = &result {
        tracing::debug!(check = %check.name, %why, "probe failed");
    }
    result.is_up()
}

fn track_refs(config: &Config, instance: &config::Instance) -> Result<TrackRefs, DaemonError> {
    instance
        .track
        .iter()
        .map(|name| {
            config
                .checks
                .iter()
                .position(|c| &c.name == name)
                .map(|index| {
                    let check = &config.checks[index];
                    (index, check.weight, check.weight_reverse)
                })
                .ok_or_else(|| DaemonError::UnknownCheck {
                    instance: instance.name.clone(),
                    check: name.clone(),
                })
        })
        .collect()
}

/// What one configuration runs besides its instances: checks, the notify
/// queue, the floating IP manager and the link watcher. Rebuilt on reload
/// only when the checks, `[global]` or `[floating_ip]` change.
struct Core {
    checks_rx: watch::Receiver<Arc<Vec<bool>>>,
    check_tasks: Vec<tokio::task::JoinHandle<()>>,
    notify_tx: mpsc::UnboundedSender<notify::NotifyJob>,
    notify_queue: tokio::task::JoinHandle<()>,
    mastership: Option<Arc<(String, watch::Sender<bool>)>>,
    floating_ip_task: Option<tokio::task::JoinHandle<()>>,
    floating_ip_status: Option<watch::Receiver<crate::cloud::FloatingIpStatus>>,
    links: watch::Receiver<link::LinkStates>,
}

impl Core {
    fn start(config: &Config, telemetry: &Telemetry) -> Result<Self, DaemonError> {
        let policy = ScriptPolicy::new(
            config.global.script_security,
            config.global.script_user.as_deref(),
            config.global.script_group.as_deref(),
        )?;
        for check in &config.checks {
            telemetry.add_check(&check.name);
        }

        let (checks_tx, checks_rx) = watch::channel(Arc::new(vec![true; config.checks.len()]));
        let checks_tx = Arc::new(checks_tx);
        let check_tasks = config
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                tokio::spawn(run_check(
                    index,
                    check.clone(),
                    policy.clone(),
                    checks_tx.clone(),
                    telemetry.clone(),
                ))
            })
            .collect();

        // The floating IP follows one instance's mastership.
        let (mastership, floating_ip_task, floating_ip_status) = match &config.floating_ip {
            Some(floating_ip) => {
                let instance = match &floating_ip.instance {
                    Some(name) => config
                        .instances
                        .iter()
                        .find(|i| &i.name == name)
                        .ok_or_else(|| DaemonError::UnknownFloatingIpInstance(name.clone()))?,
                    None => config
                        .instances
                        .first()
                        .ok_or_else(|| DaemonError::UnknownFloatingIpInstance("(none)".into()))?,
                };
                floating_ip.settings.validate().map_err(SetupError::from)?;
                let (metadata, api) = floating_ip.settings.build_clients()?;
                let calls = api.call_counts();
                let (master_tx, master_rx) = watch::channel(false);
                let (status, task) = FloatingIpManager::spawn_watching(
                    floating_ip.settings.clone(),
                    metadata,
                    api,
                    master_rx,
                );
                telemetry.set_floating_ip(
                    floating_ip.settings.ip.to_string(),
                    instance.name.clone(),
                    status.clone(),
                    calls,
                );
                tracing::info!(ip = %floating_ip.settings.ip, instance = %instance.name, "floating IP follows instance");
                (
                    Some(Arc::new((instance.name.clone(), master_tx))),
                    Some(task),
                    Some(status),
                )
            }
            None => (None, None, None),
        };
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let notify_queue = tokio::spawn(notify::run_queue(
            notify_rx,
            policy.clone(),
            floating_ip_status.clone(),
        ));
        let interfaces = config
            .instances
            .iter()
            .map(|i| i.interface.clone())
            .collect();
        Ok(Self {
            checks_rx,
            check_tasks,
            notify_tx,
            notify_queue,
            mastership,
            floating_ip_task,
            floating_ip_status,
            links: link::watch_links(interfaces),
        })
    }

    /// Stops everything; call after the instances that used it stopped.
    async fn stop(self) {
        for task in self.check_tasks {
            task.abort();
        }
        // Dropping the last mastership sender stops the floating IP manager.
        drop(self.mastership);
        if let Some(task) = self.floating_ip_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        drop(self.notify_tx);
        // Let the notify scripts of the final transitions run, within reason.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.notify_queue).await;
    }
}

/// The instances of one interface, running in their own task.
struct Group {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Group {
    async fn start(
        config: &Config,
        interface: &str,
        core: &Core,
        addresses: &Addresses,
        telemetry: &Telemetry,
    ) -> Result<Self, DaemonError> {
        let instances: Vec<config::Instance> = config
            .instances
            .iter()
            .filter(|i| i.interface == interface)
            .cloned()
            .collect();
        let vrids: Vec<_> = instances.iter().map(|i| (i.vrid, vrid_config(i))).collect();
        // Loading the XDP program runs the verifier for hundreds of
        // milliseconds: off the runtime thread, or the instances already
        // running (on a reload) would miss their adverts meanwhile.
        let receiver = {
            let (interface, path) = (interface.to_owned(), instances[0].receive_path);
            let pin_root = config.global.bpf_pin_dir.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _runtime = runtime.enter();
                AdvertReceiver::open(&interface, &vrids, path, pin_root.as_deref())
            })
            .await
            .map_err(|e| DaemonError::Startup(e.to_string()))??
        };
        tracing::info!(
            interface,
            receive_path = receiver.path_name(),
            pinned = receiver.pinned(),
            instances = instances.len(),
            "interface ready"
        );
        telemetry.add_interface(interface, receiver.path_name(), receiver.pinned());
        if let Some(source) = receiver.last_advert_source() {
            telemetry.set_last_advert_source(interface, source);
        }
        let mut runtimes = Vec::new();
        for instance in &instances {
            let net_err = |source| DaemonError::Net {
                instance: instance.name.clone(),
                source,
            };
            let src = match instance.unicast_src {
                Some(src) => src,
                None => interface_ipv4(interface).map_err(net_err)?,
            };
            let sender =
                AdvertSender::open(interface, src, &instance.unicast_peers).map_err(net_err)?;
            telemetry.add_instance(InstanceStatus {
                name: instance.name.clone(),
                interface: instance.interface.clone(),
                vrid: instance.vrid,
                version: instance.version,
                state: "INIT".into(),
                priority: instance.priority,
                configured_priority: instance.priority,
                ..InstanceStatus::default()
            });
            runtimes.push(InstanceRuntime::new(
                instance.clone(),
                sender,
                track_refs(config, instance)?,
            ));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = InterfaceTask {
            interface: interface.to_owned(),
            receiver,
            instances: runtimes,
            shared: Shared {
                addresses: addresses.clone(),
                notify: core.notify_tx.clone(),
                checks: core.checks_rx.clone(),
                links: core.links.clone(),
                shutdown: shutdown_rx,
                mastership: core.mastership.clone(),
                floating_ip_status: core.floating_ip_status.clone(),
                telemetry: telemetry.clone(),
            },
            wakeups: 0,
            counters_published_ns: 0,
        };
        Ok(Self {
            shutdown,
            task: tokio::spawn(task.run()),
        })
    }

    /// Stops the instances (a master resigns) and waits for them.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

fn interfaces_of(config: &Config) -> BTreeSet<String> {
    config
        .instances
        .iter()
        .map(|i| i.interface.clone())
        .collect()
}

fn instances_on<'a>(config: &'a Config, interface: &str) -> Vec<&'a config::Instance> {
    config
        .instances
        .iter()
        .filter(|i| i.interface == interface)
        .collect()
}

/// Starts every interface's group; on error, stops those already started.
async fn start_groups(
    config: &Config,
    core: &Core,
    addresses: &Addresses,
    telemetry: &Telemetry,
) -> Result<BTreeMap<String, Group>, DaemonError> {
    let mut groups = BTreeMap::new();
    for interface in interfaces_of(config) {
        match Group::start(config, &interface, core, addresses, telemetry).await {
            Ok(group) => {
                groups.insert(interface, group);
            }
            Err(error) => {
                for (_, group) in groups {
                    group.stop().await;
                }
                return Err(error);
            }
        }
    }
    Ok(groups)
}

/// Runs the configuration until `shutdown` completes, then resigns every
/// master (priority-0 advert, addresses removed) and returns.
///
/// Each configuration received on `reload` (SIGHUP) replaces the running
/// one: instances whose interface group is unchanged keep running (and
/// keep mastership); changed groups restart. A change to the checks,
/// `[global]` or `[floating_ip]` restarts everything. A configuration that
/// cannot start leaves the agent without the affected instances and says so.
///
/// `ready` is called once every interface is receiving and every instance
/// has started (the moment to tell systemd `READY=1`).
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<Config>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let addresses = Addresses::open().map_err(DaemonError::Netlink)?;
    let telemetry = Telemetry::default();
    let mut core = Core::start(&config, &telemetry)?;
    let mut groups = start_groups(&config, &core, &addresses, &telemetry).await?;

    // Status for `lbha-agent status`, and metrics when asked for.
    let status_server = {
        let (path, telemetry) = (config.global.status_socket.clone(), telemetry.clone());
        tokio::spawn(async move {
            if let Err(error) = status::socket::serve(path.clone(), telemetry).await {
                tracing::error!(socket = %path.display(), %error, "status socket unavailable");
            }
        })
    };
    let metrics_server = config.global.metrics_listen.map(|addr| {
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            if let Err(error) = status::metrics::serve(addr, telemetry).await {
                tracing::error!(%addr, %error, "metrics listener unavailable");
            }
        })
    });
    ready();

    tokio::pin!(shutdown);
    loop {
        // The systemd watchdog pings only while these tasks run; none while
        // a reload stops and restarts them.
        crate::ops::systemd::watch_tasks(groups.values().map(|g| g.task.abort_handle()));
        let new = tokio::select! {
            () = &mut shutdown => break,
            Some(new) = reload.recv() => new,
        };
        crate::ops::systemd::watch_tasks([]);
        if new == config {
            tracing::info!("configuration reloaded: nothing changed");
            continue;
        }
        let core_changed = new.checks != config.checks
            || new.global != config.global
            || new.floating_ip != config.floating_ip;
        if core_changed {
            tracing::info!(
                "configuration reloaded: checks, [global] or [floating_ip] changed; restarting every instance"
            );
            for (_, group) in std::mem::take(&mut groups) {
                group.stop().await;
            }
            core.stop().await;
            telemetry.clear();
            core = Core::start(&new, &telemetry)?;
        } else {
            for interface in interfaces_of(&config).union(&interfaces_of(&new)) {
                if instances_on(&config, interface) == instances_on(&new, interface) {
                    continue;
                }
                if let Some(group) = groups.remove(interface) {
                    tracing::info!(
                        interface,
                        "configuration reloaded: restarting the instances of this interface"
                    );
                    telemetry.forget_interface(interface);
                    group.stop().await;
                }
            }
        }
        for interface in interfaces_of(&new) {
            if groups.contains_key(&interface) {
                continue;
            }
            match Group::start(&new, &interface, &core, &addresses, &telemetry).await {
                Ok(group) => {
                    groups.insert(interface, group);
                }
                Err(error) => tracing::error!(
                    interface,
                    error = %crate::error_chain(&error),
                    "could not start the reloaded instances"
                ),
            }
        }
        config = new;
    }

    status_server.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    tracing::info!("shutting down");
    for (_, group) in groups {
        group.stop().await;
    }
    core.stop().await;
    Ok(())
}
