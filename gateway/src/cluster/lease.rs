//! This gateway's lease in the gateways bucket: taken before it serves anybody,
//! renewed every heartbeat (a gateway whose lease expired is dead to the
//! services, which remove its sessions), and the fencing when it was lost.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use meetup_proto::bus::v1::GatewayLease;
use meetup_runtime::store::{StoreError, keys};
use prost::Message;
use tokio::sync::watch;

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
pub async fn renew_lease(
    gw: Gateway,
    mut revision: u64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let key = keys::lease(gw.id());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        match gw
            .store()
            .gateways
            .update(&key, lease_value(&gw), revision)
            .await
        {
            Ok(renewed) => revision = renewed,
            Err(StoreError::Conflict) => {
                tracing::error!(
                    gateway_id = gw.id(),
                    "lease lost: the cluster gave up on this gateway; closing every socket"
                );
                crate::metrics::get().bus_error("lease lost");
                fence(&gw).await;
                match take_lease(&gw).await {
                    Ok(renewed) => revision = renewed,
                    Err(error) => tracing::warn!(%error, "lease not taken again yet"),
                }
            }
            Err(error) => {
                crate::metrics::get().bus_error("renew lease");
                tracing::warn!(%error, "lease not renewed");
            }
        }
    }
}

/// Closes every socket of this gateway (their clients reconnect and start again).
async fn fence(gw: &Gateway) {
    if let Err(error) = gw.io().disconnect().await {
        tracing::warn!(%error, "closing sockets failed");
    }
}
