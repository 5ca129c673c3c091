//! The `meetup.calls.v1.CallService` gRPC API over the [`CallRegistry`].

use std::time::Duration;

use meetup_proto::calls::v1::{
    EndCallRequest, EndCallResponse, GetCallRequest, GetCallResponse, GetCountsRequest,
    GetCountsResponse, JoinCallRequest, JoinCallResponse, LeaveCallRequest, LeaveCallResponse,
    ListCallsRequest, ListCallsResponse, RemoveGatewayRequest, RemoveGatewayResponse,
    RemoveParticipantRequest, RemoveParticipantResponse, RemoveSessionRequest,
    RemoveSessionResponse, RestoreCallRequest, RestoreCallResponse, StartCallRequest,
    StartCallResponse, call_service_server::CallService,
};

use tonic::{Request, Response, Status};

use crate::error::CallError;
use crate::registry::{Announcement, CallRegistry, sequence_of};

/// How long a mutation waits for its event to reach the bus before answering.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct CallGrpc {
    registry: CallRegistry,
}

impl CallGrpc {
    pub fn new(registry: CallRegistry) -> Self {
        CallGrpc { registry }
    }
}

/// Waits for the change's last event to reach the bus; returns its sequence.
async fn announced(announcement: Option<Announcement>) -> u64 {
    let sequence = sequence_of(&announcement);
    if let Some(a) = announcement
        && !a.receipt.published_within(PUBLISH_WAIT).await
    {
        tracing::warn!(sequence, "call event not on the bus in time");
    }
    sequence
}

#[tonic::async_trait]
impl CallService for CallGrpc {
    async fn start_call(
        &self,
        request: Request<StartCallRequest>,
    ) -> Result<Response<StartCallResponse>, Status> {
        let r = request.into_inner();
        let initiator = r
            .initiator
            .ok_or_else(|| CallError::InvalidArgument("initiator is required".into()))?;
        let (call, receipt) =
            self.registry
                .start(&r.call_id, initiator, r.is_video, r.invited_user_ids)?;
        let sequence = announced(Some(receipt)).await;
        Ok(Response::new(StartCallResponse {
            call: Some(call),
            sequence,
        }))
    }

    async fn join_call(
        &self,
        request: Request<JoinCallRequest>,
    ) -> Result<Response<JoinCallResponse>, Status> {
        let r = request.into_inner();
        let participant = r
            .participant
            .ok_or_else(|| CallError::InvalidArgument("participant is required".into()))?;
        let (call, receipt) = self.registry.join(&r.call_id, participant)?;
        let joined = receipt.is_some();
        let sequence = announced(receipt).await;
        Ok(Response::new(JoinCallResponse {
            call: Some(call),
            joined,
            sequence,
        }))
    }

    async fn leave_call(
        &self,
        request: Request<LeaveCallRequest>,
    ) -> Result<Response<LeaveCallResponse>, Status> {
        let r = request.get_ref();
        let (left, receipt) = self.registry.leave(&r.call_id, &r.session_id)?;
        let sequence = announced(receipt).await;
        Ok(Response::new(LeaveCallResponse {
            left: left.left,
            ended: left.ended,
            call: left.call,
            sequence,
        }))
    }

    async fn get_call(
        &self,
        request: Request<GetCallRequest>,
    ) -> Result<Response<GetCallResponse>, Status> {
        let call = self.registry.get(&request.get_ref().call_id)?;
        Ok(Response::new(GetCallResponse { call: Some(call) }))
    }

    async fn list_calls(
        &self,
        _request: Request<ListCallsRequest>,
    ) -> Result<Response<ListCallsResponse>, Status> {
        let (calls, sequence) = self.registry.list();
        Ok(Response::new(ListCallsResponse {
            calls,
            sequence,
            instance_id: self.registry.instance_id().to_owned(),
        }))
    }

    async fn end_call(
        &self,
        request: Request<EndCallRequest>,
    ) -> Result<Response<EndCallResponse>, Status> {
        let (call, receipt) = self.registry.end(&request.get_ref().call_id)?;
        let sequence = announced(Some(receipt)).await;
        Ok(Response::new(EndCallResponse {
            call: Some(call),
            sequence,
        }))
    }

    async fn remove_participant(
        &self,
        request: Request<RemoveParticipantRequest>,
    ) -> Result<Response<RemoveParticipantResponse>, Status> {
        let r = request.get_ref();
        let (sessions_removed, ended, receipt) =
            self.registry.remove_participant(&r.call_id, &r.user_id)?;
        let sequence = announced(receipt).await;
        Ok(Response::new(RemoveParticipantResponse {
            sessions_removed,
            ended,
            sequence,
        }))
    }

    async fn remove_session(
        &self,
        request: Request<RemoveSessionRequest>,
    ) -> Result<Response<RemoveSessionResponse>, Status> {
        let (call_ids, receipt) = self
            .registry
            .remove_session(&request.get_ref().session_id)?;
        let sequence = announced(receipt).await;
        Ok(Response::new(RemoveSessionResponse { call_ids, sequence }))
    }

    async fn remove_gateway(
        &self,
        request: Request<RemoveGatewayRequest>,
    ) -> Result<Response<RemoveGatewayResponse>, Status> {
        let (sessions_removed, receipt) = self
            .registry
            .remove_gateway(&request.get_ref().gateway_id)?;
        let sequence = announced(receipt).await;
        Ok(Response::new(RemoveGatewayResponse {
            sessions_removed,
            sequence,
        }))
    }

    async fn get_counts(
        &self,
        _request: Request<GetCountsRequest>,
    ) -> Result<Response<GetCountsResponse>, Status> {
        let counts = self.registry.counts();
        Ok(Response::new(GetCountsResponse {
            active_calls: counts.active_calls,
            participants: counts.participants,
            sequence: counts.sequence,
            instance_id: self.registry.instance_id().to_owned(),
        }))
    }

    async fn restore_call(
        &self,
        request: Request<RestoreCallRequest>,
    ) -> Result<Response<RestoreCallResponse>, Status> {
        let call = request
            .into_inner()
            .call
            .ok_or_else(|| CallError::InvalidArgument("call is required".into()))?;
        let (call, announcement) = self.registry.restore(call)?;
        let sequence = announced(announcement).await;
        Ok(Response::new(RestoreCallResponse {
            call: Some(call),
            sequence,
        }))
    }
}
