//! send, history, typing, set_status.

use chat_proto::limits::{HISTORY_PAGE_MAX, check_body, check_message_id};
use chat_proto::{ErrorCode, ServerFrame, Status, encode};

use crate::broker::Event;
use crate::reply::{self, Keep};
use crate::session::{Fail, Outcome, Session};
use crate::store::{AppendDone, NewMessage, StoreError, Viewer};

/// Messages per `history` reply when the client gives no limit.
const DEFAULT_HISTORY: u32 = 50;

impl Session {
    pub(crate) fn require_subscribed(&self, room: &str) -> Outcome {
        let a = self.authed()?;
        if self.ctx.hub.is_subscribed(room, a.reg.id) {
            Ok(())
        } else {
            Err(Fail::new(
                ErrorCode::NotMember,
                "join the room on this connection first",
            )
            .in_room(room))
        }
    }

    /// Queues the message for the group commit and returns at once: the ack (to this
    /// connection) and the broadcast (to the room) go out from the store's completion, after the
    /// commit and in seq order. Reading the next frame does not wait for the disk.
    pub(crate) async fn send(
        &mut self,
        room: String,
        id: String,
        body: String,
        reply_to: Option<u64>,
    ) -> Outcome {
        check_message_id(&id).map_err(|m| Fail::new(ErrorCode::InvalidId, m).in_room(&room))?;
        check_body(&body).map_err(|m| Fail::new(ErrorCode::InvalidBody, m).in_room(&room))?;
        self.require_subscribed(&room)?;
        // A message stays a message once stored (a delete leaves a tombstone), so a target
        // checked now is still one when this is stored.
        if let Some(target) = reply_to
            && self.ctx.store.message_info(&room, target).await?.is_none()
        {
            return Err(Fail::new(
                ErrorCode::NoSuchMessage,
                "reply_to names no message of this room",
            )
            .in_room(&room));
        }
        let user = self.authed()?.reg.user.clone();
        self.ctx.hub.typing(&room, &user, false);
        let outbox = self.outbox.clone();
        let reference = self.reference.clone();
        let broker = self.ctx.broker.clone();
        let stored = self.ctx.counters.messages_stored.clone();
        let failed_room = room.clone();
        let done = AppendDone::new(move |result| match result {
            Ok(a) => {
                let ack = ServerFrame::Ack {
                    id: a.client_id.clone(),
                    room: a.room.clone(),
                    seq: a.seq,
                    ts: a.ts,
                    duplicate: a.duplicate,
                };
                outbox.push(encode(&ack, reference.as_ref()).into());
                if !a.duplicate {
                    stored.inc();
                }
                // A resend is published again too: its first node may have died between the
                // commit and the publish (or the ack got lost with the connection). Receivers
                // drop a seq they already delivered, so nobody sees it twice; without this, a
                // message whose publish was lost reached live members only with the next one.
                {
                    let frame = encode(
                        &ServerFrame::Message {
                            room: a.room.clone(),
                            seq: a.seq,
                            id: a.client_id,
                            from: a.from,
                            body: a.body,
                            ts: a.ts,
                            reply_to: a.reply_to,
                        },
                        None,
                    );
                    broker.publish(Event::Room {
                        room: a.room.into(),
                        seq: Some(a.seq),
                        frame: frame.into(),
                    });
                }
            }
            Err(e) => {
                let (code, message) = match e {
                    StoreError::Closed => (
                        ErrorCode::Unavailable,
                        "the server is shutting down; the message was not stored: send it again with the same id after reconnecting",
                    ),
                    StoreError::Busy => {
                        tracing::error!("append failed: the database is locked by another process");
                        (
                            ErrorCode::Unavailable,
                            "storage is busy (its database is locked); the message was not stored: send it again with the same id",
                        )
                    }
                    StoreError::Unavailable(why) => {
                        tracing::error!(error = %why, "append failed: the database is unavailable");
                        // Maybe stored: the connection may have died during COMMIT. The resend
                        // finds it by its id and is acked as a duplicate; never a false ack.
                        (
                            ErrorCode::Unavailable,
                            "storage is unreachable for the moment; the message may not have been stored: send it again with the same id",
                        )
                    }
                    other => {
                        tracing::error!(error = %other, "append failed");
                        (
                            ErrorCode::Internal,
                            "the message was not stored; send it again with the same id",
                        )
                    }
                };
                let fail = ServerFrame::Error {
                    code,
                    message: message.into(),
                    room: Some(failed_room),
                    retry_after_ms: None,
                };
                outbox.push(encode(&fail, reference.as_ref()).into());
            }
        });
        let msg = NewMessage {
            room,
            from: user.to_string(),
            client_id: id,
            body,
            reply_to,
        };
        match self.ctx.store.append(msg, done).await {
            // The dropped completion has already told the client.
            Err(StoreError::Closed) => Ok(()),
            other => other.map_err(Fail::from),
        }
    }

    pub(crate) async fn history(
        &mut self,
        room: String,
        before_seq: Option<u64>,
        limit: Option<u64>,
    ) -> Outcome {
        self.require_member(&room).await?;
        let limit = super::page_limit(limit, DEFAULT_HISTORY, HISTORY_PAGE_MAX);
        let room_for_it = self.reserve_reply().await.map_err(|f| f.in_room(&room))?;
        let user = self.authed()?.reg.user.clone();
        let v2 = self.version >= 2;
        let viewer = Viewer {
            user: &user,
            tombstones: v2,
        };
        let store = &self.ctx.store;
        let (mut messages, mut has_more) = store
            .history_before(&room, before_seq, limit, viewer)
            .await?;
        has_more |= reply::cap(&mut messages, Keep::Newest);
        // What the page replies to from before it, so it can be quoted: in the bytes the page
        // left (none when the page is at its bound; `history` before the target + 1 fetches it).
        let mut context = Vec::new();
        if v2 && let Some(first) = messages.first().map(|m| m.seq) {
            let older: Vec<u64> = messages
                .iter()
                .filter_map(|m| m.reply_to.filter(|r| *r < first))
                .collect();
            if !older.is_empty() {
                context = store.messages_at(&room, &older, viewer).await?;
                let used: usize = messages.iter().map(reply::message_bytes).sum();
                reply::cap_to(
                    &mut context,
                    Keep::Newest,
                    reply::MESSAGE_BYTES.saturating_sub(used),
                    0,
                );
            }
        }
        self.reply_reserved(
            &ServerFrame::History {
                room,
                messages,
                has_more,
                context,
            },
            room_for_it,
        );
        Ok(())
    }

    /// No reply on success: typing is fire-and-forget.
    pub(crate) fn typing(&mut self, room: String, active: bool) -> Outcome {
        self.require_subscribed(&room)?;
        let user = self.authed()?.reg.user.clone();
        self.ctx.hub.typing(&room, &user, active);
        Ok(())
    }

    pub(crate) fn set_status(&mut self, status: Status) -> Outcome {
        let away = match status {
            Status::Online => false,
            Status::Away => true,
            Status::Offline => {
                return Err(Fail::new(ErrorCode::BadFrame, "status is online or away"));
            }
        };
        let a = self.authed()?;
        self.ctx.hub.set_away(&a.reg, away);
        self.reply(&ServerFrame::Ok);
        Ok(())
    }
}
