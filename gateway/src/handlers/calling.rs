//! The calling extension: `decline-call`, `cancel-call`, `invite-to-call` and
//! `call-message`, each a change on the call service answered once this
//! gateway's mirror has told its sockets; and what the inviting socket and a
//! joining one are told besides (`user-busy`, `user-unavailable`,
//! `call-messages`).

use meetup_proto::calls::v1::{
    CancelInvitesRequest, DeclineInviteRequest, InviteToCallRequest, SendCallMessageRequest,
    send_call_message_request,
};
use serde_json::value::RawValue;

use crate::mirror::iso_time;
use crate::protocol::ServerEvent;
use crate::protocol::ack::{Ack, AckError, Answer, Handled};
use crate::protocol::inbound;
use crate::protocol::outbound::ChatMessageOut;
use crate::socket::SessionWorker;

impl SessionWorker {
    /// What tells this socket, if it asked for the calling extension, which
    /// of the users it just invited to `call_id` are offline
    /// (`user-unavailable`) and which are in another call (`user-busy`).
    pub(crate) fn unreachable(
        &self,
        call_id: &str,
        unavailable: &[String],
        busy: &[String],
    ) -> Vec<ServerEvent> {
        if !self.gw.speaks_calling(&self.session_id) {
            return Vec::new();
        }
        let unavailable = unavailable
            .iter()
            .map(|user_id| ServerEvent::UserUnavailable(ServerEvent::call_user(call_id, user_id)));
        let busy = busy
            .iter()
            .map(|user_id| ServerEvent::UserBusy(ServerEvent::call_user(call_id, user_id)));
        unavailable.chain(busy).collect()
    }

    /// `call-messages` for a socket that joined `call_id` at `revision` (0:
    /// any time), if it asked for the calling extension.
    pub(crate) fn chat_history(&self, call_id: &str, revision: u64) -> Option<ServerEvent> {
        if !self.gw.speaks_calling(&self.session_id) {
            return None;
        }
        let messages = self
            .gw
            .mirror()
            .chat_before(call_id, revision)
            .iter()
            .map(|m| ChatMessageOut::new(call_id, m))
            .collect();
        Some(ServerEvent::CallMessages {
            call_id: call_id.to_owned(),
            messages,
        })
    }

    pub(crate) async fn decline_call(&mut self, payload: &RawValue) -> Handled {
        let me = self.identity()?.clone();
        let cmd = inbound::call_ref(payload)?;
        let request = DeclineInviteRequest {
            call_id: cmd.call_id.clone(),
            user_id: me.user_id,
        };
        // Not IDEMPOTENT in calls.proto, so not sent again when its replica
        // went away: a decline that went through is no longer ringing.
        let response = self
            .gw
            .calls()
            .decline_invite(request)
            .await
            .map_err(|status| AckError::from_status(&status, "decline call"))?
            .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        Ok(Ack::Call {
            call_id: cmd.call_id,
        }
        .into())
    }

    pub(crate) async fn cancel_call(&mut self, payload: &RawValue) -> Handled {
        self.identity()?;
        let cmd = inbound::call_ref(payload)?;
        let request = CancelInvitesRequest {
            call_id: cmd.call_id.clone(),
            session_id: self.session_id.clone(),
            invited_by_user_id: String::new(),
        };
        let response = self
            .gw
            .calls()
            .cancel_invites(request)
            .await
            .map_err(|status| AckError::from_status(&status, "cancel call"))?
            .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        Ok(Ack::Cancelled {
            call_id: cmd.call_id,
            cancelled: response.cancelled_user_ids,
        }
        .into())
    }

    pub(crate) async fn invite_to_call(&mut self, payload: &RawValue) -> Handled {
        self.identity()?;
        let cmd = inbound::invite_to_call(payload)?;
        let request = InviteToCallRequest {
            call_id: cmd.call_id.clone(),
            user_ids: cmd.user_ids,
            session_id: self.session_id.clone(),
            r#as: None,
        };
        let response = self
            .gw
            .calls()
            .invite_to_call(request)
            .await
            .map_err(|status| AckError::from_status(&status, "invite to call"))?
            .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        let events = self.unreachable(
            &cmd.call_id,
            &response.unavailable_user_ids,
            &response.busy_user_ids,
        );
        Ok(Answer::after(
            events,
            Ack::Invited {
                call_id: cmd.call_id,
                invited: response.invited_user_ids,
                busy: response.busy_user_ids,
                unavailable: response.unavailable_user_ids,
            },
        ))
    }

    pub(crate) async fn call_message(&mut self, payload: &RawValue) -> Handled {
        self.identity()?;
        let cmd = inbound::call_message(payload)?;
        let request = SendCallMessageRequest {
            call_id: cmd.call_id.clone(),
            text: cmd.text,
            sender: Some(send_call_message_request::Sender::SessionId(
                self.session_id.clone(),
            )),
        };
        // Not IDEMPOTENT in calls.proto, so not sent again when its replica
        // went away: a message that went through would be posted twice.
        let response = self
            .gw
            .calls()
            .send_call_message(request)
            .await
            .map_err(|status| AckError::from_status(&status, "call message"))?
            .into_inner();
        self.gw
            .mirror()
            .wait_calls(response.revision, self.gw.limits().announce_wait)
            .await;
        let message = response.message.unwrap_or_default();
        Ok(Ack::MessageSent {
            call_id: cmd.call_id,
            id: message.id,
            sent_at: iso_time(message.sent_at),
        }
        .into())
    }
}
