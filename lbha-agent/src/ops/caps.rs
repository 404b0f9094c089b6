//! Dropping every capability the running agent no longer needs once setup
//! is done (XDP attached, sockets open, checks and instances started).
//!
//! What the agent keeps doing after setup, and what it needs for that:
//!
//! | capability | why |
//! | --- | --- |
//! | `CAP_NET_RAW` | a gratuitous-ARP packet socket on every transition to Master; re-opening advert sockets (raw IP, `SO_BINDTODEVICE`) on a reload |
//! | `CAP_NET_ADMIN` | adding and removing virtual addresses through rtnetlink; attaching XDP on a reload |
//! | `CAP_BPF` (`CAP_SYS_ADMIN` before Linux 5.8) | the `bpf()` calls that read the counter and last-advert maps (refused without it while `kernel.unprivileged_bpf_disabled` is set, before Linux 6.5); loading the program again on a reload |
//! | `CAP_PERFMON` (with `CAP_BPF`) | loading the program again on a reload: without it the verifier refuses the program ("pointer arithmetic with it prohibited for !root") |
//! | `CAP_SETUID`, `CAP_SETGID` | only when scripts run as a `script_user`/`script_group` other than root |
//! | `CAP_KILL` | only when scripts run as another user: killing them on timeout |
//!
//! The capabilities are removed from the bounding set too, so a notify or
//! check script running as root gets back no more than this set when it
//! executes (root regains its bounding set on `execve`); scripts running as
//! `script_user` get none. Capabilities are per thread: the drop applies to
//! the calling thread (the runtime thread in `lbha-agent`, which every later
//! thread and child process is created from); [`Report`] counts threads
//! that existed before and still hold more.

use std::{fmt, io};

use ::caps::{CapSet, Capability, CapsHashSet};
use thiserror::Error;

use crate::{config::Config, health::script::ScriptPolicy};

/// Set to `1` (e.g. in `/etc/default/lbha-agent`) to keep every capability:
/// the escape hatch for root notify scripts that need more than the kept
/// set (writing files owned by other users needs `CAP_DAC_OVERRIDE`, ...).
pub const KEEP_ENV: &str = "LBHA_KEEP_CAPABILITIES";

/// What the configuration needs beyond the network capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Scripts run as another user or group (`setgroups`, `setgid`, `setuid`
    /// in the child before `execve`).
    pub switch_user: bool,
    /// Script children run as another user, so killing them on timeout is
    /// a signal to another user's process.
    pub kill_other_users: bool,
}

impl Needs {
    /// Everything optional; what a configuration that cannot be read needs.
    pub const ALL: Self = Self {
        switch_user: true,
        kill_other_users: true,
    };

    pub fn of_policy(policy: &ScriptPolicy) -> Self {
        Self {
            switch_user: policy.uid != 0 || policy.gid != 0,
            kill_other_users: policy.uid != 0,
        }
    }

    pub fn of_config(config: &Config) -> Self {
        ScriptPolicy::new(
            config.global.script_security,
            config.global.script_user.as_deref(),
            config.global.script_group.as_deref(),
        )
        .map_or(Self::ALL, |policy| Self::of_policy(&policy))
    }
}

/// Whether the running kernel knows capability number `cap`.
fn kernel_knows(cap: u8) -> bool {
    // SAFETY: PR_CAPBSET_READ only reads; it fails with EINVAL for a
    // capability the kernel does not know.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) >= 0 }
}

/// The capabilities to keep for `needs`. `bpf` are the capabilities that
/// stand for BPF access (see [`bpf_capabilities`]).
pub fn kept(needs: Needs, bpf: &[Capability]) -> Vec<Capability> {
    let mut keep = vec![Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN];
    keep.extend_from_slice(bpf);
    if needs.switch_user {
        keep.extend([Capability::CAP_SETUID, Capability::CAP_SETGID]);
    }
    if needs.kill_other_users {
        keep.push(Capability::CAP_KILL);
    }
    keep.sort_by_key(caps::Capability::index);
    keep.dedup();
    keep
}

/// `CAP_BPF` and `CAP_PERFMON` when the kernel has them (5.8+) and this
/// thread holds `CAP_BPF`; otherwise `CAP_SYS_ADMIN`, which covers BPF on
/// every kernel.
pub fn bpf_capabilities() -> Vec<Capability> {
    let held = ::caps::has_cap(None, CapSet::Permitted, Capability::CAP_BPF).unwrap_or(false);
    if kernel_knows(Capability::CAP_BPF.index()) && held {
        vec![Capability::CAP_BPF, Capability::CAP_PERFMON]
    } else {
        vec![Capability::CAP_SYS_ADMIN]
    }
}

/// The capabilities `config` would need after setup that this thread no
/// longer holds (e.g. a reload that sets a non-root `script_user` after the
/// drop: scripts then cannot switch user until the agent restarts).
/// Empty unless [`drop_after_setup`] dropped something.
pub fn missing_for(config: &Config) -> Vec<Capability> {
    if !DROPPED.load(std::sync::atomic::Ordering::Relaxed) {
        return Vec::new();
    }
    let Ok(permitted) = ::caps::read(None, CapSet::Permitted) else {
        return Vec::new();
    };
    kept(Needs::of_config(config), &bpf_capabilities())
        .into_iter()
        .filter(|cap| !permitted.contains(cap))
        .collect()
}

/// Whether [`drop_after_setup`] has dropped capabilities.
static DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A capability mask as `/proc/PID/status` prints it.
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |mask, cap| mask | cap.bitmask())
}

#[derive(Debug, Error)]
pub enum DropError {
    #[error("{what}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Caps {
        what: &'static str,
        #[source]
        source: ::caps::errors::CapsError,
    },
}

/// The outcome of [`drop_all_except`].
#[derive(Debug)]
pub struct Report {
    /// The capabilities still held (effective = permitted).
    pub kept: Vec<Capability>,
    /// The bounding set could not be narrowed (no `CAP_SETPCAP`): root
    /// scripts regain the old bounding set when they execute.
    pub bounding_unchanged: bool,
    /// Other threads of the process still holding capabilities beyond the
    /// kept set (started before the drop; see the module documentation).
    pub privileged_threads: usize,
    /// The calling thread's capability sets afterwards.
    pub after: ProcCaps,
}

/// Removes every capability but `keep` from the calling thread's bounding,
/// ambient, inheritable, permitted and effective sets. A capability in
/// `keep` that the thread does not hold stays absent.
pub fn drop_all_except(keep: &[Capability]) -> Result<Report, DropError> {
    let keep_mask = mask(keep);
    // The bounding set first: PR_CAPBSET_DROP needs CAP_SETPCAP, which goes
    // with the rest below. Capability numbers run until the kernel says
    // EINVAL, so ones newer than the `caps` crate go too.
    let mut bounding_unchanged = false;
    for cap in 0..64u8 {
        // SAFETY: as in kernel_knows.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
        if held < 0 {
            break;
        }
        if held == 1 && keep_mask & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number.
            let rc =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
            if rc != 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::EPERM) {
                    bounding_unchanged = true;
                    break;
                }
                return Err(DropError::Sys {
                    what: "dropping from the bounding set",
                    source: error,
                });
            }
        }
    }
    // Ambient capabilities would survive execve into scripts; clearing
    // fails only on kernels without them (before 4.3).
    if ::caps::runtime::ambient_set_supported().is_ok() {
        ::caps::clear(None, CapSet::Ambient).map_err(|source| DropError::Caps {
            what: "clearing the ambient set",
            source,
        })?;
    }
    let permitted = ::caps::read(None, CapSet::Permitted).map_err(|source| DropError::Caps {
        what: "reading the permitted set",
        source,
    })?;
    let target: CapsHashSet = permitted
        .into_iter()
        .filter(|cap| keep.contains(cap))
        .collect();
    // Effective must stay within permitted at every step.
    let none = CapsHashSet::new();
    for (set, value, what) in [
        (CapSet::Effective, &target, "setting the effective set"),
        (CapSet::Inheritable, &none, "clearing the inheritable set"),
        (CapSet::Permitted, &target, "setting the permitted set"),
    ] {
        ::caps::set(None, set, value).map_err(|source| DropError::Caps { what, source })?;
    }
    let after = ProcCaps::of_thread().map_err(|source| DropError::Sys {
        what: "reading /proc/thread-self/status",
        source,
    })?;
    let mut kept: Vec<Capability> = target.into_iter().collect();
    kept.sort_by_key(caps::Capability::index);
    Ok(Report {
        kept,
        bounding_unchanged,
        privileged_threads: privileged_threads(keep_mask),
        after,
    })
}

/// Threads of this process whose effective or permitted set goes beyond
/// `keep_mask`.
fn privileged_threads(keep_mask: u64) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
            ProcCaps::parse(&status)
        })
        .filter(|caps| (caps.effective | caps.permitted) & !keep_mask != 0)
        .count()
}

/// The capability sets of `/proc/.../status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl ProcCaps {
    /// Parses the `CapInh`..`CapAmb` lines of a `status` file.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                u64::from_str_radix(value.trim(), 16).ok()
            })
        };
        Some(Self {
            inheritable: field("CapInh")?,
            permitted: field("CapPrm")?,
            effective: field("CapEff")?,
            bounding: field("CapBnd")?,
            // Absent before Linux 4.3.
            ambient: field("CapAmb").unwrap_or(0),
        })
    }

    /// The calling thread's sets.
    pub fn of_thread() -> io::Result<Self> {
        let status = std::fs::read_to_string("/proc/thread-self/status")?;
        Self::parse(&status).ok_or_else(|| io::Error::other("no Cap* lines in status"))
    }
}

impl fmt::Display for ProcCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CapInh={:016x} CapPrm={:016x} CapEff={:016x} CapBnd={:016x} CapAmb={:016x}",
            self.inheritable, self.permitted, self.effective, self.bounding, self.ambient
        )
    }
}

fn names(caps: &[Capability]) -> String {
    caps.iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The daemon's drop after setup: computes the kept set for `needs`, drops
/// the rest and logs the outcome. Never fatal: a daemon that cannot drop
/// (not root, no `CAP_SETPCAP`) keeps working with what it has.
pub fn drop_after_setup(needs: Needs) {
    if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1") {
        tracing::warn!("{KEEP_ENV}=1: keeping every capability (scripts run with them too)");
        return;
    }
    let keep = kept(needs, &bpf_capabilities());
    match drop_all_except(&keep) {
        Ok(report) => {
            DROPPED.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                kept = %names(&report.kept),
                effective = format_args!("{:016x}", report.after.effective),
                bounding = format_args!("{:016x}", report.after.bounding),
                "dropped capabilities not needed after setup"
            );
            if report.bounding_unchanged {
                tracing::warn!(
                    "no CAP_SETPCAP: the bounding set stays as it was, so root scripts regain it when they run"
                );
            }
            if report.privileged_threads > 0 {
                tracing::debug!(
                    threads = report.privileged_threads,
                    "threads started before the drop keep their capabilities until they exit"
                );
            }
        }
        Err(error) => tracing::warn!(
            error = %crate::error_chain(&error),
            "could not drop capabilities; running with all of them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kept_sets() {
        let none = Needs {
            switch_user: false,
            kill_other_users: false,
        };
        let bpf = [Capability::CAP_BPF, Capability::CAP_PERFMON];
        assert_eq!(
            kept(none, &bpf),
            [
                Capability::CAP_NET_ADMIN,
                Capability::CAP_NET_RAW,
                Capability::CAP_PERFMON,
                Capability::CAP_BPF
            ]
        );
        assert_eq!(
            mask(&kept(none, &bpf)),
            (1 << 12) | (1 << 13) | (1 << 38) | (1 << 39)
        );
        assert_eq!(
            kept(Needs::ALL, &[Capability::CAP_SYS_ADMIN]),
            [
                Capability::CAP_KILL,
                Capability::CAP_SETGID,
                Capability::CAP_SETUID,
                Capability::CAP_NET_ADMIN,
                Capability::CAP_NET_RAW,
                Capability::CAP_SYS_ADMIN,
            ]
        );
        let root = ScriptPolicy::default();
        assert_eq!(Needs::of_policy(&root), none);
        let nobody = ScriptPolicy {
            security: true,
            uid: 65534,
            gid: 65534,
        };
        assert_eq!(Needs::of_policy(&nobody), Needs::ALL);
        let root_other_group = ScriptPolicy {
            security: true,
            uid: 0,
            gid: 4,
        };
        assert_eq!(
            Needs::of_policy(&root_other_group),
            Needs {
                switch_user: true,
                kill_other_users: false
            }
        );
    }

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                      CapEff:\t0000008000003000\nCapBnd:\t0000008000003000\nCapAmb:\t0000000000000000\n";
        let caps = ProcCaps::parse(status).unwrap();
        assert_eq!(caps.permitted, 0x1fffeffffff);
        assert_eq!(caps.effective, 0x8000003000);
        assert_eq!(caps.bounding, 0x8000003000);
        assert!(ProcCaps::parse("Name:\tx\n").is_none());
        assert!(ProcCaps::of_thread().is_ok());
    }

    /// Environment variable that turns [`drop_child`] into the child half
    /// of [`drop_in_a_child_process`]; its value is the mask to keep.
    const CHILD_ENV: &str = "LBHA_TEST_CAPS_CHILD";

    /// Runs `test` of this test binary alone in a child process (so the
    /// drop never touches the test runner) and returns its output.
    fn run_child(test: &str, keep: u64) -> String {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{keep:x}"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "child failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn field<'a>(output: &'a str, tag: &str) -> &'a str {
        output
            .lines()
            .find_map(|line| line.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} line in {output}"))
    }

    fn has_setpcap() -> bool {
        ProcCaps::of_thread().is_ok_and(|caps| caps.effective & (1 << 8) != 0)
    }

    /// The child half of [`drop_in_a_child_process`]: drops, then prints
    /// its own sets and those a root grandchild gets after `execve`.
    #[test]
    fn drop_child() {
        let Some(keep) = std::env::var(CHILD_ENV).ok() else {
            return;
        };
        let keep = caps_in_mask(&keep);
        let report = drop_all_except(&keep).unwrap();
        // libtest has printed "test NAME ... " on this line.
        println!("\nCHILD {}", report.after);
        println!("CHILD-KEPT {}", names(&report.kept));
        println!("CHILD-BOUNDING-UNCHANGED {}", report.bounding_unchanged);
        let grandchild = Command::new("cat")
            .arg("/proc/self/status")
            .output()
            .unwrap();
        let status = String::from_utf8(grandchild.stdout).unwrap();
        println!("GRANDCHILD {}", ProcCaps::parse(&status).unwrap());
    }

    /// The capabilities of a hex mask (how the parent passes the kept set).
    fn caps_in_mask(hex: &str) -> Vec<Capability> {
        let mask = u64::from_str_radix(hex, 16).unwrap();
        ::caps::all()
            .into_iter()
            .filter(|cap| mask & cap.bitmask() != 0)
            .collect()
    }

    fn parse_line(line: &str) -> ProcCaps {
        let status = line.replace(' ', "\n").replace('=', ":");
        ProcCaps::parse(&status).unwrap()
    }

    #[test]
    fn drop_in_a_child_process() {
        if !lbha_harness::require_privilege(has_setpcap(), "CAP_SETPCAP (run as root)") {
            return;
        }
        let before = ProcCaps::of_thread().unwrap();
        let needs = Needs {
            switch_user: true,
            kill_other_users: false,
        };
        let keep = mask(&kept(needs, &bpf_capabilities()));
        let output = run_child("ops::caps::tests::drop_child", keep);
        eprintln!("runner before: {before}\n{output}");
        let child = parse_line(field(&output, "CHILD "));
        let expected = before.permitted & keep;
        assert_eq!(child.effective, expected, "{output}");
        assert_eq!(child.permitted, expected, "{output}");
        assert_eq!(child.inheritable, 0, "{output}");
        assert_eq!(child.ambient, 0, "{output}");
        assert_eq!(child.bounding, before.bounding & keep, "{output}");
        assert_eq!(field(&output, "CHILD-BOUNDING-UNCHANGED "), "false");
        // A root grandchild regains its bounding set on execve: the kept
        // set, nothing more.
        let grandchild = parse_line(field(&output, "GRANDCHILD "));
        assert_eq!(grandchild.effective, before.bounding & keep, "{output}");
        assert_eq!(grandchild.bounding, before.bounding & keep, "{output}");
        // The test runner itself is untouched.
        assert_eq!(ProcCaps::of_thread().unwrap(), before);
    }

    /// The child half of [`kept_set_suffices_after_setup`]: in a network
    /// namespace of its own, drops to the daemon's kept set and then does
    /// what the daemon does after setup, and what a reload would do.
    #[test]
    fn after_setup_child() {
        use crate::{
            config::ReceivePathChoice,
            recv::{AdvertReceiver, SteadyAdverts},
            vrrp::net::{Addresses, AdvertSocket, GarpSender},
        };
        use lbha_common::{VridConfig, event::VridKey, vrrp::AUTH_NONE};
        use std::net::Ipv4Addr;

        let Some(keep) = std::env::var(CHILD_ENV).ok() else {
            return;
        };
        let keep = caps_in_mask(&keep);
        // SAFETY: plain syscall; this process is the child alone.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        let report = drop_all_except(&keep).unwrap();
        println!("\nCHILD {}", report.after);
        println!("CHILD-KEPT {}", names(&report.kept));

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let vrids = [(VridKey::v4(51), VridConfig::new(3, AUTH_NONE, [0; 8]))];
            let receiver = AdvertReceiver::open(
                "lo",
                &vrids,
                ReceivePathChoice::Xdp,
                None,
                SteadyAdverts::MapOnly,
            )
            .expect("XDP attach with the kept set");
            println!("XDP {}", receiver.path_name());
            let counters = receiver.counters().expect("reading the counter map");
            println!("COUNTERS {}", counters.iter().count());
            let raw = AdvertReceiver::open(
                "lo",
                &vrids,
                ReceivePathChoice::Raw,
                None,
                SteadyAdverts::MapOnly,
            )
            .expect("raw receive socket");
            println!("RAW {}", raw.path_name());
            AdvertSocket::open("lo", false).expect("advert socket");
            println!("SENDER ok");
            let vip = (std::net::IpAddr::from(Ipv4Addr::new(10, 99, 0, 1)), 32);
            let addresses = Addresses::open().unwrap();
            addresses.add("lo", vip).await.expect("netlink add");
            addresses.remove("lo", vip).await.expect("netlink remove");
            println!("NETLINK ok");
            GarpSender::open("lo")
                .and_then(|garp| garp.send(&[vip.0]))
                .expect("gratuitous ARP");
            println!("GARP ok");
        });
        // What was dropped stays dropped: a new namespace needs CAP_SYS_ADMIN.
        // SAFETY: as above.
        let again = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        println!("UNSHARE {}", if again == 0 { "allowed" } else { "refused" });
    }

    #[test]
    fn kept_set_suffices_after_setup() {
        if !lbha_harness::require_privilege(has_setpcap(), "root (CAP_SETPCAP, CAP_SYS_ADMIN, BPF)")
        {
            return;
        }
        let bpf = bpf_capabilities();
        let needs = Needs {
            switch_user: false,
            kill_other_users: false,
        };
        let output = run_child(
            "ops::caps::tests::after_setup_child",
            mask(&kept(needs, &bpf)),
        );
        eprintln!("{output}");
        for tag in ["XDP ", "COUNTERS ", "RAW ", "SENDER ", "NETLINK ", "GARP "] {
            field(&output, tag);
        }
        if bpf.contains(&Capability::CAP_BPF) {
            assert_eq!(field(&output, "UNSHARE "), "refused", "{output}");
        }
    }
}
