//! The `meetup.presence.v1.PresenceService` gRPC API over the [`PresenceStore`].

use std::time::Duration;

use meetup_proto::presence::v1::{
    GetCountsRequest, GetCountsResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, RegisterSessionRequest, RegisterSessionResponse, UnregisterGatewayRequest,
    UnregisterGatewayResponse, UnregisterSessionRequest, UnregisterSessionResponse,
    presence_service_server::PresenceService,
};
use meetup_runtime::Receipt;
use tonic::{Request, Response, Status};

use crate::store::PresenceStore;

/// How long a mutation waits for its event to reach the bus before answering.
/// Callers rely on "answered means announced"; past this the bus is in trouble
/// and answering late would only stall them.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct PresenceGrpc {
    store: PresenceStore,
}

impl PresenceGrpc {
    pub fn new(store: PresenceStore) -> Self {
        PresenceGrpc { store }
    }
}

async fn announced(receipt: Receipt) {
    if !receipt.published_within(PUBLISH_WAIT).await {
        tracing::warn!("presence event not on the bus in time");
    }
}

#[tonic::async_trait]
impl PresenceService for PresenceGrpc {
    async fn register_session(
        &self,
        request: Request<RegisterSessionRequest>,
    ) -> Result<Response<RegisterSessionResponse>, Status> {
        let r = request.into_inner();
        let joined_at = r
            .joined_at
            .and_then(|t| std::time::SystemTime::try_from(t).ok());
        let (registered, receipt) = self.store.register(
            &r.user_id,
            &r.username,
            &r.gateway_id,
            &r.session_id,
            joined_at,
        )?;
        announced(receipt).await;
        Ok(Response::new(RegisterSessionResponse {
            user: Some(registered.user),
            first_session: registered.first_session,
            version: registered.version,
        }))
    }

    async fn unregister_session(
        &self,
        request: Request<UnregisterSessionRequest>,
    ) -> Result<Response<UnregisterSessionResponse>, Status> {
        let (unregistered, receipt) = self.store.unregister(&request.get_ref().session_id)?;
        announced(receipt).await;
        Ok(Response::new(UnregisterSessionResponse {
            user_id: unregistered.user_id,
            last_session: unregistered.last_session,
            version: unregistered.version,
        }))
    }

    async fn unregister_gateway(
        &self,
        request: Request<UnregisterGatewayRequest>,
    ) -> Result<Response<UnregisterGatewayResponse>, Status> {
        let (sessions_removed, users_gone_offline, receipt) = self
            .store
            .unregister_gateway(&request.get_ref().gateway_id)?;
        if let Some(receipt) = receipt {
            announced(receipt).await;
        }
        Ok(Response::new(UnregisterGatewayResponse {
            sessions_removed,
            users_gone_offline,
        }))
    }

    async fn list_users(
        &self,
        _request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let (users, version) = self.store.list();
        Ok(Response::new(ListUsersResponse {
            users,
            version,
            instance_id: self.store.instance_id().to_owned(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let user = self.store.get(&request.get_ref().user_id)?;
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    async fn get_counts(
        &self,
        _request: Request<GetCountsRequest>,
    ) -> Result<Response<GetCountsResponse>, Status> {
        let counts = self.store.counts();
        Ok(Response::new(GetCountsResponse {
            online_users: counts.online_users,
            sessions: counts.sessions,
            gateways: counts.gateways,
            version: counts.version,
            instance_id: self.store.instance_id().to_owned(),
        }))
    }
}
