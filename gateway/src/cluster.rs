//! Keeping a cluster whole: this gateway's heartbeat, the removal of gateways that
//! went silent, probes of the services (readiness, restarts, missed events), and
//! reconciliation of this gateway's sockets with what the services hold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meetup_proto::bus::v1::GatewayHeartbeat;
use meetup_proto::calls::v1::{
    GetCountsRequest as CallCounts, RemoveGatewayRequest, RemoveSessionRequest,
};
use meetup_proto::presence::v1::{
    GetCountsRequest as PresenceCounts, UnregisterGatewayRequest, UnregisterSessionRequest,
};
use meetup_runtime::{Subscription, subjects};
use prost::Message;
use tokio::sync::watch;
use tonic::Code;

use crate::dispatch::register_again;
use crate::gateway::Gateway;

/// Timing of the liveness protocol.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often this gateway says it is alive and probes the services.
    pub heartbeat: Duration,
    /// Silence after which another gateway is taken as dead.
    pub timeout: Duration,
}

/// Publishes this gateway's heartbeat, on its own task so that slow probes never
/// delay it (a late heartbeat would get this gateway declared dead).
pub async fn heartbeat(gw: Gateway, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                let beat = GatewayHeartbeat { gateway_id: gw.id().to_owned(), sockets: gw.io().sockets().len() as u32 };
                if let Err(error) = gw.bus().publish(subjects::GATEWAY_HEARTBEATS.to_owned(), beat.encode_to_vec().into()).await {
                    crate::metrics::get().bus_error("publish heartbeat");
                    tracing::warn!(%error, "heartbeat not published");
                }
            }
        }
    }
}

/// Watches the other gateways and the services until `stop`.
pub async fn watch(
    gw: Gateway,
    mut heartbeats: Subscription,
    liveness: Liveness,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_seen: HashMap<String, Instant> = HashMap::new();
    let mut lag = Lag::default();
    // Twice per heartbeat: a dead gateway is noticed at most half a beat late.
    let mut tick = tokio::time::interval(liveness.heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(message) = heartbeats.next() => {
                if let Ok(beat) = GatewayHeartbeat::decode(message.payload)
                    && beat.gateway_id != gw.id()
                {
                    last_seen.insert(beat.gateway_id, Instant::now());
                }
            }
            _ = tick.tick() => {
                probe(&gw, &mut lag, liveness.heartbeat).await;
                remove_dead_gateways(&gw, &mut last_seen, liveness.timeout).await;
                reconcile(&gw, liveness.heartbeat * 2).await;
            }
        }
    }
}

/// Service positions seen ahead of the mirror at the previous probe.
#[derive(Default)]
struct Lag {
    presence: Option<u64>,
    calls: Option<u64>,
}

/// Asks each service where it stands: unreachable services make the gateway
/// not ready; another instance, or a mirror left behind for a whole probe
/// interval, gets the mirror resynchronised (and restored) by the dispatcher.
async fn probe(gw: &Gateway, lag: &mut Lag, limit: Duration) {
    let presence = tokio::time::timeout(limit, gw.presence().get_counts(PresenceCounts {})).await;
    let presence_up = match presence {
        Ok(Ok(counts)) => {
            let counts = counts.into_inner();
            let (instance, version) = gw.replica().presence_position();
            if instance != counts.instance_id || behind(&mut lag.presence, version, counts.version)
            {
                gw.replica().mark_presence_unsynced();
            }
            true
        }
        _ => false,
    };
    let calls = tokio::time::timeout(limit, gw.calls().get_counts(CallCounts {})).await;
    let calls_up = match calls {
        Ok(Ok(counts)) => {
            let counts = counts.into_inner();
            let (instance, sequence) = gw.replica().calls_position();
            if instance != counts.instance_id || behind(&mut lag.calls, sequence, counts.sequence) {
                gw.replica().mark_calls_unsynced();
            }
            true
        }
        _ => false,
    };
    let was = gw.backends_up();
    if was != (presence_up, calls_up) {
        tracing::info!(presence_up, calls_up, "backing services");
    }
    gw.set_backends_up(presence_up, calls_up);
}

/// True when the mirror is still short of what the service had one probe ago:
/// events were lost (the bus was down), and no later event revealed the gap.
fn behind(seen_ahead: &mut Option<u64>, mirror: u64, service: u64) -> bool {
    let stuck = seen_ahead.is_some_and(|target| mirror < target);
    *seen_ahead = (mirror < service && !stuck).then_some(service);
    stuck
}

/// Removes the users of every gateway silent for longer than `timeout`: calls
/// first, then presence, so that peers hear `user-left-call` before `user-left`.
async fn remove_dead_gateways(
    gw: &Gateway,
    last_seen: &mut HashMap<String, Instant>,
    timeout: Duration,
) {
    let now = Instant::now();
    for id in gw.replica().gateway_ids() {
        if id != gw.id() {
            last_seen.entry(id).or_insert(now);
        }
    }
    let dead: Vec<String> = last_seen
        .iter()
        .filter(|(_, seen)| now.duration_since(**seen) > timeout)
        .map(|(id, _)| id.clone())
        .collect();
    for gateway_id in dead {
        tracing::warn!(gateway_id, ?timeout, "gateway silent; removing its users");
        let calls = gw
            .calls()
            .remove_gateway(RemoveGatewayRequest {
                gateway_id: gateway_id.clone(),
            })
            .await;
        if let Err(status) = calls {
            tracing::warn!(code = ?status.code(), error = status.message(), "calls cleanup of a dead gateway failed");
            continue;
        }
        let presence = gw
            .presence()
            .unregister_gateway(UnregisterGatewayRequest {
                gateway_id: gateway_id.clone(),
            })
            .await;
        match presence {
            Ok(swept) => {
                let swept = swept.into_inner();
                tracing::info!(
                    gateway_id,
                    sessions = swept.sessions_removed,
                    "dead gateway's users removed"
                );
                last_seen.remove(&gateway_id);
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), error = status.message(), "presence cleanup of a dead gateway failed");
            }
        }
    }
}

/// Makes the services agree with this gateway's live sockets: sessions the
/// services hold for sockets that are gone (a cleanup that failed while a
/// service was down) are removed, and registered sockets the presence service
/// lost are registered again. Sockets younger than `settle` are left alone.
async fn reconcile(gw: &Gateway, settle: Duration) {
    let (presence_up, calls_up) = gw.backends_up();
    if !presence_up || !calls_up || !gw.replica().is_synced() {
        return;
    }
    // What the services hold is read before this gateway's own sockets: a socket
    // is recorded locally before its registration starts, so one that registers
    // meanwhile is in the local view and never taken for a ghost.
    let in_calls = gw.replica().call_sessions_on(gw.id());
    let in_presence = gw.replica().presence_sessions_on(gw.id());
    let local: HashMap<_, _> = gw.local_sessions().into_iter().collect();
    for session_id in in_calls {
        if !local.contains_key(&session_id) && !gw.is_local_session(&session_id) {
            tracing::info!(session_id, "removing a gone socket from its calls");
            if let Err(status) = gw
                .calls()
                .remove_session(RemoveSessionRequest { session_id })
                .await
            {
                tracing::warn!(code = ?status.code(), error = status.message(), "calls reconcile failed");
            }
        }
    }
    for session_id in &in_presence {
        if !local.contains_key(session_id) && !gw.is_local_session(session_id) {
            tracing::info!(session_id, "removing a gone socket from presence");
            let request = UnregisterSessionRequest {
                session_id: session_id.clone(),
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
    for (session_id, session) in local {
        if session.registered
            && session.since.elapsed() > settle
            && !in_presence.contains(&session_id)
        {
            tracing::info!(session_id, user_id = %session.user_id, "registering a socket presence lost");
            register_again(gw, session_id, session).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::behind;

    #[test]
    fn a_mirror_is_behind_only_when_it_stays_short_for_a_whole_probe() {
        let mut seen = None;
        assert!(!behind(&mut seen, 5, 5), "level");
        assert!(!behind(&mut seen, 5, 7), "first sight of a lag");
        assert!(
            !behind(&mut seen, 7, 9),
            "caught up with what was seen, new lag noted"
        );
        assert!(behind(&mut seen, 8, 9), "still short of 9");
        assert!(!behind(&mut seen, 9, 9));
        assert_eq!(seen, None);
    }
}
