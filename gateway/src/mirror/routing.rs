//! Where a relay goes: only between users who share a call, to the target's
//! latest socket in the call, else to its most recently registered socket.

use meetup_proto::calls::v1::Call;

use super::calls::user_of;
use super::{Mirror, Route};
use crate::protocol::ack::{AckError, ErrorCode};

/// True when `user_id` takes part in or was invited to `call`.
fn belongs(call: &Call, user_id: &str) -> bool {
    call.initiator.as_ref().is_some_and(|u| u.id == user_id)
        || call.invited_user_ids.iter().any(|id| id == user_id)
        || call
            .participants
            .iter()
            .any(|p| p.user.as_ref().is_some_and(|u| u.id == user_id))
}

impl Mirror {
    /// Decides where a relay from `from_user` to `to_user` in `call_id` goes:
    /// only between users who share the call, to the target's latest socket in
    /// the call, else to its most recently registered socket.
    pub fn route_relay(
        &self,
        call_id: &str,
        from_user: &str,
        to_user: &str,
    ) -> Result<Route, AckError> {
        let state = self.read();
        let shared = state
            .calls_by_id
            .get(call_id)
            .filter(|c| belongs(c, from_user) && belongs(c, to_user));
        let Some(call) = shared else {
            return Err(AckError::new(
                ErrorCode::NotInCall,
                "you and the target do not share this call",
            ));
        };
        // Its latest session in the call, one that is not away if it has one.
        let mine = || {
            call.participants
                .iter()
                .rev()
                .filter(|p| user_of(p) == to_user)
        };
        if let Some(p) = mine()
            .find(|p| p.away_until.is_none())
            .or_else(|| mine().next())
        {
            return Ok(Route {
                session_id: p.session_id.clone(),
                gateway_id: p.gateway_id.clone(),
                away: p.away_until.is_some(),
            });
        }
        state
            .users
            .get(to_user)
            .and_then(|u| {
                u.sessions
                    .iter()
                    .rev()
                    .find(|s| s.away_until.is_none())
                    .or_else(|| u.sessions.last())
            })
            .map(|s| Route {
                session_id: s.session_id.clone(),
                gateway_id: s.gateway_id.clone(),
                away: s.away_until.is_some(),
            })
            .ok_or_else(|| AckError::new(ErrorCode::UserOffline, "the target user is not online"))
    }
}
