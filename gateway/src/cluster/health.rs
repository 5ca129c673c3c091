//! Whether this gateway can serve: probes of the services (readiness), and the
//! reconciliation of this gateway's sockets with what the state holds for them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use meetup_proto::calls::v1::{GetCallRequest, RemoveSessionRequest};
use meetup_proto::presence::v1::{GetUserRequest, UnregisterSessionRequest};
use tokio::sync::watch;
use tonic::Code;

use crate::config::Liveness;
use crate::sessions::LocalSession;
use crate::state::Gateway;

/// Probes the services and reconciles, every heartbeat, until `stop`.
pub async fn watch(gw: Gateway, liveness: Liveness, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(liveness.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sockets whose session the state seemed to have lost at the last beat.
    let mut suspects = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                probe(&gw, liveness.heartbeat).await;
                reconcile(&gw, &mut suspects).await;
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
async fn reconcile(gw: &Gateway, suspects: &mut HashSet<String>) {
    let (presence_up, calls_up) = gw.backends_up();
    if !presence_up || !calls_up || !gw.mirror().is_synced() {
        return;
    }
    let in_calls = gw.mirror().call_sessions_on(gw.id());
    let in_presence = gw.mirror().presence_sessions_on(gw.id());
    for (session_id, call_ids) in in_calls {
        if !gw.sessions().contains(&session_id) {
            tracing::info!(session_id, "removing a gone socket from its calls");
            let request = RemoveSessionRequest {
                session_id,
                call_ids,
                keep_away: true,
            };
            if let Err(status) = gw.calls().remove_session(request).await {
                tracing::warn!(code = ?status.code(), error = status.message(), "calls reconcile failed");
            }
        }
    }
    fence_swept(gw, &in_presence, suspects).await;
    for (session_id, user_id) in in_presence {
        if !gw.sessions().contains(&session_id) {
            tracing::info!(session_id, "removing a gone socket from presence");
            let request = UnregisterSessionRequest {
                session_id,
                user_id,
                keep_away: true,
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

/// The other way round: a registered socket of this gateway whose session the
/// state no longer holds (or holds as away) was given up behind its back (a
/// service replica swept this gateway while it could not renew its lease). Its
/// client would go on as if online and in its calls while everybody else was
/// told it left, so the socket is closed: the client reconnects and resumes or
/// registers again. A session counts as lost only when the mirror, past the
/// revision its registration wrote, has lacked it at two beats in a row, and
/// the presence service confirms (a read from a lagging replica alone, or a
/// mirror catching up, never closes a socket).
async fn fence_swept(
    gw: &Gateway,
    in_presence: &HashMap<String, String>,
    suspects: &mut HashSet<String>,
) {
    let Some(applied) = gw.mirror().presence_revision() else {
        suspects.clear();
        return;
    };
    let missing: Vec<(String, LocalSession)> = gw
        .sessions()
        .snapshot()
        .into_iter()
        .filter(|(session_id, s)| {
            s.registered && s.revision <= applied && !in_presence.contains_key(session_id)
        })
        .collect();
    let confirmed: Vec<(String, LocalSession)> = missing
        .iter()
        .filter(|(session_id, _)| suspects.contains(session_id))
        .cloned()
        .collect();
    *suspects = missing.into_iter().map(|(id, _)| id).collect();
    for (session_id, session) in confirmed {
        let request = GetUserRequest {
            user_id: session.user_id.clone(),
        };
        let held = match gw.presence().get_user(request).await {
            // Held and live: an away session is one the cluster gave up on
            // this socket for (its gateway was swept).
            Ok(response) => response.into_inner().user.is_some_and(|u| {
                u.sessions
                    .iter()
                    .any(|s| s.session_id == session_id && s.away_until.is_none())
            }),
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => {
                tracing::warn!(code = ?status.code(), error = status.message(), "presence check failed");
                continue;
            }
        };
        // Unregistered meanwhile by the socket itself (it left or went away).
        if held || gw.sessions().revision(&session_id) != Some(session.revision) {
            continue;
        }
        tracing::warn!(
            session_id,
            user_id = session.user_id,
            "the state lost this socket's session (its gateway was swept); closing it"
        );
        crate::metrics::get().bus_error("session swept");
        // Forgotten first: the socket's cleanup then leaves the session as
        // the state has it (away, the client resumes it; or gone).
        gw.sessions().remove(&session_id);
        gw.disconnect_session(&session_id);
    }
}
