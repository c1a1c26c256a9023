//! chat-tui: the terminal client. Not written yet: its issue comes after the server's. Until then
//! this binary says so, instead of pretending.

fn main() -> std::process::ExitCode {
    eprintln!(
        "chat-tui is not usable yet.\n\
         Talk to chat-server with any WebSocket client: docs/protocol.md (section 11.2 has a\n\
         ready-made Python client)."
    );
    std::process::ExitCode::from(2)
}
