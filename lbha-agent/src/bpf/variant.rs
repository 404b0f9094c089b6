//! Which receive program this kernel can run, found by asking the kernel
//! (aya's feature probes load tiny programs and maps) rather than by its
//! version number: distributions backport BPF features, and a version says
//! nothing about the configuration.
//!
//! - **full**: the XDP fast path with the ring buffer (Linux 5.8) and the
//!   silence timer (`bpf_timer`, 5.15, swept with `bpf_loop`, 5.17): a
//!   backup following a healthy master sleeps until the kernel reports
//!   silence.
//! - **no-timer**: the same fast path without the timer: a backup wakes at
//!   its master-down deadlines and reads the kernel's `LAST_ADVERT` map, as
//!   on the raw-socket path (Debian 11's 5.10, RHEL 9's 5.14, Ubuntu
//!   22.04's 5.15).
//! - **raw-socket**: no XDP at all (no ring buffer, no XDP, no permission).

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// One probe's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Supported,
    Missing,
    /// The probe itself failed (e.g. no permission to load BPF).
    Failed(String),
}

impl Probe {
    fn from_result<E: std::fmt::Display>(result: Result<bool, E>) -> Self {
        match result {
            Ok(true) => Self::Supported,
            Ok(false) => Self::Missing,
            Err(error) => Self::Failed(error.to_string()),
        }
    }

    fn describe(&self, what: &str) -> String {
        match self {
            Probe::Supported => format!("{what} supported"),
            Probe::Missing => format!("no {what} in this kernel"),
            Probe::Failed(error) => format!("probing {what} failed: {error}"),
        }
    }
}

/// What the kernel offers the receive path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// XDP programs.
    pub xdp: Probe,
    /// `BPF_MAP_TYPE_RINGBUF` (Linux 5.8).
    pub ring_buf: Probe,
    /// `bpf_timer_init` from XDP programs (Linux 5.15).
    pub timer: Probe,
    /// `bpf_loop` (Linux 5.17), with which the timer's callback walks the
    /// VRIDs.
    pub loop_helper: Probe,
}

impl KernelFeatures {
    /// Asks the running kernel. Each probe loads a minimal program or map.
    pub fn probe() -> Self {
        super::raise_memlock_limit();
        Self {
            xdp: Probe::from_result(is_program_supported(ProgramType::Xdp)),
            ring_buf: Probe::from_result(is_map_supported(MapType::RingBuf)),
            timer: Probe::from_result(is_helper_supported(
                ProgramType::Xdp,
                BpfHelper::BPF_FUNC_timer_init,
            )),
            loop_helper: Probe::from_result(is_helper_supported(
                ProgramType::Xdp,
                BpfHelper::BPF_FUNC_loop,
            )),
        }
    }
}

/// An XDP program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Ring buffer, fast path and silence timer.
    Full,
    /// Ring buffer and fast path; user space keeps a backup's deadlines.
    NoTimer,
}

impl Variant {
    /// Best first.
    pub const ALL: [Variant; 2] = [Variant::Full, Variant::NoTimer];

    /// The program's name in the object (an `#[xdp]` function of lbha-ebpf).
    pub const fn program(self) -> &'static str {
        match self {
            Variant::Full => "lbha_xdp",
            Variant::NoTimer => "lbha_xdp_notimer",
        }
    }

    /// As `status` and the metrics show it.
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::NoTimer => "no-timer",
        }
    }

    /// Whether the program reports a VRID falling silent.
    pub const fn reports_silence(self) -> bool {
        matches!(self, Variant::Full)
    }

    /// The next variant to try when this one fails to load.
    pub const fn fallback(self) -> Option<Variant> {
        match self {
            Variant::Full => Some(Variant::NoTimer),
            Variant::NoTimer => None,
        }
    }
}

/// The program to run: an XDP variant, or the raw socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Xdp(Variant),
    RawSocket,
}

impl Program {
    pub const fn name(self) -> &'static str {
        match self {
            Program::Xdp(variant) => variant.name(),
            Program::RawSocket => "raw-socket",
        }
    }
}

/// A choice and why it was made, for the log and `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub program: Program,
    pub reason: String,
}

/// The best program `features` allow.
pub fn choose(features: &KernelFeatures) -> Choice {
    if features.xdp != Probe::Supported {
        return Choice {
            program: Program::RawSocket,
            reason: features.xdp.describe("XDP"),
        };
    }
    if features.ring_buf != Probe::Supported {
        return Choice {
            program: Program::RawSocket,
            reason: features.ring_buf.describe("BPF ring buffer"),
        };
    }
    let missing = [
        (&features.timer, "bpf_timer"),
        (&features.loop_helper, "bpf_loop"),
    ]
    .into_iter()
    .find(|(probe, _)| **probe != Probe::Supported);
    match missing {
        None => Choice {
            program: Program::Xdp(Variant::Full),
            reason: "BPF ring buffer, bpf_timer and bpf_loop supported".to_owned(),
        },
        Some((probe, what)) => Choice {
            program: Program::Xdp(Variant::NoTimer),
            reason: format!(
                "{}; backups keep their deadlines in user space",
                probe.describe(what)
            ),
        },
    }
}

/// The variants `features` allow, best first (what the tests run).
pub fn supported(features: &KernelFeatures) -> Vec<Variant> {
    match choose(features).program {
        Program::RawSocket => Vec::new(),
        Program::Xdp(best) => std::iter::successors(Some(best), |v| v.fallback()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(xdp: Probe, ring_buf: Probe, timer: Probe) -> KernelFeatures {
        with_loop(xdp, ring_buf, timer.clone(), timer)
    }

    fn with_loop(xdp: Probe, ring_buf: Probe, timer: Probe, loop_helper: Probe) -> KernelFeatures {
        KernelFeatures {
            xdp,
            ring_buf,
            timer,
            loop_helper,
        }
    }

    use Probe::{Missing, Supported};

    #[test]
    fn the_best_program_the_kernel_runs_is_chosen_with_its_reason() {
        let failed = || Probe::Failed("Operation not permitted".into());
        let cases = [
            // 5.17 and later (bookworm, trixie).
            (
                features(Supported, Supported, Supported),
                Program::Xdp(Variant::Full),
                "BPF ring buffer, bpf_timer and bpf_loop supported",
            ),
            // 5.15 and 5.16 (Ubuntu 22.04): timers, but nothing to sweep them with.
            (
                with_loop(Supported, Supported, Supported, Missing),
                Program::Xdp(Variant::NoTimer),
                "no bpf_loop in this kernel; backups keep their deadlines in user space",
            ),
            // 5.8 to 5.14 (bullseye, RHEL 9).
            (
                features(Supported, Supported, Missing),
                Program::Xdp(Variant::NoTimer),
                "no bpf_timer in this kernel; backups keep their deadlines in user space",
            ),
            (
                features(Supported, Supported, failed()),
                Program::Xdp(Variant::NoTimer),
                "probing bpf_timer failed: Operation not permitted; backups keep their deadlines in user space",
            ),
            // Before 5.8 (CentOS 7, RHEL 8's early kernels).
            (
                features(Supported, Missing, Missing),
                Program::RawSocket,
                "no BPF ring buffer in this kernel",
            ),
            (
                features(Missing, Supported, Supported),
                Program::RawSocket,
                "no XDP in this kernel",
            ),
            // No CAP_BPF: every probe fails.
            (
                features(failed(), failed(), failed()),
                Program::RawSocket,
                "probing XDP failed: Operation not permitted",
            ),
        ];
        for (features, program, reason) in cases {
            let choice = choose(&features);
            assert_eq!(choice.program, program, "{features:?}");
            assert_eq!(choice.reason, reason, "{features:?}");
        }
    }

    #[test]
    fn variants_fall_back_from_the_timer_to_none_and_name_their_programs() {
        assert_eq!(
            supported(&features(Supported, Supported, Supported)),
            [Variant::Full, Variant::NoTimer]
        );
        assert_eq!(
            supported(&features(Supported, Supported, Missing)),
            [Variant::NoTimer]
        );
        assert!(supported(&features(Supported, Missing, Supported)).is_empty());
        assert!(Variant::Full.reports_silence());
        assert!(!Variant::NoTimer.reports_silence());
        assert_eq!(Program::RawSocket.name(), "raw-socket");
        assert_eq!(Program::Xdp(Variant::NoTimer).name(), "no-timer");
    }
}
