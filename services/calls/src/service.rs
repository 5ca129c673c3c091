//! The `meetup.calls.v1.CallService` gRPC API over the [`CallRegistry`].

use meetup_proto::calls::v1::{
    EndCallRequest, EndCallResponse, GetCallRequest, GetCallResponse, GetCountsRequest,
    GetCountsResponse, JoinCallRequest, JoinCallResponse, LeaveCallRequest, LeaveCallResponse,
    ListCallsRequest, ListCallsResponse, RemoveGatewayRequest, RemoveGatewayResponse,
    RemoveParticipantRequest, RemoveParticipantResponse, RemoveSessionRequest,
    RemoveSessionResponse, ResumeSessionRequest, ResumeSessionResponse, SetSessionAwayRequest,
    SetSessionAwayResponse, StartCallRequest, StartCallResponse, call_service_server::CallService,
};
use meetup_runtime::grpc::traceparent;
use tonic::{Request, Response, Status};

use crate::error::CallError;
use crate::registry::CallRegistry;

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
}
