//! `docs/protocol.schema.json` and `docs/protocol.codes.json` are generated from the types: these
//! tests fail when a file differs from what the types generate, and say the one command that
//! writes them again. With `CHAT_UPDATE_CONTRACT=1` they write the files instead of comparing.

use std::path::PathBuf;

use chat_proto::contract::{self, CODES_FILE, SCHEMA_FILE, UPDATE_COMMAND};
use serde_json::{Value, json};

fn in_workspace(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(relative)
}

/// Compares (or, with `CHAT_UPDATE_CONTRACT=1`, writes) one contract file.
fn check(relative: &str, generated: &Value) {
    let path = in_workspace(relative);
    let text = contract::file_text(generated);
    if std::env::var_os("CHAT_UPDATE_CONTRACT").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {relative}: {e}"));
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != text {
        let first = on_disk
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(text.lines().count()));
        panic!(
            "{relative} is not what the chat-proto types generate (first difference at line {}).\n\
             Regenerate it with:\n\n    {UPDATE_COMMAND}\n",
            first + 1
        );
    }
}

#[test]
fn contract_schema_file_is_generated_from_the_types() {
    check(SCHEMA_FILE, &contract::schema());
}

#[test]
fn contract_codes_file_is_generated_from_the_types() {
    check(CODES_FILE, &contract::codes());
}

/// A validator of one of the schema's two unions.
fn validator(name: &str) -> jsonschema::Validator {
    let mut schema = contract::schema();
    schema["$ref"] = format!("#/$defs/{name}").into();
    if let Some(o) = schema.as_object_mut() {
        o.remove("anyOf");
    }
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

#[test]
fn contract_schema_is_valid_draft_2020_12() {
    jsonschema::meta::validate(&contract::schema()).expect("a valid draft 2020-12 schema");
}

/// The schema does not accept everything: what the decoder refuses for its shape, it refuses.
#[test]
fn contract_schema_refuses_what_the_decoder_refuses() {
    let client = validator("ClientFrame");
    let server = validator("ServerFrame");
    for ok in [
        json!({"type":"ping"}),
        json!({"type":"ping","ref":-3}),
        json!({"type":"ping","ref":null,"unknown":"fields are ignored"}),
        json!({"type":"history","room":"r","limit":4_294_967_296u64}),
        json!({"type":"create_room","room":"r","visibility":null}),
    ] {
        assert!(client.is_valid(&ok), "{ok}");
        assert!(chat_proto::decode_client(&ok.to_string()).is_ok(), "{ok}");
    }
    for bad in [
        json!({"type":"hello"}),
        json!({"type":"fly"}),
        json!({"type":5,"ref":2}),
        json!({"type":"ping","ref":"r".repeat(65)}),
        json!({"type":"ping","ref":true}),
        json!({"type":"history","room":"r","limit":-1}),
        json!({"type":"send","room":"r","id":5,"body":"b"}),
        json!({"type":"set_status","status":"asleep"}),
        json!([1, 2]),
    ] {
        assert!(!client.is_valid(&bad), "{bad}");
        assert!(
            chat_proto::decode_client(&bad.to_string()).is_err(),
            "{bad}"
        );
    }
    // The directions are told apart: `pong` is only the server's, `ping` only the client's.
    assert!(server.is_valid(&json!({"type":"pong","ts":1})));
    assert!(!client.is_valid(&json!({"type":"pong","ts":1})));
    assert!(!server.is_valid(&json!({"type":"ping"})));
}

#[test]
fn contract_codes_agree_with_the_close_rules() {
    let codes = contract::codes();
    for entry in codes["close_codes"].as_array().expect("close_codes") {
        let code = entry["code"].as_u64().expect("code") as u16;
        assert_eq!(
            entry["retryable"],
            chat_proto::close::should_reconnect(code),
            "{entry}"
        );
    }
    let retry_after: Vec<&str> = codes["error_codes"]
        .as_array()
        .expect("error_codes")
        .iter()
        .filter(|e| e["retryable"] == "after_ms")
        .filter_map(|e| e["code"].as_str())
        .collect();
    // retry_after_ms is sent with rate_limited only (docs/protocol.md §3.2, `error`).
    assert_eq!(retry_after, ["rate_limited"]);
}
