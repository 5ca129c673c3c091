//! `user-joined`: registers the socket's user in presence (or refreshes it),
//! within the token's identity when authentication is on.

use meetup_proto::presence::v1::RegisterSessionRequest;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::ack::{AckError, ErrorCode, ok};
use crate::backends::retry_once;
use crate::metrics;
use crate::mirror::public_user;
use crate::payload;
use crate::socket::{Identity, SessionWorker};
use crate::state::LocalSession;

impl SessionWorker {
    pub(crate) async fn user_joined(&mut self, payload: &RawValue) -> Result<Value, AckError> {
        let mut cmd = payload::user_joined(payload)?;
        if let Some(claims) = &self.claims {
            if claims.sub != cmd.id {
                return Err(AckError::new(
                    ErrorCode::Forbidden,
                    "your token lets you register only as its own user id",
                ));
            }
            if let Some(username) = &claims.username {
                cmd.username = username.clone();
            }
        }
        if let Some(me) = &self.identity
            && me.user_id != cmd.id
        {
            return Err(AckError::new(
                ErrorCode::AlreadyRegistered,
                "this socket is registered as another user; reconnect to change identity",
            ));
        }
        let previous = self.gw.set_local(
            &self.session_id,
            LocalSession {
                user_id: cmd.id.clone(),
                username: cmd.username.clone(),
                joined_at: None,
                registered: false,
                revision: 0,
            },
        );
        let request = RegisterSessionRequest {
            user_id: cmd.id.clone(),
            username: cmd.username.clone(),
            gateway_id: self.gw.id().to_owned(),
            session_id: self.session_id.clone(),
        };
        let presence = self.gw.presence();
        let result = retry_once(|| {
            let (mut client, request) = (presence.clone(), request.clone());
            async move { client.register_session(request).await }
        })
        .await;
        if result.is_err() {
            match previous {
                Some(previous) => self.gw.set_local(&self.session_id, previous),
                None => self.gw.forget_local(&self.session_id),
            };
        }
        let response = result
            .map_err(|status| AckError::from_status(&status, "register session"))?
            .into_inner();
        let user = response.user.unwrap_or_default();
        self.gw
            .confirm_local(&self.session_id, user.joined_at, response.revision);
        if self.identity.is_none() {
            metrics::get().registered_sockets.inc();
        }
        self.identity = Some(Identity {
            user_id: cmd.id,
            username: cmd.username,
        });
        self.gw
            .mirror()
            .wait_presence(response.revision, self.gw.limits().announce_wait)
            .await;
        // Extension: the ICE servers this user should use, TURN credentials included.
        self.emit("ice-servers", &self.gw.ice().for_user(&user.id));
        crate::history::send_missed_calls(self.gw.history(), &self.socket, &user.id).await;
        Ok(ok(json!({ "user": public_user(&user) })))
    }
}
