//! `start-call`, `join-call` and `leave-call`: changes on the call service,
//! answered once this gateway's mirror has told its sockets.

use meetup_platform::grpc::retry::replica_went_away;
use meetup_platform::reason::{self, Reason};
use meetup_proto::calls::v1::{
    GetCallRequest, JoinCallRequest, LeaveCallRequest, StartCallRequest,
};
use serde_json::json;
use serde_json::value::RawValue;

use crate::protocol::ServerEvent;
use crate::protocol::ack::{Ack, AckError, Answer, ErrorCode, Handled, Refusal};
use crate::protocol::inbound;
use crate::protocol::outbound::public_participants;
use crate::socket::SessionWorker;

impl SessionWorker {
    pub(crate) async fn start_call(&mut self, payload: &RawValue) -> Handled {
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
            // StartCall is not IDEMPOTENT in calls.proto (a second attempt that
            // went through answers call-exists), so the client's retry layer
            // leaves it to this handler, which can tell its own call.
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
                            return Err(AckError::from_status(&status, "start call").into());
                        }
                        (0, Vec::new())
                    }
                    Err(status) => {
                        return Err(AckError::from_status(&status, "start call").into());
                    }
                }
            }
            Err(status) => return Err(AckError::from_status(&status, "start call").into()),
        };
        self.gw
            .mirror()
            .wait_calls(revision, self.gw.limits().announce_wait)
            .await;
        let started = ServerEvent::call_ref(&cmd.id);
        let mut events = vec![ServerEvent::CallStarted(started.clone())];
        if self.gw.speaks_calling(&self.session_id) {
            let ringing: Vec<String> = invited
                .into_iter()
                .filter(|u| !unavailable.contains(u))
                .collect();
            // Busy from the mirror: asking the service would cost every
            // start-call a read of every live call.
            let busy = self.gw.mirror().in_other_calls(&ringing, &cmd.id);
            events.extend(self.unreachable(&cmd.id, &unavailable, &busy));
        }
        Ok(Answer::after(
            events,
            Ack::Call {
                call_id: started.call_id,
            },
        ))
    }

    pub(crate) async fn join_call(&mut self, payload: &RawValue) -> Handled {
        let me = self.identity()?.clone();
        let cmd = inbound::join_call(payload)?;
        let request = JoinCallRequest {
            call_id: cmd.call_id.clone(),
            participant: Some(self.participant(&me)),
        };
        let response = match self.gw.calls().join_call(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let error = AckError::from_status(&status, "join call");
                let events = if error.code == ErrorCode::CallNotFound {
                    vec![ServerEvent::CallNotFound(ServerEvent::call_ref(
                        &cmd.call_id,
                    ))]
                } else {
                    Vec::new()
                };
                return Err(Refusal { events, error });
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
        let participants_now = ServerEvent::CallParticipants {
            call_id: cmd.call_id.clone(),
            participants: participants.clone(),
        };
        let events = std::iter::once(participants_now)
            .chain(self.chat_history(&cmd.call_id, response.revision))
            .collect();
        Ok(Answer::after(
            events,
            Ack::Joined {
                call_id: cmd.call_id,
                participants,
            },
        ))
    }

    pub(crate) async fn leave_call(&mut self, payload: &RawValue) -> Handled {
        self.identity()?;
        let cmd = inbound::leave_call(payload)?;
        let request = LeaveCallRequest {
            call_id: cmd.call_id.clone(),
            session_id: self.session_id.clone(),
        };
        let response = self
            .gw
            .calls()
            .leave_call(request)
            .await
            .map_err(|status| AckError::from_status(&status, "leave call"))?
            .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        Ok(Answer::after(
            vec![ServerEvent::CallLeft(ServerEvent::call_ref(&cmd.call_id))],
            Ack::Left {
                call_id: cmd.call_id,
                left: response.left,
            },
        ))
    }
}
