//! Every Socket.IO event name of the protocol, in both directions, written once.
//! Some names go both ways (a client registers with `user-joined`, and is told of
//! others' with it); each is one constant. Nothing else in the gateway spells an
//! event name: `inbound` and `outbound` map their types to these.

// Both ways.
pub const USER_JOINED: &str = "user-joined";
pub const WEBRTC_OFFER: &str = "webrtc-offer";
pub const WEBRTC_ANSWER: &str = "webrtc-answer";
pub const WEBRTC_ICE_CANDIDATE: &str = "webrtc-ice-candidate";
pub const CALL_MESSAGE: &str = "call-message";

// Client to server.
pub const START_CALL: &str = "start-call";
pub const JOIN_CALL: &str = "join-call";
pub const LEAVE_CALL: &str = "leave-call";
pub const GET_CALL_HISTORY: &str = "get-call-history";
pub const DECLINE_CALL: &str = "decline-call";
pub const CANCEL_CALL: &str = "cancel-call";
pub const INVITE_TO_CALL: &str = "invite-to-call";

// Server to client.
pub const USERS_LIST: &str = "users-list";
pub const USER_LEFT: &str = "user-left";
pub const ICE_SERVERS: &str = "ice-servers";
pub const MISSED_CALLS: &str = "missed-calls";
pub const CALL_STARTED: &str = "call-started";
pub const CALL_PARTICIPANTS: &str = "call-participants";
pub const CALL_NOT_FOUND: &str = "call-not-found";
pub const CALL_LEFT: &str = "call-left";
pub const CALL_ENDED: &str = "call-ended";
pub const USER_JOINED_CALL: &str = "user-joined-call";
pub const USER_LEFT_CALL: &str = "user-left-call";
pub const USER_RECONNECTING: &str = "user-reconnecting";
pub const USER_RECONNECTED: &str = "user-reconnected";
pub const INCOMING_CALL: &str = "incoming-call";
pub const INVITE_ENDED: &str = "invite-ended";
pub const CALL_DECLINED: &str = "call-declined";
pub const CALL_UNANSWERED: &str = "call-unanswered";
pub const CALL_MESSAGES: &str = "call-messages";
pub const USER_BUSY: &str = "user-busy";
pub const USER_UNAVAILABLE: &str = "user-unavailable";

/// Application events (`SendToUser`) are named `app:<name>`.
pub const APP_PREFIX: &str = "app:";
