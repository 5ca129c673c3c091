//! Client payloads: the one place where JSON from browsers becomes typed commands.
//! Every rule of PROTOCOL.md's "Payload rules" is enforced here, and every failure
//! is an [`AckError`], never a panic.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use meetup_proto::bus::v1 as busv1;

use super::ack::{AckError, ErrorCode};
use super::names;

/// Longest id or username, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;
/// Most participants one `start-call` may list.
pub const MAX_PARTICIPANTS: usize = 64;

/// The client events the gateway handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    UserJoined,
    StartCall,
    JoinCall,
    LeaveCall,
    Offer,
    Answer,
    IceCandidate,
    GetCallHistory,
    DeclineCall,
    CancelCall,
    InviteToCall,
    CallMessage,
}

impl ClientEvent {
    pub const ALL: [ClientEvent; 12] = [
        ClientEvent::UserJoined,
        ClientEvent::StartCall,
        ClientEvent::JoinCall,
        ClientEvent::LeaveCall,
        ClientEvent::Offer,
        ClientEvent::Answer,
        ClientEvent::IceCandidate,
        ClientEvent::GetCallHistory,
        ClientEvent::DeclineCall,
        ClientEvent::CancelCall,
        ClientEvent::InviteToCall,
        ClientEvent::CallMessage,
    ];

    /// The client event called `name`, if it is one.
    pub fn from_name(name: &str) -> Option<ClientEvent> {
        ClientEvent::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientEvent::UserJoined => names::USER_JOINED,
            ClientEvent::StartCall => names::START_CALL,
            ClientEvent::JoinCall => names::JOIN_CALL,
            ClientEvent::LeaveCall => names::LEAVE_CALL,
            ClientEvent::Offer => names::WEBRTC_OFFER,
            ClientEvent::Answer => names::WEBRTC_ANSWER,
            ClientEvent::IceCandidate => names::WEBRTC_ICE_CANDIDATE,
            ClientEvent::GetCallHistory => names::GET_CALL_HISTORY,
            ClientEvent::DeclineCall => names::DECLINE_CALL,
            ClientEvent::CancelCall => names::CANCEL_CALL,
            ClientEvent::InviteToCall => names::INVITE_TO_CALL,
            ClientEvent::CallMessage => names::CALL_MESSAGE,
        }
    }
}

/// The kinds of relayed WebRTC signaling message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    Offer,
    Answer,
    IceCandidate,
}

impl RelayKind {
    /// The event that carries a relay of this kind, both ways.
    pub fn name(self) -> &'static str {
        match self {
            RelayKind::Offer => names::WEBRTC_OFFER,
            RelayKind::Answer => names::WEBRTC_ANSWER,
            RelayKind::IceCandidate => names::WEBRTC_ICE_CANDIDATE,
        }
    }

    /// The kind a relay on the bus carries (`bus.v1.RelayKind`), if known.
    pub fn from_proto(kind: i32) -> Option<RelayKind> {
        match busv1::RelayKind::try_from(kind) {
            Ok(busv1::RelayKind::Offer) => Some(RelayKind::Offer),
            Ok(busv1::RelayKind::Answer) => Some(RelayKind::Answer),
            Ok(busv1::RelayKind::IceCandidate) => Some(RelayKind::IceCandidate),
            _ => None,
        }
    }

    /// This kind as a relay on the bus carries it.
    pub fn to_proto(self) -> i32 {
        let kind = match self {
            RelayKind::Offer => busv1::RelayKind::Offer,
            RelayKind::Answer => busv1::RelayKind::Answer,
            RelayKind::IceCandidate => busv1::RelayKind::IceCandidate,
        };
        kind as i32
    }

    /// The payload field that carries the opaque signaling data.
    pub fn field(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::IceCandidate => "candidate",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserJoined {
    pub id: String,
    pub username: String,
    /// Extension: the client speaks resume (it sent `resumeToken`, null on its
    /// first registration), so its relays carry `seq`.
    pub speaks_resume: bool,
    /// Extension: the token of the session to take over.
    pub resume_token: Option<String>,
    /// Extension: the `seq` of the last relay the client received.
    pub last_seq: Option<u64>,
}

/// Longest resume token accepted (ours are 22 characters).
const MAX_RESUME_TOKEN: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct StartCall {
    pub id: String,
    pub invited_user_ids: Vec<String>,
    pub is_video: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallRef {
    pub call_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InviteToCall {
    pub call_id: String,
    pub user_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallMessage {
    pub call_id: String,
    pub text: String,
}

/// Longest chat message, in characters (Unicode code points).
pub const MAX_TEXT_CHARS: usize = 4_000;

#[derive(Debug)]
pub struct Relay {
    pub kind: RelayKind,
    pub call_id: String,
    pub target_user_id: String,
    pub data: Box<RawValue>,
}

/// Splits a Socket.IO event packet (`["name", payload, ...]`) and returns its
/// payload, refusing what is too large before parsing any of it.
pub fn event_payload(packet: &str, max_bytes: usize) -> Result<Box<RawValue>, AckError> {
    if packet.len() > max_bytes {
        return Err(AckError::new(
            ErrorCode::PayloadTooLarge,
            format!("payload is larger than {max_bytes} bytes"),
        ));
    }
    let mut args: Vec<Box<RawValue>> =
        serde_json::from_str(packet).map_err(|_| AckError::invalid("payload is not valid JSON"))?;
    if args.len() < 2 {
        return Err(AckError::invalid("payload is missing"));
    }
    Ok(args.swap_remove(1))
}

fn object(raw: &RawValue) -> Result<Map<String, Value>, AckError> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AckError::invalid("payload must be an object")),
    }
}

fn check_len(field: &str, s: &str) -> Result<(), AckError> {
    if s.is_empty() || s.len() > MAX_FIELD_BYTES {
        return Err(AckError::invalid(format!(
            "`{field}` must be 1 to {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}

fn string(map: &Map<String, Value>, field: &str) -> Result<String, AckError> {
    match map.get(field) {
        Some(Value::String(s)) => {
            check_len(field, s)?;
            Ok(s.clone())
        }
        Some(_) => Err(AckError::invalid(format!("`{field}` must be a string"))),
        None => Err(AckError::invalid(format!("`{field}` is required"))),
    }
}

fn require_object(map: &Map<String, Value>, field: &str) -> Result<(), AckError> {
    match map.get(field) {
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(AckError::invalid(format!("`{field}` must be an object"))),
        None => Err(AckError::invalid(format!("`{field}` is required"))),
    }
}

pub fn user_joined(raw: &RawValue) -> Result<UserJoined, AckError> {
    let map = object(raw)?;
    let (speaks_resume, resume_token) = match map.get("resumeToken") {
        None => (false, None),
        Some(Value::Null) => (true, None),
        Some(Value::String(token)) if !token.is_empty() && token.len() <= MAX_RESUME_TOKEN => {
            (true, Some(token.clone()))
        }
        Some(_) => {
            return Err(AckError::invalid(format!(
                "`resumeToken` must be null or a string of 1 to {MAX_RESUME_TOKEN} characters"
            )));
        }
    };
    let last_seq = match map.get("lastSeq") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(AckError::invalid(
                "`lastSeq` must be a non-negative integer",
            ));
        }
    };
    Ok(UserJoined {
        id: string(&map, "id")?,
        username: string(&map, "username")?,
        speaks_resume,
        resume_token,
        last_seq,
    })
}

pub fn start_call(raw: &RawValue) -> Result<StartCall, AckError> {
    let map = object(raw)?;
    let id = string(&map, "id")?;
    require_object(&map, "initiator")?;
    let participants = match map.get("participants") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(AckError::invalid("`participants` must be an array")),
        None => return Err(AckError::invalid("`participants` is required")),
    };
    if participants.len() > MAX_PARTICIPANTS {
        return Err(AckError::invalid(format!(
            "`participants` lists more than {MAX_PARTICIPANTS} users"
        )));
    }
    let mut invited_user_ids = Vec::with_capacity(participants.len());
    for p in participants {
        let Value::Object(p) = p else {
            return Err(AckError::invalid("each participant must be an object"));
        };
        invited_user_ids.push(
            string(p, "id")
                .map_err(|e| AckError::invalid(format!("participants[]: {}", e.message)))?,
        );
    }
    let is_video = match map.get("isVideo") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(AckError::invalid("`isVideo` must be a boolean")),
        None => return Err(AckError::invalid("`isVideo` is required")),
    };
    Ok(StartCall {
        id,
        invited_user_ids,
        is_video,
    })
}

pub fn join_call(raw: &RawValue) -> Result<CallRef, AckError> {
    let map = object(raw)?;
    let call_id = string(&map, "callId")?;
    require_object(&map, "user")?;
    Ok(CallRef { call_id })
}

pub fn leave_call(raw: &RawValue) -> Result<CallRef, AckError> {
    let map = object(raw)?;
    let call_id = string(&map, "callId")?;
    string(&map, "userId")?;
    Ok(CallRef { call_id })
}

/// `decline-call` and `cancel-call`: `{ callId }`.
pub fn call_ref(raw: &RawValue) -> Result<CallRef, AckError> {
    let map = object(raw)?;
    Ok(CallRef {
        call_id: string(&map, "callId")?,
    })
}

pub fn invite_to_call(raw: &RawValue) -> Result<InviteToCall, AckError> {
    let map = object(raw)?;
    let call_id = string(&map, "callId")?;
    let list = match map.get("userIds") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(AckError::invalid("`userIds` must be an array")),
        None => return Err(AckError::invalid("`userIds` is required")),
    };
    if list.is_empty() || list.len() > MAX_PARTICIPANTS {
        return Err(AckError::invalid(format!(
            "`userIds` must list 1 to {MAX_PARTICIPANTS} users"
        )));
    }
    let mut user_ids = Vec::with_capacity(list.len());
    for id in list {
        match id {
            Value::String(id) => {
                check_len("userIds[]", id)?;
                user_ids.push(id.clone());
            }
            _ => return Err(AckError::invalid("each of `userIds` must be a string")),
        }
    }
    Ok(InviteToCall { call_id, user_ids })
}

pub fn call_message(raw: &RawValue) -> Result<CallMessage, AckError> {
    let map = object(raw)?;
    let call_id = string(&map, "callId")?;
    let text = match map.get("text") {
        Some(Value::String(text)) => text,
        Some(_) => return Err(AckError::invalid("`text` must be a string")),
        None => return Err(AckError::invalid("`text` is required")),
    };
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(AckError::invalid(format!(
            "`text` must be 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(CallMessage {
        call_id,
        text: text.clone(),
    })
}

/// Parses a relay without touching the opaque data, which is forwarded as written.
pub fn relay(kind: RelayKind, raw: &RawValue) -> Result<Relay, AckError> {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(rename = "callId")]
        call_id: Option<Box<RawValue>>,
        #[serde(rename = "targetUserId")]
        target_user_id: Option<Box<RawValue>>,
        offer: Option<Box<RawValue>>,
        answer: Option<Box<RawValue>>,
        candidate: Option<Box<RawValue>>,
    }
    let trimmed = raw.get().trim_start();
    if !trimmed.starts_with('{') {
        return Err(AckError::invalid("payload must be an object"));
    }
    let fields: Fields = serde_json::from_str(raw.get())
        .map_err(|_| AckError::invalid("payload must be an object"))?;
    let text = |field: &str, value: Option<Box<RawValue>>| -> Result<String, AckError> {
        let value = value.ok_or_else(|| AckError::invalid(format!("`{field}` is required")))?;
        let s: String = serde_json::from_str(value.get())
            .map_err(|_| AckError::invalid(format!("`{field}` must be a string")))?;
        check_len(field, &s)?;
        Ok(s)
    };
    let call_id = text("callId", fields.call_id)?;
    let target_user_id = text("targetUserId", fields.target_user_id)?;
    let data = match kind {
        RelayKind::Offer => fields.offer,
        RelayKind::Answer => fields.answer,
        RelayKind::IceCandidate => fields.candidate,
    };
    // serde maps a JSON `null` to `None`; the field is present, so keep it as null.
    let data = match data {
        Some(data) => data,
        None if has_key(raw.get(), kind.field()) => RawValue::from_string("null".into())
            .map_err(|_| AckError::new(ErrorCode::Internal, "internal error"))?,
        None => return Err(AckError::invalid(format!("`{}` is required", kind.field()))),
    };
    Ok(Relay {
        kind,
        call_id,
        target_user_id,
        data,
    })
}

/// True when the top level of a JSON object has `key` (only called on the rare
/// `null` signaling data, so the second parse is acceptable).
fn has_key(object: &str, key: &str) -> bool {
    serde_json::from_str::<std::collections::HashMap<String, serde::de::IgnoredAny>>(object)
        .map(|m| m.contains_key(key))
        .unwrap_or(false)
}

/// The payload a relay's target receives: `{ callId, fromUserId, <field>: data }`.
pub fn relay_out(relay: &Relay, from_user_id: &str) -> String {
    let mut out = String::with_capacity(relay.data.get().len() + 96);
    out.push_str("{\"callId\":");
    out.push_str(&Value::from(relay.call_id.as_str()).to_string());
    out.push_str(",\"fromUserId\":");
    out.push_str(&Value::from(from_user_id).to_string());
    out.push_str(",\"");
    out.push_str(relay.kind.field());
    out.push_str("\":");
    out.push_str(relay.data.get());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).expect("valid json")
    }

    fn code<T: std::fmt::Debug>(r: Result<T, AckError>) -> ErrorCode {
        r.expect_err("must fail").code
    }

    #[test]
    fn packet_splitting_checks_size_first() {
        let p = event_payload(r#"["user-joined",{"id":"1"}]"#, 100).expect("fits");
        assert_eq!(p.get(), r#"{"id":"1"}"#);
        assert_eq!(
            code(event_payload(r#"["x",{"id":"1"}]"#, 5)),
            ErrorCode::PayloadTooLarge
        );
        assert_eq!(
            code(event_payload(r#"["x"]"#, 100)),
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn user_joined_requires_string_id_and_username() {
        let ok = user_joined(&raw(json!({"id": "1", "username": "Ann", "joinedAt": "x"})));
        assert_eq!(
            ok.expect("valid"),
            UserJoined {
                id: "1".into(),
                username: "Ann".into(),
                speaks_resume: false,
                resume_token: None,
                last_seq: None,
            }
        );
        let resuming = user_joined(&raw(
            json!({"id": "1", "username": "Ann", "resumeToken": "t", "lastSeq": 7}),
        ))
        .expect("valid");
        assert_eq!(
            (
                resuming.speaks_resume,
                resuming.resume_token,
                resuming.last_seq
            ),
            (true, Some("t".to_owned()), Some(7))
        );
        let first = user_joined(&raw(
            json!({"id": "1", "username": "Ann", "resumeToken": null}),
        ))
        .expect("valid");
        assert_eq!((first.speaks_resume, first.resume_token), (true, None));
        for bad in [
            json!({"id": "1", "username": "Ann", "resumeToken": 5}),
            json!({"id": "1", "username": "Ann", "resumeToken": ""}),
            json!({"id": "1", "username": "Ann", "resumeToken": "x".repeat(129)}),
            json!({"id": "1", "username": "Ann", "lastSeq": -1}),
            json!({"id": "1", "username": "Ann", "lastSeq": "3"}),
            json!({"id": "1", "username": "Ann", "lastSeq": 1.5}),
        ] {
            assert_eq!(
                user_joined(&raw(bad.clone())).map_err(|e| e.code),
                Err(ErrorCode::InvalidPayload),
                "{bad}"
            );
        }
        for bad in [
            json!(null),
            json!(1),
            json!("s"),
            json!([]),
            json!({}),
            json!({"id": "1"}),
            json!({"username": "Ann"}),
            json!({"id": 1, "username": "Ann"}),
            json!({"id": "1", "username": ["Ann"]}),
            json!({"id": "", "username": "Ann"}),
            json!({"id": "x".repeat(129), "username": "Ann"}),
        ] {
            assert_eq!(
                code(user_joined(&raw(bad.clone()))),
                ErrorCode::InvalidPayload,
                "{bad}"
            );
        }
    }

    #[test]
    fn start_call_checks_every_field() {
        let good = json!({"id": "c", "initiator": {"id": "1"}, "participants": [{"id": "2"}], "isVideo": true});
        let parsed = start_call(&raw(good.clone())).expect("valid");
        assert_eq!(parsed.invited_user_ids, vec!["2".to_string()]);
        assert!(parsed.is_video);
        for field in ["id", "initiator", "participants", "isVideo"] {
            let mut missing = good.clone();
            missing.as_object_mut().expect("object").remove(field);
            assert_eq!(
                code(start_call(&raw(missing))),
                ErrorCode::InvalidPayload,
                "{field}"
            );
            let mut mistyped = good.clone();
            mistyped[field] = json!(12);
            assert_eq!(
                code(start_call(&raw(mistyped))),
                ErrorCode::InvalidPayload,
                "{field}"
            );
        }
        let mut bad_participant = good.clone();
        bad_participant["participants"] = json!([{"name": "no id"}]);
        assert_eq!(
            code(start_call(&raw(bad_participant))),
            ErrorCode::InvalidPayload
        );
        let mut too_many = good;
        too_many["participants"] = json!(
            (0..65)
                .map(|i| json!({"id": i.to_string()}))
                .collect::<Vec<_>>()
        );
        assert_eq!(code(start_call(&raw(too_many))), ErrorCode::InvalidPayload);
    }

    #[test]
    fn join_and_leave_need_call_id_and_identity_shape() {
        assert!(join_call(&raw(json!({"callId": "c", "user": {"id": "1"}}))).is_ok());
        assert_eq!(
            code(join_call(&raw(json!({"callId": "c"})))),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(join_call(&raw(json!({"callId": 3, "user": {}})))),
            ErrorCode::InvalidPayload
        );
        assert!(leave_call(&raw(json!({"callId": "c", "userId": "1"}))).is_ok());
        assert_eq!(
            code(leave_call(&raw(json!({"callId": "c", "userId": 1})))),
            ErrorCode::InvalidPayload
        );
    }

    #[test]
    fn relays_keep_opaque_data_verbatim() {
        let body = r#"{"callId":"c","targetUserId":"2","offer":{"sdp":"v=0\r\n","type":"offer","n":1.50}}"#;
        let r = relay(
            RelayKind::Offer,
            &RawValue::from_string(body.into()).expect("json"),
        )
        .expect("valid");
        assert_eq!(r.data.get(), r#"{"sdp":"v=0\r\n","type":"offer","n":1.50}"#);
        let out: Value = serde_json::from_str(&relay_out(&r, "1\"x")).expect("valid output");
        assert_eq!(
            out,
            json!({"callId": "c", "fromUserId": "1\"x", "offer": {"sdp": "v=0\r\n", "type": "offer", "n": 1.50}})
        );

        let null = relay(
            RelayKind::IceCandidate,
            &raw(json!({"callId": "c", "targetUserId": "2", "candidate": null})),
        )
        .expect("null is data");
        assert_eq!(null.data.get(), "null");
        assert_eq!(
            code(relay(
                RelayKind::Answer,
                &raw(json!({"callId": "c", "targetUserId": "2"}))
            )),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(relay(
                RelayKind::Answer,
                &raw(json!({"callId": "c", "targetUserId": 2, "answer": {}}))
            )),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(relay(RelayKind::Answer, &raw(json!([1, 2])))),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(relay(RelayKind::Answer, &raw(json!("s")))),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(relay(RelayKind::Answer, &raw(json!(null)))),
            ErrorCode::InvalidPayload
        );
    }
    #[test]
    fn the_calling_events_check_their_fields() {
        let call = call_ref(&raw(json!({ "callId": "c1", "extra": 1 }))).expect("valid");
        assert_eq!(call.call_id, "c1");
        assert_eq!(code(call_ref(&raw(json!({})))), ErrorCode::InvalidPayload);
        assert_eq!(code(call_ref(&raw(json!("c1")))), ErrorCode::InvalidPayload);

        let invite =
            invite_to_call(&raw(json!({ "callId": "c1", "userIds": ["a", "b"] }))).expect("valid");
        assert_eq!(invite.user_ids, ["a", "b"]);
        let too_many: Vec<String> = (0..=MAX_PARTICIPANTS).map(|n| n.to_string()).collect();
        for bad in [
            json!({ "callId": "c1" }),
            json!({ "callId": "c1", "userIds": [] }),
            json!({ "callId": "c1", "userIds": "a" }),
            json!({ "callId": "c1", "userIds": [1] }),
            json!({ "callId": "c1", "userIds": [""] }),
            json!({ "callId": "c1", "userIds": too_many }),
            json!({ "userIds": ["a"] }),
        ] {
            assert_eq!(
                code(invite_to_call(&raw(bad.clone()))),
                ErrorCode::InvalidPayload,
                "{bad}"
            );
        }

        let max = "é".repeat(MAX_TEXT_CHARS);
        let message = call_message(&raw(json!({ "callId": "c1", "text": max }))).expect("valid");
        assert_eq!(message.text.chars().count(), MAX_TEXT_CHARS);
        for bad in [
            json!({ "callId": "c1", "text": "" }),
            json!({ "callId": "c1", "text": "x".repeat(MAX_TEXT_CHARS + 1) }),
            json!({ "callId": "c1", "text": 5 }),
            json!({ "callId": "c1" }),
            json!({ "text": "hi" }),
        ] {
            assert_eq!(
                code(call_message(&raw(bad.clone()))),
                ErrorCode::InvalidPayload
            );
        }
    }
}

/// Most calls one `get-call-history` page may ask for.
pub const MAX_HISTORY_PAGE: u32 = 100;
/// Longest page token (`before`), in bytes.
pub const MAX_PAGE_TOKEN_BYTES: usize = 512;

/// `get-call-history`: which page of the sender's own calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// 1 to [`MAX_HISTORY_PAGE`]; 20 when absent.
    pub limit: u32,
    /// The `next` of a previous page; absent for the newest calls.
    pub before: Option<String>,
}

/// Any user id in the payload is ignored: the history is always the sender's own.
pub fn get_call_history(raw: &RawValue) -> Result<HistoryQuery, AckError> {
    let map = object(raw)?;
    let limit = match map.get("limit") {
        None | Some(Value::Null) => 20,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n @ 1..) if n <= u64::from(MAX_HISTORY_PAGE) => n as u32,
            _ => {
                return Err(AckError::invalid(format!(
                    "`limit` must be an integer from 1 to {MAX_HISTORY_PAGE}"
                )));
            }
        },
        Some(_) => {
            return Err(AckError::invalid(format!(
                "`limit` must be an integer from 1 to {MAX_HISTORY_PAGE}"
            )));
        }
    };
    let before = match map.get("before") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_PAGE_TOKEN_BYTES => {
            Some(s.clone())
        }
        Some(_) => {
            return Err(AckError::invalid(format!(
                "`before` must be the `next` string of a previous page (1 to {MAX_PAGE_TOKEN_BYTES} bytes)"
            )));
        }
    };
    Ok(HistoryQuery { limit, before })
}

#[cfg(test)]
mod history_tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<HistoryQuery, AckError> {
        let raw = RawValue::from_string(v.to_string()).map_err(|_| AckError::invalid("json"))?;
        get_call_history(&raw)
    }

    #[test]
    fn history_queries_have_bounded_limits_and_string_tokens() {
        assert_eq!(
            parse(json!({})).ok(),
            Some(HistoryQuery {
                limit: 20,
                before: None
            })
        );
        assert_eq!(
            parse(json!({"limit": 5, "before": "abc", "userId": "someone-else"})).ok(),
            Some(HistoryQuery {
                limit: 5,
                before: Some("abc".into())
            })
        );
        assert_eq!(
            parse(json!({"limit": null, "before": null}))
                .map(|q| q.limit)
                .ok(),
            Some(20)
        );
        for bad in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"limit": 0}),
            json!({"limit": 101}),
            json!({"limit": -1}),
            json!({"limit": 2.5}),
            json!({"limit": "5"}),
            json!({"before": 7}),
            json!({"before": ""}),
            json!({"before": "x".repeat(MAX_PAGE_TOKEN_BYTES + 1)}),
        ] {
            assert_eq!(
                parse(bad.clone()).map_err(|e| e.code).err(),
                Some(ErrorCode::InvalidPayload),
                "{bad}"
            );
        }
    }
}
