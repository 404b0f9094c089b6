//! The agent as a whole, wiring only: the shared parts of a configuration
//! ([`core`]), one task per interface running its VRRP instances
//! ([`interface`]), what a reload restarts ([`reload`]), and an orderly
//! shutdown in which every master resigns.

mod core;
mod interface;
pub mod reload;

use std::{collections::BTreeMap, future::Future};

use thiserror::Error;
use tokio::sync::mpsc;

pub use self::interface::vrid_config;
use self::{core::Core, interface::Group, reload::interfaces_of};
use crate::{
    cloud::FollowError,
    config::Config,
    health::script::ScriptError,
    recv::ReceiveError,
    status::{self, Telemetry},
    vrrp::net::{Addresses, NetError},
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
    #[error(transparent)]
    FloatingIp(#[from] FollowError),
    #[error("starting an interface: {0}")]
    Startup(String),
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
/// one as [`reload::plan`] decides: instances whose interface group is
/// unchanged keep running (and keep mastership); changed groups restart. A
/// change to the checks, `[global]` or `[floating_ip]` restarts everything.
/// A configuration that cannot start leaves the agent without the affected
/// instances and says so.
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
        let plan = reload::plan(&config, &new);
        if plan.is_noop() {
            tracing::info!("configuration reloaded: nothing changed");
            config = new;
            continue;
        }
        if plan.restart_all {
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
            for interface in &plan.stop {
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
        // Every interface without a running group starts: the plan's, and
        // any that failed to start on an earlier reload.
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
