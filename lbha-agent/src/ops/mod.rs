//! Running as a service: systemd integration (readiness, reload and stop
//! notifications, the watchdog, journald-friendly logs) and the capability
//! drop once setup is done.

pub mod caps;
pub mod systemd;

use crate::config::Config;

/// The `ready` hook for [`crate::daemon::run`]: once every interface
/// receives and every instance has started, drop the capabilities the
/// daemon no longer needs, tell systemd `READY=1` and start the watchdog
/// pinger (the daemon registers its tasks with [`systemd::watch_tasks`]).
pub fn ready_hook(config: &Config) -> impl FnOnce() + use<> {
    let needs = caps::Needs::of_config(config);
    let status = running_status(config);
    move || {
        caps::drop_after_setup(needs);
        systemd::ready(&status);
        systemd::spawn_watchdog(|| true);
    }
}

/// systemd's `STATUS=` while running normally.
pub fn running_status(config: &Config) -> String {
    format!(
        "running: {} instance(s), {} check(s)",
        config.instances.len(),
        config.checks.len()
    )
}
