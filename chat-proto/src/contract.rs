//! The machine-readable contract, generated from this crate's types: the JSON Schema of every
//! frame ([`SCHEMA_FILE`]) and every error and close code with what a client does about it
//! ([`CODES_FILE`]). A test in `tests/contract.rs` fails when either file differs from what this
//! module generates; `CHAT_UPDATE_CONTRACT=1 cargo test -p chat-proto contract` rewrites them.
//!
//! A new frame or field needs nothing here: derive `JsonSchema` on its types (with `///` docs,
//! which become the schema's descriptions) and regenerate. A new error code needs its
//! [`ErrorCode::meaning`], [`ErrorCode::retryable`] and [`ErrorCode::action`], which the
//! compiler asks for.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::types::Ref;
use crate::{ClientFrame, ErrorCode, Retry, SUPPORTED_VERSIONS, ServerFrame, close};

/// Where the schema lives, relative to the workspace root.
pub const SCHEMA_FILE: &str = "docs/protocol.schema.json";
/// Where the codes live, relative to the workspace root.
pub const CODES_FILE: &str = "docs/protocol.codes.json";
/// The one command that rewrites both files from the types.
pub const UPDATE_COMMAND: &str = "CHAT_UPDATE_CONTRACT=1 cargo test -p chat-proto contract";

/// The JSON Schema (draft 2020-12) of every frame. `$defs.ClientFrame` is any frame a client may
/// send and `$defs.ServerFrame` any frame the server sends, `ref` included; the root accepts
/// either. Unknown fields are allowed, as the decoder ignores them.
pub fn schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let client = generator.subschema_for::<ClientFrame>();
    let server = generator.subschema_for::<ServerFrame>();
    let reference = generator.subschema_for::<Option<Ref>>().to_value();
    let mut defs = generator.take_definitions(true);
    // `ref` is read beside the frame (`Envelope`), not by it: every frame of both directions
    // may carry it, so it is a property of the two unions rather than of each variant.
    for (name, description) in [("ClientFrame", CLIENT_REF), ("ServerFrame", SERVER_REF)] {
        if let Some(Value::Object(def)) = defs.get_mut(name) {
            def.insert("type".into(), json!("object"));
            def.insert(
                "properties".into(),
                json!({ "ref": with_description(reference.clone(), description) }),
            );
        }
    }
    canonical(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chat wire protocol",
        "description": format!(
            "Every frame of the chat protocol (versions {SUPPORTED_VERSIONS:?}), generated from \
             the chat-proto types; docs/protocol.md is the human contract. Each WebSocket text \
             message is one JSON object: a ClientFrame from the client, a ServerFrame from the \
             server."
        ),
        "anyOf": [client, server],
        "$defs": defs,
    }))
}

const CLIENT_REF: &str = "Optional on every client frame: the server copies it onto the direct \
    reply to that frame or the error it caused, never onto events. `null` is the same as absent.";
const SERVER_REF: &str = "The `ref` of the request this frame answers, unchanged; absent on \
    events and when the request had none.";

fn with_description(schema: Value, description: &str) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), json!(description));
    if let Value::Object(fields) = schema {
        out.extend(fields);
    }
    Value::Object(out)
}

/// Every error code (what it means, whether to retry, what to do) and every close code (what it
/// means, whether reconnecting is worth it).
pub fn codes() -> Value {
    let errors: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|&code| {
            json!({
                "code": code.as_str(),
                "meaning": code.meaning(),
                "retryable": retry_value(code.retryable()),
                "action": code.action(),
            })
        })
        .collect();
    let closes: Vec<Value> = close::ALL
        .iter()
        .map(|&(code, name)| {
            json!({
                "code": code,
                "name": name,
                "meaning": close::meaning(code),
                "retryable": close::should_reconnect(code),
            })
        })
        .collect();
    canonical(json!({
        "description": "The error codes of the chat protocol's `error` frame and the WebSocket \
            close codes its server sends, generated from chat-proto; docs/protocol.md §8 and §9 \
            say the same in prose.",
        "error_retryable": {
            "false": "Sent again unchanged the frame fails the same way, until the client \
                changes the frame or its own state (authenticates, joins the room, ...).",
            "true": "A transient failure: send the same frame again, with backoff (after \
                reconnecting if the connection closed).",
            "after_ms": "Send the same frame again once the error's retry_after_ms has passed.",
        },
        "close_retryable": "Whether reconnecting (with backoff) is worth it: true after an \
            outage or a transient fault, false when the server ended the session on purpose or \
            the client is broken.",
        "error_codes": errors,
        "close_codes": closes,
    }))
}

fn retry_value(retry: Retry) -> Value {
    match retry {
        Retry::No => json!(false),
        Retry::Yes => json!(true),
        Retry::AfterMs => json!("after_ms"),
    }
}

/// The text of a contract file: pretty-printed with sorted keys and a final newline, so it is
/// the same whatever map order serde_json was built with.
pub fn file_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&canonical(value.clone()))
        .unwrap_or_else(|e| unreachable!("a Value always serializes: {e}"));
    text.push('\n');
    text
}

/// The value with every object's keys in sorted order.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_union_carries_ref() {
        let schema = schema();
        for name in ["ClientFrame", "ServerFrame"] {
            let def = &schema["$defs"][name];
            assert!(def["oneOf"].is_array(), "{name}");
            assert!(def["properties"]["ref"].is_object(), "{name}");
        }
        assert_eq!(schema["$defs"]["Ref"]["anyOf"][1]["maxLength"], 64);
    }

    #[test]
    fn every_code_is_listed_once() {
        let codes = codes();
        let errors = codes["error_codes"].as_array().expect("array");
        assert_eq!(errors.len(), ErrorCode::ALL.len());
        let closes = codes["close_codes"].as_array().expect("array");
        assert_eq!(closes.len(), close::ALL.len());
        for c in closes {
            assert!(c["meaning"].is_string(), "{c}");
        }
    }

    #[test]
    fn file_text_sorts_keys_and_ends_with_a_newline() {
        let text = file_text(&json!({"b": 1, "a": {"d": 2, "c": 3}}));
        assert_eq!(
            text,
            "{\n  \"a\": {\n    \"c\": 3,\n    \"d\": 2\n  },\n  \"b\": 1\n}\n"
        );
    }
}
