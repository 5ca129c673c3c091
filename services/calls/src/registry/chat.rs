//! In-call chat: the latest messages of a live call in one key of the calls
//! bucket beside the call (`m.<call>`), appended by compare-and-set. The key's
//! revisions give every gateway one order of the messages, and since the call
//! and its chat share a bucket, one order with the joins and leaves too. The
//! chat goes when the call ends.

use meetup_platform::store::{Change, Versioned, keys};
use meetup_proto::bus::v1::CallChat;
use meetup_proto::calls::v1::{Call, CallUser, ChatMessage, SenderKind};
use rand::Rng;

use super::invites::system_user;
use super::shared::{CallRegistry, now};
use crate::error::{CallError, require};

/// Longest chat message, in characters (Unicode code points).
pub const MAX_TEXT_CHARS: usize = 4_000;
/// Most text bytes a call's chat keeps (the oldest messages go first).
pub const MAX_CHAT_BYTES: usize = 512 * 1024;
/// Longest bot name, in characters.
pub const MAX_BOT_NAME_CHARS: usize = 64;

/// Who posts a message.
#[derive(Debug, Clone)]
pub enum Sender {
    /// A participant's session.
    Session(String),
    /// A bot, by its display name.
    Bot(String),
    System,
}

/// Checks a message's text: 1 to [`MAX_TEXT_CHARS`] characters.
pub fn check_text(text: &str) -> Result<(), CallError> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(CallError::InvalidArgument(format!(
            "text must be 1 to {MAX_TEXT_CHARS} characters, not {chars}"
        )));
    }
    Ok(())
}

/// Keeps the newest `max` messages, and no more than [`MAX_CHAT_BYTES`] of text.
fn trim(messages: &mut Vec<ChatMessage>, max: usize) {
    if messages.len() > max {
        messages.drain(..messages.len() - max);
    }
    let mut bytes: usize = messages.iter().map(|m| m.text.len()).sum();
    let mut drop = 0;
    while bytes > MAX_CHAT_BYTES && drop + 1 < messages.len() {
        bytes -= messages[drop].text.len();
        drop += 1;
    }
    messages.drain(..drop);
}

fn random_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

impl CallRegistry {
    /// The author of a message from `sender` in `call`.
    fn author(call: &Call, sender: &Sender) -> Result<(CallUser, SenderKind), CallError> {
        match sender {
            Sender::Session(session_id) => call
                .participants
                .iter()
                .find(|p| &p.session_id == session_id)
                .and_then(|p| p.user.clone())
                .map(|user| (user, SenderKind::User))
                .ok_or_else(|| CallError::NotParticipant {
                    call_id: call.id.clone(),
                    user_id: session_id.clone(),
                }),
            Sender::Bot(name) => {
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_BOT_NAME_CHARS {
                    return Err(CallError::InvalidArgument(format!(
                        "bot_name must be 1 to {MAX_BOT_NAME_CHARS} characters"
                    )));
                }
                Ok((
                    CallUser {
                        id: format!("bot:{name}"),
                        username: name.clone(),
                    },
                    SenderKind::Bot,
                ))
            }
            Sender::System => Ok((system_user(), SenderKind::System)),
        }
    }

    /// Posts `text` into the live call `call_id`. Returns the message and the
    /// revision of the chat's key.
    pub async fn send_message(
        &self,
        call_id: &str,
        sender: Sender,
        text: String,
    ) -> Result<(ChatMessage, u64), CallError> {
        require("call_id", call_id)?;
        if let Sender::Session(session_id) = &sender {
            require("session_id", session_id)?;
        }
        check_text(&text)?;
        let call = self.get(call_id).await?;
        let (from, kind) = Self::author(&call, &sender)?;
        let key = keys::chat(call_id);
        let max = self.limits().chat_history.max(1);
        let (message, revision) = self
            .calls()
            .modify(&key, |read: Option<Versioned<CallChat>>| async {
                let mut chat = read
                    .map(|r| r.value)
                    .filter(|c| c.call_created_at == call.created_at)
                    .unwrap_or_else(|| CallChat {
                        call_id: call_id.to_owned(),
                        call_created_at: call.created_at,
                        next_seq: 1,
                        messages: Vec::new(),
                    });
                let message = ChatMessage {
                    id: random_id(),
                    seq: chat.next_seq,
                    from: Some(from.clone()),
                    kind: kind as i32,
                    text: text.clone(),
                    sent_at: Some(now()),
                };
                chat.next_seq += 1;
                chat.messages.push(message.clone());
                trim(&mut chat.messages, max);
                Ok::<_, CallError>(Change::Put(chat, message))
            })
            .await?;
        tracing::debug!(call_id, seq = message.seq, "chat message");
        Ok((message, revision))
    }

    /// Deletes the chat of a call that ended (best effort: a leftover is reset
    /// by the next message of a call with the same id, and deleted by a sweep).
    pub(super) async fn drop_chat(&self, call_id: &str) {
        if let Err(error) = self.calls().remove(&keys::chat(call_id)).await {
            tracing::debug!(call_id, %error, "chat not deleted");
        }
    }

    /// Deletes the chats of `calls` (the index's chats without a live call)
    /// whose call is indeed no longer live (one sweep's part).
    pub(super) async fn sweep_chats(&self, calls: Vec<String>) -> Result<(), CallError> {
        for call_id in calls {
            // The index may be behind: the chat and its call say.
            let Some(entry) = self.calls().get(&keys::chat(&call_id)).await? else {
                continue;
            };
            if self
                .read(&call_id)
                .await?
                .is_some_and(|c| c.live().is_some())
            {
                continue;
            }
            // A conflict: a message came meanwhile, for a new call of that id.
            let _ = self.calls().delete(&entry.key, entry.revision).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use meetup_platform::store::keys;
    use prost::Message;

    use super::*;
    use crate::registry::CallLimits;
    use crate::registry::testing::{p, registry};

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            text: text.to_owned(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn text_is_one_to_four_thousand_code_points() {
        assert!(check_text("").is_err());
        assert!(check_text("hi").is_ok());
        assert!(check_text(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(check_text(&"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }

    #[test]
    fn the_chat_keeps_the_newest_within_count_and_bytes() {
        let mut messages: Vec<ChatMessage> = (0..10).map(|i| message(&i.to_string())).collect();
        trim(&mut messages, 3);
        let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["7", "8", "9"]);
        let big = "x".repeat(MAX_CHAT_BYTES / 2 + 1);
        let mut messages = vec![message(&big), message(&big), message("last")];
        trim(&mut messages, 50);
        assert_eq!(messages.len(), 2, "the oldest goes when the bytes overflow");
        assert_eq!(messages[1].text, "last");
    }

    #[tokio::test]
    async fn chat_messages_are_ordered_bounded_and_go_with_the_call() {
        use meetup_proto::bus::v1::CallChat;
        let limits = CallLimits {
            chat_history: 3,
            ..CallLimits::default()
        };
        let (r, state) = registry(limits);
        r.start("c1", p("a", "sa"), false, vec![], "")
            .await
            .expect("start");
        assert!(matches!(
            r.send_message("c1", Sender::Session("sx".into()), "hi".into())
                .await,
            Err(CallError::NotParticipant { .. })
        ));
        assert!(matches!(
            r.send_message("nope", Sender::System, "hi".into()).await,
            Err(CallError::CallNotFound(_))
        ));
        let mut last = 0;
        for n in 1..=5 {
            let (message, revision) = r
                .send_message("c1", Sender::Session("sa".into()), format!("m{n}"))
                .await
                .expect("send");
            assert_eq!(message.seq, n);
            assert!(revision > last);
            last = revision;
        }
        let (bot, _) = r
            .send_message("c1", Sender::Bot("notes".into()), "summary".into())
            .await
            .expect("bot");
        assert_eq!(bot.from.expect("from").id, "bot:notes");
        let chat = state
            .calls
            .get(&keys::chat("c1"))
            .await
            .expect("get")
            .and_then(|e| e.value)
            .map(|v| CallChat::decode(v).expect("chat"))
            .expect("a chat");
        let texts: Vec<&str> = chat.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["m4", "m5", "summary"], "the newest three");
        r.leave("c1", "sa", "").await.expect("leave");
        assert!(
            state
                .calls
                .get(&keys::chat("c1"))
                .await
                .expect("get")
                .is_none(),
            "the chat went with the call"
        );
    }
}
