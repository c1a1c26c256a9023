//! The server's HTTP upgrade parser: any bytes a client sends before the WebSocket starts are
//! "need more", an upgrade, or a refusal, never a panic; what follows the head is kept exactly,
//! and reading the same bytes in two chunks decides as reading them at once (the server parses
//! whatever it has read so far after every chunk).
#![no_main]

use chat_server::handshake::{Refused, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data);
    if let Ok(Some(up)) = &whole {
        assert!(
            data.ends_with(&up.rest),
            "rest is not the tail of the input"
        );
        assert_eq!(up.request.uri().path(), "/ws");
    }
    // A prefix that already decides is where the server stops reading.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse_request(&data[..cut]) {
            Ok(None) => {}
            Ok(Some(up)) => assert!(
                matches!(&whole, Ok(Some(w)) if w.request.uri() == up.request.uri()),
                "a complete prefix and the whole input disagree"
            ),
            Err(Refused::BadRequest(_) | Refused::NotFound) => {}
            Err(e) => panic!("a pure parse cannot time out or close: {e}"),
        }
    }
});
