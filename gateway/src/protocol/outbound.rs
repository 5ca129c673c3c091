//! What the gateway sends to browsers: one variant per server-to-client event,
//! each with the shape of its payload. An event's name, its payload and whether
//! only sockets that asked for the calling extension get it are written here and
//! nowhere else; `crate::delivery` puts events on sockets.

use std::sync::Arc;

use meetup_proto::calls::v1::{Call, ChatMessage, SenderKind};
use meetup_proto::presence::v1::User;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::inbound::RelayKind;
use super::names;
use crate::mirror::iso_time;

/// A server-to-client event with its payload.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ServerEvent {
    /// Every online user ([`public_user`] each), in the order they came online.
    UsersList(Arc<Value>),
    /// A user came online, or (to sockets that asked for presence deltas) its
    /// record changed: its [`public_user`].
    UserJoined(Value),
    /// A user's last session ended: its id.
    UserLeft(String),
    /// The STUN and TURN servers this user should use (`RTCIceServer[]`).
    IceServers(Value),
    /// The calls the user missed since it last looked.
    MissedCalls {
        count: u64,
        calls: Vec<Value>,
    },
    CallStarted(CallRef),
    #[serde(rename_all = "camelCase")]
    CallParticipants {
        call_id: String,
        participants: Value,
    },
    CallNotFound(CallRef),
    CallLeft(CallRef),
    CallEnded(CallRef),
    #[serde(rename_all = "camelCase")]
    UserJoinedCall {
        call_id: String,
        user: Value,
        participants: Value,
    },
    #[serde(rename_all = "camelCase")]
    UserLeftCall {
        call_id: String,
        user_id: String,
        participants: Value,
    },
    UserReconnecting(CallUserRef),
    UserReconnected(CallUserRef),
    /// `initiator` is who rang (a [`public_user`]).
    #[serde(rename_all = "camelCase")]
    IncomingCall {
        call_id: String,
        initiator: Value,
        is_video: bool,
    },
    #[serde(rename_all = "camelCase")]
    InviteEnded {
        call_id: String,
        reason: InviteEndReason,
    },
    CallDeclined(CallUserRef),
    CallUnanswered(CallUserRef),
    CallMessage(ChatMessageOut),
    #[serde(rename_all = "camelCase")]
    CallMessages {
        call_id: String,
        messages: Vec<ChatMessageOut>,
    },
    UserBusy(CallUserRef),
    UserUnavailable(CallUserRef),
    /// A relayed `webrtc-*` message: its JSON as the sender's gateway made it.
    Relay(Relayed),
    /// An application event (`SendToUser`), named `app:<name>`.
    App(AppEvent),
}

impl ServerEvent {
    /// The event's name on the wire.
    pub fn name(&self) -> &str {
        match self {
            ServerEvent::UsersList(_) => names::USERS_LIST,
            ServerEvent::UserJoined(_) => names::USER_JOINED,
            ServerEvent::UserLeft(_) => names::USER_LEFT,
            ServerEvent::IceServers(_) => names::ICE_SERVERS,
            ServerEvent::MissedCalls { .. } => names::MISSED_CALLS,
            ServerEvent::CallStarted(_) => names::CALL_STARTED,
            ServerEvent::CallParticipants { .. } => names::CALL_PARTICIPANTS,
            ServerEvent::CallNotFound(_) => names::CALL_NOT_FOUND,
            ServerEvent::CallLeft(_) => names::CALL_LEFT,
            ServerEvent::CallEnded(_) => names::CALL_ENDED,
            ServerEvent::UserJoinedCall { .. } => names::USER_JOINED_CALL,
            ServerEvent::UserLeftCall { .. } => names::USER_LEFT_CALL,
            ServerEvent::UserReconnecting(_) => names::USER_RECONNECTING,
            ServerEvent::UserReconnected(_) => names::USER_RECONNECTED,
            ServerEvent::IncomingCall { .. } => names::INCOMING_CALL,
            ServerEvent::InviteEnded { .. } => names::INVITE_ENDED,
            ServerEvent::CallDeclined(_) => names::CALL_DECLINED,
            ServerEvent::CallUnanswered(_) => names::CALL_UNANSWERED,
            ServerEvent::CallMessage(_) => names::CALL_MESSAGE,
            ServerEvent::CallMessages { .. } => names::CALL_MESSAGES,
            ServerEvent::UserBusy(_) => names::USER_BUSY,
            ServerEvent::UserUnavailable(_) => names::USER_UNAVAILABLE,
            ServerEvent::Relay(relayed) => relayed.kind.name(),
            ServerEvent::App(app) => &app.name,
        }
    }

    /// Whether only sockets that asked for the calling extension (`calling:
    /// true` in their handshake) get this event.
    pub fn calling_only(&self) -> bool {
        matches!(
            self,
            ServerEvent::InviteEnded { .. }
                | ServerEvent::CallDeclined(_)
                | ServerEvent::CallUnanswered(_)
                | ServerEvent::CallMessage(_)
                | ServerEvent::CallMessages { .. }
                | ServerEvent::UserBusy(_)
                | ServerEvent::UserUnavailable(_)
                | ServerEvent::App(_)
        )
    }

    pub fn call_user(call_id: &str, user_id: &str) -> CallUserRef {
        CallUserRef {
            call_id: call_id.to_owned(),
            user_id: user_id.to_owned(),
        }
    }

    pub fn call_ref(call_id: &str) -> CallRef {
        CallRef {
            call_id: call_id.to_owned(),
        }
    }
}

/// `{ callId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRef {
    pub call_id: String,
}

/// `{ callId, userId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallUserRef {
    pub call_id: String,
    pub user_id: String,
}

/// How an invitation ended, as `invite-ended` tells the invitee's other sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InviteEndReason {
    AnsweredElsewhere,
    Declined,
    Missed,
    Cancelled,
}

/// A relay's JSON (an object), serialized as it is.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub kind: RelayKind,
    pub json: Box<RawValue>,
}

impl Serialize for Relayed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

/// An application event: its full name (`app:…`) and its JSON.
#[derive(Debug, Clone)]
pub struct AppEvent {
    pub name: String,
    pub json: Box<RawValue>,
}

impl AppEvent {
    /// An application event, if `name` is one (`app:…`): the protocol's own
    /// events cannot be sent this way.
    pub fn new(name: String, json: Box<RawValue>) -> Option<AppEvent> {
        name.starts_with(names::APP_PREFIX)
            .then_some(AppEvent { name, json })
    }
}

impl Serialize for AppEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

/// A chat message as clients get it in `call-message` and `call-messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessageOut {
    pub call_id: String,
    pub id: String,
    pub from: ChatSender,
    pub text: String,
    pub sent_at: String,
}

/// Who wrote a chat message; `kind` only for a bot or the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatSender {
    pub id: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

impl ChatMessageOut {
    pub fn new(call_id: &str, m: &ChatMessage) -> Self {
        let (id, username) = m
            .from
            .as_ref()
            .map(|u| (u.id.clone(), u.username.clone()))
            .unwrap_or_default();
        let kind = match SenderKind::try_from(m.kind) {
            Ok(SenderKind::Bot) => Some("bot"),
            Ok(SenderKind::System) => Some("system"),
            _ => None,
        };
        ChatMessageOut {
            call_id: call_id.to_owned(),
            id: m.id.clone(),
            from: ChatSender { id, username, kind },
            text: m.text.clone(),
            sent_at: iso_time(m.sent_at),
        }
    }
}

/// A user as clients see it: `{ id, username, joinedAt }`.
pub fn public_user(user: &User) -> Value {
    json!({ "id": user.id, "username": user.username, "joinedAt": iso_time(user.joined_at) })
}

/// `{ id, username }` of each user in the call, once each, in joining order.
pub fn public_participants(call: &Call) -> Value {
    let mut seen: Vec<&str> = Vec::new();
    let mut list = Vec::new();
    for p in &call.participants {
        if let Some(user) = &p.user
            && !seen.contains(&user.id.as_str())
        {
            seen.push(&user.id);
            list.push(json!({ "id": user.id, "username": user.username }));
        }
    }
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: &ServerEvent) -> Value {
        serde_json::to_value(event).expect("serializable")
    }

    #[test]
    fn payloads_have_the_documented_shapes() {
        let joined = ServerEvent::UserJoinedCall {
            call_id: "c".into(),
            user: json!({"id": "b"}),
            participants: json!([{"id": "a"}, {"id": "b"}]),
        };
        assert_eq!(joined.name(), "user-joined-call");
        assert_eq!(
            payload(&joined),
            json!({"callId": "c", "user": {"id": "b"}, "participants": [{"id": "a"}, {"id": "b"}]})
        );
        let ended = ServerEvent::InviteEnded {
            call_id: "c".into(),
            reason: InviteEndReason::AnsweredElsewhere,
        };
        assert_eq!(
            payload(&ended),
            json!({"callId": "c", "reason": "answered-elsewhere"})
        );
        let busy = ServerEvent::UserBusy(ServerEvent::call_user("c", "u"));
        assert_eq!(payload(&busy), json!({"callId": "c", "userId": "u"}));
        assert_eq!(payload(&ServerEvent::UserLeft("u".into())), json!("u"));
        let ringing = ServerEvent::IncomingCall {
            call_id: "c".into(),
            initiator: json!({"id": "a"}),
            is_video: true,
        };
        assert_eq!(
            payload(&ringing),
            json!({"callId": "c", "initiator": {"id": "a"}, "isVideo": true})
        );
    }

    #[test]
    fn relays_and_app_events_keep_their_json() {
        let json = RawValue::from_string(r#"{"seq":3,"callId":"c"}"#.into()).expect("json");
        let relay = ServerEvent::Relay(Relayed {
            kind: RelayKind::IceCandidate,
            json: json.clone(),
        });
        assert_eq!(relay.name(), "webrtc-ice-candidate");
        assert_eq!(
            serde_json::to_string(&relay).expect("serializable"),
            r#"{"seq":3,"callId":"c"}"#
        );
        assert!(!relay.calling_only());
        assert!(AppEvent::new("user-joined".into(), json.clone()).is_none());
        let app = ServerEvent::App(AppEvent::new("app:ping".into(), json).expect("app event"));
        assert_eq!(app.name(), "app:ping");
        assert!(app.calling_only());
    }

    #[test]
    fn a_chat_message_names_only_bots_and_the_system() {
        let mut m = ChatMessage {
            id: "m1".into(),
            from: Some(meetup_proto::calls::v1::CallUser {
                id: "a".into(),
                username: "Ann".into(),
            }),
            text: "hi".into(),
            ..ChatMessage::default()
        };
        let out = serde_json::to_value(ChatMessageOut::new("c", &m)).expect("serializable");
        assert_eq!(out["from"], json!({"id": "a", "username": "Ann"}));
        assert_eq!(out["callId"], json!("c"));
        m.kind = SenderKind::Bot as i32;
        let out = serde_json::to_value(ChatMessageOut::new("c", &m)).expect("serializable");
        assert_eq!(out["from"]["kind"], json!("bot"));
    }
}
