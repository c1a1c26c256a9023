//! Protocol 2's changes to a room: edit, delete, react, unreact, and the read position; and the
//! one way every change reaches the log (`Session::change`), which joins, leaves and topics use
//! too.

use chat_proto::limits::{check_body, check_emoji};
use chat_proto::{ErrorCode, EventKind, ReadState, RoomEvent, ServerFrame, encode};

use crate::broker::Event;
use crate::session::{Fail, Outcome, Session};
use crate::store::{ApplyDone, Change, NewEvent, StoreError};

/// How a refused change is told.
fn refusal(e: StoreError, room: &str) -> Fail {
    match e {
        StoreError::NoSuchMessage => Fail::new(
            ErrorCode::NoSuchMessage,
            "no such message in this room (or it is deleted)",
        ),
        StoreError::NotAllowed => Fail::new(
            ErrorCode::Forbidden,
            "only the author may do that to this message (or, to delete it, a moderator)",
        ),
        StoreError::Refused(r) => Fail::new(r.code(), r.to_string()),
        StoreError::NotFound => Fail::new(ErrorCode::NoSuchRoom, "no such room"),
        other => Fail::from(other),
    }
    .in_room(room)
}

impl Session {
    /// Applies `change` to `room` and waits for its commit. From the store's completion (in
    /// commit order with the room's messages): `applied` to this connection when `answer`,
    /// then the event to the room, then what protocol 1 is told instead (`topic`, a
    /// departure). Returns the event, or `None` when there was nothing to change.
    pub(crate) async fn change(
        &self,
        room: &str,
        change: Change,
        answer: bool,
    ) -> Result<Option<RoomEvent>, Fail> {
        let a = self.authed()?;
        let (user, conn) = (a.reg.user.clone(), a.reg.id);
        let outbox = self.outbox.clone();
        let reference = self.reference.clone();
        let broker = self.ctx.broker.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = room.to_owned();
        let done = ApplyDone::new(move |result| {
            let result = result.map_err(|e| refusal(e, &name));
            if let Ok(applied) = &result {
                if answer {
                    let f = ServerFrame::Applied {
                        room: applied.room.clone(),
                        seq: applied.event.as_ref().map(|e| e.seq),
                    };
                    outbox.push(encode(&f, reference.as_ref()).into());
                }
                if let Some(event) = &applied.event {
                    let room: std::sync::Arc<str> = applied.room.as_str().into();
                    broker.publish(Event::Room {
                        room: room.clone(),
                        seq: Some(event.seq),
                        frame: crate::event_frames::frame(&applied.room, event.clone()),
                    });
                    match &event.what {
                        EventKind::Topic { topic } => broker.publish(Event::Room {
                            room,
                            seq: None,
                            frame: encode(
                                &ServerFrame::Topic {
                                    room: applied.room.clone(),
                                    topic: topic.clone(),
                                    by: event.from.clone(),
                                },
                                None,
                            )
                            .into(),
                        }),
                        EventKind::Leave => broker.publish(Event::Left {
                            room,
                            user: user.clone(),
                            except: Some(conn),
                            removed: None,
                        }),
                        // Every connection of theirs leaves the room, on every node.
                        EventKind::Kick {
                            user: removed,
                            reason,
                        }
                        | EventKind::Ban {
                            user: removed,
                            reason,
                        } => broker.publish(Event::Left {
                            room,
                            user: removed.as_str().into(),
                            except: None,
                            removed: Some(chat_proto::Removal {
                                by: event.from.clone(),
                                banned: matches!(event.what, EventKind::Ban { .. }),
                                reason: reason.clone(),
                            }),
                        }),
                        _ => {}
                    }
                }
            }
            let _ = tx.send(result.map(|a| a.event));
        });
        let event = NewEvent {
            room: room.to_owned(),
            from: self.authed()?.reg.user.to_string(),
            change,
        };
        self.ctx
            .store
            .apply(event, done)
            .await
            .map_err(|e| refusal(e, room))?;
        rx.await.map_err(|_| {
            Fail::new(ErrorCode::Unavailable, "the server is shutting down").in_room(room)
        })?
    }

    /// The author of message `seq` of `room`, refusing a seq that is no message (or, unless
    /// `deleted_ok`, a deleted one).
    async fn author_of(&self, room: &str, seq: u64, deleted_ok: bool) -> Result<String, Fail> {
        match self.ctx.store.message_info(room, seq).await? {
            Some(m) if deleted_ok || !m.deleted => Ok(m.from),
            _ => Err(refusal(StoreError::NoSuchMessage, room)),
        }
    }

    pub(crate) async fn edit(&mut self, room: String, seq: u64, body: String) -> Outcome {
        check_body(&body).map_err(|m| Fail::new(ErrorCode::InvalidBody, m).in_room(&room))?;
        self.require_subscribed(&room)?;
        let user = self.authed()?.reg.user.clone();
        if self.author_of(&room, seq, false).await? != *user {
            return Err(refusal(StoreError::NotAllowed, &room));
        }
        self.change(&room, Change::Edit { target: seq, body }, true)
            .await
            .map(drop)
    }

    /// One's own message, or anyone's as a moderator: the store decides, with the role as
    /// committed when the delete is.
    pub(crate) async fn delete(&mut self, room: String, seq: u64) -> Outcome {
        self.require_subscribed(&room)?;
        self.change(&room, Change::Delete { target: seq }, true)
            .await
            .map(drop)
    }

    pub(crate) async fn react(
        &mut self,
        room: String,
        seq: u64,
        emoji: String,
        on: bool,
    ) -> Outcome {
        check_emoji(&emoji).map_err(|m| Fail::new(ErrorCode::InvalidEmoji, m).in_room(&room))?;
        self.require_subscribed(&room)?;
        let change = if on {
            Change::React { target: seq, emoji }
        } else {
            Change::Unreact { target: seq, emoji }
        };
        self.change(&room, change, true).await.map(drop)
    }

    /// Stores the read position, answers `read`, and tells the user's other connections (on
    /// every node) the same.
    pub(crate) async fn mark_read(&mut self, room: String, seq: u64) -> Outcome {
        self.require_member(&room).await?;
        let a = self.authed()?;
        let (user, conn) = (a.reg.user.clone(), a.reg.id);
        let read: ReadState = self.ctx.store.mark_read(&user, &room, seq).await?;
        let frame = ServerFrame::Read {
            room: room.clone(),
            read,
        };
        self.reply(&frame);
        self.ctx.broker.publish(Event::User {
            user,
            frame: encode(&frame, None).into(),
            except: Some(conn),
        });
        Ok(())
    }
}
