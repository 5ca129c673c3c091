//! A socket went away: it leaves its calls, then presence, as the protocol orders.

use meetup_proto::calls::v1::RemoveSessionRequest;
use meetup_proto::presence::v1::UnregisterSessionRequest;
use tonic::Code;

use crate::backends::retry_once;
use crate::metrics;
use crate::socket::SessionWorker;

impl SessionWorker {
    /// The socket is gone: leave its calls first, then presence, as the protocol orders.
    pub(crate) async fn cleanup(&mut self) {
        let Some(me) = self.identity.take() else {
            return;
        };
        metrics::get().registered_sockets.dec();
        let session_id = self.session_id.clone();
        // Forgotten first: were the calls below to fail, the reconciler removes
        // what is left of this session once the services are back.
        self.gw.forget_local(&session_id);
        let request = RemoveSessionRequest {
            session_id: session_id.clone(),
            call_ids: self.gw.mirror().calls_of_session(&session_id),
        };
        let calls = self.gw.calls();
        match retry_once(|| {
            let (mut client, request) = (calls.clone(), request.clone());
            async move { client.remove_session(request).await }
        })
        .await
        {
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
        };
        let presence = self.gw.presence();
        match retry_once(|| {
            let (mut client, request) = (presence.clone(), request.clone());
            async move { client.unregister_session(request).await }
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
        crate::history::session_ended(self.gw.history(), &me.user_id).await;
        tracing::debug!(session_id, user_id = %me.user_id, "socket cleaned up");
    }
}
