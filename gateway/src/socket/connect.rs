//! A new socket: its handshake token checked (when authentication is on), its
//! events wired to its queue, and its task started, all before the client is
//! told it is connected.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, Value as PacketValue};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::mpsc;

use super::queue::{Enqueue, Queued, Synchronous};
use super::worker::SessionWorker;
use crate::edge::auth::{Claims, handshake_option, handshake_token};
use crate::edge::limits::EventLimiter;
use crate::state::Gateway;

/// Connect handler of the default namespace: wires a new socket to its task.
#[derive(Clone, Debug)]
pub struct OnConnect {
    gw: Gateway,
}

impl OnConnect {
    pub fn new(gw: Gateway) -> Self {
        OnConnect { gw }
    }
}

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
        let refuse = |session_id, reason: String| {
            tracing::info!(%session_id, reason, "handshake refused");
            let message: Box<dyn std::fmt::Display + Send> = Box::new(reason);
            Box::pin(async move { Err(message) })
        };
        let auth: Option<Value> = auth
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(|text| serde_json::from_str(text.as_str()).ok());
        let query = s.req_parts().uri.query();
        let delta = match handshake_option(auth.as_ref(), query, "presence").as_deref() {
            None | Some("full") => false,
            Some("delta") => true,
            Some(other) => {
                let reason = format!(
                    "invalid presence {other:?}: \"delta\" (user-joined and user-left after one users-list) or \"full\""
                );
                return refuse(s.id, reason);
            }
        };
        let calling = match auth.as_ref().and_then(|a| a.get("calling")) {
            Some(Value::Bool(on)) => Some(on.to_string()),
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
            None => handshake_option(None, query, "calling"),
        };
        let calling = match calling.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                let reason = format!(
                    "invalid calling {other:?}: true (the calling extension's events) or false"
                );
                return refuse(s.id, reason);
            }
        };
        let claims = match self.gw.auth() {
            None => None,
            Some(authenticator) => {
                let verified = match handshake_token(auth.as_ref(), query) {
                    Some(token) => authenticator.verify(&token),
                    None => Err("missing token".to_owned()),
                };
                match verified {
                    Ok(claims) => Some(claims),
                    Err(reason) => return refuse(s.id, format!("authentication failed: {reason}")),
                }
            }
        };
        if delta {
            s.join(crate::state::PRESENCE_DELTA_ROOM);
        }
        if calling {
            s.join(crate::state::CALLING_ROOM);
        }
        self.wire(SocketRef::from(s), claims);
        Box::pin(async { Ok(()) })
    }
}

impl OnConnect {
    fn wire(&self, socket: SocketRef, claims: Option<Claims>) {
        let limits = self.gw.limits();
        let (tx, rx) = mpsc::channel(limits.socket_queue);
        let limiter = Arc::new(Mutex::new(EventLimiter::new(
            limits.events_per_sec,
            limits.events_burst,
            limits.abuse_disconnect_after,
        )));
        socket.on_fallback(Enqueue {
            tx: tx.clone(),
            limiter,
        });
        socket.on_disconnect(move |reason: DisconnectReason| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Queued::Disconnect(reason)).await;
            }
        });
        tracing::debug!(session_id = %socket.id, transport = ?socket.transport_type(), "socket connected");
        let worker = SessionWorker {
            session_id: socket.id.to_string(),
            gw: self.gw.clone(),
            identity: None,
            claims,
        };
        tokio::spawn(worker.run(rx));
    }
}
