//! A socket went away: without saying goodbye, its session turns away (it
//! keeps its presence and calls for a client to resume it); else it leaves its
//! calls, then presence, as the protocol orders.

use std::time::Duration;

use meetup_proto::calls::v1::{RemoveSessionRequest, SetSessionAwayRequest};
use meetup_proto::presence::v1::{
    SetSessionAwayRequest as PresenceAwayRequest, UnregisterSessionRequest,
};
use socketioxide::socket::DisconnectReason;
use tonic::Code;

use crate::metrics;
use crate::socket::SessionWorker;

/// Whether a socket that went for `reason` went without saying goodbye: its
/// transport closed or failed, it missed its pings, or its gateway is stopping.
/// (A client's `disconnect()`, or the server closing it, is a goodbye.)
pub(crate) fn went_away(reason: DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::HeartbeatTimeout
            | DisconnectReason::ClosingServer
    )
}

/// Whether a socket closed for `reason` was closed by its gateway because it
/// stops: then it goes without a goodbye too. (The gateway closes its sockets
/// one by one, as a server-side disconnect; a client's own disconnect stays a
/// goodbye.)
pub(crate) fn closed_for_stopping(reason: DisconnectReason, stopping: bool) -> bool {
    stopping && reason == DisconnectReason::ServerNSDisconnect
}

/// Turns `session_id` of `user_id` away for `grace`, in its calls then in
/// presence, with the number of relays its socket was given. False when a
/// service could not take it.
pub(crate) async fn set_away(
    gw: &crate::state::Gateway,
    user_id: &str,
    session_id: &str,
    grace: Duration,
    relays_given: u64,
) -> bool {
    let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
    let request = SetSessionAwayRequest {
        session_id: session_id.to_owned(),
        call_ids: gw.mirror().calls_of_session(session_id),
        grace_ms,
    };
    let in_calls = gw.calls().set_session_away(request).await;
    let revision = match in_calls {
        Ok(response) => response.into_inner().revision,
        Err(status) => {
            metrics::get().grpc_error("set away", status.code());
            tracing::warn!(session_id, code = ?status.code(), error = status.message(), "calls: session not turned away");
            return false;
        }
    };
    let request = PresenceAwayRequest {
        user_id: user_id.to_owned(),
        session_id: session_id.to_owned(),
        grace_ms,
        relays_given,
    };
    let in_presence = gw.presence().set_session_away(request).await;
    let presence_revision = match in_presence {
        Ok(response) => response.into_inner().revision,
        Err(status) => {
            metrics::get().grpc_error("set away", status.code());
            tracing::warn!(session_id, code = ?status.code(), error = status.message(), "presence: session not turned away");
            return false;
        }
    };
    let wait = gw.limits().announce_wait;
    gw.mirror().wait_calls(revision, wait).await;
    gw.mirror().wait_presence(presence_revision, wait).await;
    metrics::get().sessions_away.inc();
    true
}

/// Hands every registered session of this gateway over for `grace`: turns it
/// away (the services keep it for its client to resume through any gateway),
/// then forgets it here, so that neither its socket's own cleanup nor the
/// reconciler removes it when the socket is closed. Returns how many sessions
/// were handed over and how many could not be.
pub(crate) async fn hand_over_all(gw: &crate::state::Gateway, grace: Duration) -> (usize, usize) {
    use futures::StreamExt;
    let results: Vec<bool> = futures::stream::iter(gw.sessions().snapshot())
        .filter(|(_, s)| std::future::ready(s.registered))
        .map(|(session_id, session)| async move {
            let handed =
                set_away(gw, &session.user_id, &session_id, grace, session.relay_seq).await;
            gw.sessions().remove(&session_id);
            handed
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = results.iter().filter(|ok| !**ok).count();
    (results.len() - failed, failed)
}

impl SessionWorker {
    /// The socket is gone. Without a goodbye (and with a grace period), its
    /// session turns away; else it leaves its calls first, then presence, as
    /// the protocol orders.
    pub(crate) async fn cleanup(&mut self, reason: DisconnectReason) {
        let Some(me) = self.identity.take() else {
            return;
        };
        metrics::get().registered_sockets.dec();
        let session_id = self.session_id.clone();
        // Handed over already (the gateway is draining, or fenced the socket
        // while its session stays resumable): nothing is left to do here.
        if !self.gw.sessions().contains(&session_id) {
            return;
        }
        let grace = self.gw.limits().resume_grace;
        if !grace.is_zero()
            && (went_away(reason) || closed_for_stopping(reason, self.gw.is_stopping()))
            && set_away(
                &self.gw,
                &me.user_id,
                &session_id,
                grace,
                self.gw
                    .sessions()
                    .relay_seq(&session_id)
                    .unwrap_or_default(),
            )
            .await
        {
            self.gw.sessions().remove(&session_id);
            tracing::debug!(session_id, user_id = %me.user_id, %reason, "socket gone; session away");
            return;
        }
        // Forgotten first: were the calls below to fail, the reconciler removes
        // what is left of this session once the services are back.
        self.gw.sessions().remove(&session_id);
        let request = RemoveSessionRequest {
            session_id: session_id.clone(),
            call_ids: self.gw.mirror().calls_of_session(&session_id),
            keep_away: false,
        };
        match self.gw.calls().remove_session(request).await {
            Ok(response) => {
                self.gw
                    .mirror()
                    .wait_calls(
                        response.into_inner().revision,
                        self.gw.limits().announce_wait,
                    )
                    .await;
            }
            Err(status) => {
                metrics::get().grpc_error("remove session", status.code());
                tracing::warn!(session_id, code = ?status.code(), error = status.message(), "calls cleanup failed");
            }
        }
        let request = UnregisterSessionRequest {
            session_id: session_id.clone(),
            user_id: me.user_id.clone(),
            keep_away: false,
        };
        match self.gw.presence().unregister_session(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => {
                metrics::get().grpc_error("unregister session", status.code());
                tracing::warn!(session_id, code = ?status.code(), error = status.message(), "presence cleanup failed");
            }
        }
        crate::history::session_ended(self.gw.history(), &me.user_id).await;
        tracing::debug!(session_id, user_id = %me.user_id, "socket cleaned up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_the_stopping_gateway_closes_goes_without_a_goodbye() {
        use DisconnectReason::*;
        assert!(closed_for_stopping(ServerNSDisconnect, true));
        // Closed for another cause (the reconciler, a fence) while serving.
        assert!(!closed_for_stopping(ServerNSDisconnect, false));
        // A client that says goodbye while its gateway stops.
        assert!(!closed_for_stopping(ClientNSDisconnect, true));
        assert!(!went_away(ClientNSDisconnect) && went_away(ClosingServer));
    }
}
