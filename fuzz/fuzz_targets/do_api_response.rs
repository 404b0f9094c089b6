//! Fuzzes the decoding of DigitalOcean API action responses: the public
//! `lbha_agent::cloud::Action` (with its hand-written `ActionStatus`
//! deserializer and the lenient `resource_id`), alone and inside the
//! `{"action": {...}}` envelope that `POST .../actions` and
//! `GET .../actions/{id}` return.
//!
//! Input: a response body. Like the client (reqwest's `text()`, then
//! `serde_json::from_str`), invalid UTF-8 is replaced before decoding.
//!
//! Invariants: decoding never panics; whenever the body is JSON that
//! `serde_json` can hold as a tree, the decoded result (success or failure,
//! and every field) is exactly what a model written from the documented
//! rules predicts:
//!
//! * `id` is an unsigned integer, `status` a string: both required;
//! * `status` `in-progress`/`completed`/`errored` are known, anything else is
//!   kept verbatim as `Other`;
//! * `type`, `started_at`, `completed_at`, `resource_type`, `region_slug`
//!   are optional strings (`null` = absent);
//! * `resource_id` is never an error: an unsigned integer, or a string
//!   holding one, else absent;
//! * unknown keys are ignored, a known key twice is an error.
//!
//! And a decoded status prints as text that decodes to the same status.

#![no_main]

use lbha_agent::cloud::{Action, ActionStatus};
use libfuzzer_sys::fuzz_target;
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;

/// The body of `POST /v2/floating_ips/{ip}/actions` and
/// `GET /v2/floating_ips/{ip}/actions/{id}` (the client's private
/// `ActionEnvelope` has exactly this shape).
#[derive(Debug, Deserialize)]
struct Envelope {
    action: Action,
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let action = serde_json::from_str::<Action>(&text);
    let envelope = serde_json::from_str::<Envelope>(&text);

    if let Ok(action) = &action {
        check_status_round_trip(&action.status);
    }
    if let Ok(envelope) = &envelope {
        check_status_round_trip(&envelope.action.status);
    }

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
        envelope.as_ref().ok().map(|e| &e.action),
        expected.as_ref(),
        "envelope decoding disagrees with the model for {text:?} (decoder: {envelope:?})"
    );
});

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
