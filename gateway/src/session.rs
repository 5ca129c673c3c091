//! One socket's life: its events are queued as they arrive and handled strictly in
//! order by one task, which turns them into gRPC calls on the services, relays, and
//! acknowledgements. Disconnect cleanup runs last, after every queued event.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use meetup_proto::bus::v1 as busv1;
use meetup_proto::calls::v1::{
    CallUser, JoinCallRequest, LeaveCallRequest, Participant, RemoveSessionRequest,
    StartCallRequest,
};
use meetup_proto::presence::v1::{RegisterSessionRequest, UnregisterSessionRequest};
use meetup_runtime::subjects;
use prost::Message;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{
    ConnectHandler, FromMessageParts, MessageHandler, Value as PacketValue,
};
use socketioxide::socket::Socket;
use tokio::sync::mpsc;
use tonic::Code;

use crate::ack::{AckError, ErrorCode, ok};
use crate::auth::{Claims, handshake_token};
use crate::gateway::{Gateway, LocalSession};
use crate::history::{self, History};
use crate::limits::{EventLimiter, Verdict};
use crate::metrics;
use crate::payload::{self, ClientEvent, RelayKind};
use crate::replica::{public_participants, public_user};

/// What a socket's task is asked to do, in arrival order.
enum Queued {
    Event {
        event: ClientEvent,
        packet: PacketValue,
        ack: AckSender,
        received: Instant,
    },
    Disconnect,
}

/// Connect handler of the default namespace: wires a new socket to its task.
#[derive(Clone, Debug)]
pub struct OnConnect {
    gw: Gateway,
    history: History,
}

impl OnConnect {
    pub fn new(gw: Gateway, history: History) -> Self {
        OnConnect { gw, history }
    }
}

/// Marker for [`OnConnect`]'s handler signature.
pub struct Synchronous;

impl ConnectHandler<LocalAdapter, Synchronous> for OnConnect {
    fn call(&self, _socket: Arc<Socket<LocalAdapter>>, _auth: Option<PacketValue>) {}

    // The socket is wired up in the middleware, which runs before the client is
    // told it is connected: no event it sends can find the handlers missing.
    fn call_middleware<'a>(
        &'a self,
        s: Arc<Socket<LocalAdapter>>,
        auth: &'a Option<PacketValue>,
    ) -> Pin<Box<dyn Future<Output = Result<(), Box<dyn std::fmt::Display + Send>>> + Send + 'a>>
    {
        let claims = match self.gw.auth() {
            None => None,
            Some(authenticator) => {
                let auth: Option<Value> = auth
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .and_then(|text| serde_json::from_str(text.as_str()).ok());
                let token = handshake_token(auth.as_ref(), s.req_parts().uri.query());
                let verified = match token {
                    Some(token) => authenticator.verify(&token),
                    None => Err("missing token".to_owned()),
                };
                match verified {
                    Ok(claims) => Some(claims),
                    Err(reason) => {
                        tracing::info!(session_id = %s.id, reason, "handshake refused");
                        let message: Box<dyn std::fmt::Display + Send> =
                            Box::new(format!("authentication failed: {reason}"));
                        return Box::pin(async move { Err(message) });
                    }
                }
            }
        };
        self.wire(SocketRef::from(s), claims);
        Box::pin(async { Ok(()) })
    }
}

impl OnConnect {
    fn wire(&self, socket: SocketRef, claims: Option<Claims>) {
        // Its own room, so that broadcasts can leave the sender out.
        socket.join(socket.id);
        let limits = self.gw.limits();
        let (tx, rx) = mpsc::channel(limits.socket_queue);
        let limiter = Arc::new(Mutex::new(EventLimiter::new(
            limits.events_per_sec,
            limits.events_burst,
            limits.abuse_disconnect_after,
        )));
        for event in ClientEvent::ALL {
            socket.on(
                event.name(),
                Enqueue {
                    event,
                    tx: tx.clone(),
                    limiter: limiter.clone(),
                },
            );
        }
        socket.on_disconnect(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Queued::Disconnect).await;
            }
        });
        tracing::debug!(session_id = %socket.id, transport = ?socket.transport_type(), "socket connected");
        let worker = SessionWorker {
            session_id: socket.id.to_string(),
            gw: self.gw.clone(),
            history: self.history.clone(),
            socket,
            identity: None,
            claims,
        };
        tokio::spawn(worker.run(rx));
    }
}

/// Message handler that only queues the event, in the engine's reading order,
/// after the socket's rate limit.
#[derive(Clone)]
struct Enqueue {
    event: ClientEvent,
    tx: mpsc::Sender<Queued>,
    // A std Mutex is fine: taken for a few arithmetic operations, never across an `.await`.
    limiter: Arc<Mutex<EventLimiter>>,
}

impl MessageHandler<LocalAdapter, Synchronous> for Enqueue {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut packet: PacketValue, ack_id: Option<i64>) {
        let ack = match AckSender::from_message_parts(&s, &mut packet, &ack_id) {
            Ok(ack) => ack,
            Err(never) => match never {},
        };
        let verdict = self
            .limiter
            .lock()
            .map(|mut l| l.check(Instant::now()))
            .unwrap_or(Verdict::Allow);
        if verdict == Verdict::Drop {
            return;
        }
        if verdict != Verdict::Allow {
            metrics::get().event_in(self.event.name(), ErrorCode::RateLimited.as_str());
            let error = AckError::new(ErrorCode::RateLimited, "too many events; slow down");
            let _ = ack.send(&error.body());
            if verdict == Verdict::Disconnect {
                tracing::warn!(session_id = %s.id, "sustained event flood; disconnecting");
                // After the acks already queued have gone out (later events are
                // dropped unanswered), so that the client sees a server disconnect
                // rather than a dropped transport.
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let _ = s.disconnect();
                });
            }
            return;
        }
        let queued = Queued::Event {
            event: self.event,
            packet,
            ack,
            received: Instant::now(),
        };
        if let Err(mpsc::error::TrySendError::Full(Queued::Event { ack, event, .. })) =
            self.tx.try_send(queued)
        {
            tracing::warn!(session_id = %s.id, event = event.name(), "socket queue full; event refused");
            metrics::get().event_in(event.name(), ErrorCode::Overloaded.as_str());
            let error = AckError::new(
                ErrorCode::Overloaded,
                "too many events waiting on this socket; this one was dropped",
            );
            let _ = ack.send(&error.body());
        }
    }
}

/// The registered user behind a socket.
#[derive(Debug, Clone)]
struct Identity {
    user_id: String,
    username: String,
}

struct SessionWorker {
    gw: Gateway,
    history: History,
    socket: SocketRef,
    session_id: String,
    identity: Option<Identity>,
    /// The verified token of the handshake, when authentication is on.
    claims: Option<Claims>,
}

impl SessionWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        metrics::get().connections.inc();
        while let Some(queued) = rx.recv().await {
            match queued {
                Queued::Event {
                    event,
                    packet,
                    ack,
                    received,
                } => {
                    // Boxed: the handlers' futures (gRPC calls inside) are large, and
                    // an idle socket's task should not carry their size around.
                    let body = match Box::pin(self.handle(event, &packet)).await {
                        Ok(body) => {
                            metrics::get().event_in(event.name(), "ok");
                            if matches!(
                                event,
                                ClientEvent::Offer
                                    | ClientEvent::Answer
                                    | ClientEvent::IceCandidate
                            ) {
                                metrics::get().relay_handled(received.elapsed());
                            }
                            body
                        }
                        Err(error) => {
                            tracing::debug!(session_id = %self.session_id, event = event.name(), code = %error.code, "event refused");
                            metrics::get().event_in(event.name(), error.code.as_str());
                            error.body()
                        }
                    };
                    if let Err(error) = ack.send(&body) {
                        tracing::debug!(session_id = %self.session_id, %error, "ack not sent");
                    }
                }
                Queued::Disconnect => break,
            }
        }
        Box::pin(self.cleanup()).await;
        metrics::get().connections.dec();
    }

    async fn handle(
        &mut self,
        event: ClientEvent,
        packet: &PacketValue,
    ) -> Result<Value, AckError> {
        let text = match packet {
            PacketValue::Str(text, None) => text.as_str(),
            _ => return Err(AckError::invalid("binary payloads are not accepted")),
        };
        let payload = payload::event_payload(text, self.gw.limits().max_payload_bytes)?;
        match event {
            ClientEvent::UserJoined => self.user_joined(&payload).await,
            ClientEvent::StartCall => self.start_call(&payload).await,
            ClientEvent::JoinCall => self.join_call(&payload).await,
            ClientEvent::LeaveCall => self.leave_call(&payload).await,
            ClientEvent::Offer => self.relay(RelayKind::Offer, &payload).await,
            ClientEvent::Answer => self.relay(RelayKind::Answer, &payload).await,
            ClientEvent::IceCandidate => self.relay(RelayKind::IceCandidate, &payload).await,
            ClientEvent::GetCallHistory => {
                let me = self.identity()?;
                let query = payload::get_call_history(&payload)?;
                history::get_call_history(&self.history, &me.user_id, query).await
            }
        }
    }

    fn identity(&self) -> Result<&Identity, AckError> {
        self.identity.as_ref().ok_or_else(AckError::not_registered)
    }

    fn participant(&self, me: &Identity) -> Participant {
        Participant {
            user: Some(CallUser {
                id: me.user_id.clone(),
                username: me.username.clone(),
            }),
            session_id: self.session_id.clone(),
            gateway_id: self.gw.id().to_owned(),
            joined_at: None,
        }
    }

    fn emit(&self, event: &str, data: &Value) {
        match self.socket.emit(event, data) {
            Ok(()) => metrics::get().event_out(event, 1),
            Err(error) => {
                tracing::debug!(session_id = %self.session_id, event, %error, "emit failed")
            }
        }
    }

    async fn user_joined(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let mut cmd = payload::user_joined(payload)?;
        if let Some(claims) = &self.claims {
            if claims.sub != cmd.id {
                return Err(AckError::new(
                    ErrorCode::Forbidden,
                    "your token lets you register only as its own user id",
                ));
            }
            if let Some(username) = &claims.username {
                cmd.username = username.clone();
            }
        }
        if let Some(me) = &self.identity
            && me.user_id != cmd.id
        {
            return Err(AckError::new(
                ErrorCode::AlreadyRegistered,
                "this socket is registered as another user; reconnect to change identity",
            ));
        }
        let previous = self.gw.set_local(
            &self.session_id,
            LocalSession {
                user_id: cmd.id.clone(),
                username: cmd.username.clone(),
                joined_at: None,
                registered: false,
                since: Instant::now(),
            },
        );
        let result = self
            .gw
            .presence()
            .register_session(RegisterSessionRequest {
                user_id: cmd.id.clone(),
                username: cmd.username.clone(),
                gateway_id: self.gw.id().to_owned(),
                session_id: self.session_id.clone(),
                joined_at: None,
            })
            .await;
        if result.is_err() {
            match previous {
                Some(previous) => self.gw.set_local(&self.session_id, previous),
                None => self.gw.forget_local(&self.session_id),
            };
        }
        let response = result
            .map_err(|status| match status.code() {
                Code::AlreadyExists => AckError::new(
                    ErrorCode::AlreadyRegistered,
                    "this socket is registered as another user; reconnect to change identity",
                ),
                Code::ResourceExhausted => AckError::new(
                    ErrorCode::TooManySockets,
                    "this user id has too many sockets open",
                ),
                _ => AckError::from_status(&status, "register session"),
            })?
            .into_inner();
        let user = response.user.unwrap_or_default();
        self.gw.confirm_local(&self.session_id, user.joined_at);
        if self.identity.is_none() {
            metrics::get().registered_sockets.inc();
        }
        self.identity = Some(Identity {
            user_id: cmd.id,
            username: cmd.username,
        });
        self.gw
            .replica()
            .wait_presence(response.version, self.gw.limits().announce_wait)
            .await;
        // Extension: the ICE servers this user should use, TURN credentials included.
        self.emit("ice-servers", &self.gw.ice().for_user(&user.id));
        history::send_missed_calls(&self.history, &self.socket, &user.id).await;
        Ok(ok(json!({ "user": public_user(&user) })))
    }

    async fn start_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let me = self.identity()?.clone();
        let cmd = payload::start_call(payload)?;
        let response = self
            .gw
            .calls()
            .start_call(StartCallRequest {
                call_id: cmd.id.clone(),
                initiator: Some(self.participant(&me)),
                is_video: cmd.is_video,
                invited_user_ids: cmd.invited_user_ids,
            })
            .await
            .map_err(|status| match status.code() {
                Code::AlreadyExists => {
                    AckError::new(ErrorCode::CallExists, "a live call already has this id")
                }
                Code::ResourceExhausted => AckError::new(
                    ErrorCode::TooManyCalls,
                    "you have started too many live calls",
                ),
                _ => AckError::from_status(&status, "start call"),
            })?
            .into_inner();
        self.gw
            .replica()
            .wait_calls(response.sequence, self.gw.limits().announce_wait)
            .await;
        let body = json!({ "callId": cmd.id });
        self.emit("call-started", &body);
        Ok(ok(body))
    }

    async fn join_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let me = self.identity()?.clone();
        let cmd = payload::join_call(payload)?;
        let result = self
            .gw
            .calls()
            .join_call(JoinCallRequest {
                call_id: cmd.call_id.clone(),
                participant: Some(self.participant(&me)),
            })
            .await;
        let response = match result {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                self.emit("call-not-found", &json!({ "callId": cmd.call_id }));
                return Err(AckError::new(
                    ErrorCode::CallNotFound,
                    "no live call has this id",
                ));
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                return Err(AckError::new(ErrorCode::CallFull, "this call is full"));
            }
            Err(status) => return Err(AckError::from_status(&status, "join call")),
        };
        self.gw
            .replica()
            .wait_calls(response.sequence, self.gw.limits().announce_wait)
            .await;
        let participants = response
            .call
            .as_ref()
            .map(public_participants)
            .unwrap_or_else(|| json!([]));
        let body = json!({ "callId": cmd.call_id, "participants": participants });
        self.emit("call-participants", &body);
        Ok(ok(body))
    }

    async fn leave_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        self.identity()?;
        let cmd = payload::leave_call(payload)?;
        let response = self
            .gw
            .calls()
            .leave_call(LeaveCallRequest {
                call_id: cmd.call_id.clone(),
                session_id: self.session_id.clone(),
            })
            .await
            .map_err(|status| AckError::from_status(&status, "leave call"))?
            .into_inner();
        self.gw
            .replica()
            .wait_calls(response.sequence, self.gw.limits().announce_wait)
            .await;
        self.emit("call-left", &json!({ "callId": cmd.call_id }));
        Ok(ok(json!({ "callId": cmd.call_id, "left": response.left })))
    }

    /// Relays never wait on a service: the mirror decides, the bus carries.
    async fn relay(&mut self, kind: RelayKind, payload: &RawValue) -> Result<Value, AckError> {
        let me = self.identity()?;
        let relay = payload::relay(kind, payload)?;
        let route =
            self.gw
                .replica()
                .route_relay(&relay.call_id, &me.user_id, &relay.target_user_id)?;
        let out = payload::relay_out(&relay, &me.user_id);
        if route.gateway_id == self.gw.id() {
            let raw = RawValue::from_string(out)
                .map_err(|_| AckError::new(ErrorCode::Internal, "internal error"))?;
            self.gw
                .emit_to_session(&route.session_id, kind.event(), &*raw);
        } else {
            if !self.gw.bus().is_connected() {
                return Err(AckError::new(
                    ErrorCode::Unavailable,
                    "the message bus is unavailable; try again",
                ));
            }
            let message = busv1::Relay {
                target_session_id: route.session_id,
                kind: match kind {
                    RelayKind::Offer => busv1::RelayKind::Offer,
                    RelayKind::Answer => busv1::RelayKind::Answer,
                    RelayKind::IceCandidate => busv1::RelayKind::IceCandidate,
                } as i32,
                call_id: relay.call_id,
                from_user_id: me.user_id.clone(),
                payload_json: out,
            };
            self.gw
                .bus()
                .publish(
                    subjects::gateway_relay(&route.gateway_id),
                    message.encode_to_vec().into(),
                )
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "relay not published");
                    metrics::get().bus_error("publish relay");
                    AckError::new(
                        ErrorCode::Unavailable,
                        "the message bus is unavailable; try again",
                    )
                })?;
        }
        Ok(ok(json!({})))
    }

    /// The socket is gone: leave its calls first, then presence, as the protocol orders.
    async fn cleanup(&mut self) {
        let Some(me) = self.identity.take() else {
            return;
        };
        metrics::get().registered_sockets.dec();
        let session_id = self.session_id.clone();
        // Forgotten first: were the calls below to fail, the reconciler removes
        // what is left of this session once the services are back.
        self.gw.forget_local(&session_id);
        match self
            .gw
            .calls()
            .remove_session(RemoveSessionRequest {
                session_id: session_id.clone(),
            })
            .await
        {
            Ok(response) => {
                self.gw
                    .replica()
                    .wait_calls(
                        response.into_inner().sequence,
                        self.gw.limits().announce_wait,
                    )
                    .await;
            }
            Err(status) => {
                metrics::get().grpc_error("remove session", status.code());
                tracing::warn!(session_id, code = ?status.code(), error = status.message(), "calls cleanup failed");
            }
        }
        match self
            .gw
            .presence()
            .unregister_session(UnregisterSessionRequest {
                session_id: session_id.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => {
                metrics::get().grpc_error("unregister session", status.code());
                tracing::warn!(session_id, code = ?status.code(), error = status.message(), "presence cleanup failed");
            }
        }
        history::session_ended(&self.history, &me.user_id).await;
        tracing::debug!(session_id, user_id = %me.user_id, "socket cleaned up");
    }
}
