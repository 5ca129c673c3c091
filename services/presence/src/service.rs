//! The `meetup.presence.v1.PresenceService` gRPC API over the [`PresenceStore`].

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use meetup_platform::Bus;
use meetup_platform::grpc::traceparent;
use meetup_proto::bus::v1::LeaveReason;
use meetup_proto::presence::v1::presence_service_server::PresenceService;
use meetup_proto::presence::v1::{
    GetCountsRequest, GetCountsResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, PresenceEvent, RegisterSessionRequest, RegisterSessionResponse,
    ResumeSessionRequest, ResumeSessionResponse, SendToUserRequest, SendToUserResponse,
    SetSessionAwayRequest, SetSessionAwayResponse, UnregisterGatewayRequest,
    UnregisterGatewayResponse, UnregisterSessionRequest, UnregisterSessionResponse,
    WatchPresenceRequest,
};
use tonic::{Request, Response, Status};

use crate::store::PresenceStore;

#[derive(Clone, Debug)]
pub struct PresenceGrpc {
    store: PresenceStore,
    bus: Bus,
}

impl PresenceGrpc {
    pub fn new(store: PresenceStore, bus: Bus) -> Self {
        PresenceGrpc { store, bus }
    }
}

type PresenceEvents = Pin<Box<dyn Stream<Item = Result<PresenceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl PresenceService for PresenceGrpc {
    async fn register_session(
        &self,
        request: Request<RegisterSessionRequest>,
    ) -> Result<Response<RegisterSessionResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.into_inner();
        let registered = self
            .store
            .register(
                &r.user_id,
                &r.username,
                &r.gateway_id,
                &r.session_id,
                &r.resume_token_hash,
                &trace,
            )
            .await?;
        Ok(Response::new(RegisterSessionResponse {
            user: Some(registered.user),
            first_session: registered.first_session,
            revision: registered.revision,
        }))
    }

    async fn unregister_session(
        &self,
        request: Request<UnregisterSessionRequest>,
    ) -> Result<Response<UnregisterSessionResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let gone = self
            .store
            .unregister_if(
                &r.session_id,
                Some(r.user_id.as_str()),
                r.keep_away,
                LeaveReason::Disconnected,
                &trace,
            )
            .await?;
        Ok(Response::new(UnregisterSessionResponse {
            user_id: gone.user_id,
            last_session: gone.last_session,
            revision: gone.revision,
        }))
    }

    async fn unregister_gateway(
        &self,
        request: Request<UnregisterGatewayRequest>,
    ) -> Result<Response<UnregisterGatewayResponse>, Status> {
        let (sessions_removed, users_gone_offline) = self
            .store
            .unregister_gateway(&request.get_ref().gateway_id, None)
            .await?;
        Ok(Response::new(UnregisterGatewayResponse {
            sessions_removed,
            users_gone_offline,
        }))
    }

    async fn list_users(
        &self,
        _request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let users = self.store.list().await?;
        Ok(Response::new(ListUsersResponse { users }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let user = self.store.get(&request.get_ref().user_id).await?;
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    async fn set_session_away(
        &self,
        request: Request<SetSessionAwayRequest>,
    ) -> Result<Response<SetSessionAwayResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        if r.grace_ms == 0 {
            return Err(Status::invalid_argument("grace_ms must be more than zero"));
        }
        let (until, revision) = self
            .store
            .set_away(
                &r.user_id,
                &r.session_id,
                Duration::from_millis(u64::from(r.grace_ms)),
                Some(r.relays_given),
                &trace,
            )
            .await?;
        Ok(Response::new(SetSessionAwayResponse {
            away_until: Some(until.into()),
            revision,
        }))
    }

    async fn resume_session(
        &self,
        request: Request<ResumeSessionRequest>,
    ) -> Result<Response<ResumeSessionResponse>, Status> {
        let trace = traceparent(&request);
        let r = request.get_ref();
        let previous_token = Some(r.previous_token_hash.as_str()).filter(|h| !h.is_empty());
        let resumed = self
            .store
            .resume(
                &r.user_id,
                previous_token,
                &r.session_id,
                &r.gateway_id,
                &r.resume_token_hash,
                &trace,
            )
            .await?;
        Ok(Response::new(match resumed {
            Some(resumed) => ResumeSessionResponse {
                resumed: true,
                user: Some(resumed.user),
                previous: Some(resumed.previous),
                revision: resumed.revision,
            },
            None => ResumeSessionResponse::default(),
        }))
    }

    async fn get_counts(
        &self,
        _request: Request<GetCountsRequest>,
    ) -> Result<Response<GetCountsResponse>, Status> {
        let counts = self.store.counts().await?;
        Ok(Response::new(GetCountsResponse {
            online_users: counts.online_users,
            sessions: counts.sessions,
            gateways: counts.gateways,
        }))
    }

    async fn send_to_user(
        &self,
        request: Request<SendToUserRequest>,
    ) -> Result<Response<SendToUserResponse>, Status> {
        let r = request.get_ref();
        let sessions =
            crate::push::send_to_user(&self.store, &self.bus, &r.user_id, &r.event, &r.json)
                .await?;
        Ok(Response::new(SendToUserResponse { sessions }))
    }

    type WatchPresenceStream = PresenceEvents;

    async fn watch_presence(
        &self,
        request: Request<WatchPresenceRequest>,
    ) -> Result<Response<Self::WatchPresenceStream>, Status> {
        let events = self
            .store
            .watch(request.get_ref().after_position)
            .await?
            .map(|event| event.map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }
}
