//! Fuzzes what the DigitalOcean API client makes of an answer: the real
//! decoders it runs on every response (`lbha_agent::cloud::api::response`),
//! against models written from the documented rules.
//!
//! Two modes, by the first input byte:
//!
//! * anything but NUL: the input is a 2xx response body (invalid UTF-8
//!   replaced, as reqwest's `text()` does), decoded as a bare `Action`, as
//!   the `{"action": {...}}` answer of an assign or an action poll
//!   (`decode_action`), as the answer of `GET /v2/{floating,reserved}_ips/{ip}`
//!   (`decode_holder`, both path families), and as a 422 error body
//!   (`check_status`).
//! * NUL: the rest describes a whole exchange: which request, the status
//!   code, the token, the time the answer came, headers (`Retry-After` as
//!   seconds, HTTP dates and garbage, `ratelimit-*` as numbers, epochs near
//!   "now" and garbage), then the body. The answer goes through
//!   `check_status` and, for a 2xx, the decoder of that request, as in the
//!   client.
//!
//! In a body, `$T` is replaced by the API token, `$Q` by the token as JSON
//! (or Rust's Debug) quotes it, `$U` by the token with its first character
//! `\u`-escaped, and `$B` by 20 KiB of text: the fuzzer plants the token where
//! a server echoing our request would, and makes bodies far longer than any
//! error message may be.
//!
//! Invariants: nothing panics; whenever the body is JSON that `serde_json`
//! can hold as a tree, decoding (success or failure, and every field) is
//! exactly what a model predicts:
//!
//! * `Action`: `id` is an unsigned integer, `status` a string: both
//!   required; `status` `in-progress`/`completed`/`errored` are known,
//!   anything else is kept verbatim as `Other`; `type`, `started_at`,
//!   `completed_at`, `resource_type`, `region_slug` are optional strings
//!   (`null` = absent); `resource_id` is never an error: an unsigned
//!   integer, or a string holding one, else absent; unknown keys are
//!   ignored, a known key twice is an error; the answer of an assign or poll
//!   is `{"action": <Action>}`;
//! * holder: the object under the path family's key (else the other
//!   family's) must be a JSON object; `"droplet": null` is unassigned; no
//!   `droplet` key, or a droplet object without an `id` (or with `"id":
//!   null`), is unknown (DO hides the droplet from a token without
//!   `droplet:read`: never "unassigned"); a droplet object's `id` must
//!   otherwise be an unsigned integer, and a `droplet` of another type is
//!   an error; `locked` is true only when it is `true`;
//! * status: 2xx is success; 429 waits what the headers say, else backs off;
//!   5xx backs off; a 422 whose message mentions "pending" is `Pending`
//!   (the client backs off 250 ms doubling to 5 s); anything else is
//!   `Rejected` with DO's `id` and `message` (or the status's reason and the
//!   raw body) and the request id: the body's `request_id` string, else the
//!   first `x-request-id` header; a retry summary ends in ` (request id X)`
//!   when there is one;
//! * rate-limit wait: `Retry-After` in seconds (`+`, surrounding blanks
//!   allowed; an HTTP date is not read), else `ratelimit-reset` minus now
//!   when `ratelimit-remaining` is 0; every wait is at least
//!   `MIN_RATE_LIMIT_WAIT` (a rate-limited client must not spin) and at most
//!   `MAX_RATE_LIMIT_WAIT`.
//!
//! And for every error and retry summary: the token, as sent or quoted, is
//! nowhere in its Display, Debug or source chain; every text that came from
//! the server is at most `MAX_SHOWN_TEXT` characters, and equals the server's
//! text (cut to that length) when that did not contain the token; Display and
//! Debug stay bounded however long the body. A decoded status prints as text
//! that decodes to the same status.

#![no_main]

use std::{
    error::Error,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use lbha_agent::{
    cloud::{
        Action, ActionStatus, ApiError, Holder, Secret,
        api::response::{self, Failure, MAX_RATE_LIMIT_WAIT, MAX_SHOWN_TEXT, MIN_RATE_LIMIT_WAIT},
    },
    config::PathFamily,
};
use libfuzzer_sys::fuzz_target;
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;

/// A token as DO issues them.
const DO_TOKEN: &str = "dop_v1_9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
/// A token the configuration would accept too (any visible ASCII): it
/// differs from its quoted form, and scrubbing it to `***` can re-form it.
const ODD_TOKEN: &str = "dop_v1_***\"tok\"***";

const IP: &str = "203.0.113.10";

fuzz_target!(|data: &[u8]| {
    if let [0, rest @ ..] = data {
        exchange(rest);
    } else {
        body_only(data);
    }
});

/// A 2xx body through every decoder, and as a 422 error body.
fn body_only(data: &[u8]) {
    let token = Token::new(DO_TOKEN);
    let text = token.plant(&String::from_utf8_lossy(data));
    let action = serde_json::from_str::<Action>(&text);
    if let Ok(action) = &action {
        check_status_round_trip(&action.status);
    }
    let post = action_path(PathFamily::FloatingIps);
    let envelope = response::decode_action(&Method::POST, &post, &text, &token.secret);
    match &envelope {
        Ok(action) => check_status_round_trip(&action.status),
        Err(e) => token.check_error(e, &post),
    }
    let holders = [PathFamily::FloatingIps, PathFamily::ReservedIps].map(|family| {
        let path = holder_path(family);
        let holder = response::decode_holder(family, &path, &text, &token.secret);
        if let Err(e) = &holder {
            token.check_error(e, &path);
        }
        (family, holder)
    });
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    check_failure(&token, &Method::POST, &post, status, &[], &text, UNIX_EPOCH);

    // The model needs the whole document as a tree; serde_json refuses
    // trees nested deeper than 128 while `Action` skips unknown values of
    // any depth, so such documents are only checked for not panicking.
    let Ok(json) = serde_json::from_str::<Json>(&text) else {
        return;
    };
    let expected = model_action(&json);
    assert_eq!(
        action.as_ref().ok(),
        expected.as_ref(),
        "Action decoding disagrees with the model for {text:?} (decoder: {action:?})"
    );
    let expected = model_envelope(&json);
    assert_eq!(
        envelope.as_ref().ok(),
        expected.as_ref(),
        "envelope decoding disagrees with the model for {text:?} (decoder: {envelope:?})"
    );
    let value = json.to_value();
    for (family, holder) in holders {
        let expected = model_holder(&value, family);
        assert_eq!(
            holder.as_ref().ok(),
            expected.as_ref(),
            "{family} holder decoding disagrees with the model for {text:?} (decoder: {holder:?})"
        );
    }
}

/// Which request an answer is for.
#[derive(Clone, Copy, Debug)]
enum Request {
    /// `POST /v2/{family}/{ip}/actions`: an assign.
    Assign,
    /// `GET /v2/{family}/{ip}/actions/{id}`: an action poll.
    Poll,
    /// `GET /v2/{family}/{ip}`.
    Holder(PathFamily),
}

/// Statuses DO (or a proxy in front of it) answers with.
const STATUSES: [u16; 16] = [
    200, 201, 202, 204, 301, 400, 401, 403, 404, 422, 429, 500, 502, 503, 504, 101,
];

/// Headers the client reads, and some it does not.
const HEADER_NAMES: [&str; 6] = [
    "retry-after",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-limit",
    "content-type",
    "x-request-id",
];

/// A whole exchange, as described in the module documentation.
fn exchange(data: &[u8]) {
    let mut input = Input(data);
    let request = match input.byte() % 4 {
        0 => Request::Assign,
        1 => Request::Poll,
        2 => Request::Holder(PathFamily::FloatingIps),
        _ => Request::Holder(PathFamily::ReservedIps),
    };
    let code = input.u16();
    let code = if (100..=999).contains(&code) {
        code
    } else {
        STATUSES[usize::from(code) % STATUSES.len()]
    };
    let status = StatusCode::from_u16(code).expect("100..=999 is a status code");
    let token = Token::new(if input.byte() & 1 == 0 {
        DO_TOKEN
    } else {
        ODD_TOKEN
    });
    // When the answer came: around today, or anywhere a SystemTime can be
    // (before 1970 included).
    let now_secs = match input.byte() % 4 {
        0 => 1_700_000_000 + i64::from(input.u16()),
        1 => i64::from(input.u32()) - i64::from(u32::MAX / 2),
        _ => input.u64() as i64,
    };
    let now_nanos = input.u32() % 1_000_000_000;
    let now = if now_secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(now_secs.unsigned_abs(), now_nanos))
    } else {
        UNIX_EPOCH.checked_sub(Duration::new(now_secs.unsigned_abs(), now_nanos))
    }
    .unwrap_or(UNIX_EPOCH);

    let mut headers = Vec::new();
    for _ in 0..input.byte() % 9 {
        let name = HEADER_NAMES[usize::from(input.byte()) % HEADER_NAMES.len()];
        let value = header_value(&mut input, now_secs);
        headers.push((name, value));
    }
    let body = token.plant(&String::from_utf8_lossy(input.0));

    let (method, path) = match request {
        Request::Assign => (Method::POST, action_path(PathFamily::FloatingIps)),
        Request::Poll => (
            Method::GET,
            format!("{}/7", action_path(PathFamily::FloatingIps)),
        ),
        Request::Holder(family) => (Method::GET, holder_path(family)),
    };
    if !check_failure(&token, &method, &path, status, &headers, &body, now) {
        return;
    }
    // A 2xx: the client decodes the body.
    let json = serde_json::from_str::<Json>(&body).ok();
    match request {
        Request::Assign | Request::Poll => {
            let decoded = response::decode_action(&method, &path, &body, &token.secret);
            if let Err(e) = &decoded {
                token.check_error(e, &path);
            }
            if let Some(json) = &json {
                assert_eq!(
                    decoded.as_ref().ok(),
                    model_envelope(json).as_ref(),
                    "action decoding disagrees with the model for {body:?} (decoder: {decoded:?})"
                );
            }
        }
        Request::Holder(family) => {
            let decoded = response::decode_holder(family, &path, &body, &token.secret);
            if let Err(e) = &decoded {
                token.check_error(e, &path);
            }
            // The client reads this body as a `serde_json::Value`, which has
            // the same depth limit as `Json`: a body too deep for the model
            // is an error.
            let expected = json.and_then(|json| model_holder(&json.to_value(), family));
            assert_eq!(
                decoded.as_ref().ok(),
                expected.as_ref(),
                "{family} holder decoding disagrees with the model for {body:?} (decoder: {decoded:?})"
            );
        }
    }
}

/// One header value, as raw bytes (`None` if `http` would refuse them).
fn header_value(input: &mut Input, now_secs: i64) -> Option<Vec<u8>> {
    let kind = input.byte();
    let text = match kind % 6 {
        // Anything, as a broken proxy might send.
        0 => {
            let len = usize::from(input.byte() % 48);
            return HeaderValue::from_bytes(input.take(len))
                .ok()
                .map(|v| v.as_bytes().to_vec());
        }
        1 => input.u64().to_string(),
        2 => input.byte().to_string(),
        // An epoch near now (a ratelimit-reset).
        3 => (now_secs.saturating_add(i64::from(input.u16() as i16))).to_string(),
        // An HTTP date near now (a Retry-After as RFC 9110 also allows).
        4 => {
            let at = now_secs.saturating_add(i64::from(input.u16() as i16));
            http_date(at, input.byte())
        }
        _ => u64::MAX.to_string() + &input.byte().to_string(),
    };
    // Decorations a lenient or a broken server may add.
    let deco = input.byte();
    let mut value = String::new();
    if deco & 1 != 0 {
        value.push(' ');
    }
    if deco & 2 != 0 {
        value.push('+');
    }
    if deco & 4 != 0 {
        value.push_str("00");
    }
    if deco & 8 != 0 {
        value.push('-');
    }
    value.push_str(&text);
    if deco & 16 != 0 {
        value.push_str(".5");
    }
    if deco & 32 != 0 {
        value.push('\t');
    }
    if deco & 64 != 0 {
        value.push(',');
        value.push_str(&text);
    }
    Some(value.into_bytes())
}

/// `at` (unix seconds) as an HTTP date: IMF-fixdate, or by `style` the
/// obsolete RFC 850 and asctime forms.
fn http_date(at: i64, style: u8) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const LONG_DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = days.rem_euclid(7) as usize;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = MONTHS[(month - 1) as usize];
    match style % 3 {
        0 => format!(
            "{}, {day:02} {mon} {year:04} {hh:02}:{mm:02}:{ss:02} GMT",
            DAYS[weekday]
        ),
        1 => format!(
            "{}, {day:02}-{mon}-{:02} {hh:02}:{mm:02}:{ss:02} GMT",
            LONG_DAYS[weekday],
            year.rem_euclid(100)
        ),
        _ => format!(
            "{} {mon} {day:>2} {hh:02}:{mm:02}:{ss:02} {year}",
            DAYS[weekday]
        ),
    }
}

/// Runs `check_status` on an answer and checks its verdict against the
/// model; true when it is a success (the body is then to be decoded).
fn check_failure(
    token: &Token,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &[(&'static str, Option<Vec<u8>>)],
    body: &str,
    now: SystemTime,
) -> bool {
    let mut map = HeaderMap::new();
    let mut sent = Vec::new();
    for (name, value) in headers {
        if let Some(value) = value {
            let value = HeaderValue::from_bytes(value).expect("checked bytes");
            map.append(HeaderName::from_static(name), value.clone());
            sent.push((*name, value));
        }
    }
    let verdict = response::check_status(method, path, status, &map, body, &token.secret, now);

    // The rate-limit wait on its own, for any status.
    let wait = response::rate_limit_wait(&map, now);
    let expected_wait = model_wait(&sent, now);
    assert_eq!(
        wait, expected_wait,
        "rate-limit wait disagrees with the model for {sent:?} at {now:?}"
    );
    if let Some(wait) = wait {
        assert!(
            (MIN_RATE_LIMIT_WAIT..=MAX_RATE_LIMIT_WAIT).contains(&wait),
            "wait {wait:?} out of bounds for {sent:?}"
        );
    }

    if status.is_success() {
        assert!(verdict.is_ok(), "{status} is not a success: {verdict:?}");
        return true;
    }
    // DO's id and message, as the client reads and shows them.
    let (id, message) = response::error_body(status, body, &token.secret);
    let (model_id, model_message) = model_error_body(status, body);
    for (shown, original) in [(&id, &model_id), (&message, &model_message)] {
        match original {
            Some(original) => token.check_shown(original, shown),
            None => token.check_text(shown, "text"),
        }
    }
    // DO's request id, kept for support tickets.
    let request_id = response::request_id(&map, body, &token.secret);
    match (model_request_id(&map, body), &request_id) {
        (Some(Some(original)), Some(shown)) => token.check_shown(&original, shown),
        (Some(None), None) | (None, _) => {}
        (expected, got) => panic!("request id {got:?}, expected {expected:?} for {body:?}"),
    }
    if let Some(shown) = &request_id {
        token.check_text(shown, "request id");
    }
    let mut expected_summary = format!("HTTP {} {id}: {message}", status.as_u16());
    if let Some(request_id) = &request_id {
        expected_summary.push_str(&format!(" (request id {request_id})"));
    }
    let err = verdict.expect_err("not a 2xx");
    match &err {
        Failure::Transient(summary)
        | Failure::RetryAfter(_, summary)
        | Failure::Pending(summary) => {
            token.check_text(summary, "summary");
            assert_eq!(*summary, expected_summary);
        }
        Failure::Fatal(e) => {
            token.check_error(e, path);
            let ApiError::Rejected {
                method: m,
                path: p,
                status: s,
                id: i,
                message: msg,
                request_id: r,
            } = e
            else {
                panic!("{status} gave {e:?}");
            };
            assert_eq!(
                (m, p.as_str(), *s, i, msg, r.as_deref()),
                (method, path, status.as_u16(), &id, &message, request_id.as_deref())
            );
        }
    }
    let pending = status == StatusCode::UNPROCESSABLE_ENTITY
        && message.to_ascii_lowercase().contains("pending");
    match (&err, status.as_u16()) {
        (Failure::RetryAfter(wait, _), 429) => {
            assert_eq!(Some(*wait), expected_wait, "429 wait for {sent:?}")
        }
        (Failure::Transient(_), 429) => assert_eq!(expected_wait, None, "429 for {sent:?}"),
        (Failure::Transient(_), 500..=599) => {}
        (Failure::Pending(_), 422) if pending => {}
        (Failure::Fatal(_), code) if code != 429 && !status.is_server_error() && !pending => {}
        _ => panic!("{status} with {body:?} gave {err:?}"),
    }
    false
}

/// What the client's reading of an error body must give: DO's `id` and
/// `message`, or the status's reason and the raw body. `None` where the
/// model cannot say (a body too deep for it).
fn model_error_body(status: StatusCode, body: &str) -> (Option<String>, Option<String>) {
    let reason = || {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .replace(' ', "_")
    };
    let Ok(json) = serde_json::from_str::<Json>(body) else {
        // Not JSON at all, or too deep: only the former is sure to fall
        // back.
        return if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() {
            (Some(reason()), Some(body.to_owned()))
        } else {
            (None, None)
        };
    };
    let fields: [Option<&Json>; 2] = match &json {
        Json::Object(entries) => {
            let mut fields = [None; 2];
            for (key, value) in entries {
                let index = match key.as_str() {
                    "id" => 0,
                    "message" => 1,
                    _ => continue,
                };
                if fields[index].is_some() {
                    return (Some(reason()), Some(body.to_owned()));
                }
                fields[index] = Some(value);
            }
            fields
        }
        Json::Array(items) if items.len() <= 2 => std::array::from_fn(|i| items.get(i)),
        _ => return (Some(reason()), Some(body.to_owned())),
    };
    let (Some(id), Some(message)) = (model_opt_string(fields[0]), model_opt_string(fields[1]))
    else {
        return (Some(reason()), Some(body.to_owned()));
    };
    (
        Some(id.unwrap_or_else(reason)),
        Some(message.unwrap_or_else(|| body.to_owned())),
    )
}

/// The request id an error answer must carry: `Some(Some(id))` the body's
/// `request_id` if it is a JSON object whose (last) `request_id` is a
/// string, else the first `x-request-id` header if it is visible ASCII;
/// `Some(None)` neither; `None` where the model cannot say (a body too
/// deep for it).
fn model_request_id(headers: &HeaderMap, body: &str) -> Option<Option<String>> {
    let from_body = match serde_json::from_str::<Json>(body) {
        Ok(json) => match json.to_value() {
            Value::Object(obj) => match obj.get("request_id") {
                Some(Value::String(id)) => Some(id.clone()),
                _ => None,
            },
            _ => None,
        },
        // JSON, but too deep for the model.
        Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() => return None,
        Err(_) => None,
    };
    let from_header = || {
        let value = headers.get("x-request-id")?.as_bytes();
        value
            .iter()
            .all(|&b| b == b'\t' || (32..127).contains(&b))
            .then(|| String::from_utf8_lossy(value).into_owned())
    };
    Some(from_body.or_else(from_header))
}

/// What `rate_limit_wait` must give for these headers (in the order sent).
fn model_wait(headers: &[(&str, HeaderValue)], now: SystemTime) -> Option<Duration> {
    // The first value of a header, as an unsigned number of seconds: visible
    // ASCII, blanks around, an optional `+`, then digits.
    let num = |name: &str| -> Option<u64> {
        let (_, value) = headers.iter().find(|(n, _)| *n == name)?;
        let bytes = value.as_bytes();
        if !bytes.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let text = text.trim_matches([' ', '\t']);
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.bytes().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    };
    let bound = |wait: Duration| wait.clamp(MIN_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAIT);
    if let Some(secs) = num("retry-after") {
        return Some(bound(Duration::from_secs(secs)));
    }
    if num("ratelimit-remaining") == Some(0) {
        let reset = num("ratelimit-reset")?;
        let now = now.duration_since(UNIX_EPOCH).ok()?;
        return Some(bound(Duration::from_secs(reset).saturating_sub(now)));
    }
    None
}

/// What `decode_holder` must give for a body that is JSON: `None` for an
/// error.
fn model_holder(value: &Value, family: PathFamily) -> Option<(Holder, bool)> {
    let (key, other) = match family {
        PathFamily::FloatingIps => ("floating_ip", "reserved_ip"),
        PathFamily::ReservedIps => ("reserved_ip", "floating_ip"),
    };
    let Value::Object(top) = value else {
        return None;
    };
    let Value::Object(obj) = top.get(key).or_else(|| top.get(other))? else {
        return None;
    };
    let locked = obj.get("locked") == Some(&Value::Bool(true));
    let holder = match obj.get("droplet") {
        // Hidden (no `droplet:read`): unknown, never unassigned.
        None => Holder::Unknown,
        Some(Value::Null) => Holder::Unassigned,
        Some(Value::Object(droplet)) => match droplet.get("id") {
            None | Some(Value::Null) => Holder::Unknown,
            Some(Value::Number(n)) => Holder::Droplet(n.as_u64()?),
            Some(_) => return None,
        },
        Some(_) => return None,
    };
    Some((holder, locked))
}

fn action_path(family: PathFamily) -> String {
    format!("/v2/{family}/{IP}/actions")
}

fn holder_path(family: PathFamily) -> String {
    format!("/v2/{family}/{IP}")
}

/// The API token of an exchange, and the checks that it never shows.
struct Token {
    secret: Secret,
    plain: &'static str,
    /// As JSON and Rust's Debug quote it (without the quotes).
    quoted: String,
}

impl Token {
    fn new(plain: &'static str) -> Self {
        let quoted = serde_json::to_string(plain).expect("a string");
        let quoted = quoted[1..quoted.len() - 1].to_owned();
        assert_eq!(format!("{plain:?}"), format!("\"{quoted}\""));
        Self {
            secret: Secret::new(plain),
            plain,
            quoted,
        }
    }

    /// The body with the placeholders replaced (see the module docs).
    fn plant(&self, body: &str) -> String {
        if !body.contains('$') {
            return body.to_owned();
        }
        let mut chars = self.plain.chars();
        let first = chars.next().expect("a token");
        let escaped = format!("\\u{:04x}{}", u32::from(first), chars.as_str());
        body.replace("$T", self.plain)
            .replace("$Q", &self.quoted)
            .replace("$U", &escaped)
            .replace("$B", &"0123456789abcdef".repeat(20 * 1024 / 16))
    }

    fn leaks(&self, text: &str) -> bool {
        text.contains(self.plain) || text.contains(&self.quoted)
    }

    /// Server-supplied text as shown: without the token, and cut.
    fn check_text(&self, shown: &str, what: &str) {
        assert!(!self.leaks(shown), "token in {what}: {shown:?}");
        // The summary holds three texts, each cut: the error id, the
        // message and the request id (`HTTP 422 ID: MESSAGE (request id
        // ID)`).
        let limit = if what == "summary" {
            3 * MAX_SHOWN_TEXT + 32
        } else {
            MAX_SHOWN_TEXT
        };
        assert!(
            shown.chars().count() <= limit,
            "{what} of {} characters",
            shown.chars().count()
        );
    }

    /// `shown` is what the client shows of the server's `original` text:
    /// the same text, cut, unless the token had to be taken out.
    fn check_shown(&self, original: &str, shown: &str) {
        self.check_text(shown, "text");
        if !self.leaks(original) {
            let cut: String = original.chars().take(MAX_SHOWN_TEXT).collect();
            assert_eq!(shown, cut, "server text not shown as sent");
        }
    }

    /// An error as anyone may see it: Display, Debug and sources.
    fn check_error(&self, e: &ApiError, path: &str) {
        match e {
            ApiError::Rejected { id, message, .. } => {
                self.check_text(id, "id");
                self.check_text(message, "message");
            }
            ApiError::Decode { body, source, .. } => {
                self.check_text(body, "decode body");
                self.check_text(&source.to_string(), "decode error");
            }
            other => panic!("a response gave {other:?}"),
        }
        // Every character of a server text may take 10 when escaped
        // (`\u{10ffff}`), and Debug shows two texts.
        let limit = 256 + 2 * path.len() + 2 * (2 + 10 * MAX_SHOWN_TEXT);
        let mut shown = vec![e.to_string(), format!("{e:?}")];
        let mut source = e.source();
        while let Some(s) = source {
            shown.push(s.to_string());
            shown.push(format!("{s:?}"));
            source = s.source();
        }
        for text in &shown {
            assert!(!self.leaks(text), "token in error: {text}");
            assert!(
                text.chars().count() <= limit,
                "error of {} characters: {text}",
                text.chars().count()
            );
        }
    }
}

/// Reads the fuzz input front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.take(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    fn byte(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}

fn check_status_round_trip(status: &ActionStatus) {
    let printed = Value::String(status.to_string()).to_string();
    let parsed: ActionStatus = serde_json::from_str(&printed).expect("a JSON string");
    assert_eq!(&parsed, status, "status {status:?} printed as {printed}");
}

/// A JSON document that keeps objects as written: every key, in order,
/// duplicates included (`serde_json::Value` keeps only the last).
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Scalar(Value),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Scalar(Value::String(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Scalar(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Json>()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Json {
    /// As `serde_json::Value` (later duplicates win, as in `Value`).
    fn to_value(&self) -> Value {
        match self {
            Json::Scalar(v) => v.clone(),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// `Action`'s fields in declaration order (the order of the array form that
/// serde's derive also accepts), by their JSON names.
const FIELDS: [&str; 8] = [
    "id",
    "status",
    "type",
    "started_at",
    "completed_at",
    "resource_id",
    "resource_type",
    "region_slug",
];

/// What decoding `json` as an `Action` must give; `None` for an error.
fn model_action(json: &Json) -> Option<Action> {
    let values: [Option<&Json>; 8] = match json {
        Json::Object(entries) => {
            let mut values = [None; 8];
            for (key, value) in entries {
                if let Some(index) = FIELDS.iter().position(|f| f == key) {
                    if values[index].is_some() {
                        // serde: "duplicate field".
                        return None;
                    }
                    values[index] = Some(value);
                }
            }
            values
        }
        // serde's derive also takes a struct as the sequence of its fields;
        // serde_json refuses elements beyond the last field.
        Json::Array(items) if items.len() <= FIELDS.len() => {
            std::array::from_fn(|index| items.get(index))
        }
        _ => return None,
    };
    let [
        id,
        status,
        kind,
        started_at,
        completed_at,
        resource_id,
        resource_type,
        region_slug,
    ] = values;
    Some(Action {
        id: model_u64(id?)?,
        status: match status? {
            Json::Scalar(Value::String(s)) => match s.as_str() {
                "in-progress" => ActionStatus::InProgress,
                "completed" => ActionStatus::Completed,
                "errored" => ActionStatus::Errored,
                _ => ActionStatus::Other(s.clone()),
            },
            _ => return None,
        },
        kind: model_opt_string(kind)?,
        started_at: model_opt_string(started_at)?,
        completed_at: model_opt_string(completed_at)?,
        resource_id: resource_id.and_then(|v| match v.to_value() {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }),
        resource_type: model_opt_string(resource_type)?,
        region_slug: model_opt_string(region_slug)?,
    })
}

/// What decoding `json` as the `{"action": ...}` envelope must give.
fn model_envelope(json: &Json) -> Option<Action> {
    match json {
        Json::Object(entries) => {
            let mut actions = entries.iter().filter(|(key, _)| key == "action");
            let (_, action) = actions.next()?;
            if actions.next().is_some() {
                return None;
            }
            model_action(action)
        }
        Json::Array(items) if items.len() == 1 => model_action(&items[0]),
        _ => None,
    }
}

fn model_u64(json: &Json) -> Option<u64> {
    match json {
        Json::Scalar(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
}

/// `Some(value)` when decoding succeeds; `None` when it is an error.
fn model_opt_string(json: Option<&Json>) -> Option<Option<String>> {
    match json {
        None | Some(Json::Scalar(Value::Null)) => Some(None),
        Some(Json::Scalar(Value::String(s))) => Some(Some(s.clone())),
        Some(_) => None,
    }
}
