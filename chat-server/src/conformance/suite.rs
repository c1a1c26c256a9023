//! The transcripts, compiled into the binary so that the conformance command works from any
//! directory. A test checks this list against `tests/transcripts/`, so a new file cannot be
//! left out.

/// One embedded transcript.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    /// The file name without `.chat`.
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! t {
    ($name:literal) => {
        Transcript {
            name: $name,
            text: include_str!(concat!("../../tests/transcripts/", $name, ".chat")),
        }
    };
}

/// Every transcript, in file-name order.
pub const TRANSCRIPTS: &[Transcript] = &[
    t!("01_handshake"),
    t!("02_hello_required"),
    t!("03_register_login"),
    t!("04_tokens"),
    t!("05_auth_required"),
    t!("06_auth_timeout"),
    t!("07_registration_closed"),
    t!("08_logout"),
    t!("09_rooms"),
    t!("10_private_rooms"),
    t!("11_direct_messages"),
    t!("12_messages"),
    t!("13_history"),
    t!("14_catch_up"),
    t!("15_presence"),
    t!("16_typing"),
    t!("17_rate_limit"),
    t!("18_bad_input"),
    t!("19_binary_and_oversize"),
    t!("20_malformed_streak"),
    t!("21_not_found"),
    t!("22_rate_limit_patience"),
    t!("23_auth_gate"),
    t!("24_presence_batching"),
    t!("25_room_lifecycle"),
    t!("26_pages"),
    t!("27_edits_deletes"),
    t!("28_reactions_replies"),
    t!("29_read_state"),
    t!("31_moderation"),
    t!("32_search"),
    t!("33_negotiation_and_pacing"),
    t!("34_numbers_nulls_and_refs"),
    t!("41_change_password"),
    t!("42_sessions"),
    t!("43_session_bound"),
    t!("44_account_frames_on_v1"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("tests/transcripts")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".chat").map(str::to_owned))
            .collect();
        files.sort();
        let embedded: Vec<&str> = super::TRANSCRIPTS.iter().map(|t| t.name).collect();
        assert_eq!(embedded, files);
    }
}
