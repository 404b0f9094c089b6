//! Prometheus metrics over HTTP (`GET /metrics`), off unless a listen
//! address is configured. The exposition is rendered from a [`Telemetry`]
//! snapshot at scrape time, so scrapes never wake the VRRP tasks.

use std::{fmt::Write, net::SocketAddr};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

use super::{ADVERT_LATENESS_BUCKETS, CHECK_BUCKETS, FAILOVER_BUCKETS, Histogram, Telemetry};

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric family with one label: its header, then one sample per
/// (label value, value).
fn family<'a, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, V)>,
) {
    header(out, name, kind, help);
    for (key, value) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape(key));
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    label: &str,
    value: &str,
    bounds: &[f64],
    h: &Histogram,
) {
    for (bound, count) in bounds.iter().zip(&h.counts) {
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{}\",le=\"{bound}\"}} {count}",
            escape(value)
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}=\"{}\",le=\"+Inf\"}} {}",
        escape(value),
        h.count
    );
    let _ = writeln!(out, "{name}_sum{{{label}=\"{}\"}} {}", escape(value), h.sum);
    let _ = writeln!(
        out,
        "{name}_count{{{label}=\"{}\"}} {}",
        escape(value),
        h.count
    );
}

const STATES: [&str; 4] = ["INIT", "BACKUP", "MASTER", "FAULT"];

/// The Prometheus text exposition of everything the agent knows.
pub fn render(telemetry: &Telemetry) -> String {
    let status = telemetry.snapshot();
    let (failover, latency) = telemetry.histograms();
    let mut out = String::new();

    header(
        &mut out,
        "lbha_vrrp_state",
        "gauge",
        "1 for the state the instance is in.",
    );
    for i in &status.instances {
        for state in STATES {
            let _ = writeln!(
                out,
                "lbha_vrrp_state{{instance=\"{}\",state=\"{state}\"}} {}",
                escape(&i.name),
                u8::from(i.state == state)
            );
        }
    }
    family(
        &mut out,
        "lbha_vrrp_priority",
        "gauge",
        "Effective priority (after tracked checks).",
        "instance",
        status
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.priority)),
    );
    family(
        &mut out,
        "lbha_vrrp_transitions_total",
        "counter",
        "State transitions.",
        "instance",
        status
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i.transitions)),
    );
    family(
        &mut out,
        "lbha_vrrp_last_transition_timestamp_seconds",
        "gauge",
        "Unix time of the last state transition.",
        "instance",
        status.instances.iter().filter_map(|i| {
            let ms = i.last_transition_unix_ms?;
            Some((i.name.as_str(), format!("{:.3}", ms as f64 / 1000.0)))
        }),
    );
    header(
        &mut out,
        "lbha_vrrp_failover_duration_seconds",
        "histogram",
        "Time from the last advert of the previous master to this node becoming Master.",
    );
    for (name, h) in &failover {
        histogram(
            &mut out,
            "lbha_vrrp_failover_duration_seconds",
            "instance",
            name,
            &FAILOVER_BUCKETS,
            h,
        );
    }
    let lateness = telemetry.advert_lateness();
    header(
        &mut out,
        "lbha_vrrp_advert_lateness_seconds",
        "histogram",
        "How long after its deadline each advert went out while Master.",
    );
    for (name, (h, _)) in &lateness {
        histogram(
            &mut out,
            "lbha_vrrp_advert_lateness_seconds",
            "instance",
            name,
            &ADVERT_LATENESS_BUCKETS,
            h,
        );
    }
    family(
        &mut out,
        "lbha_vrrp_advert_lateness_max_seconds",
        "gauge",
        "The latest an advert went out after its deadline while Master.",
        "instance",
        lateness.iter().map(|(name, (_, max))| (name.as_str(), max)),
    );
    family(
        &mut out,
        "lbha_check_up",
        "gauge",
        "1 while the tracked check counts as up.",
        "check",
        status
            .checks
            .iter()
            .map(|c| (c.name.as_str(), u8::from(c.up))),
    );
    family(
        &mut out,
        "lbha_check_runs_total",
        "counter",
        "Check runs (process checks: evaluations).",
        "check",
        status.checks.iter().map(|c| (c.name.as_str(), c.runs)),
    );
    family(
        &mut out,
        "lbha_check_failures_total",
        "counter",
        "Check runs that failed.",
        "check",
        status.checks.iter().map(|c| (c.name.as_str(), c.failures)),
    );
    header(
        &mut out,
        "lbha_check_duration_seconds",
        "histogram",
        "How long one check run took.",
    );
    for (name, h) in &latency {
        histogram(
            &mut out,
            "lbha_check_duration_seconds",
            "check",
            name,
            &CHECK_BUCKETS,
            h,
        );
    }
    header(
        &mut out,
        "lbha_receive_path",
        "gauge",
        "1 for the receive path in use on the interface (xdp, xdp-skb, raw-socket).",
    );
    for i in &status.interfaces {
        let _ = writeln!(
            out,
            "lbha_receive_path{{interface=\"{}\",path=\"{}\"}} 1",
            escape(&i.name),
            escape(&i.receive_path)
        );
    }
    header(
        &mut out,
        "lbha_receive_program",
        "gauge",
        "1 for the receive program the kernel runs on the interface (full, no-timer, raw-socket).",
    );
    for i in &status.interfaces {
        let _ = writeln!(
            out,
            "lbha_receive_program{{interface=\"{}\",program=\"{}\"}} 1",
            escape(&i.name),
            escape(&i.program)
        );
    }
    family(
        &mut out,
        "lbha_xdp_pinned",
        "gauge",
        "1 when the interface's XDP program is pinned (stays attached across agent restarts).",
        "interface",
        status
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), u8::from(i.pinned))),
    );
    family(
        &mut out,
        "lbha_link_up",
        "gauge",
        "1 while the interface is up.",
        "interface",
        status
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), u8::from(i.link_up))),
    );
    header(
        &mut out,
        "lbha_packets_total",
        "counter",
        "Receive path counters: packets seen, adverts accepted, drops by reason, ring buffer, wakeups.",
    );
    for i in &status.interfaces {
        for (counter, value) in &i.counters {
            let _ = writeln!(
                out,
                "lbha_packets_total{{interface=\"{}\",counter=\"{}\"}} {value}",
                escape(&i.name),
                escape(counter)
            );
        }
    }
    family(
        &mut out,
        "lbha_loop_wakeups_total",
        "counter",
        "Times the interface's VRRP task woke up.",
        "interface",
        status
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.wakeups)),
    );
    family(
        &mut out,
        "lbha_vrrp_path_partitioned",
        "gauge",
        "1 while a Backup hears no adverts but the heartbeat shows the master alive.",
        "instance",
        status
            .instances
            .iter()
            .map(|i| (i.name.as_str(), u8::from(i.vrrp_path_partitioned))),
    );
    if let Some(h) = &status.heartbeat {
        family(
            &mut out,
            "lbha_heartbeat_packets_total",
            "counter",
            "Heartbeats received by outcome (accepted, or why refused), and send errors.",
            "outcome",
            h.packets.iter().map(|(k, v)| (k.as_str(), v)),
        );
        family(
            &mut out,
            "lbha_heartbeat_peer_up",
            "gauge",
            "1 while the peer's heartbeats arrive.",
            "peer",
            h.peers
                .iter()
                .map(|p| (p.address.as_str(), u8::from(p.alive))),
        );
    }
    header(
        &mut out,
        "lbha_config_reload_success",
        "gauge",
        "1 if the last configuration reload applied (or none was asked), 0 if it was refused.",
    );
    let reload = &status.reload;
    let _ = writeln!(
        out,
        "lbha_config_reload_success {}",
        u8::from(reload.reloads == 0 || reload.last_ok)
    );
    header(
        &mut out,
        "lbha_config_reload_failures_total",
        "counter",
        "Configuration reloads refused (the running configuration was kept).",
    );
    let _ = writeln!(out, "lbha_config_reload_failures_total {}", reload.failures);
    // The floating IPv4 and the reserved IPv6 share these families, kept
    // apart by `ip` and by `family` ("ipv4", "ipv6"); the API client (and
    // so its request counts) is one for both.
    let addresses: Vec<(&super::FloatingIpReport, &str)> = [
        (status.floating_ip.as_ref(), "ipv4"),
        (status.reserved_ipv6.as_ref(), "ipv6"),
    ]
    .into_iter()
    .filter_map(|(report, family)| Some((report?, family)))
    .collect();
    if let Some((any, _)) = addresses.first() {
        family(
            &mut out,
            "lbha_do_api_requests_total",
            "counter",
            "DigitalOcean API requests by outcome.",
            "outcome",
            any.api_calls
                .iter()
                .map(|(outcome, value)| (outcome.as_str(), value)),
        );
        type Value = fn(&super::FloatingIpReport) -> Option<u64>;
        let per_address: [(&str, &str, &str, Value); 3] = [
            (
                "lbha_floating_ip_assigns_total",
                "counter",
                "Floating IP (and reserved IPv6) assigns requested.",
                |f| Some(f.assigns),
            ),
            (
                "lbha_split_brain",
                "gauge",
                "1 while this Master yields the floating IP (or the reserved IPv6) to another Master that outranks it (split brain), else 0.",
                |f| Some(u64::from(f.yielding_to.is_some())),
            ),
            (
                "lbha_floating_ip_held",
                "gauge",
                "1 if this droplet holds the floating IP (or the reserved IPv6), 0 if not (absent: unknown).",
                |f| f.held_by_us.map(u64::from),
            ),
        ];
        for (name, kind, help, value) in per_address {
            header(&mut out, name, kind, help);
            for (f, family) in &addresses {
                if let Some(value) = value(f) {
                    let _ = writeln!(
                        out,
                        "{name}{{ip=\"{}\",family=\"{family}\"}} {value}",
                        escape(&f.ip)
                    );
                }
            }
        }
    }
    out
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, telemetry: Telemetry) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                continue;
            }
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let telemetry = telemetry.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(render(&telemetry))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                    }
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
#[path = "metrics_drift_tests.rs"]
mod drift_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use super::*;
    use crate::status::{InstanceStatus, Telemetry};

    #[test]
    fn exposition_has_types_and_labels() {
        let t = Telemetry::default();
        t.add_instance(InstanceStatus {
            name: "VI_\"1".into(),
            state: "BACKUP".into(),
            priority: 100,
            ..InstanceStatus::default()
        });
        t.add_interface(
            "eth1",
            "xdp",
            true,
            ("no-timer", "no bpf_timer in this kernel"),
        );
        t.update_interface("eth1", |i| {
            i.counters.insert("drop_bad_ttl".into(), 3);
        });
        t.transition(
            "VI_\"1",
            "MASTER",
            "master down",
            Some(Duration::from_millis(30)),
        );
        let text = render(&t);
        assert!(text.contains("# TYPE lbha_vrrp_state gauge"));
        assert!(
            text.contains(r#"lbha_vrrp_state{instance="VI_\"1",state="MASTER"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"lbha_vrrp_state{instance="VI_\"1",state="BACKUP"} 0"#));
        assert!(text.contains(r#"lbha_packets_total{interface="eth1",counter="drop_bad_ttl"} 3"#));
        assert!(text.contains(r#"lbha_receive_path{interface="eth1",path="xdp"} 1"#));
        assert!(text.contains(r#"lbha_receive_program{interface="eth1",program="no-timer"} 1"#));
        assert!(text.contains(r#"lbha_xdp_pinned{interface="eth1"} 1"#));
        assert!(text.contains(
            r#"lbha_vrrp_failover_duration_seconds_bucket{instance="VI_\"1",le="0.05"} 1"#
        ));
        assert!(text.contains(
            r#"lbha_vrrp_failover_duration_seconds_bucket{instance="VI_\"1",le="0.02"} 0"#
        ));
    }

    #[test]
    fn split_brain_gauge() {
        use crate::cloud::{FloatingIpStatus, Router, Yielding};
        let t = Telemetry::default();
        let (status, status_rx) = tokio::sync::watch::channel(FloatingIpStatus::default());
        let (_report, report_rx) = tokio::sync::watch::channel(None);
        t.set_floating_ip(
            "203.0.113.10".into(),
            "VI_1".into(),
            status_rx,
            report_rx,
            Arc::default(),
        );
        assert!(render(&t).contains(r#"lbha_split_brain{ip="203.0.113.10",family="ipv4"} 0"#));
        status.send_modify(|s| {
            s.master = true;
            s.yielding_to = Some(Yielding {
                droplet_id: 2,
                peer: Router {
                    priority: 200,
                    address: "10.0.0.1".parse().unwrap(),
                },
            });
        });
        let text = render(&t);
        assert!(text.contains("# TYPE lbha_split_brain gauge"), "{text}");
        assert!(
            text.contains(r#"lbha_split_brain{ip="203.0.113.10",family="ipv4"} 1"#),
            "{text}"
        );
    }

    /// The floating IPv4 and the reserved IPv6 in the same families, apart
    /// by `ip` and `family`; an IPv6-only agent has the IPv6's alone.
    #[test]
    fn both_addresses_are_kept_apart_by_family() {
        use crate::cloud::{ApiCallCounts, FloatingIpStatus};
        let t = Telemetry::default();
        let (v4, v4_rx) = tokio::sync::watch::channel(FloatingIpStatus::default());
        let (v6, v6_rx) = tokio::sync::watch::channel(FloatingIpStatus::default());
        let (_report, report_rx) = tokio::sync::watch::channel(None);
        let calls = Arc::new(ApiCallCounts::default());
        t.set_floating_ip(
            "203.0.113.10".into(),
            "VI_1".into(),
            v4_rx,
            report_rx.clone(),
            calls.clone(),
        );
        t.set_reserved_ipv6(
            "2604:a880:400:d1::7a2:1".into(),
            "VI_6".into(),
            v6_rx.clone(),
            report_rx.clone(),
            calls.clone(),
        );
        v4.send_modify(|s| s.assigns = 3);
        v6.send_modify(|s| {
            s.master = true;
            s.holder_known = Some(false);
            s.assigns = 1;
        });
        let text = render(&t);
        for line in [
            r#"lbha_floating_ip_assigns_total{ip="203.0.113.10",family="ipv4"} 3"#,
            r#"lbha_floating_ip_assigns_total{ip="2604:a880:400:d1::7a2:1",family="ipv6"} 1"#,
            r#"lbha_floating_ip_held{ip="2604:a880:400:d1::7a2:1",family="ipv6"} 0"#,
            r#"lbha_split_brain{ip="2604:a880:400:d1::7a2:1",family="ipv6"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"lbha_floating_ip_held{ip="203.0.113.10""#),
            "a Backup's is unknown"
        );
        for family in [
            "lbha_floating_ip_assigns_total",
            "lbha_do_api_requests_total",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        t.forget_addresses();
        t.set_reserved_ipv6(
            "2604:a880:400:d1::7a2:1".into(),
            "VI_6".into(),
            v6_rx,
            report_rx,
            calls,
        );
        let alone = render(&t);
        assert!(alone.contains(
            r#"lbha_floating_ip_assigns_total{ip="2604:a880:400:d1::7a2:1",family="ipv6"} 1"#
        ));
        assert!(alone.contains("# TYPE lbha_do_api_requests_total counter"));
        assert!(!alone.contains("203.0.113.10"), "{alone}");
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let t = Telemetry::default();
        t.add_check("haproxy");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = tokio::spawn(serve(addr, t));
        let client = reqwest::Client::new();
        let mut body = None;
        for _ in 0..50 {
            if let Ok(resp) = client.get(format!("http://{addr}/metrics")).send().await {
                body = Some(resp.text().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
        let body = body.expect("metrics answered");
        assert!(
            body.contains(r#"lbha_check_up{check="haproxy"} 1"#),
            "{body}"
        );
    }
}
