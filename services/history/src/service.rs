//! The `meetup.history.v1.HistoryService` gRPC API over the [`HistoryStore`]:
//! checks requests; records go to the wire through [`crate::wire`].

use meetup_proto::history::v1 as pb;
use meetup_proto::history::v1::history_service_server::HistoryService;
use tonic::{Request, Response, Status};

use crate::error::{HistoryError, require};
use crate::record::now_ms;
use crate::store::HistoryStore;
use crate::wire::{call_to_wire, ms_from_timestamp, timestamp_from_ms};

#[derive(Clone, Debug)]
pub struct HistoryGrpc {
    store: HistoryStore,
}

impl HistoryGrpc {
    pub fn new(store: HistoryStore) -> Self {
        HistoryGrpc { store }
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryGrpc {
    async fn list_user_calls(
        &self,
        request: Request<pb::ListUserCallsRequest>,
    ) -> Result<Response<pb::ListUserCallsResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let token = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .store
            .list_user_calls(&request.user_id, request.page_size, token)
            .await?;
        Ok(Response::new(pb::ListUserCallsResponse {
            calls: page.calls.iter().map(call_to_wire).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_call_record(
        &self,
        request: Request<pb::GetCallRecordRequest>,
    ) -> Result<Response<pb::GetCallRecordResponse>, Status> {
        let request = request.into_inner();
        require("call_id", &request.call_id)?;
        let call = self.store.get_call(&request.call_id).await?;
        Ok(Response::new(pb::GetCallRecordResponse {
            call: Some(call_to_wire(&call)),
        }))
    }

    async fn delete_user_history(
        &self,
        request: Request<pb::DeleteUserHistoryRequest>,
    ) -> Result<Response<pb::DeleteUserHistoryResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let forgotten = self.store.delete_user(&request.user_id, now_ms()).await?;
        tracing::info!(
            user_id = %request.user_id,
            attendee_rows = forgotten.attendee_rows,
            calls_anonymised = forgotten.calls_anonymised,
            calls_removed = forgotten.calls_removed,
            "user history deleted"
        );
        Ok(Response::new(pb::DeleteUserHistoryResponse {
            attendee_rows: forgotten.attendee_rows,
            calls_anonymised: forgotten.calls_anonymised,
            calls_removed: forgotten.calls_removed,
        }))
    }

    async fn list_missed_calls(
        &self,
        request: Request<pb::ListMissedCallsRequest>,
    ) -> Result<Response<pb::ListMissedCallsResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let since = match &request.since {
            Some(since) => ms_from_timestamp(since),
            None => self.store.seen_until(&request.user_id).await?.unwrap_or(0),
        };
        let missed = self
            .store
            .missed_calls(&request.user_id, since, request.limit)
            .await?;
        Ok(Response::new(pb::ListMissedCallsResponse {
            count: missed.count,
            calls: missed.calls.iter().map(call_to_wire).collect(),
            newest: missed.newest.map(timestamp_from_ms),
        }))
    }

    async fn mark_missed_calls_seen(
        &self,
        request: Request<pb::MarkMissedCallsSeenRequest>,
    ) -> Result<Response<pb::MarkMissedCallsSeenResponse>, Status> {
        let request = request.into_inner();
        require("user_id", &request.user_id)?;
        let until = request
            .seen_until
            .as_ref()
            .map(ms_from_timestamp)
            .ok_or_else(|| HistoryError::InvalidArgument("seen_until is required".into()))?;
        self.store.mark_seen(&request.user_id, until).await?;
        Ok(Response::new(pb::MarkMissedCallsSeenResponse {}))
    }
}
