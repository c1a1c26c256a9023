//! `docs/protocol.md` is the contract other-language clients are written from: every example in
//! it must decode with the real types, and every frame type, error code and close code must be
//! in it.

use chat_proto::{
    CLIENT_FRAME_TYPES, ErrorCode, SERVER_FRAME_TYPES, close, decode_client, decode_server, encode,
    encoded_type,
};
use serde_json::Value;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

/// (info string, body, line) of every fenced block.
fn blocks(doc: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (i, line) in doc.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => open = Some((info.trim().to_owned(), String::new(), i + 1)),
            }
        } else if let Some((_, body, _)) = &mut open {
            body.push_str(line);
            body.push('\n');
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

/// Every key the document wrote is one the types know: re-encoding the decoded frame keeps it
/// with the same value (a misspelt optional field would be silently dropped).
fn assert_no_ignored_fields(original: &Value, reencoded: &Value, line: usize) {
    match (original, reencoded) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, v) in o {
                let Some(rv) = r.get(k) else {
                    panic!("line {line}: field `{k}` is not part of the frame");
                };
                assert_no_ignored_fields(v, rv, line);
            }
        }
        (Value::Array(o), Value::Array(r)) => {
            assert_eq!(o.len(), r.len(), "line {line}");
            for (a, b) in o.iter().zip(r) {
                assert_no_ignored_fields(a, b, line);
            }
        }
        (a, b) => assert_eq!(a, b, "line {line}: value changed by a round trip"),
    }
}

#[test]
fn every_example_decodes_and_every_frame_type_is_shown() {
    let doc = doc();
    let (mut client_seen, mut server_seen) = (Vec::new(), Vec::new());
    let mut examples = 0;
    for (info, body, line) in blocks(&doc) {
        let direction = match info.as_str() {
            "json client" => "client",
            "json server" => "server",
            "json" => panic!("line {line}: say `json client` or `json server`"),
            _ => continue,
        };
        examples += 1;
        let original: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("line {line}: {e}"));
        let kind = original["type"]
            .as_str()
            .unwrap_or_else(|| panic!("line {line}: no type"))
            .to_owned();
        let reencoded = if direction == "client" {
            let env = decode_client(&body).unwrap_or_else(|e| panic!("line {line}: {e}"));
            assert_eq!(env.frame.kind(), kind, "line {line}");
            client_seen.push(kind);
            encode(&env.frame, env.reference.as_ref())
        } else {
            let env = decode_server(&body).unwrap_or_else(|e| panic!("line {line}: {e}"));
            let text = encode(&env.frame, env.reference.as_ref());
            // What /metrics counts sent frames by.
            assert_eq!(encoded_type(&text), Some(kind.as_str()), "line {line}");
            server_seen.push(kind);
            text
        };
        let reencoded: Value = serde_json::from_str(&reencoded).expect("json");
        assert_no_ignored_fields(&original, &reencoded, line);
    }
    assert!(examples >= 36, "only {examples} examples");
    for t in CLIENT_FRAME_TYPES {
        assert!(
            client_seen.iter().any(|s| s == t),
            "no `json client` example of `{t}`"
        );
    }
    for t in SERVER_FRAME_TYPES {
        assert!(
            server_seen.iter().any(|s| s == t),
            "no `json server` example of `{t}`"
        );
    }
}

/// A validator of `$defs.ClientFrame` or `$defs.ServerFrame` of the generated schema.
fn validator(name: &str) -> jsonschema::Validator {
    let mut schema = chat_proto::contract::schema();
    schema["$ref"] = format!("#/$defs/{name}").into();
    if let Some(o) = schema.as_object_mut() {
        o.remove("anyOf");
    }
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// The schema says at least what the document shows: every example is valid against the union
/// of its direction. (That the file is the schema the types generate is `tests/contract.rs`.)
#[test]
fn every_example_is_valid_against_the_schema() {
    let (client, server) = (validator("ClientFrame"), validator("ServerFrame"));
    let mut checked = 0;
    for (info, body, line) in blocks(&doc()) {
        let schema = match info.as_str() {
            "json client" => &client,
            "json server" => &server,
            _ => continue,
        };
        let example: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("line {line}: {e}"));
        let errors: Vec<String> = schema
            .iter_errors(&example)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "line {line}: {}", errors.join("; "));
        checked += 1;
    }
    assert!(checked >= 36, "only {checked} examples");
}

#[test]
fn every_error_code_and_close_code_is_documented() {
    let doc = doc();
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", code.as_str())),
            "error code `{code}` has no row in the table"
        );
    }
    for (code, name) in close::ALL {
        assert!(
            doc.contains(&format!("| {code} | {name} |")),
            "close code {code} ({name}) has no row in the table"
        );
    }
}

#[test]
fn the_block_parser_finds_blocks() {
    let b = blocks("x\n```json client\n{\"type\":\"ping\"}\n```\n```text\nhi\n```\n");
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].0, "json client");
    assert_eq!(b[0].1.trim(), r#"{"type":"ping"}"#);
}
