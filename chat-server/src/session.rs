//! One connection's protocol state: hello, authentication, rate limits, and the dispatch of each
//! decoded frame to its command in `cmd/`. Replies go to the connection's [`Outbox`]; nothing
//! here touches the socket.

use std::sync::Arc;
use std::time::Instant;

use chat_proto::limits::MAX_CONSECUTIVE_BAD_FRAMES;
use chat_proto::{ClientFrame, ErrorCode, Ref, ServerFrame, close, decode_client, encode};

use crate::hub::Registered;
use crate::outbox::Outbox;
use crate::rate::TokenBucket;
use crate::server::Ctx;
use crate::store::StoreError;

/// A request that failed: becomes an `error` frame carrying the request's `ref`.
#[derive(Debug)]
pub struct Fail {
    pub code: ErrorCode,
    pub message: String,
    pub room: Option<String>,
    /// Only with `rate_limited`.
    pub retry_after_ms: Option<u64>,
}

impl Fail {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            room: None,
            retry_after_ms: None,
        }
    }

    pub fn in_room(mut self, room: &str) -> Self {
        self.room = Some(room.to_owned());
        self
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => Fail::new(ErrorCode::Unavailable, "the server is shutting down"),
            StoreError::Busy => {
                tracing::error!("storage busy: the database is locked by another process");
                Fail::new(
                    ErrorCode::Unavailable,
                    "storage is busy (its database is locked); try again shortly",
                )
            }
            StoreError::Unavailable(why) => {
                tracing::error!(error = %why, "storage unavailable");
                Fail::new(
                    ErrorCode::Unavailable,
                    "storage is unreachable for the moment; try again shortly",
                )
            }
            other => {
                tracing::error!(error = %other, "storage failed");
                Fail::new(ErrorCode::Internal, "storage error; try again")
            }
        }
    }
}

pub type Outcome = Result<(), Fail>;

/// An authenticated connection.
pub struct Authed {
    pub reg: Registered,
    /// The token this connection proved, so `logout` can revoke exactly it.
    pub token_hash: [u8; 32],
}

/// The state of one connection.
pub struct Session {
    pub ctx: Arc<Ctx>,
    pub outbox: Arc<Outbox>,
    /// Set by a valid `hello`; until then only `hello` is accepted.
    pub hello: bool,
    /// The protocol version `welcome` chose (0 before it): frames of later versions are
    /// unknown to this connection, and what it receives is what its version defines.
    pub version: u32,
    pub authed: Option<Authed>,
    /// Malformed frames in a row; too many closes the connection (a broken or hostile client).
    bad_frames: u32,
    /// Rate limit before authentication, per connection (after it, the user's shared bucket).
    preauth_bucket: TokenBucket,
    /// Frames sent in spite of `retry_after_ms` allowed before the connection is closed.
    strikes: TokenBucket,
    /// When the last `rate_limited` said the client could send again.
    retry_at: Option<Instant>,
    /// The `ref` of the frame being handled, echoed on its reply.
    pub reference: Option<Ref>,
    /// This connection's slot (see `admission.rs`): told when the connection authenticates.
    pub ticket: crate::admission::Ticket,
}

impl Session {
    pub fn new(ctx: Arc<Ctx>, outbox: Arc<Outbox>, ticket: crate::admission::Ticket) -> Self {
        let now = Instant::now();
        let c = &ctx.config;
        Self {
            preauth_bucket: TokenBucket::new(c.rate_per_sec, c.rate_burst, now),
            strikes: TokenBucket::new(1, c.rate_strikes, now),
            ctx,
            outbox,
            hello: false,
            version: 0,
            authed: None,
            bad_frames: 0,
            retry_at: None,
            reference: None,
            ticket,
        }
    }

    pub fn is_authed(&self) -> bool {
        self.authed.is_some()
    }

    /// Sends `frame` as the reply to the current request.
    pub fn reply(&self, frame: &ServerFrame) {
        self.outbox
            .push(encode(frame, self.reference.as_ref()).into());
    }

    /// Sends `frame` as the reply to the current request, into the room `reservation` made.
    pub fn reply_reserved(&self, frame: &ServerFrame, reservation: crate::outbox::Reservation) {
        self.outbox
            .push_reserved(encode(frame, self.reference.as_ref()).into(), reservation);
    }

    fn reply_fail(&self, fail: Fail) {
        self.reply(&ServerFrame::Error {
            code: fail.code,
            message: fail.message,
            room: fail.room,
            retry_after_ms: fail.retry_after_ms,
        });
    }

    /// The authenticated user, or `auth_required`.
    pub fn authed(&self) -> Result<&Authed, Fail> {
        self.authed.as_ref().ok_or_else(|| {
            Fail::new(
                ErrorCode::AuthRequired,
                "authenticate first: send register, login or auth",
            )
        })
    }

    fn rate_limit(&mut self) -> Result<(), std::time::Duration> {
        let now = Instant::now();
        match &self.authed {
            Some(a) => a
                .reg
                .state
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(now),
            None => self.preauth_bucket.take(now),
        }
    }

    /// Handles one text frame.
    pub async fn on_text(&mut self, text: &str) {
        let received = &self.ctx.counters.frames_received;
        let envelope = match decode_client(text) {
            Ok(e) => {
                received.count(Some(e.frame.kind()));
                self.bad_frames = 0;
                e
            }
            Err(e) => {
                received.count(None);
                self.bad_frames += 1;
                self.reference = e.reference;
                self.reply_fail(Fail::new(e.code, e.detail));
                if self.bad_frames >= MAX_CONSECUTIVE_BAD_FRAMES {
                    self.outbox
                        .kick(close::PROTOCOL_ERROR, "too many malformed frames");
                }
                return;
            }
        };
        self.reference = envelope.reference;
        let frame = envelope.frame;
        if !self.hello {
            match frame {
                ClientFrame::Hello { versions, token } => self.hello(versions, token).await,
                _ => {
                    self.reply_fail(Fail::new(
                        ErrorCode::HelloRequired,
                        "the first frame must be hello",
                    ));
                    self.outbox
                        .kick(close::PROTOCOL_ERROR, "the first frame must be hello");
                }
            }
            return;
        }
        if frame.since_version() > self.version {
            self.bad_frames += 1;
            self.reply_fail(Fail::new(
                ErrorCode::UnknownType,
                format!(
                    "`{}` is a protocol {} frame; this connection speaks protocol {}",
                    frame.kind(),
                    frame.since_version(),
                    self.version
                ),
            ));
            if self.bad_frames >= MAX_CONSECUTIVE_BAD_FRAMES {
                self.outbox
                    .kick(close::PROTOCOL_ERROR, "too many malformed frames");
            }
            return;
        }
        if let Err(wait) = self.rate_limit() {
            self.reply(&ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: "too many frames; wait retry_after_ms before sending again".into(),
                room: None,
                retry_after_ms: Some(crate::rate::retry_after_ms(wait)),
            });
            // Only a frame sent before the previous refusal's retry_after_ms ran out is a strike:
            // a client that honours the hint is slowed down, never disconnected.
            let now = Instant::now();
            let ignored_hint = self.retry_at.is_some_and(|at| now < at);
            self.retry_at = Some(now + wait);
            if ignored_hint && self.strikes.take(now).is_err() {
                self.outbox
                    .kick(close::RATE_LIMIT_ABUSE, "kept sending while rate limited");
            }
            return;
        }
        let open = matches!(
            frame,
            ClientFrame::Hello { .. }
                | ClientFrame::Register { .. }
                | ClientFrame::Login { .. }
                | ClientFrame::Auth { .. }
                | ClientFrame::Ping
        );
        let result = match self.authed() {
            Err(fail) if !open => Err(fail),
            _ => self.dispatch(frame).await,
        };
        if let Err(fail) = result {
            self.reply_fail(fail);
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Outcome {
        use ClientFrame as F;
        match frame {
            F::Hello { .. } => Err(Fail::new(ErrorCode::BadFrame, "hello was already received")),
            F::Register { username, password } => self.register(username, password).await,
            F::Login { username, password } => self.login(username, password).await,
            F::Auth { token } => self.auth(token).await,
            F::Ping => {
                self.reply(&ServerFrame::Pong {
                    ts: crate::clock::now_ms(),
                });
                Ok(())
            }
            F::Logout => self.logout().await,
            F::ListRooms { after, limit } => self.list_rooms(after, limit).await,
            F::DeleteRoom { room } => self.delete_room(room).await,
            F::Decline { room } => self.decline(room).await,
            F::Members { room, after, limit } => self.members_page(room, after, limit).await,
            F::CreateRoom {
                room,
                visibility,
                topic,
            } => {
                self.create_room(room, visibility, topic.unwrap_or_default())
                    .await
            }
            F::Join {
                room,
                since_seq,
                epoch,
            } => self.join(room, since_seq, epoch).await,
            F::Leave { room } => self.leave(room).await,
            F::SetTopic { room, topic } => self.set_topic(room, topic).await,
            F::Invite { room, user } => self.invite(room, user).await,
            F::OpenDm { user } => self.open_dm(user).await,
            F::Send {
                room,
                id,
                body,
                reply_to,
            } => self.send(room, id, body, reply_to).await,
            F::Edit { room, seq, body } => self.edit(room, seq, body).await,
            F::Delete { room, seq } => self.delete(room, seq).await,
            F::React { room, seq, emoji } => self.react(room, seq, emoji, true).await,
            F::Unreact { room, seq, emoji } => self.react(room, seq, emoji, false).await,
            F::MarkRead { room, seq } => self.mark_read(room, seq).await,
            F::History {
                room,
                before_seq,
                limit,
            } => self.history(room, before_seq, limit).await,
            F::Search {
                query,
                room,
                before,
                before_seq,
                limit,
            } => {
                self.search(crate::cmd::SearchFrame {
                    query,
                    room,
                    before,
                    before_seq,
                    limit,
                })
                .await
            }
            F::Typing { room, active } => self.typing(room, active),
            F::SetStatus { status } => self.set_status(status),
            F::ChangePassword {
                old_password,
                new_password,
                revoke_others,
            } => {
                self.change_password(old_password, new_password, revoke_others)
                    .await
            }
            F::Sessions => self.sessions().await,
            F::RevokeSession { id } => self.revoke_session(id).await,
            F::Kick { room, user, reason } => self.remove(room, user, reason, false).await,
            F::Ban { room, user, reason } => self.remove(room, user, reason, true).await,
            F::Unban { room, user } => self.unban(room, user).await,
            F::SetRole { room, user, role } => self.set_role(room, user, role).await,
            F::ConfigureRoom {
                room,
                members_set_topic,
                members_invite,
            } => {
                self.configure_room(room, members_set_topic, members_invite)
                    .await
            }
            F::Bans { room, after, limit } => self.bans(room, after, limit).await,
        }
    }

    /// Leaves the hub when the connection ends.
    pub fn finish(&mut self) {
        if let Some(a) = self.authed.take() {
            self.ctx.hub.unregister(a.reg.id);
        }
    }
}
