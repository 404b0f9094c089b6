//! The log of API requests (`GET /_sim/requests`,
//! [`SimHandle::requests`](crate::SimHandle::requests)): what each carried
//! and when it came and went, for tests that check what a client sent (its
//! bodies, its `Authorization` header) and how it paced and overlapped its
//! calls. The counters in `/_sim/state` say how many; this says which.
//!
//! Bounded to [`REQUEST_LOG_LIMIT`] records (oldest go first), and kept out
//! of the state file, which is rewritten after every change: a lab run of
//! hours must not make each rewrite bigger.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How many requests the log keeps.
pub const REQUEST_LOG_LIMIT: usize = 10_000;

/// One API request (not `/_sim/`, not metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Order of arrival, from 0; keeps counting when old records go.
    pub seq: u64,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `METHOD /template`, the key of `api_calls`.
    pub endpoint: String,
    /// As received, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as (lossy) UTF-8.
    pub body: String,
    pub caller: SocketAddr,
    /// The API connection it came on (1, 2, ... in order of acceptance):
    /// requests with the same number shared a kept-alive connection.
    #[serde(default)]
    pub connection: u64,
    /// It came over TLS.
    #[serde(default)]
    pub tls: bool,
    /// Microseconds since the simulator started (the clock of
    /// `uptime_ms`), when the request had arrived whole.
    pub received_us: u64,
    /// When it was answered, dropped, or given up by the caller; `None`
    /// while it is still being served.
    pub finished_us: Option<u64>,
    /// The status answered (`"201"`), `"dropped"`, or `None` while being
    /// served or when the caller went away first.
    pub status: Option<String>,
}

/// The `x-request-id` the simulator answers request `seq` with, shaped like
/// DO's (a UUID).
pub fn request_id(seq: u64) -> String {
    format!("d0517e00-0000-4000-8000-{seq:012x}")
}

impl RequestRecord {
    /// The `x-request-id` this request was answered with.
    pub fn request_id(&self) -> String {
        request_id(self.seq)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `method` is the request's and its path starts with `path_prefix`.
    pub fn is(&self, method: &str, path_prefix: &str) -> bool {
        self.method == method && self.path.starts_with(path_prefix)
    }
}

#[derive(Debug, Default)]
pub struct RequestLog {
    records: VecDeque<RequestRecord>,
    next_seq: u64,
}

impl RequestLog {
    /// Logs `request`, which arrived at `now_us`; returns its `seq`. The
    /// log sets `seq`, `received_us`, `finished_us` and `status`.
    pub fn push(&mut self, mut request: RequestRecord, now_us: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() == REQUEST_LOG_LIMIT {
            self.records.pop_front();
        }
        request.seq = seq;
        request.received_us = now_us;
        request.finished_us = None;
        request.status = None;
        self.records.push_back(request);
        seq
    }

    /// Request `seq` ended at `now_us` with `status`; only its first end
    /// counts, and a record already gone from the log is left alone.
    pub fn finish(&mut self, seq: u64, status: Option<&str>, now_us: u64) {
        let Some(first) = self.records.front().map(|r| r.seq) else {
            return;
        };
        let Some(index) = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(record) = self.records.get_mut(index)
            && record.finished_us.is_none()
        {
            record.finished_us = Some(now_us);
            record.status = status.map(str::to_owned);
        }
    }

    pub fn records(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }
}

/// The most of `records` being served at once, each from `received_us` to
/// `finished_us` (one still being served counts until now and beyond). A
/// request that ends the moment another arrives does not overlap it.
pub fn max_concurrent<'a>(records: impl IntoIterator<Item = &'a RequestRecord>) -> usize {
    // +1 at arrival, -1 at the end; at equal times ends sort first.
    let mut events: Vec<(u64, i8)> = Vec::new();
    for record in records {
        events.push((record.received_us, 1));
        events.push((record.finished_us.unwrap_or(u64::MAX), -1));
    }
    events.sort_unstable();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, step) in events {
        now += i64::from(step);
        most = most.max(now);
    }
    most as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> RequestRecord {
        RequestRecord {
            // Set by the log.
            seq: 99,
            received_us: 99,
            finished_us: Some(99),
            status: Some("99".into()),
            method: method.into(),
            path: path.into(),
            endpoint: format!("{method} other"),
            headers: vec![("authorization".into(), "Bearer t".into())],
            body: String::new(),
            caller: "127.0.0.1:40000".parse().unwrap(),
            connection: 1,
            tls: false,
        }
    }

    fn timed(received_us: u64, finished_us: Option<u64>) -> RequestRecord {
        let mut log = RequestLog::default();
        log.push(request("POST", "/v2/x"), received_us);
        if let Some(at) = finished_us {
            log.finish(0, Some("201"), at);
        }
        log.records().remove(0)
    }

    #[test]
    fn records_in_order_and_finishes_once() {
        let mut log = RequestLog::default();
        assert_eq!(log.push(request("GET", "/v2/a"), 10), 0);
        assert_eq!(log.push(request("POST", "/v2/a/actions"), 20), 1);
        log.finish(1, Some("201"), 25);
        log.finish(1, Some("500"), 30);
        log.finish(0, None, 40);
        log.finish(7, Some("200"), 50);
        let records = log.records();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].seq, records[0].received_us), (0, 10));
        assert_eq!(
            (records[0].finished_us, records[0].status.as_deref()),
            (Some(40), None)
        );
        assert_eq!(
            (records[1].finished_us, records[1].status.as_deref()),
            (Some(25), Some("201")),
            "the first end counts"
        );
        assert!(records[1].is("POST", "/v2/a"));
        assert!(!records[1].is("GET", "/v2/a"));
        assert!(!records[1].is("POST", "/v2/b"));
        assert_eq!(records[1].header("Authorization"), Some("Bearer t"));
        assert_eq!(records[1].header("content-type"), None);
    }

    #[test]
    fn keeps_the_newest_records() {
        let mut log = RequestLog::default();
        for i in 0..REQUEST_LOG_LIMIT as u64 + 5 {
            log.push(request("GET", "/v2/a"), i);
        }
        // Old seqs are gone; finishing one must not touch another record.
        log.finish(2, Some("200"), 1);
        log.finish(REQUEST_LOG_LIMIT as u64 + 4, Some("200"), 99_999);
        let records = log.records();
        assert_eq!(records.len(), REQUEST_LOG_LIMIT);
        assert_eq!(records[0].seq, 5);
        assert!(
            records[..REQUEST_LOG_LIMIT - 1]
                .iter()
                .all(|r| r.status.is_none())
        );
        assert_eq!(records.last().unwrap().finished_us, Some(99_999));
    }

    #[test]
    fn concurrency_from_intervals() {
        assert_eq!(max_concurrent(&[]), 0);
        let one_after_another = [timed(0, Some(10)), timed(10, Some(20)), timed(30, Some(40))];
        assert_eq!(max_concurrent(&one_after_another), 1);
        let overlapping = [timed(0, Some(10)), timed(5, Some(20)), timed(8, Some(9))];
        assert_eq!(max_concurrent(&overlapping), 3);
        let unfinished = [timed(0, None), timed(1_000_000, Some(1_000_001))];
        assert_eq!(max_concurrent(&unfinished), 2);
    }
}
