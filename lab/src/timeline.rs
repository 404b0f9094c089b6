//! Reading lbha's log back into a timeline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A state transition lbha logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Since the lab started.
    pub at: Duration,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp as
/// tracing writes it (`2026-11-25T12:59:59.481789Z`).
pub fn unix_ms(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<u64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days as u64) * 86_400_000 + (hh * 3600 + mm * 60) * 1000 + (secs * 1000.0) as u64;
    Some(ms)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        rest.split_whitespace().next()
    }
}

/// The `state transition` lines of an lbha log, placed relative to `start`.
pub fn parse_transitions(log: &str, start: SystemTime) -> Vec<Transition> {
    let start_ms = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    log.lines()
        .filter(|l| l.contains("state transition"))
        .filter_map(|l| {
            let ms = unix_ms(l.split_whitespace().next()?)?;
            Some(Transition {
                at: Duration::from_millis(ms.saturating_sub(start_ms)),
                from: field(l, "from")?.to_owned(),
                to: field(l, "to")?.to_owned(),
                reason: field(l, "reason")?.to_owned(),
            })
        })
        .collect()
}

/// When `address` (e.g. `fd00:230:1::100`) was added (`true`) to or
/// removed (`false`) from an interface, from the output of `ip -ts monitor
/// address` run with `TZ=UTC` (`[2026-12-01T21:05:23.905048] 3: priv0
/// inet6 fd00:230:1::100/64 ...`, `[...] Deleted 3: ...`), placed relative
/// to `start`.
pub fn parse_address_changes(log: &str, address: &str, start: SystemTime) -> Vec<(Duration, bool)> {
    let start_ms = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let needle = format!(" {address}/");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let (stamp, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let ms = unix_ms(&format!("{stamp}Z"))?;
            Some((
                Duration::from_millis(ms.saturating_sub(start_ms)),
                !rest.starts_with("Deleted "),
            ))
        })
        .collect()
}

/// The assigns DigitalOcean accepted, from lbha's `assign action created`
/// lines: (droplet id, when the answer arrived: its `answered_unix_us`).
pub fn assign_answers(log: &str) -> Vec<(u64, SystemTime)> {
    log.lines()
        .filter(|l| l.contains("assign action created"))
        .filter_map(|l| {
            let droplet = field(l, "droplet_id")?.parse().ok()?;
            let us: u64 = field(l, "answered_unix_us")?.parse().ok()?;
            Some((droplet, UNIX_EPOCH + Duration::from_micros(us)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_changes_from_ip_monitor() {
        let log = "[2026-12-01T21:05:23.905048] 3: priv0    inet6 fd00:230:1::100/64 scope global nodad \n\
                   \x20      valid_lft forever preferred_lft forever\n\
                   [2026-12-01T21:05:24.000000] 3: priv0    inet6 fd00:230:1::1000/64 scope global nodad \n\
                   [2026-12-01T21:05:24.175323] Deleted 3: priv0    inet6 fd00:230:1::100/64 scope global nodad \n";
        let start =
            UNIX_EPOCH + Duration::from_millis(unix_ms("2026-12-01T21:05:23.000Z").unwrap());
        assert_eq!(
            parse_address_changes(log, "fd00:230:1::100", start),
            [
                (Duration::from_millis(905), true),
                (Duration::from_millis(1175), false)
            ]
        );
    }

    #[test]
    fn assign_answers_from_a_log() {
        let log = "2026-11-25T12:59:59.5Z  INFO lbha_agent::cloud::api: assign action created ip=203.0.113.10 droplet_id=1002 action_id=7 status=in-progress answered_unix_us=1795611599512345\n\
2026-11-25T12:59:59.6Z  INFO lbha_agent::cloud::floating_ip: floating IP assign requested ip=203.0.113.10 droplet_id=1002\n";
        assert_eq!(
            assign_answers(log),
            [(
                1002,
                UNIX_EPOCH + Duration::from_micros(1_795_611_599_512_345)
            )]
        );
    }

    #[test]
    fn rfc3339_to_unix_ms() {
        assert_eq!(unix_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            unix_ms("2026-11-25T12:59:59.481789Z"),
            Some(1_795_611_599_481)
        );
        assert_eq!(unix_ms("2024-02-29T00:00:01.5Z"), Some(1_709_164_801_500));
        assert_eq!(unix_ms("garbage"), None);
    }

    #[test]
    fn transitions_from_a_log() {
        let log = "2026-11-25T12:59:56.066512Z  INFO lbha_agent::daemon: interface ready\n\
2026-11-25T12:59:59.481789Z  INFO lbha_agent::vrrp::driver: state transition instance=VI_1 vrid=61 from=\"BACKUP\" to=\"MASTER\" reason=\"master down\" priority=150\n";
        let start = UNIX_EPOCH + Duration::from_secs(1795611599);
        let t = parse_transitions(log, start);
        assert_eq!(
            t,
            vec![Transition {
                at: Duration::from_millis(481),
                from: "BACKUP".into(),
                to: "MASTER".into(),
                reason: "master down".into(),
            }]
        );
    }
}
