//! This gateway's lease in the gateways bucket: taken before it serves anybody,
//! renewed every heartbeat (a gateway whose lease expired is dead to the
//! services, which remove its sessions), and the fencing when it was lost.

use std::time::SystemTime;

use bytes::Bytes;
use meetup_platform::store::{StoreError, keys};
use meetup_proto::bus::v1::GatewayLease;
use prost::Message;
use tokio::sync::watch;

use crate::config::Liveness;
use crate::state::Gateway;

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
/// keeps its sockets. Should a replica have swept it all the same (its own
/// store connection never broke), the reconciler closes every socket whose
/// session is gone (`health::fence_swept`).
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
        // One heartbeat at most: a renewal that waits out a leader election
        // (or a connection moving to another node) would hold the next one
        // back for seconds, past the moment the store takes writes again,
        // while the services time the lease's absence.
        let renewal = gw.store().gateways.update(&key, lease_value(&gw), revision);
        let result = match tokio::time::timeout(liveness.heartbeat, renewal).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("lease renewal timed out".into())),
        };
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

/// Closes every socket of this gateway: their clients reconnect and resume
/// (or, without a grace period, register again). With a grace period the
/// sessions are handed over first (turned away, as the sweep may have done
/// already), so that nothing here removes them meanwhile; without one they are
/// forgotten, and the reconciler removes whatever the sweep left.
async fn fence(gw: &Gateway) {
    let grace = gw.limits().resume_grace;
    if grace.is_zero() {
        for (session_id, _) in gw.sessions().snapshot() {
            gw.sessions().remove(&session_id);
        }
    } else {
        let (handed, failed) = crate::handlers::cleanup::hand_over_all(gw, grace).await;
        tracing::info!(
            handed,
            failed,
            "sessions handed over before closing their sockets"
        );
    }
    if let Err(error) = gw.io().disconnect().await {
        tracing::warn!(%error, "closing sockets failed");
    }
}
