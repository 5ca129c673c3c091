//! Keeping this gateway's place in the cluster: its lease in the gateways bucket
//! (renewed every heartbeat; a gateway whose lease expired is dead to the
//! services, which remove its sessions), fencing when the lease was lost, probes
//! of the services for readiness, and reconciliation of this gateway's sockets
//! with what the state holds for them.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use meetup_proto::bus::v1::GatewayLease;
use meetup_proto::calls::v1::{GetCallRequest, RemoveSessionRequest};
use meetup_proto::presence::v1::{GetUserRequest, UnregisterSessionRequest};
use meetup_runtime::store::{StoreError, keys};
use prost::Message;
use tokio::sync::watch;
use tonic::Code;

use crate::gateway::Gateway;

/// Timing of the liveness protocol.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often this gateway renews its lease and probes the services.
    pub heartbeat: Duration,
    /// Lifetime of the lease: past it without renewal, this gateway is dead.
    pub timeout: Duration,
}

fn lease_value(gw: &Gateway) -> Bytes {
    GatewayLease {
        gateway_id: gw.id().to_owned(),
        renewed_at: Some(SystemTime::now().into()),
        sockets: gw.io().sockets().len() as u32,
    }
    .encode_to_vec()
    .into()
}

/// Takes this gateway's lease; called before it serves anybody.
pub async fn take_lease(gw: &Gateway) -> Result<u64, StoreError> {
    gw.store()
        .gateways
        .put(&keys::lease(gw.id()), lease_value(gw))
        .await
}

/// Renews the lease every heartbeat, on its own task so that slow probes never
/// delay it. When the renewal finds the lease gone (this gateway was frozen or
/// cut off for longer than the lease lives, and the services removed its
/// sessions), the gateway fences itself: it closes every socket, so that no
/// client goes on as if it were still online and in its calls; they reconnect
/// and register again. Then it takes a new lease.
///
/// One exception: when this gateway tried to renew in time, while connected
/// to NATS, and the store could not take the renewal (a NATS node died and the
/// gateways bucket was electing a leader, which can outlast the lease), the
/// lease ran out because of the store, as every gateway's did, and nobody is
/// dead. The services give every gateway a lease lifetime after such an outage
/// before they sweep (`LeaseView`), so the gateway takes its lease again and
/// keeps its sockets.
pub async fn renew_lease(
    gw: Gateway,
    mut revision: u64,
    liveness: Liveness,
    mut stop: watch::Receiver<bool>,
) {
    let key = keys::lease(gw.id());
    let mut tick = tokio::time::interval(liveness.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since the last renewal: whether this gateway kept trying (no pause as
    // long as the lease lives between two attempts: it was not frozen) and was
    // connected to NATS (not cut off).
    let (mut last_try_end, mut kept_trying) = (tokio::time::Instant::now(), true);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let tried_at = tokio::time::Instant::now();
        kept_trying &= tried_at.duration_since(last_try_end) < liveness.timeout;
        // Cut off: no connection before nor after the attempt (a NATS node that
        // died only moves the connection to another node in the meantime).
        let connected_before = gw.bus().is_connected();
        let result = gw
            .store()
            .gateways
            .update(&key, lease_value(&gw), revision)
            .await;
        last_try_end = tokio::time::Instant::now();
        kept_trying &= connected_before || gw.bus().is_connected();
        let lost = match result {
            Ok(renewed) => {
                revision = renewed;
                kept_trying = true;
                continue;
            }
            Err(StoreError::Conflict) => true,
            Err(error) => {
                crate::metrics::get().bus_error("renew lease");
                tracing::warn!(%error, "lease not renewed");
                false
            }
        };
        let store_outage = kept_trying;
        if lost && store_outage {
            tracing::warn!(
                gateway_id = gw.id(),
                "lease ran out while the store could not take its renewal; taking it again"
            );
        } else if lost {
            tracing::error!(
                gateway_id = gw.id(),
                "lease lost: the cluster gave up on this gateway; closing every socket"
            );
            crate::metrics::get().bus_error("lease lost");
            fence(&gw).await;
        } else {
            continue;
        }
        match take_lease(&gw).await {
            Ok(renewed) => {
                revision = renewed;
                kept_trying = true;
            }
            Err(error) => tracing::warn!(%error, "lease not taken again yet"),
        }
    }
}

/// Closes every socket of this gateway (their clients reconnect and start again).
async fn fence(gw: &Gateway) {
    if let Err(error) = gw.io().disconnect().await {
        tracing::warn!(%error, "closing sockets failed");
    }
}

/// Probes the services and reconciles, every heartbeat, until `stop`.
pub async fn watch(gw: Gateway, liveness: Liveness, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(liveness.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                probe(&gw, liveness.heartbeat).await;
                reconcile(&gw).await;
            }
        }
    }
}

/// True when a probe's answer shows the service working: the key it asked for
/// does not exist, which only a service that reached its store can say.
fn answered(result: Result<Result<(), tonic::Status>, tokio::time::error::Elapsed>) -> bool {
    match result {
        Ok(Ok(())) => true,
        Ok(Err(status)) => status.code() == Code::NotFound,
        Err(_) => false,
    }
}

/// Asks each service for a key that does not exist: unreachable services (or
/// services that cannot reach the store) make the gateway not ready.
async fn probe(gw: &Gateway, limit: Duration) {
    const PROBE_ID: &str = "meetup-readiness-probe";
    let presence = tokio::time::timeout(limit, async {
        gw.presence()
            .get_user(GetUserRequest {
                user_id: PROBE_ID.into(),
            })
            .await
            .map(|_| ())
    })
    .await;
    let calls = tokio::time::timeout(limit, async {
        gw.calls()
            .get_call(GetCallRequest {
                call_id: PROBE_ID.into(),
            })
            .await
            .map(|_| ())
    })
    .await;
    let (presence_up, calls_up) = (answered(presence), answered(calls));
    if gw.backends_up() != (presence_up, calls_up) {
        tracing::info!(presence_up, calls_up, "backing services");
    }
    gw.set_backends_up(presence_up, calls_up);
}

/// Makes the state agree with this gateway's live sockets: sessions the state
/// holds for sockets of this gateway that are gone (a cleanup that failed while
/// a service was down) are removed. Sockets are recorded locally before their
/// registration starts, so one that registers meanwhile is never taken for a
/// ghost. (Sessions of an earlier run of a gateway with the same id are ghosts too.)
async fn reconcile(gw: &Gateway) {
    let (presence_up, calls_up) = gw.backends_up();
    if !presence_up || !calls_up || !gw.replica().is_synced() {
        return;
    }
    let in_calls = gw.replica().call_sessions_on(gw.id());
    let in_presence = gw.replica().presence_sessions_on(gw.id());
    for (session_id, call_ids) in in_calls {
        if !gw.is_local_session(&session_id) {
            tracing::info!(session_id, "removing a gone socket from its calls");
            let request = RemoveSessionRequest {
                session_id,
                call_ids,
            };
            if let Err(status) = gw.calls().remove_session(request).await {
                tracing::warn!(code = ?status.code(), error = status.message(), "calls reconcile failed");
            }
        }
    }
    for (session_id, user_id) in in_presence {
        if !gw.is_local_session(&session_id) {
            tracing::info!(session_id, "removing a gone socket from presence");
            let request = UnregisterSessionRequest {
                session_id,
                user_id,
            };
            match gw.presence().unregister_session(request).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => {
                    tracing::warn!(code = ?status.code(), error = status.message(), "presence reconcile failed")
                }
            }
        }
    }
}
