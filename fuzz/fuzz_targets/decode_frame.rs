//! Frame decoding: any text a peer sends decodes to a frame or a typed error, never a panic, and
//! what decodes survives a re-encode unchanged (so the server's echo of a `ref` and a client's
//! re-send of a frame carry exactly what was read).
#![no_main]

use chat_proto::{decode_client, decode_server, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time they reach the decoder.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client(text) {
        Ok(env) => {
            let again = encode(&env.frame, env.reference.as_ref());
            assert_eq!(decode_client(&again).as_ref(), Ok(&env), "{again}");
        }
        Err(e) => assert!(e.detail.len() <= 300, "long detail: {}", e.detail),
    }
    match decode_server(text) {
        Ok(env) => {
            let again = encode(&env.frame, env.reference.as_ref());
            assert_eq!(decode_server(&again).as_ref(), Ok(&env), "{again}");
        }
        Err(e) => assert!(e.detail.len() <= 300, "long detail: {}", e.detail),
    }
});
