//! `lbha-agent check-cloud` against the DigitalOcean simulator, with the
//! daemon's configuration arguments (here a keepalived.conf and the
//! floating-IP flags): one line per check, exit status 0 only without a
//! problem, a 403 naming the missing scope, and the token nowhere.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Output,
};

use tokio::process::Command;

use lbha_dosim::{FaultsUpdate, SimConfig, SimHandle};

const TOKEN: &str = "dop_v1_c4ecc10ud0000000000000000000000000000000000000000000000000000";
const IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const DROPLET: u64 = 3164444;

async fn check_cloud(sim: &SimHandle, token_file: &std::path::Path) -> Output {
    check_cloud_at(&sim.api_url(), &[], sim, token_file).await
}

/// `check-cloud` against the API at `api_url`, with `extra` arguments.
async fn check_cloud_at(
    api_url: &str,
    extra: &[&std::ffi::OsStr],
    sim: &SimHandle,
    token_file: &std::path::Path,
) -> Output {
    let floating_ip = ["--floating-ip".into(), IP.to_string().into()];
    check_cloud_moving(&floating_ip, api_url, extra, sim, token_file).await
}

/// `check-cloud` for the addresses `moving` gives (`--floating-ip`,
/// `--reserved-ipv6`).
async fn check_cloud_moving(
    moving: &[std::ffi::OsString],
    api_url: &str,
    extra: &[&std::ffi::OsStr],
    sim: &SimHandle,
    token_file: &std::path::Path,
) -> Output {
    let keepalived = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/keepalived.conf");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lbha-agent"));
    command
        .args(["check-cloud", "--keepalived-conf", keepalived])
        .args(moving)
        .arg("--do-token-file")
        .arg(token_file)
        .args(["--do-api-url", api_url])
        .args(["--do-metadata-url", &sim.metadata_url()])
        .args(extra)
        .env("RUST_LOG", "warn");
    // The simulator serves on this thread while the command runs.
    command.output().await.unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// keepalived.conf users with an IPv6-only service: `--reserved-ipv6`
/// without `--floating-ip` checks the reserved IPv6 alone, and asks the
/// API nothing about floating IPv4s.
#[tokio::test]
async fn check_cloud_with_a_reserved_ipv6_alone() {
    let ipv6: std::net::Ipv6Addr = "2604:a880:400:d1::7a2:1".parse().unwrap();
    let sim = lbha_dosim::start(
        SimConfig::new(TOKEN)
            .droplet_dual(
                DROPLET,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "2604:a880:400:d1::1".parse().unwrap(),
            )
            .floating_ip(ipv6, Some(DROPLET)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let moving = ["--reserved-ipv6".into(), ipv6.to_string().into()];
    let output = check_cloud_moving(&moving, &sim.api_url(), &[], &sim, &token_file).await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok       "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .collect();
    assert_eq!(names, ["metadata", "ipv6", "read_ipv6"], "{stdout}");
    assert!(
        stdout.ends_with("2604:a880:400:d1::7a2:1: floating IP failover has what it needs\n"),
        "{stdout}"
    );
    let v4_paths: Vec<String> = sim
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with("/v2/floating_ips") || p.starts_with("/v2/reserved_ips"))
        .collect();
    assert!(v4_paths.is_empty(), "{v4_paths:?}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));

    // The instance it follows must exist, and must be given with the address.
    let unknown = [
        "--reserved-ipv6".into(),
        ipv6.to_string().into(),
        "--reserved-ipv6-instance".into(),
        "VI_9".into(),
    ];
    let refused = check_cloud_moving(&unknown, &sim.api_url(), &[], &sim, &token_file).await;
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert!(stderr.contains("VI_9"), "{stderr}");
    let lone = ["--reserved-ipv6-instance".into(), "VI_1".into()];
    let refused = check_cloud_moving(&lone, &sim.api_url(), &[], &sim, &token_file).await;
    let (_, stderr) = text(&refused);
    assert!(
        !refused.status.success() && stderr.contains("--reserved-ipv6"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_cloud_prints_each_check_and_fails_on_a_problem() {
    let sim = lbha_dosim::start(
        SimConfig::new(TOKEN)
            .droplet(DROPLET, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .floating_ip(IP, Some(DROPLET)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let passed = check_cloud(&sim, &token_file).await;
    let (stdout, stderr) = text(&passed);
    assert!(passed.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("ok       metadata: this is droplet 3164444"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(
            "ok       read: the token reads 203.0.113.10: droplet 3164444 (this droplet)"
        ),
        "{stdout}"
    );
    assert!(lines[2].starts_with("ok       act: "), "{stdout}");
    assert_eq!(
        lines[3],
        "203.0.113.10: floating IP failover has what it needs"
    );
    assert!(
        sim.state().actions.is_empty(),
        "the check created an action"
    );

    sim.set_faults(&FaultsUpdate {
        token_scopes: Some(Some(vec!["reserved_ip:read".into(), "droplet:read".into()])),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let failed = check_cloud(&sim, &token_file).await;
    let (stdout, stderr) = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok       read: "), "{stdout}");
    let act = stdout
        .lines()
        .find(|l| l.starts_with("PROBLEM  act: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        act.contains("lacks the reserved_ip:update scope") && act.contains("HTTP 403 forbidden"),
        "{act}"
    );
    assert!(
        stderr.contains("1 problem(s); floating IP failover may not work"),
        "{stderr}"
    );
    for output in [&passed, &failed] {
        let (stdout, stderr) = text(output);
        assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    }
}

#[tokio::test]
async fn check_cloud_reaches_an_https_api_through_the_ca_file() {
    let sim = lbha_dosim::start(
        SimConfig::new(TOKEN)
            .droplet(DROPLET, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .floating_ip(IP, Some(DROPLET))
            .tls(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem().unwrap()).unwrap();
    let url = sim.api_tls_url().unwrap();

    let trusted = check_cloud_at(
        &url,
        &["--do-ca-file".as_ref(), ca.as_os_str()],
        &sim,
        &token_file,
    )
    .await;
    let (stdout, stderr) = text(&trusted);
    assert!(trusted.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ok       read: the token reads"),
        "{stdout}"
    );
    assert!(sim.requests().iter().all(|r| r.tls), "over HTTPS only");

    // Without the CA the lab's certificate is nobody's: no API check passes.
    let untrusted = check_cloud_at(&url, &[], &sim, &token_file).await;
    let (stdout, stderr) = text(&untrusted);
    assert!(!untrusted.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("PROBLEM  read:"), "{stdout}");
    // Named as what it is, at once (not after the retries), without a panic.
    assert!(
        stdout.contains("TLS certificate was refused (UnknownIssuer)"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
}
