//! The client protocol, typed: what browsers may send (`inbound`, every payload
//! rule of PROTOCOL.md), what they are sent (`outbound`, one variant per
//! server-to-client event), the acknowledgements and error codes (`ack`), and
//! the event names of both directions (`names`), each written once.

pub mod ack;
pub mod inbound;
pub mod names;
pub mod outbound;

pub use outbound::ServerEvent;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::names::*;

    /// Every event name, both directions.
    const ALL: [&str; 32] = [
        USER_JOINED,
        WEBRTC_OFFER,
        WEBRTC_ANSWER,
        WEBRTC_ICE_CANDIDATE,
        CALL_MESSAGE,
        USERS_LIST,
        USER_LEFT,
        ICE_SERVERS,
        MISSED_CALLS,
        CALL_STARTED,
        CALL_PARTICIPANTS,
        CALL_NOT_FOUND,
        CALL_LEFT,
        CALL_ENDED,
        USER_JOINED_CALL,
        USER_LEFT_CALL,
        USER_RECONNECTING,
        USER_RECONNECTED,
        INCOMING_CALL,
        INVITE_ENDED,
        CALL_DECLINED,
        CALL_UNANSWERED,
        CALL_MESSAGES,
        USER_BUSY,
        USER_UNAVAILABLE,
        START_CALL,
        JOIN_CALL,
        LEAVE_CALL,
        GET_CALL_HISTORY,
        DECLINE_CALL,
        CANCEL_CALL,
        INVITE_TO_CALL,
    ];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source folder") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The gateway's code without its unit tests (which sit at the end of a file).
    fn code_of(path: &Path) -> String {
        let text = std::fs::read_to_string(path).expect("readable source");
        match text.find("#[cfg(test)]") {
            Some(at) => text[..at].to_owned(),
            None => text,
        }
    }

    #[test]
    fn each_event_name_is_spelled_in_one_source_file() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "the gateway's sources were found");
        for name in ALL {
            let quoted = format!("\"{name}\"");
            let holders: Vec<String> = files
                .iter()
                .filter(|f| code_of(f).contains(&quoted))
                .map(|f| f.display().to_string())
                .filter(|f| {
                    // `call-not-found` is an error code as well as an event.
                    !(name == CALL_NOT_FOUND && f.ends_with("protocol/ack.rs"))
                })
                .collect();
            assert_eq!(holders.len(), 1, "{name} is spelled in {holders:?}");
            assert!(holders[0].ends_with("protocol/names.rs"), "{holders:?}");
        }
    }
}
