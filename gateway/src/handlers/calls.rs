//! `start-call`, `join-call` and `leave-call`: changes on the call service,
//! answered once this gateway's mirror has told its sockets.

use meetup_platform::reason::{self, Reason};
use meetup_proto::calls::v1::{
    GetCallRequest, JoinCallRequest, LeaveCallRequest, StartCallRequest,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::backends::{replica_went_away, retry_once};
use crate::protocol::ServerEvent;
use crate::protocol::ack::{AckError, ErrorCode, ok};
use crate::protocol::inbound;
use crate::protocol::outbound::public_participants;
use crate::socket::SessionWorker;

impl SessionWorker {
    pub(crate) async fn start_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let me = self.identity()?.clone();
        let cmd = inbound::start_call(payload)?;
        let request = StartCallRequest {
            call_id: cmd.id.clone(),
            initiator: Some(self.participant(&me)),
            is_video: cmd.is_video,
            invited_user_ids: cmd.invited_user_ids,
        };
        let invited = request.invited_user_ids.clone();
        let (revision, unavailable) = match self.gw.calls().start_call(request.clone()).await {
            Ok(response) => {
                let response = response.into_inner();
                (response.revision, response.unavailable_user_ids)
            }
            Err(status) if replica_went_away(&status) => {
                // Once more on another replica. Should the first attempt have gone
                // through after all, the call exists with this very socket as its
                // initiator: that is our call, not somebody else's.
                match self.gw.calls().start_call(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        (response.revision, response.unavailable_user_ids)
                    }
                    Err(status) if reason::of(&status) == Some(Reason::CallExists) => {
                        let mine = self
                            .gw
                            .calls()
                            .get_call(GetCallRequest {
                                call_id: cmd.id.clone(),
                            })
                            .await
                            .ok()
                            .and_then(|r| r.into_inner().call)
                            .and_then(|c| c.participants.into_iter().next())
                            .is_some_and(|p| p.session_id == self.session_id);
                        if !mine {
                            return Err(AckError::from_status(&status, "start call"));
                        }
                        (0, Vec::new())
                    }
                    Err(status) => return Err(AckError::from_status(&status, "start call")),
                }
            }
            Err(status) => return Err(AckError::from_status(&status, "start call")),
        };
        self.gw
            .mirror()
            .wait_calls(revision, self.gw.limits().announce_wait)
            .await;
        let started = ServerEvent::call_ref(&cmd.id);
        self.send(&ServerEvent::CallStarted(started.clone()));
        if self.gw.speaks_calling(&self.session_id) {
            let ringing: Vec<String> = invited
                .into_iter()
                .filter(|u| !unavailable.contains(u))
                .collect();
            // Busy from the mirror: asking the service would cost every
            // start-call a read of every live call.
            let busy = self.gw.mirror().in_other_calls(&ringing, &cmd.id);
            self.tell_unreachable(&cmd.id, &unavailable, &busy);
        }
        Ok(ok(json!(started)))
    }

    pub(crate) async fn join_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let me = self.identity()?.clone();
        let cmd = inbound::join_call(payload)?;
        let request = JoinCallRequest {
            call_id: cmd.call_id.clone(),
            participant: Some(self.participant(&me)),
        };
        let calls = self.gw.calls();
        let response = match retry_once(|| {
            let (mut client, request) = (calls.clone(), request.clone());
            async move { client.join_call(request).await }
        })
        .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let error = AckError::from_status(&status, "join call");
                if error.code == ErrorCode::CallNotFound {
                    self.send(&ServerEvent::CallNotFound(ServerEvent::call_ref(
                        &cmd.call_id,
                    )));
                }
                return Err(error);
            }
        };
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        let participants = response
            .call
            .as_ref()
            .map(public_participants)
            .unwrap_or_else(|| json!([]));
        let body = json!({ "callId": cmd.call_id, "participants": participants });
        self.send(&ServerEvent::CallParticipants {
            call_id: cmd.call_id.clone(),
            participants,
        });
        self.emit_chat_history(&cmd.call_id, response.revision);
        Ok(ok(body))
    }

    pub(crate) async fn leave_call(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        self.identity()?;
        let cmd = inbound::leave_call(payload)?;
        let request = LeaveCallRequest {
            call_id: cmd.call_id.clone(),
            session_id: self.session_id.clone(),
        };
        let calls = self.gw.calls();
        let response = retry_once(|| {
            let (mut client, request) = (calls.clone(), request.clone());
            async move { client.leave_call(request).await }
        })
        .await
        .map_err(|status| AckError::from_status(&status, "leave call"))?
        .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        self.send(&ServerEvent::CallLeft(ServerEvent::call_ref(&cmd.call_id)));
        Ok(ok(json!({ "callId": cmd.call_id, "left": response.left })))
    }
}
