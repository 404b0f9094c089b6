//! What failover will need from DigitalOcean, checked before it is needed:
//! once at daemon start (problems are logged as errors and shown by
//! `lbha-agent status`, but the agent starts: the API may only be down for
//! a moment) and by `lbha-agent check-cloud`.
//!
//! 1. `metadata`: the metadata service answers with this droplet's id (and
//!    agrees with a configured `droplet_id`).
//! 2. `read`: the token reads the IP (`GET /v2/{family}/{ip}`, scope
//!    `reserved_ip:read`) and the API shows its holder (DO leaves the
//!    droplet out for a token without `droplet:read`).
//! 3. `act`: the token may act on the IP (`POST .../actions`, scope
//!    `reserved_ip:update`). DigitalOcean has no dry run for actions, so the
//!    check sends an action of a type DO does not know, which changes
//!    nothing ([`ApiClient::probe_actions`]): 401/403 say the token may not
//!    act, a refusal of the body says it passed the scope check. That is as
//!    far as a probe goes; only a real assign proves one goes through.
//!
//! With a reserved IPv6 configured, two more: `ipv6` (the metadata service
//! shows a public IPv6 on this droplet: DigitalOcean assigns a reserved
//! IPv6 only to a droplet with IPv6 enabled) and `read_ipv6` (the token
//! reads it at `/v2/reserved_ipv6/{ip}`). Its actions are not probed: the
//! IPv4's probe already shows the token's `reserved_ip:update` scope, which
//! covers both (DO's spec).
//!
//! A 401 says the token is wrong, expired or revoked; a 403 names the
//! custom scope the endpoint needs (DigitalOcean's OpenAPI specification:
//! `reserved_ip:read` for the IP and its actions, `reserved_ip:update` to
//! act on it; `droplet:read` to see the holder).

use std::fmt;

use lbha_config::FloatingIpConfig;
use tracing::{error, info};

use super::{
    api::{ApiClient, ApiError, Holder, ProbeAnswer},
    metadata::MetadataClient,
};

/// The custom scopes failover needs, as DigitalOcean names them.
pub const READ_SCOPE: &str = "reserved_ip:read";
pub const UPDATE_SCOPE: &str = "reserved_ip:update";
pub const DROPLET_SCOPE: &str = "droplet:read";

/// One check's result: what was found, and whether it is a problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// `metadata`, `read` or `act`.
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.detail)
    }
}

/// Every check, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudReport {
    pub checks: Vec<Check>,
}

impl CloudReport {
    /// The checks that found a problem.
    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// Runs the three checks for `settings` with these clients.
pub async fn check_cloud(
    settings: &FloatingIpConfig,
    metadata: &MetadataClient,
    api: &ApiClient,
) -> CloudReport {
    let (metadata_check, droplet) = match metadata.droplet_id().await {
        Ok(id) => match settings.droplet_id {
            Some(configured) if configured != id => (
                problem(
                    "metadata",
                    format!(
                        "the metadata service says this is droplet {id}, but droplet_id = {configured} is configured: lbha would assign the IP to the wrong droplet"
                    ),
                ),
                Some(configured),
            ),
            _ => (
                ok(
                    "metadata",
                    format!("this is droplet {id} ({})", metadata.base_url()),
                ),
                Some(id),
            ),
        },
        Err(e) => (
            problem(
                "metadata",
                match settings.droplet_id {
                    Some(id) => format!(
                        "{e}; droplet_id = {id} is configured, so failover can go on, asking the API who holds the IP"
                    ),
                    None => format!(
                        "{e}; without it (or droplet_id in the configuration) lbha cannot tell which droplet to assign the IP to"
                    ),
                },
            ),
            settings.droplet_id,
        ),
    };

    let mut checks = vec![metadata_check];
    // A reserved IPv6 alone (an IPv6-only service) has no IPv4 to read or
    // act on.
    if let Some(ip) = settings.ip {
        checks.extend(check_floating_ipv4(ip, droplet, api).await);
    }
    if let Some(v6) = &settings.reserved_ipv6 {
        checks.extend(check_reserved_ipv6(v6.address, droplet, metadata, api).await);
    }
    CloudReport { checks }
}

/// `read` and `act` for floating IPv4 `ip`.
async fn check_floating_ipv4(
    ip: std::net::Ipv4Addr,
    droplet: Option<u64>,
    api: &ApiClient,
) -> [Check; 2] {
    let read_check = match api.holder(ip).await {
        Ok(Holder::Unknown) => problem(
            "read",
            format!(
                "the token reads {ip}, but the API does not show who holds it: the token lacks the {DROPLET_SCOPE} scope (DigitalOcean then leaves the droplet out), so lbha has only the metadata service to tell whether the IP is ours"
            ),
        ),
        Ok(holder) => {
            let ours = match (holder, droplet) {
                (Holder::Droplet(h), Some(d)) if h == d => " (this droplet)",
                _ => "",
            };
            ok("read", format!("the token reads {ip}: {holder}{ours}"))
        }
        Err(e) => problem("read", explain(&e, READ_SCOPE, ip.into())),
    };

    let act_check = match api.probe_actions(ip).await {
        Ok(ProbeAnswer::Refused { status }) => ok(
            "act",
            format!(
                "the token passed the {UPDATE_SCOPE} scope check on {ip}'s actions (an action of a type DigitalOcean does not know was refused with HTTP {status}; nothing changed). DigitalOcean has no dry run: only a real assign proves one goes through"
            ),
        ),
        Ok(ProbeAnswer::Accepted) => problem(
            "act",
            format!(
                "DigitalOcean accepted an action of a type it should not know on {ip}; check the IP's actions in the control panel, and whether --do-api-url points at DigitalOcean"
            ),
        ),
        Err(e) => problem("act", explain(&e, UPDATE_SCOPE, ip.into())),
    };
    [read_check, act_check]
}

/// `ipv6` and `read_ipv6` for reserved IPv6 `ip`.
async fn check_reserved_ipv6(
    ip: std::net::Ipv6Addr,
    droplet: Option<u64>,
    metadata: &MetadataClient,
    api: &ApiClient,
) -> [Check; 2] {
    let ipv6_check = match metadata.public_ipv6().await {
        Ok(Some(address)) => ok("ipv6", format!("this droplet's public IPv6 is {address}")),
        Ok(None) => problem(
            "ipv6",
            format!(
                "the metadata service shows no public IPv6 on this droplet, but reserved_ipv6 = {ip} is configured: DigitalOcean routes a reserved IPv6 only to a droplet with IPv6 enabled (enable it in the control panel: Networking > IPv6), so assigning it here will fail or not carry traffic"
            ),
        ),
        Err(e) => problem(
            "ipv6",
            format!("cannot tell whether this droplet has IPv6 enabled: {e}"),
        ),
    };
    let read_check = match api.holder(ip).await {
        Ok(Holder::Unknown) => problem(
            "read_ipv6",
            format!(
                "the token reads {ip}, but the API does not show who holds it: the token lacks the {DROPLET_SCOPE} scope, and for a reserved IPv6 lbha has no metadata to fall back on"
            ),
        ),
        Ok(holder) => {
            let ours = match (holder, droplet) {
                (Holder::Droplet(h), Some(d)) if h == d => " (this droplet)",
                _ => "",
            };
            ok("read_ipv6", format!("the token reads {ip}: {holder}{ours}"))
        }
        Err(e) => problem("read_ipv6", explain(&e, READ_SCOPE, ip.into())),
    };
    [ipv6_check, read_check]
}

/// [`check_cloud`] at daemon start: every problem logged as an error, and
/// the report for `lbha-agent status`.
pub async fn check_at_start(
    settings: FloatingIpConfig,
    metadata: MetadataClient,
    api: ApiClient,
) -> CloudReport {
    let report = check_cloud(&settings, &metadata, &api).await;
    let problems = report.problems().count();
    let ip = settings.describe();
    for check in report.problems() {
        error!(%ip, check = check.name, problem = %check.detail, "floating IP failover may not work");
    }
    if problems == 0 {
        info!(%ip, "DigitalOcean checks passed: metadata answers, the token reads the IP and its holder and may act on it");
    } else {
        error!(%ip, problems, "DigitalOcean checks found problems at start; the agent runs anyway (see `lbha-agent status`, `lbha-agent check-cloud`)");
    }
    report
}

/// What an API error says about the token: a 401 or 403 named as such.
fn explain(e: &ApiError, scope: &str, ip: std::net::IpAddr) -> String {
    match e.status() {
        Some(401) => format!("the API does not accept the token (wrong, expired or revoked): {e}"),
        Some(403) => format!("the token lacks the {scope} scope: {e}"),
        Some(404) => format!("the API knows no floating IP {ip} in this team: {e}"),
        _ => e.to_string(),
    }
}

fn ok(name: &'static str, detail: String) -> Check {
    Check {
        name,
        ok: true,
        detail,
    }
}

fn problem(name: &'static str, detail: String) -> Check {
    Check {
        name,
        ok: false,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lbha_dosim::{FaultsUpdate, ScriptedFault};

    use super::*;
    use crate::cloud::{
        api::ApiOptions,
        floating_ip::api_options,
        secret::Secret,
        test_support::{IP, OTHER_DROPLET, OUR_DROPLET, Sim, TOKEN, capture_logs, metadata_hangs},
    };
    use crate::config::TokenSource;

    fn settings(sim: &Sim) -> FloatingIpConfig {
        FloatingIpConfig {
            api_url: sim.api_url(),
            metadata_url: sim.metadata_url(),
            operation_deadline: Duration::from_secs(2),
            request_timeout: Duration::from_millis(500),
            metadata_timeout: Duration::from_millis(200),
            ..FloatingIpConfig::new(IP, TokenSource::Env("LBHA_UNUSED_IN_TESTS".into()))
        }
    }

    async fn report(settings: &FloatingIpConfig) -> CloudReport {
        let api = ApiClient::new(
            ApiOptions {
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                ..api_options(settings)
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let metadata =
            MetadataClient::with_timeout(settings.metadata_url.clone(), settings.metadata_timeout)
                .unwrap();
        check_cloud(settings, &metadata, &api).await
    }

    fn scopes(scopes: &[&str]) -> FaultsUpdate {
        FaultsUpdate {
            token_scopes: Some(Some(
                scopes
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
            )),
            ..FaultsUpdate::default()
        }
    }

    /// (name, ok) of every check, and the problems' text.
    fn verdicts(report: &CloudReport) -> (Vec<(&'static str, bool)>, String) {
        let verdicts = report.checks.iter().map(|c| (c.name, c.ok)).collect();
        let problems = report
            .problems()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        (verdicts, problems)
    }

    #[tokio::test]
    async fn a_full_token_passes_without_changing_anything() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let report = report(&settings(&sim)).await;
        let (verdicts, problems) = verdicts(&report);
        assert_eq!(
            verdicts,
            [("metadata", true), ("read", true), ("act", true)],
            "{problems}"
        );
        assert!(report.checks[0].detail.contains(&OUR_DROPLET.to_string()));
        assert!(
            report.checks[1].detail.contains("(this droplet)"),
            "{report:?}"
        );
        assert!(
            report.checks[2].detail.contains("no dry run"),
            "says what the probe cannot prove: {report:?}"
        );
        assert!(
            sim.state().actions.is_empty(),
            "the probe created an action"
        );
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    }

    /// A 403 names the custom scope the endpoint needs; a hidden holder
    /// names droplet:read.
    #[tokio::test]
    async fn missing_scopes_are_named() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        let cfg = settings(&sim);
        for (granted, failing, named) in [
            (&[UPDATE_SCOPE, DROPLET_SCOPE][..], "read", READ_SCOPE),
            (&[READ_SCOPE, DROPLET_SCOPE][..], "act", UPDATE_SCOPE),
            (&[READ_SCOPE, UPDATE_SCOPE][..], "read", DROPLET_SCOPE),
        ] {
            sim.faults(scopes(granted));
            let report = report(&cfg).await;
            let problems: Vec<_> = report.problems().collect();
            assert_eq!(problems.len(), 1, "{granted:?}: {report:?}");
            assert_eq!(problems[0].name, failing, "{granted:?}");
            assert!(
                problems[0].detail.contains(named),
                "{granted:?}: {}",
                problems[0]
            );
            assert!(!format!("{report:?}").contains(TOKEN));
        }
        assert!(sim.state().actions.is_empty());
    }

    #[tokio::test]
    async fn a_rejected_token_and_a_missing_metadata_service_are_problems() {
        let sim = Sim::start(None).await;
        sim.faults(metadata_hangs());
        sim.script(vec![
            ScriptedFault::error(401, "unauthorized", "Unable to authenticate you"),
            ScriptedFault::error(401, "unauthorized", "Unable to authenticate you"),
        ]);
        let report = report(&settings(&sim)).await;
        let (verdicts, problems) = verdicts(&report);
        assert_eq!(
            verdicts,
            [("metadata", false), ("read", false), ("act", false)]
        );
        assert!(problems.contains("cannot tell which droplet"), "{problems}");
        assert_eq!(
            problems.matches("wrong, expired or revoked").count(),
            2,
            "{problems}"
        );
    }

    /// At daemon start every problem is logged as an error, once, with the
    /// check's name, and never with the token.
    #[tokio::test]
    async fn problems_at_start_are_logged_as_errors() {
        let (_guard, logs) = capture_logs();
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        sim.faults(scopes(&[READ_SCOPE, UPDATE_SCOPE]));
        let cfg = settings(&sim);
        let api = ApiClient::new(api_options(&cfg), Secret::new(TOKEN)).unwrap();
        let metadata = MetadataClient::new(cfg.metadata_url.clone()).unwrap();
        let report = check_at_start(cfg, metadata, api).await;
        assert_eq!(report.problems().count(), 1, "{report:?}");
        let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 2, "the problem and the summary: {logs}");
        assert!(
            errors[0].contains("check=\"read\"") && errors[0].contains(DROPLET_SCOPE),
            "{logs}"
        );
        assert!(errors[1].contains("problems=1"), "{logs}");
        assert!(!logs.contains(TOKEN));
    }

    #[tokio::test]
    async fn a_configured_droplet_id_that_metadata_contradicts_is_a_problem() {
        let sim = Sim::start(None).await;
        let report = report(&FloatingIpConfig {
            droplet_id: Some(OTHER_DROPLET),
            ..settings(&sim)
        })
        .await;
        let (verdicts, problems) = verdicts(&report);
        assert_eq!(verdicts[0], ("metadata", false), "{problems}");
        assert!(problems.contains("wrong droplet"), "{problems}");
    }
}
