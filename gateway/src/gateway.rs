//! The gateway's shared state: a cheap-to-clone handle given to every socket task,
//! the bus dispatcher and the HTTP handlers.

use std::sync::Arc;
use std::time::Duration;

use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_runtime::Bus;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use tonic::transport::Channel;

use crate::replica::Replica;

#[derive(Clone, Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    io: SocketIo,
    presence: PresenceServiceClient<Channel>,
    calls: CallServiceClient<Channel>,
    bus: Bus,
    replica: Replica,
    limits: Limits,
}

/// Per-socket limits and waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub socket_queue: usize,
    /// How long an action waits for its own events to be announced locally
    /// before answering the client.
    pub announce_wait: Duration,
}

impl Gateway {
    pub fn new(
        id: String,
        io: SocketIo,
        presence: PresenceServiceClient<Channel>,
        calls: CallServiceClient<Channel>,
        bus: Bus,
        replica: Replica,
        limits: Limits,
    ) -> Self {
        Gateway {
            shared: Arc::new(Shared {
                id,
                io,
                presence,
                calls,
                bus,
                replica,
                limits,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn io(&self) -> &SocketIo {
        &self.shared.io
    }

    /// A presence client (clones share one connection).
    pub fn presence(&self) -> PresenceServiceClient<Channel> {
        self.shared.presence.clone()
    }

    pub fn calls(&self) -> CallServiceClient<Channel> {
        self.shared.calls.clone()
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    pub fn replica(&self) -> &Replica {
        &self.shared.replica
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Emits to one local socket; a socket that has gone meanwhile is skipped.
    pub fn emit_to_session<T: Serialize + ?Sized>(&self, session_id: &str, event: &str, data: &T) {
        let Ok(sid) = session_id.parse::<Sid>() else {
            tracing::warn!(session_id, "not a socket id of this gateway");
            return;
        };
        if let Some(socket) = self.shared.io.get_socket(sid)
            && let Err(error) = socket.emit(event, data)
        {
            tracing::debug!(session_id, event, %error, "emit failed");
        }
    }

    /// Emits to every local socket, except `except` when given.
    pub async fn emit_all<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        except: Option<Sid>,
    ) {
        let result = match except {
            Some(sid) => self.shared.io.except(sid).emit(event, data).await,
            None => self.shared.io.emit(event, data).await,
        };
        if let Err(error) = result {
            tracing::debug!(event, %error, "broadcast failed for some sockets");
        }
    }

    /// The socket id of `session_id` when it is one of this gateway's sockets.
    pub fn local_sid(&self, session_id: &str, gateway_id: &str) -> Option<Sid> {
        (gateway_id == self.shared.id)
            .then(|| session_id.parse::<Sid>().ok())
            .flatten()
    }
}
