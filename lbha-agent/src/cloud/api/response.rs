//! What the client makes of one HTTP answer from the DigitalOcean API: its
//! status, headers and body in, an outcome out (a decoded [`Action`], the
//! [`Holder`] of an IP, an [`ApiError`], or how long to wait before
//! retrying).
//!
//! These are plain functions, without I/O or clock of their own, and
//! [`ApiClient`](super::ApiClient) runs exactly them on every answer it gets,
//! so unit tests and the fuzzer (`fuzz/fuzz_targets/do_api_response.rs`)
//! exercise the client's real response handling.
//!
//! Everything the server sends that ends up in an error or a retry summary is
//! passed through [`scrub`]: the API token never appears in it (should the
//! server or a proxy echo the request back), and it is cut to
//! [`MAX_SHOWN_TEXT`] characters.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::Deserialize;

use super::{Action, ApiError, Collection, Holder};
use crate::cloud::secret::Secret;

/// DO error bodies are short JSON; an HTML error page from a proxy is not,
/// and is cut to this many characters before it reaches an error message or
/// a log line.
pub const MAX_SHOWN_TEXT: usize = 256;

/// The shortest wait a rate-limit hint gives: `Retry-After: 0` or a stale
/// `ratelimit-reset` must not make a rate-limited client hammer the API.
pub const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_millis(100);

/// The longest wait a rate-limit hint gives. DO's limits reset within the
/// hour, so a longer hint is a broken header; the client gives up at once
/// anyway when a wait would end past its operation deadline.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_hours(1);

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub enum Failure {
    /// Retry after a jittered backoff. The text says what went wrong.
    Transient(String),
    /// Retry after exactly this long (rate limiting told us).
    RetryAfter(Duration, String),
    /// Another action on the IP is still pending: retry once it may have
    /// ended, backing off (the client's pending backoff) so that waiting
    /// out a slow action does not eat the token's rate limit.
    Pending(String),
    /// Retrying will not help.
    Fatal(ApiError),
}

/// The body of `POST /v2/{family}/{ip}/actions` and
/// `GET /v2/{family}/{ip}/actions/{id}`.
#[derive(Deserialize)]
struct ActionEnvelope {
    action: Action,
}

/// DO's error body, `{"id": "not_found", "message": "..."}`.
#[derive(Deserialize)]
struct DoErrorBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Judges an answer by its status (and, for some, headers and body), for the
/// request `method path`. `Ok(())` for a 2xx: the body is then the caller's
/// to decode ([`decode_action`], [`decode_holder`]). Otherwise:
///
/// * 429: [`Failure::RetryAfter`] with the wait [`rate_limit_wait`] reads
///   from the headers (`now` is when the answer came), else
///   [`Failure::Transient`];
/// * 5xx: [`Failure::Transient`];
/// * 422 whose message mentions a pending event (another action on the IP
///   is still running): [`Failure::Pending`];
/// * anything else (other 4xx, an unexpected 1xx or 3xx):
///   [`Failure::Fatal`] with [`ApiError::Rejected`] carrying DO's error id,
///   message ([`error_body`]) and request id ([`request_id`]).
///
/// The text of a retryable failure is `HTTP <status> <id>: <message>`,
/// followed by ` (request id <id>)` when DO gave one ([`summary`]).
pub fn check_status(
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    token: &Secret,
    now: SystemTime,
) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let (id, message) = error_body(status, body, token);
    let request_id = request_id(headers, body, token);
    let summary = summary(status, &id, &message, request_id.as_deref());
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(match rate_limit_wait(headers, now) {
            Some(wait) => Failure::RetryAfter(wait, summary),
            None => Failure::Transient(summary),
        });
    }
    if status.is_server_error() {
        return Err(Failure::Transient(summary));
    }
    // "Floating IP already has a pending event": another assign (ours or the
    // old master's) is still running. It ends by itself, and then ours must
    // go through, so wait and retry like a 5xx.
    if status == StatusCode::UNPROCESSABLE_ENTITY
        && message.to_ascii_lowercase().contains("pending")
    {
        return Err(Failure::Pending(summary));
    }
    Err(Failure::Fatal(ApiError::Rejected {
        method: method.clone(),
        path: path.to_owned(),
        status: status.as_u16(),
        id,
        message,
        request_id: request_id.map(String::into_boxed_str),
    }))
}

/// How a failed answer is summed up in retry logs and deadline errors:
/// `HTTP <status> <id>: <message>`, then ` (request id <id>)` when DO gave
/// one.
pub fn summary(status: StatusCode, id: &str, message: &str, request_id: Option<&str>) -> String {
    let mut text = format!("HTTP {} {id}: {message}", status.as_u16());
    if let Some(request_id) = request_id {
        text.push_str(&format!(" (request id {request_id})"));
    }
    text
}

/// DO's id of the request, for support tickets: the error body's
/// `request_id` (a string) when it has one, else the `x-request-id`
/// header; [`scrub`]bed. None when DO gave neither.
pub fn request_id(headers: &HeaderMap, body: &str, token: &Secret) -> Option<String> {
    let from_body = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| Some(v.get("request_id")?.as_str()?.to_owned()));
    let id = from_body.or_else(|| Some(headers.get("x-request-id")?.to_str().ok()?.to_owned()))?;
    Some(scrub(&id, token))
}

/// The action in the 2xx body of `method path` (an assign, or a poll of an
/// action): `{"action": {...}}`. Anything else is [`ApiError::Decode`].
pub fn decode_action(
    method: &Method,
    path: &str,
    body: &str,
    token: &Secret,
) -> Result<Action, ApiError> {
    serde_json::from_str::<ActionEnvelope>(body)
        .map(|envelope| envelope.action)
        .map_err(|e| decode_error(method, path, body, &e, token))
}

/// Who holds the IP according to the 2xx body of `GET path`
/// (`GET /v2/{family}/{ip}`), and whether an action on it is still pending
/// (`locked`).
///
/// The object is under `floating_ip` or `reserved_ip` after the path family
/// (the other key is accepted too, so a half-finished rename on DO's side
/// cannot break the lookup), or `reserved_ipv6` for a reserved IPv6, whose
/// object has no `locked` (DO's spec: ip, region_slug, reserved_at,
/// droplet): it reads as not locked, and the assign's action says when a
/// move is done. It must be a JSON object (`"floating_ip": null`
/// does not say "unassigned"). `"droplet": null` is [`Holder::Unassigned`];
/// a droplet object with a numeric `id` is [`Holder::Droplet`]; no
/// `droplet` key, or a droplet object without an `id` (or `"id": null`),
/// is [`Holder::Unknown`]: DO leaves the droplet out for a token without
/// the `droplet:read` scope, and that must never read as "unassigned". A
/// `droplet` that is not an object or null, or an `id` that is not an
/// unsigned integer, is [`ApiError::Decode`]. `locked` is false unless it
/// is `true`.
pub fn decode_holder(
    collection: impl Into<Collection>,
    path: &str,
    body: &str,
    token: &Secret,
) -> Result<(Holder, bool), ApiError> {
    let decode_error =
        |body: &str, what: &dyn fmt::Display| decode_error(&Method::GET, path, body, what, token);
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| decode_error(body, &e))?;
    let [key, also] = collection.into().object_keys();
    let obj = v
        .get(key)
        .or_else(|| v.get(also))
        .filter(|obj| obj.is_object());
    let Some(obj) = obj else {
        return Err(decode_error(
            &v.to_string(),
            &format_args!("no {key} object"),
        ));
    };
    let locked = obj
        .get("locked")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let holder = match obj.get("droplet") {
        None => Holder::Unknown,
        Some(serde_json::Value::Null) => Holder::Unassigned,
        Some(serde_json::Value::Object(droplet)) => match droplet.get("id") {
            None | Some(serde_json::Value::Null) => Holder::Unknown,
            Some(id) => match id.as_u64() {
                Some(id) => Holder::Droplet(id),
                None => {
                    return Err(decode_error(
                        &id.to_string(),
                        &"droplet id is not an unsigned integer",
                    ));
                }
            },
        },
        Some(other) => {
            return Err(decode_error(
                &other.to_string(),
                &"droplet is neither an object nor null",
            ));
        }
    };
    Ok((holder, locked))
}

/// [`ApiError::Decode`] for the answer `body` to `method path`. `what` went
/// wrong is scrubbed like the body: `serde_json`'s messages quote the
/// offending value (`invalid type: string "..."`), which may be anything
/// the server sent, the token included.
fn decode_error(
    method: &Method,
    path: &str,
    body: &str,
    what: &dyn fmt::Display,
    token: &Secret,
) -> ApiError {
    ApiError::Decode {
        method: method.clone(),
        path: path.to_owned(),
        body: scrub(body, token),
        request_id: None,
        source: serde::de::Error::custom(scrub(&what.to_string(), token)),
    }
}

/// How long a 429 tells us to wait: `Retry-After` (seconds) first, else
/// `ratelimit-reset` (unix seconds) when `ratelimit-remaining` is 0, kept
/// within [`MIN_RATE_LIMIT_WAIT`] and [`MAX_RATE_LIMIT_WAIT`]. `now` is when
/// the answer came. None means "no usable hint; back off as for a 5xx" (a
/// `Retry-After` given as an HTTP date is not read).
pub fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let wait = if let Some(secs) = num("retry-after") {
        Duration::from_secs(secs)
    } else if num("ratelimit-remaining") == Some(0) {
        let reset = num("ratelimit-reset")?;
        let now = now.duration_since(UNIX_EPOCH).ok()?;
        // The reset second has begun once its whole second is reached.
        Duration::from_secs(reset).saturating_sub(now)
    } else {
        return None;
    };
    Some(wait.clamp(MIN_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAIT))
}

/// DO's `{"id","message"}` from an error answer's body, or, when the body is
/// not DO's JSON (a proxy's HTML page, say), the status's reason as the id
/// (`not_found`) and the raw body as the message; both [`scrub`]bed.
pub fn error_body(status: StatusCode, body: &str, token: &Secret) -> (String, String) {
    let parsed: Option<DoErrorBody> = serde_json::from_str(body).ok();
    let id = parsed
        .as_ref()
        .and_then(|b| b.id.clone())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_")
        });
    let message = parsed
        .and_then(|b| b.message)
        .unwrap_or_else(|| body.to_owned());
    (scrub(&id, token), scrub(&message, token))
}

/// Server-supplied `text` as it may be shown: without the token (replaced by
/// `***`) and cut to [`MAX_SHOWN_TEXT`] characters.
///
/// The token is also taken out as JSON (and Rust's Debug) quotes it, which
/// differs for a token with `"` or `\`: that is how it appears in a JSON
/// body, in a body printed with `{:?}`, and in `serde_json`'s messages.
pub fn scrub(text: &str, token: &Secret) -> String {
    let token = token.expose();
    if token.is_empty() {
        return text.chars().take(MAX_SHOWN_TEXT).collect();
    }
    let quoted = format!("{token:?}");
    let quoted = &quoted[1..quoted.len() - 1];
    // Replaced before cutting, so a token straddling the cut cannot leave
    // half of itself behind.
    let mut clean = text.replace(token, "***").replace(quoted, "***");
    // A token containing `*` can be formed anew by the replacement itself
    // (`a` + `a**` gives `a***`); show nothing of such a text.
    if clean.contains(token) || clean.contains(quoted) {
        clean = "***".to_owned();
    }
    clean.chars().take(MAX_SHOWN_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use reqwest::header::HeaderValue;

    use super::*;
    use crate::cloud::test_support::TOKEN;
    use lbha_config::PathFamily;

    /// The examples of DO's spec (specification/resources/reserved_ipv6/
    /// responses/examples.yml, trimmed): assigned and reserved-to-region.
    #[test]
    fn reserved_ipv6_holder_is_read_from_its_own_key() {
        let token = Secret::new("t");
        let path = "/v2/reserved_ipv6/2409:40d0:f7:1017:74b4:3a96:105e:4c6e";
        let assigned = r#"{"reserved_ipv6":{"ip":"2409:40d0:f7:1017:74b4:3a96:105e:4c6e","reserved_at":"2024-11-20T11:08:30Z","droplet":{"id":3164444,"name":"example.com"},"region_slug":"nyc3"}}"#;
        let reserved = r#"{"reserved_ipv6":{"ip":"2409:40d0:f7:1017:74b4:3a96:105e:4c6e","region_slug":"nyc3","reserved_at":"2024-11-20T11:08:30Z","droplet":null}}"#;
        let v6 = Collection::ReservedIpv6;
        assert_eq!(
            decode_holder(v6, path, assigned, &token).unwrap(),
            (Holder::Droplet(3164444), false)
        );
        assert_eq!(
            decode_holder(v6, path, reserved, &token).unwrap(),
            (Holder::Unassigned, false)
        );
        // An IPv4 object is not an IPv6 answer, nor the other way round.
        let v4 = r#"{"floating_ip":{"ip":"203.0.113.10","droplet":null}}"#;
        assert!(decode_holder(v6, path, v4, &token).is_err());
        assert!(decode_holder(PathFamily::FloatingIps, path, reserved, &token).is_err());
    }

    const PATH: &str = "/v2/floating_ips/203.0.113.10/actions";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    /// Display, Debug and every source of `e`.
    fn everything_shown(e: &dyn Error) -> Vec<String> {
        let mut shown = vec![e.to_string(), format!("{e:?}")];
        let mut source = e.source();
        while let Some(s) = source {
            shown.push(s.to_string());
            shown.push(format!("{s:?}"));
            source = s.source();
        }
        shown
    }

    #[test]
    fn rate_limit_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers;
        assert_eq!(
            rate_limit_wait(&h(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(
                &h(&[
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "1700000003")
                ]),
                now
            ),
            Some(Duration::from_secs(3))
        );
        // A reset in the past still waits a little rather than spinning.
        assert_eq!(
            rate_limit_wait(
                &h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1")]),
                now
            ),
            Some(MIN_RATE_LIMIT_WAIT)
        );
        assert_eq!(
            rate_limit_wait(
                &h(&[
                    ("ratelimit-remaining", "12"),
                    ("ratelimit-reset", "1700000003")
                ]),
                now
            ),
            None
        );
        // HTTP-date Retry-After is not supported: fall back to backoff.
        assert_eq!(
            rate_limit_wait(&h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), now),
            None
        );
        assert_eq!(rate_limit_wait(&h(&[]), now), None);
    }

    /// A huge `Retry-After` or `ratelimit-reset` gave an unbounded wait
    /// (found by the do_api_response fuzzer), and `Retry-After: 0` a zero
    /// one: a rate-limited client retrying in a busy loop.
    #[test]
    fn rate_limit_wait_is_bounded() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = |pairs| rate_limit_wait(&headers(pairs), now);
        assert_eq!(wait(&[("retry-after", "0")]), Some(MIN_RATE_LIMIT_WAIT));
        assert_eq!(
            wait(&[("retry-after", "18446744073709551615")]),
            Some(MAX_RATE_LIMIT_WAIT)
        );
        assert_eq!(
            wait(&[
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "18446744073709551615")
            ]),
            Some(MAX_RATE_LIMIT_WAIT)
        );
        assert_eq!(
            wait(&[("retry-after", "3600")]),
            Some(Duration::from_hours(1))
        );
    }

    /// Found by the do_api_response fuzzer: serde_json's message for a
    /// mistyped value quotes the value, and the decode error kept that
    /// message (unscrubbed, uncut) as its source.
    #[test]
    fn decode_errors_scrub_serde_messages() {
        let token = Secret::new(TOKEN);
        let long = "x".repeat(10_000);
        for body in [
            format!("\"Bearer {TOKEN}\""),
            format!(r#"{{"action":{{"id":"Bearer {TOKEN}","status":"completed"}}}}"#),
            format!(r#"{{"action":{{"id":1,"status":"completed","type":["{TOKEN}"]}}}}"#),
            format!(r#"{{"action":"{long}"}}"#),
        ] {
            let err = decode_action(&Method::POST, PATH, &body, &token).unwrap_err();
            let ApiError::Decode { source, .. } = &err else {
                panic!("{err:?}");
            };
            assert!(
                source.to_string().chars().count() <= MAX_SHOWN_TEXT,
                "{source}"
            );
            for shown in everything_shown(&err) {
                assert!(!shown.contains(TOKEN), "token leaked: {shown}");
                assert!(shown.len() < 2 * MAX_SHOWN_TEXT + 200, "{shown}");
            }
        }
        // The message still says what was wrong, and where.
        let err = decode_action(&Method::POST, PATH, r#"{"action":{"id":"x"}}"#, &token)
            .unwrap_err()
            .source()
            .unwrap()
            .to_string();
        assert!(
            err.contains("invalid type") && err.contains("line 1"),
            "{err}"
        );
    }

    /// An IP object that is not an object (`null`, a number) read as
    /// "unassigned" (found writing the do_api_response fuzzer's model).
    #[test]
    fn holder_object_must_be_an_object() {
        let token = Secret::new(TOKEN);
        let holder = |family, body: &str| decode_holder(family, PATH, body, &token);
        for body in [
            r#"{"floating_ip":null}"#,
            r#"{"floating_ip":5,"reserved_ip":{"droplet":{"id":9}}}"#,
            r#"{"reserved_ip":"unassigned"}"#,
            r#"{"floating_ip":[]}"#,
        ] {
            let err = holder(PathFamily::FloatingIps, body).unwrap_err();
            assert!(matches!(err, ApiError::Decode { .. }), "{body}: {err:?}");
        }
        assert_eq!(
            holder(
                PathFamily::FloatingIps,
                r#"{"reserved_ip":{"droplet":{"id":9},"locked":true}}"#
            )
            .unwrap(),
            (Holder::Droplet(9), true)
        );
    }

    /// Only `"droplet": null` says "unassigned". A holder the API does not
    /// show (DO hides the droplet from a token without `droplet:read`) was
    /// read as unassigned, which made a Master holding the IP assign again.
    #[test]
    fn hidden_holder_is_unknown_not_unassigned() {
        let token = Secret::new(TOKEN);
        let holder = |body: &str| decode_holder(PathFamily::FloatingIps, PATH, body, &token);
        for (body, expected) in [
            (r#"{"floating_ip":{"droplet":null}}"#, Holder::Unassigned),
            (
                r#"{"floating_ip":{"droplet":{"id":7}}}"#,
                Holder::Droplet(7),
            ),
            (r#"{"floating_ip":{}}"#, Holder::Unknown),
            (
                r#"{"floating_ip":{"ip":"203.0.113.10","locked":false}}"#,
                Holder::Unknown,
            ),
            (r#"{"floating_ip":{"droplet":{}}}"#, Holder::Unknown),
            (
                r#"{"floating_ip":{"droplet":{"id":null,"name":"lb1"}}}"#,
                Holder::Unknown,
            ),
        ] {
            assert_eq!(holder(body).unwrap(), (expected, false), "{body}");
        }
        for body in [
            r#"{"floating_ip":{"droplet":{"id":"7"}}}"#,
            r#"{"floating_ip":{"droplet":{"id":-7}}}"#,
            r#"{"floating_ip":{"droplet":7}}"#,
            r#"{"floating_ip":{"droplet":"lb1"}}"#,
        ] {
            let err = holder(body).unwrap_err();
            assert!(matches!(err, ApiError::Decode { .. }), "{body}: {err:?}");
        }
    }

    /// DO's request id, for support tickets: the body's `request_id`, else
    /// the `x-request-id` header, in the error and in retry summaries.
    #[test]
    fn errors_keep_the_request_id() {
        let token = Secret::new(TOKEN);
        let with_header = headers(&[("x-request-id", "515850a0-a812-50bf-aa3c-d0d21d287e40")]);
        let check = |status: u16, headers: &HeaderMap, body: &str| {
            check_status(
                &Method::POST,
                PATH,
                StatusCode::from_u16(status).unwrap(),
                headers,
                body,
                &token,
                UNIX_EPOCH,
            )
            .unwrap_err()
        };
        let body = r#"{"id":"unprocessable_entity","message":"request payload validation failed","request_id":"4851a473-1621-42ea-b2f9-5071c0ea8414"}"#;
        let Failure::Fatal(err) = check(422, &with_header, body) else {
            panic!("a 422 is fatal");
        };
        let ApiError::Rejected { request_id, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            request_id.as_deref(),
            Some("4851a473-1621-42ea-b2f9-5071c0ea8414"),
            "the body's wins"
        );
        assert!(
            err.to_string()
                .ends_with("(request id 4851a473-1621-42ea-b2f9-5071c0ea8414)"),
            "{err}"
        );
        let Failure::Fatal(err) = check(403, &with_header, r#"{"id":"forbidden","message":"no"}"#)
        else {
            panic!("a 403 is fatal");
        };
        assert!(
            err.to_string()
                .contains("(request id 515850a0-a812-50bf-aa3c-d0d21d287e40)"),
            "{err}"
        );
        let Failure::Transient(summary) = check(503, &with_header, "<html>busy</html>") else {
            panic!("a 503 is transient");
        };
        assert_eq!(
            summary,
            "HTTP 503 service_unavailable: <html>busy</html> (request id 515850a0-a812-50bf-aa3c-d0d21d287e40)"
        );
        let Failure::Pending(summary) = check(
            422,
            &HeaderMap::new(),
            r#"{"id":"unprocessable_entity","message":"Floating IP already has a pending event.","request_id":"abc"}"#,
        ) else {
            panic!("a pending event is waited out");
        };
        assert!(summary.ends_with("(request id abc)"), "{summary}");
        // None given, none shown; a request id echoing the token is scrubbed.
        let Failure::Fatal(err) = check(
            404,
            &HeaderMap::new(),
            r#"{"id":"not_found","message":"gone"}"#,
        ) else {
            panic!("a 404 is fatal");
        };
        assert!(!err.to_string().contains("request id"), "{err}");
        let echo = format!(r#"{{"id":"x","message":"y","request_id":"Bearer {TOKEN}"}}"#);
        let Failure::Fatal(err) = check(400, &HeaderMap::new(), &echo) else {
            panic!("a 400 is fatal");
        };
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }

    /// A token holding `"` showed in a body as JSON quotes it (found by the
    /// do_api_response fuzzer), and one holding `***` could be re-formed by
    /// the replacement.
    #[test]
    fn scrub_takes_out_quoted_and_reformed_tokens() {
        let quoted = Secret::new(r#"dop_v1_"q"_secret"#);
        let shown = scrub(r#"{"message":"Bearer dop_v1_\"q\"_secret"}"#, &quoted);
        assert_eq!(shown, r#"{"message":"Bearer ***"}"#);

        let starry = Secret::new("ab***cd");
        assert_eq!(scrub("ab***cd", &starry), "***");
        let shown = scrub("abab***cdcd", &starry);
        assert!(!shown.contains("ab***cd"), "{shown}");

        let plain = Secret::new(TOKEN);
        let long = format!("{}{TOKEN}", "é".repeat(MAX_SHOWN_TEXT - 2));
        let shown = scrub(&long, &plain);
        assert_eq!(shown.chars().count(), MAX_SHOWN_TEXT);
        assert!(shown.ends_with("é**"), "{shown}");
        assert_eq!(scrub("no token here", &plain), "no token here");
    }
}
