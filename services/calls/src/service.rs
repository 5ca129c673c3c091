//! The `meetup.calls.v1.CallService` gRPC API over the [`CallRegistry`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use meetup_platform::grpc::traceparent;
use meetup_platform::store::{Present, Tracked, keys};
use meetup_proto::bus::v1::{CallRecord, call_change};
use meetup_proto::calls::v1::{
    CallEvent, CancelInvitesRequest, CancelInvitesResponse, DeclineInviteRequest,
    DeclineInviteResponse, InviteToCallRequest, InviteToCallResponse, ListInvitesRequest,
    ListInvitesResponse, SendCallMessageRequest, SendCallMessageResponse, WatchCallsRequest,
    call_event, send_call_message_request,
};
use meetup_proto::calls::v1::{
    EndCallRequest, EndCallResponse, GetCallRequest, GetCallResponse, GetCountsRequest,
    GetCountsResponse, JoinCallRequest, JoinCallResponse, LeaveCallRequest, LeaveCallResponse,
    ListCallsRequest, ListCallsResponse, RemoveGatewayRequest, RemoveGatewayResponse,
    RemoveParticipantRequest, RemoveParticipantResponse, RemoveSessionRequest,
    RemoveSessionResponse, ResumeSessionRequest, ResumeSessionResponse, SetSessionAwayRequest,
    SetSessionAwayResponse, StartCallRequest, StartCallResponse, call_service_server::CallService,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::CallError;
use crate::registry::{CallRegistry, Sender};

type CallEvents = Pin<Box<dyn Stream<Item = Result<CallEvent, Status>> + Send>>;

/// The name of a change in `CallEvent.change`.
fn change_name(record: &CallRecord) -> &'static str {
    match record.change.as_ref().and_then(|c| c.change.as_ref()) {
        Some(call_change::Change::Started(_)) => "started",
        Some(call_change::Change::Joined(_)) => "joined",
        Some(call_change::Change::Left(_)) => "left",
        Some(call_change::Change::Ended(_)) => "ended",
        Some(call_change::Change::Away(_)) => "away",
        Some(call_change::Change::Resumed(_)) => "resumed",
        Some(call_change::Change::Invited(_)) => "invited",
        Some(call_change::Change::InvitesEnded(_)) => "invite-ended",
        None => "",
    }
}

/// One followed entry of the calls bucket as an event (`None`: not for
/// followers, or an end already told).
fn call_event(tracked: Tracked, present: &mut Present) -> Option<CallEvent> {
    use call_event::Kind;
    let (entry, snapshot) = match tracked {
        Tracked::Current => {
            present.admit(&Tracked::Current, true);
            return Some(CallEvent {
                kind: Kind::Current as i32,
                ..CallEvent::default()
            });
        }
        Tracked::Snapshot(entry) => (entry, true),
        Tracked::Changed(entry) => (entry, false),
    };
    let call_id = keys::call_id_of(&entry.key)?;
    let record = entry
        .value
        .as_ref()
        .and_then(|v| CallRecord::decode(v.clone()).ok());
    let call = record.as_ref().and_then(|r| r.call.clone());
    let ended = call.as_ref().is_none_or(|c| c.ended_at.is_some());
    if snapshot && ended {
        return None;
    }
    let tracked = if snapshot {
        Tracked::Snapshot(entry.clone())
    } else {
        Tracked::Changed(entry.clone())
    };
    if !present.admit(&tracked, !ended) {
        return None;
    }
    let kind = match (snapshot, ended) {
        (true, _) => Kind::Snapshot,
        (false, true) => Kind::Ended,
        (false, false) => Kind::Changed,
    };
    Some(CallEvent {
        kind: kind as i32,
        position: entry.revision,
        call_id,
        call,
        change: record
            .as_ref()
            .filter(|_| !snapshot)
            .map(change_name)
            .unwrap_or_default()
            .to_owned(),
    })
}

#[derive(Clone, Debug)]
pub struct CallGrpc {
    registry: CallRegistry,
}

impl CallGrpc {
    pub fn new(registry: CallRegistry) -> Self {
        CallGrpc { registry }
    }
}

#[tonic::async_trait]
impl CallService for CallGrpc {
    async fn start_call(
        &self,
        request: Request<StartCallRequest>,
    ) -> Result<Response<StartCallResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let initiator = r
            .initiator
            .ok_or_else(|| CallError::InvalidArgument("initiator is required".into()))?;
        let (call, revision) = self
            .registry
            .start(
                &r.call_id,
                initiator,
                r.is_video,
                r.invited_user_ids,
                &trace,
            )
            .await?;
        Ok(Response::new(StartCallResponse {
            unavailable_user_ids: crate::registry::unavailable_at_start(&call),
            call: Some(call),
            revision,
        }))
    }

    async fn join_call(
        &self,
        request: Request<JoinCallRequest>,
    ) -> Result<Response<JoinCallResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let participant = r
            .participant
            .ok_or_else(|| CallError::InvalidArgument("participant is required".into()))?;
        let (call, revision) = self.registry.join(&r.call_id, participant, &trace).await?;
        Ok(Response::new(JoinCallResponse {
            call: Some(call),
            joined: revision > 0,
            revision,
        }))
    }

    async fn leave_call(
        &self,
        request: Request<LeaveCallRequest>,
    ) -> Result<Response<LeaveCallResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let left = self
            .registry
            .leave(&r.call_id, &r.session_id, &trace)
            .await?;
        Ok(Response::new(LeaveCallResponse {
            left: left.left,
            ended: left.ended,
            call: left.call,
            revision: left.revision,
        }))
    }

    async fn get_call(
        &self,
        request: Request<GetCallRequest>,
    ) -> Result<Response<GetCallResponse>, Status> {
        let call = self.registry.get(&request.get_ref().call_id).await?;
        Ok(Response::new(GetCallResponse { call: Some(call) }))
    }

    async fn list_calls(
        &self,
        _request: Request<ListCallsRequest>,
    ) -> Result<Response<ListCallsResponse>, Status> {
        let calls = self.registry.list().await?;
        Ok(Response::new(ListCallsResponse { calls }))
    }

    async fn end_call(
        &self,
        request: Request<EndCallRequest>,
    ) -> Result<Response<EndCallResponse>, Status> {
        let trace = traceparent(&request);
        let (call, revision) = self
            .registry
            .end(&request.get_ref().call_id, &trace)
            .await?;
        Ok(Response::new(EndCallResponse {
            call: Some(call),
            revision,
        }))
    }

    async fn remove_participant(
        &self,
        request: Request<RemoveParticipantRequest>,
    ) -> Result<Response<RemoveParticipantResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let (sessions_removed, left) = self
            .registry
            .remove_participant(&r.call_id, &r.user_id, &trace)
            .await?;
        Ok(Response::new(RemoveParticipantResponse {
            sessions_removed,
            ended: left.ended,
            revision: left.revision,
        }))
    }

    async fn remove_session(
        &self,
        request: Request<RemoveSessionRequest>,
    ) -> Result<Response<RemoveSessionResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let (call_ids, revision) = self
            .registry
            .remove_session_if(&r.session_id, r.call_ids, r.keep_away, &trace)
            .await?;
        Ok(Response::new(RemoveSessionResponse { call_ids, revision }))
    }

    async fn set_session_away(
        &self,
        request: Request<SetSessionAwayRequest>,
    ) -> Result<Response<SetSessionAwayResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        if r.grace_ms == 0 {
            return Err(Status::invalid_argument("grace_ms must be more than zero"));
        }
        let grace = std::time::Duration::from_millis(u64::from(r.grace_ms));
        let (call_ids, revision) = self
            .registry
            .set_away(&r.session_id, r.call_ids, grace, &trace)
            .await?;
        Ok(Response::new(SetSessionAwayResponse { call_ids, revision }))
    }

    async fn resume_session(
        &self,
        request: Request<ResumeSessionRequest>,
    ) -> Result<Response<ResumeSessionResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let (call_ids, revision) = self
            .registry
            .resume(
                &r.previous_session_id,
                &r.session_id,
                &r.gateway_id,
                r.call_ids,
                &trace,
            )
            .await?;
        Ok(Response::new(ResumeSessionResponse { call_ids, revision }))
    }

    async fn remove_gateway(
        &self,
        request: Request<RemoveGatewayRequest>,
    ) -> Result<Response<RemoveGatewayResponse>, Status> {
        let (sessions_removed, revision) = self
            .registry
            .remove_gateway(&request.get_ref().gateway_id, None)
            .await?;
        Ok(Response::new(RemoveGatewayResponse {
            sessions_removed,
            revision,
        }))
    }

    async fn get_counts(
        &self,
        _request: Request<GetCountsRequest>,
    ) -> Result<Response<GetCountsResponse>, Status> {
        let counts = self.registry.counts().await?;
        Ok(Response::new(GetCountsResponse {
            active_calls: counts.active_calls,
            participants: counts.participants,
        }))
    }

    async fn invite_to_call(
        &self,
        request: Request<InviteToCallRequest>,
    ) -> Result<Response<InviteToCallResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let invited = self
            .registry
            .invite(&r.call_id, r.user_ids, &r.session_id, r.r#as, &trace)
            .await?;
        Ok(Response::new(InviteToCallResponse {
            invited_user_ids: invited.ringing,
            busy_user_ids: invited.busy,
            unavailable_user_ids: invited.unavailable,
            call: invited.call,
            revision: invited.revision,
        }))
    }

    async fn decline_invite(
        &self,
        request: Request<DeclineInviteRequest>,
    ) -> Result<Response<DeclineInviteResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let (call, revision) = self
            .registry
            .decline(&r.call_id, &r.user_id, &trace)
            .await?;
        Ok(Response::new(DeclineInviteResponse {
            call: Some(call),
            revision,
        }))
    }

    async fn cancel_invites(
        &self,
        request: Request<CancelInvitesRequest>,
    ) -> Result<Response<CancelInvitesResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let (cancelled_user_ids, revision) = self
            .registry
            .cancel(&r.call_id, &r.session_id, &r.invited_by_user_id, &trace)
            .await?;
        Ok(Response::new(CancelInvitesResponse {
            cancelled_user_ids,
            revision,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<ListInvitesRequest>,
    ) -> Result<Response<ListInvitesResponse>, Status> {
        let invites = self.registry.invites(&request.get_ref().call_id).await?;
        Ok(Response::new(ListInvitesResponse { invites }))
    }

    async fn send_call_message(
        &self,
        request: Request<SendCallMessageRequest>,
    ) -> Result<Response<SendCallMessageResponse>, Status> {
        use send_call_message_request::Sender as From;
        let r = request.into_inner();
        let sender = match r.sender {
            Some(From::SessionId(session_id)) => Sender::Session(session_id),
            Some(From::BotName(name)) => Sender::Bot(name),
            Some(From::System(true)) => Sender::System,
            Some(From::System(false)) | None => {
                return Err(CallError::InvalidArgument(
                    "a sender is required: session_id, bot_name or system".into(),
                )
                .into());
            }
        };
        let (message, revision) = self
            .registry
            .send_message(&r.call_id, sender, r.text)
            .await?;
        Ok(Response::new(SendCallMessageResponse {
            message: Some(message),
            revision,
        }))
    }

    type WatchCallsStream = CallEvents;

    async fn watch_calls(
        &self,
        request: Request<WatchCallsRequest>,
    ) -> Result<Response<Self::WatchCallsStream>, Status> {
        let after = request.get_ref().after_position;
        let tracked = self
            .registry
            .follow_after(after)
            .await
            .map_err(Status::from)?;
        let mut present = Present::default();
        let events = tracked.filter_map(move |item| {
            futures::future::ready(match item {
                Ok(tracked) => call_event(tracked, &mut present).map(Ok),
                Err(error) => Some(Err(Status::from(CallError::from(error)))),
            })
        });
        Ok(Response::new(Box::pin(events)))
    }
}
