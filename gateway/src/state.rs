//! The gateway's shared state: a cheap-to-clone handle given to every socket task,
//! the bus dispatcher and the HTTP handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meetup_platform::Bus;
use meetup_platform::relay_log::RelayLog;
use meetup_platform::store::StateStore;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;

use crate::backends::{CallsClient, PresenceClient};
use crate::edge::auth::Authenticator;
use crate::edge::turn::IceConfig;
use crate::history::History;
use crate::mirror::Mirror;
use crate::protocol::ServerEvent;
use crate::protocol::inbound::RelayKind;
use crate::protocol::outbound::Relayed;
use crate::resume::Keeper;
use crate::sessions::{LocalSession, LocalSessions};

/// The room of the sockets that asked for presence deltas in their handshake
/// (`presence: "delta"`): one `users-list` when they register, then only
/// `user-joined` and `user-left`. (Socket ids never contain a colon.)
pub const PRESENCE_DELTA_ROOM: &str = "presence:delta";
/// Sockets that asked for the calling extension's events (`calling: true`).
pub const CALLING_ROOM: &str = "calling";

/// The two kinds of local sockets presence events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAudience {
    /// Sockets that get `users-list` after every change (the original's
    /// behaviour), registered or not.
    FullList,
    /// Sockets that asked for presence deltas.
    Deltas,
}

#[derive(Clone, Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    io: SocketIo,
    presence: PresenceClient,
    calls: CallsClient,
    bus: Bus,
    store: StateStore,
    mirror: Mirror,
    limits: Limits,
    ice: IceConfig,
    auth: Option<Authenticator>,
    history: History,
    missed: Arc<RelayLog>,
    keeper: Keeper,
    local: LocalSessions,
    presence_up: AtomicBool,
    calls_up: AtomicBool,
    /// Set once the gateway starts handing its sessions over to stop.
    stopping: AtomicBool,
}

/// What a gateway is made of.
pub struct GatewayParts {
    pub id: String,
    pub io: SocketIo,
    pub presence: PresenceClient,
    pub calls: CallsClient,
    pub bus: Bus,
    pub store: StateStore,
    pub mirror: Mirror,
    pub limits: Limits,
    pub ice: IceConfig,
    pub auth: Option<Authenticator>,
    pub history: History,
    pub missed: Arc<RelayLog>,
}

/// Per-socket limits and waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub socket_queue: usize,
    /// How long an action waits for its own events to be announced locally
    /// before answering the client.
    pub announce_wait: Duration,
    pub events_per_sec: u32,
    pub events_burst: u32,
    pub abuse_disconnect_after: u32,
    /// How long an away session may be resumed (zero: no away sessions).
    pub resume_grace: Duration,
    /// Most relays kept for an away session.
    pub resume_buffer: usize,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Self {
        Gateway {
            shared: Arc::new(Shared {
                id: parts.id,
                io: parts.io,
                presence: parts.presence,
                calls: parts.calls,
                bus: parts.bus,
                store: parts.store,
                mirror: parts.mirror,
                limits: parts.limits,
                ice: parts.ice,
                auth: parts.auth,
                history: parts.history,
                keeper: Keeper::spawn(parts.missed.clone()),
                missed: parts.missed,
                local: LocalSessions::default(),
                presence_up: AtomicBool::new(false),
                calls_up: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// This gateway's sockets' sessions (each under its own lock).
    pub fn sessions(&self) -> &LocalSessions {
        &self.shared.local
    }

    /// Closes one of this gateway's sockets (its disconnect handler cleans up).
    pub fn disconnect_session(&self, session_id: &str) {
        let Some(socket) = self.socket_of(session_id) else {
            return;
        };
        if let Err(error) = socket.disconnect() {
            tracing::debug!(session_id, %error, "closing the socket failed");
        }
    }

    pub fn set_backends_up(&self, presence: bool, calls: bool) {
        self.shared.presence_up.store(presence, Ordering::Relaxed);
        self.shared.calls_up.store(calls, Ordering::Relaxed);
    }

    /// From now on every socket this gateway closes is closed because the
    /// gateway stops: its session is handed over (see [`Gateway::is_stopping`]).
    pub fn start_stopping(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the gateway is stopping: a socket it closes now goes without a
    /// goodbye, whether its session was in the hand-over's list or registered
    /// after that list was taken.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Whether the last probe reached each service.
    pub fn backends_up(&self) -> (bool, bool) {
        (
            self.shared.presence_up.load(Ordering::Relaxed),
            self.shared.calls_up.load(Ordering::Relaxed),
        )
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn io(&self) -> &SocketIo {
        &self.shared.io
    }

    /// A presence client (clones share one connection).
    pub fn presence(&self) -> PresenceClient {
        self.shared.presence.clone()
    }

    pub fn calls(&self) -> CallsClient {
        self.shared.calls.clone()
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// The shared state store (the buckets the mirror watches, the leases).
    pub fn store(&self) -> &StateStore {
        &self.shared.store
    }

    pub fn mirror(&self) -> &Mirror {
        &self.shared.mirror
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// The token checker, when authentication is on.
    pub fn auth(&self) -> Option<&Authenticator> {
        self.shared.auth.as_ref()
    }

    /// The call history (the service, or this process's).
    pub fn history(&self) -> &History {
        &self.shared.history
    }

    /// STUN and TURN servers for browsers.
    pub fn ice(&self) -> &IceConfig {
        &self.shared.ice
    }

    /// Sends `event` to one local socket: skipped when the socket has gone
    /// meanwhile, or when the event belongs to the calling extension and the
    /// socket did not ask for it. True when it went out.
    pub fn send(&self, session_id: &str, event: &ServerEvent) -> bool {
        self.recipient(session_id, event)
            .is_some_and(|socket| emit_on(&socket, session_id, event))
    }

    /// The socket of `session_id` when it is here and takes `event`.
    fn recipient(&self, session_id: &str, event: &ServerEvent) -> Option<SocketRef> {
        self.socket_of(session_id)
            .filter(|socket| !event.calling_only() || in_room(socket, CALLING_ROOM))
    }

    /// [`Gateway::send`] to several local sockets, the payload serialized once.
    pub fn send_many<'a>(&self, sessions: impl IntoIterator<Item = &'a str>, event: &ServerEvent) {
        let mut sessions = sessions.into_iter().peekable();
        if sessions.peek().is_none() {
            return;
        }
        let raw = match serde_json::value::to_raw_value(event) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::error!(event = event.name(), %error, "event not serializable");
                return;
            }
        };
        for session_id in sessions {
            if let Some(socket) = self.recipient(session_id, event) {
                emit_named(&socket, session_id, event.name(), &*raw);
            }
        }
    }

    /// Where relays for away sessions wait.
    pub fn missed(&self) -> &RelayLog {
        &self.shared.missed
    }

    /// Writes relays that reached a gone socket to the log, in order, off the
    /// dispatcher's path.
    pub fn keeper(&self) -> &Keeper {
        &self.shared.keeper
    }

    /// Gives a relay to one of this gateway's sockets, numbered in its
    /// session (with `seq` in the payload when the client speaks resume).
    /// False when the socket is gone: the caller keeps the relay for the
    /// session, which is away or about to be.
    pub fn emit_relay(&self, session_id: &str, kind: RelayKind, payload_json: &str) -> bool {
        let Some(socket) = self.socket_of(session_id) else {
            return false;
        };
        let numbered = self.sessions().with(session_id, |session| {
            if let Some(pending) = session.pending.as_mut() {
                pending.push((kind, payload_json.to_owned()));
            } else {
                emit_numbered(&socket, session_id, session, kind, payload_json);
            }
        });
        if numbered.is_none() {
            emit_relay_json(&socket, session_id, kind, payload_json.to_owned());
        }
        true
    }

    /// Holds the relays that reach `session_id` from now on until
    /// [`Gateway::end_replay`], so that those kept while it was away go first.
    pub fn begin_replay(&self, session_id: &str) {
        self.sessions()
            .with(session_id, |session| session.pending = Some(Vec::new()));
    }

    /// Gives `session_id` its kept relays, then those held since
    /// [`Gateway::begin_replay`], in order; relays go straight to it again.
    /// Returns how many kept relays it was given.
    pub fn end_replay(&self, session_id: &str, kept: &[(RelayKind, String)]) -> usize {
        let socket = self.socket_of(session_id);
        self.sessions()
            .with(session_id, |session| {
                let held = session.pending.take().unwrap_or_default();
                let Some(socket) = socket else {
                    return 0;
                };
                for (kind, payload) in kept.iter().chain(&held) {
                    emit_numbered(&socket, session_id, session, *kind, payload);
                }
                kept.len()
            })
            .unwrap_or(0)
    }

    fn socket_of(&self, session_id: &str) -> Option<SocketRef> {
        session_id
            .parse::<Sid>()
            .ok()
            .and_then(|sid| self.shared.io.get_socket(sid))
    }

    /// True when `session_id` is a local socket that asked for presence deltas.
    pub fn wants_presence_delta(&self, session_id: &str) -> bool {
        self.socket_of(session_id)
            .is_some_and(|socket| in_room(&socket, PRESENCE_DELTA_ROOM))
    }

    /// True when the socket of `session_id` asked for the calling extension.
    pub fn speaks_calling(&self, session_id: &str) -> bool {
        self.socket_of(session_id)
            .is_some_and(|socket| in_room(&socket, CALLING_ROOM))
    }

    /// Sends a presence event (`users-list`, `user-joined`, `user-left`) to
    /// the local sockets of `audience`, except `except` when given.
    pub async fn broadcast_presence(
        &self,
        audience: PresenceAudience,
        event: &ServerEvent,
        except: Option<Sid>,
    ) {
        // The sender is left out by its id (`broadcast()`), not by a room of
        // its own: a room per socket would cost every connection memory.
        let everyone = match except.and_then(|sid| self.shared.io.get_socket(sid)) {
            Some(sender) => sender.broadcast(),
            None => self.shared.io.broadcast(),
        };
        let to = match audience {
            PresenceAudience::FullList => everyone.except(PRESENCE_DELTA_ROOM),
            PresenceAudience::Deltas => everyone.to(PRESENCE_DELTA_ROOM),
        };
        if broadcast(to, event).await && audience == PresenceAudience::FullList {
            count_out_to_all(event.name());
        }
    }

    /// The socket id of `session_id` when it is one of this gateway's sockets.
    pub fn local_sid(&self, session_id: &str, gateway_id: &str) -> Option<Sid> {
        (gateway_id == self.shared.id)
            .then(|| session_id.parse::<Sid>().ok())
            .flatten()
    }
}

fn in_room(socket: &SocketRef, room: &str) -> bool {
    socket.rooms().iter().any(|r| r == room)
}

/// Emits a relay to a registered socket, numbered in its session.
fn emit_numbered(
    socket: &SocketRef,
    session_id: &str,
    session: &mut LocalSession,
    kind: RelayKind,
    payload_json: &str,
) {
    session.relay_seq += 1;
    let json = if session.seq_in_relays {
        with_seq(payload_json, session.relay_seq)
    } else {
        payload_json.to_owned()
    };
    emit_relay_json(socket, session_id, kind, json);
}

/// Emits a relay's JSON text as it is.
fn emit_relay_json(socket: &SocketRef, session_id: &str, kind: RelayKind, json: String) {
    let Ok(json) = serde_json::value::RawValue::from_string(json) else {
        tracing::warn!(event = kind.name(), "relay payload is not JSON");
        return;
    };
    emit_on(
        socket,
        session_id,
        &ServerEvent::Relay(Relayed { kind, json }),
    );
}

/// Emits one event to one socket.
fn emit_on(socket: &SocketRef, session_id: &str, event: &ServerEvent) -> bool {
    emit_named(socket, session_id, event.name(), event)
}

/// The one place events go out to a single socket: traced and counted.
fn emit_named<T: Serialize + ?Sized>(
    socket: &SocketRef,
    session_id: &str,
    name: &str,
    data: &T,
) -> bool {
    let _span = crate::traces::emit(name).entered();
    match socket.emit(name, data) {
        Ok(()) => {
            crate::metrics::get().event_out(name, 1);
            true
        }
        Err(error) => {
            tracing::debug!(session_id, event = name, %error, "emit failed");
            false
        }
    }
}

/// The one place events go out to many sockets at once.
async fn broadcast(to: BroadcastOperators<LocalAdapter>, event: &ServerEvent) -> bool {
    let name = event.name();
    let emit = to.emit(name, event);
    match tracing::Instrument::instrument(emit, crate::traces::emit(name)).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(event = name, %error, "broadcast failed for some sockets");
            false
        }
    }
}

/// `payload_json` (a JSON object) with `"seq": seq` as its first member.
pub fn with_seq(payload_json: &str, seq: u64) -> String {
    let rest = payload_json.trim_start().strip_prefix('{').unwrap_or("}");
    let rest = rest.trim_start();
    if rest.starts_with('}') {
        format!("{{\"seq\":{seq}{rest}")
    } else {
        format!("{{\"seq\":{seq},{rest}")
    }
}

/// Counts `event` as sent to approximately every socket: the connected ones.
fn count_out_to_all(event: &str) {
    let metrics = crate::metrics::get();
    metrics.event_out(event, metrics.connections.get().max(0) as u64);
}

#[cfg(test)]
mod tests {
    use super::with_seq;

    #[test]
    fn seq_goes_first_in_the_relay_payload() {
        assert_eq!(
            with_seq(r#"{"callId":"c","offer":{}}"#, 7),
            r#"{"seq":7,"callId":"c","offer":{}}"#
        );
        assert_eq!(with_seq("{}", 1), r#"{"seq":1}"#);
        assert_eq!(with_seq(" { } ", 2), r#"{"seq":2} "#);
    }
}
