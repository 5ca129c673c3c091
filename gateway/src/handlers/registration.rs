//! `user-joined`: registers the socket's user in presence (or refreshes it),
//! within the token's identity when authentication is on; or takes over the
//! user's away session (resume).

use meetup_proto::calls::v1::ResumeSessionRequest as ResumeCallsRequest;
use meetup_proto::presence::v1::{RegisterSessionRequest, ResumeSessionRequest};
use serde_json::value::RawValue;

use crate::metrics;
use crate::protocol::ServerEvent;
use crate::protocol::ack::{Ack, AckError, Answer, ErrorCode, Handled, Resumable};
use crate::protocol::inbound::{self, RelayKind};
use crate::protocol::outbound::public_user;
use crate::resume;
use crate::sessions::LocalSession;
use crate::socket::{Identity, SessionWorker};

/// How to take back what a registration changed in the local sessions when
/// the presence service refused it.
enum Undo {
    /// The socket was registered already: its earlier username.
    Rename(Option<String>),
    /// A new registration: the record it replaced, if any.
    Restore(Option<LocalSession>),
}

impl SessionWorker {
    pub(crate) async fn user_joined(&mut self, payload: &RawValue) -> Handled {
        let mut cmd = inbound::user_joined(payload)?;
        if let Some(claims) = &self.claims {
            if claims.sub != cmd.id {
                return Err(AckError::new(
                    ErrorCode::Forbidden,
                    "your token lets you register only as its own user id",
                )
                .into());
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
            )
            .into());
        }
        let grace = self.gw.limits().resume_grace;
        // Only a socket that is not registered yet takes a session over; a
        // client that speaks resume and sends no token registers afresh (it is
        // a new page, not the one that went away).
        let may_take_over = cmd.resume_token.is_some() || !cmd.speaks_resume;
        if !grace.is_zero() && self.identity.is_none() && may_take_over {
            if let Some(answer) = self.resume(&cmd).await? {
                return Ok(answer);
            }
            if cmd.resume_token.is_some() {
                return Err(AckError::new(
                    ErrorCode::ResumeRefused,
                    "no session of this user holds that resume token (it expired, was resumed already, or is not this user's); register without it",
                )
                .into());
            }
        }
        let (token, token_hash) = resume::new_token();
        // A socket registering again is the same session: its relays are
        // numbered on and those held for a replay stay; only its name changes.
        let undo = match &self.identity {
            Some(_) => Undo::Rename(self.gw.sessions().rename(&self.session_id, &cmd.username)),
            None => Undo::Restore(self.gw.sessions().insert(
                &self.session_id,
                LocalSession::registering(&cmd.id, &cmd.username, cmd.speaks_resume),
            )),
        };
        let request = RegisterSessionRequest {
            user_id: cmd.id.clone(),
            username: cmd.username.clone(),
            gateway_id: self.gw.id().to_owned(),
            session_id: self.session_id.clone(),
            resume_token_hash: if grace.is_zero() {
                String::new()
            } else {
                token_hash
            },
        };
        let result = self.gw.presence().register_session(request).await;
        if result.is_err() {
            match undo {
                Undo::Rename(Some(username)) => {
                    self.gw.sessions().rename(&self.session_id, &username);
                }
                Undo::Rename(None) => {}
                Undo::Restore(previous) => self.gw.sessions().restore(&self.session_id, previous),
            }
        }
        let response = result
            .map_err(|status| AckError::from_status(&status, "register session"))?
            .into_inner();
        let user = response.user.unwrap_or_default();
        self.gw
            .sessions()
            .confirm(&self.session_id, user.joined_at, response.revision);
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
        // Sent here, not returned with the ack: the missed calls are marked
        // seen only once this socket took them, and before the ack (a client
        // that registers again at once must not be told them twice); the ICE
        // servers go first, as they always have.
        // Extension: the ICE servers this user should use, TURN credentials included.
        self.send(&ServerEvent::IceServers(self.gw.ice().for_user(&user.id)));
        crate::history::send_missed_calls(&self.gw, &self.session_id, &user.id).await;
        Ok(Ack::Registered {
            user: public_user(&user),
            resume: (!grace.is_zero()).then_some(Resumable {
                resume_token: token,
                resumed: false,
                recovered: false,
            }),
        }
        .into())
    }

    /// Takes over the away session `cmd` names (by its resume token, or the
    /// user's only session when it is away), on this socket: presence, then
    /// its calls, then the relays kept for it. `None` when there is no such
    /// session (nothing changed). The events are what a registration would
    /// have shown the socket, sent before the ack.
    async fn resume(&mut self, cmd: &inbound::UserJoined) -> Result<Option<Answer>, AckError> {
        let (token, token_hash) = resume::new_token();
        let previous_local = self.gw.sessions().insert(
            &self.session_id,
            LocalSession::registering(&cmd.id, &cmd.username, cmd.speaks_resume),
        );
        let request = ResumeSessionRequest {
            user_id: cmd.id.clone(),
            previous_token_hash: cmd
                .resume_token
                .as_deref()
                .map(resume::token_hash)
                .unwrap_or_default(),
            session_id: self.session_id.clone(),
            gateway_id: self.gw.id().to_owned(),
            resume_token_hash: token_hash,
        };
        // Safe to repeat (IDEMPOTENT in presence.proto, so sent again when its
        // replica went away): a second attempt finds its own work done.
        let result = self.gw.presence().resume_session(request).await;
        let response = match result {
            Ok(response) if response.get_ref().resumed => response.into_inner(),
            other => {
                self.gw.sessions().restore(&self.session_id, previous_local);
                return other
                    .map(|_| None)
                    .map_err(|status| AckError::from_status(&status, "resume session"));
            }
        };
        let user = response.user.unwrap_or_default();
        let previous = response.previous.unwrap_or_default();
        self.gw
            .sessions()
            .confirm(&self.session_id, user.joined_at, response.revision);
        self.gw
            .sessions()
            .continue_relays(&self.session_id, previous.relays_given);
        metrics::get().registered_sockets.inc();
        self.identity = Some(Identity {
            user_id: cmd.id.clone(),
            username: cmd.username.clone(),
        });
        // Relays that reach the new socket from now on wait behind the kept
        // ones; those still kept for the old session by senders that have not
        // yet seen it resumed are followed, and passed on.
        self.gw.begin_replay(&self.session_id);
        let stragglers = self.gw.missed().follow(&previous.session_id).await;
        let request = ResumeCallsRequest {
            previous_session_id: previous.session_id.clone(),
            session_id: self.session_id.clone(),
            gateway_id: self.gw.id().to_owned(),
            call_ids: self.gw.mirror().calls_of_session(&previous.session_id),
        };
        let expected_calls = request.call_ids.len();
        let in_calls = self.gw.calls().resume_session(request).await;
        let (calls_revision, calls_kept) = match in_calls {
            Ok(response) => {
                let response = response.into_inner();
                // A call that let the session go meanwhile (its time ran out
                // there first) is not resumed: something was lost.
                (response.revision, response.call_ids.len() >= expected_calls)
            }
            Err(status) => {
                // Its calls still hold the old session, which leaves them
                // when its grace runs out; presence already moved on.
                metrics::get().grpc_error("resume session", status.code());
                tracing::warn!(session_id = %self.session_id, code = ?status.code(), error = status.message(), "calls: session not resumed");
                (0, false)
            }
        };
        let kept = self.gw.missed().take(&previous.session_id).await;
        let (relays, log_ok, overflowed) = match kept {
            Ok(kept) => (kept.relays, true, kept.overflowed),
            Err(error) => {
                tracing::warn!(%error, "kept relays not read");
                (Vec::new(), false, false)
            }
        };
        let seen: std::collections::HashSet<u64> = relays.iter().map(|r| r.nonce).collect();
        let kept: Vec<(RelayKind, String)> = relays
            .into_iter()
            .filter_map(|r| Some((RelayKind::from_proto(r.kind)?, r.payload_json)))
            .collect();
        // Everything addressed to the session is accounted for: the gateway
        // that lost the socket counted what it gave it, the client got all of
        // that (it says so with lastSeq; a client that does not number its
        // relays can only say so when there were none), and the log kept all
        // the rest.
        let recovered = log_ok
            && !overflowed
            && calls_kept
            && previous.relays_counted
            && cmd.last_seq.unwrap_or(0) == previous.relays_given;
        let replayed = self.gw.end_replay(&self.session_id, &kept);
        match stragglers {
            Ok(stragglers) => {
                pass_on_stragglers(
                    self.gw.clone(),
                    stragglers,
                    &previous.session_id,
                    &self.session_id,
                    seen,
                );
            }
            Err(error) => tracing::warn!(%error, "kept relays not followed"),
        }
        metrics::get().relays_replayed.inc_by(replayed as u64);
        metrics::get().session_resumed(recovered);
        let mirror = self.gw.mirror();
        mirror
            .wait_presence(response.revision, self.gw.limits().announce_wait)
            .await;
        mirror
            .wait_calls(calls_revision, self.gw.limits().announce_wait)
            .await;
        // What a registration would have shown this socket; nobody else hears
        // of a resume but the peers in its calls (`user-reconnected`).
        let mut events = vec![
            ServerEvent::UsersList(mirror.users_list()),
            ServerEvent::IceServers(self.gw.ice().for_user(&user.id)),
        ];
        // The chat went on while the socket was away.
        for call_id in mirror.calls_of_session(&self.session_id) {
            events.extend(self.chat_history(&call_id, 0));
        }
        tracing::info!(
            session_id = %self.session_id,
            previous = %previous.session_id,
            user_id = %user.id,
            replayed,
            recovered,
            "session resumed"
        );
        Ok(Some(Answer::after(
            events,
            Ack::Registered {
                user: public_user(&user),
                resume: Some(Resumable {
                    resume_token: token,
                    resumed: true,
                    recovered,
                }),
            },
        )))
    }
}

/// How long relays still kept for a resumed session's old id are passed on:
/// long past the time every mirror takes to see the resume.
const FOLLOW_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Passes on to `session_id`, for [`FOLLOW_FOR`], the relays kept for its old
/// id `previous` after the log was read (their senders' mirrors had not yet
/// seen the resume); those already read (`seen`) are not given twice.
fn pass_on_stragglers(
    gw: crate::state::Gateway,
    mut stragglers: tokio::sync::mpsc::UnboundedReceiver<meetup_proto::bus::v1::Relay>,
    previous: &str,
    session_id: &str,
    seen: std::collections::HashSet<u64>,
) {
    let (previous, session_id) = (previous.to_owned(), session_id.to_owned());
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + FOLLOW_FOR;
        while let Ok(Some(relay)) = tokio::time::timeout_at(until, stragglers.recv()).await {
            if seen.contains(&relay.nonce) {
                continue;
            }
            if let Some(kind) = RelayKind::from_proto(relay.kind)
                && gw.emit_relay(&session_id, kind, &relay.payload_json)
            {
                metrics::get().relays_replayed.inc();
            }
        }
        gw.missed().unfollow(&previous);
    });
}
