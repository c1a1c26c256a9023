//! hello, register, login, auth, logout. The protocol-2 account frames are in `sessions.rs`.

use std::time::Instant;

use chat_proto::limits::{check_password, check_username};
use chat_proto::{ErrorCode, Limits, ServerFrame, close, limits, negotiate_version};

use crate::auth::{
    dummy_hash, hash_password, new_token, token_hash, token_well_formed, verify_password,
};
use crate::broker::Event;
use crate::config::Registration;
use crate::session::{Authed, Fail, Outcome, Session};
use crate::store::accounts::Issued;

/// What `rate_limited` tells a client to wait when the hashing queue is full.
const HASH_RETRY_MS: u64 = 1000;

impl Session {
    /// The first frame: pick a version, maybe authenticate with the token it carries.
    pub(crate) async fn hello(&mut self, versions: Vec<u32>, token: Option<String>) {
        let Some(version) = negotiate_version(&versions) else {
            self.reply(&ServerFrame::error(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol versions {:?}",
                    chat_proto::SUPPORTED_VERSIONS
                ),
            ));
            self.outbox
                .kick(close::UNSUPPORTED_VERSION, "no common protocol version");
            return;
        };
        // A token in the Authorization header wins over one in hello. On a storage failure the
        // client may send hello again; `hello` is set only once welcome is on its way.
        if let (Some(token), None) = (token, &self.authed) {
            match self
                .check_token(&token)
                .await
                .and_then(|user| self.become_authed(&user, token_hash(&token)))
            {
                Ok(()) => {}
                Err(fail) => {
                    let code = fail.code;
                    self.reply(&ServerFrame::error(code, fail.message));
                    if code == ErrorCode::InvalidToken {
                        self.outbox.kick(close::AUTH_FAILED, "invalid token");
                    }
                    return;
                }
            }
        }
        self.hello = true;
        self.version = version;
        if let Some(a) = &mut self.authed {
            a.reg.version = version;
            self.ctx.hub.set_version(a.reg.id, version);
        }
        let c = &self.ctx.config;
        self.reply(&ServerFrame::Welcome {
            protocol: version,
            server: format!("chat-server/{}", env!("CARGO_PKG_VERSION")),
            user: self.authed.as_ref().map(|a| a.reg.user.to_string()),
            heartbeat_ms: c.ping_interval.as_millis() as u64,
            heartbeat_timeout_ms: c.ping_timeout.as_millis() as u64,
            typing_timeout_ms: c.typing_timeout.as_millis() as u64,
            limits: Limits {
                max_frame_bytes: limits::MAX_FRAME_BYTES as u64,
                max_body_bytes: limits::MAX_BODY_BYTES as u64,
                history_page_max: limits::HISTORY_PAGE_MAX,
                max_replay: c.max_replay,
                rate_per_sec: c.rate_per_sec,
                rate_burst: c.rate_burst,
                outbound_queue_frames: c.outbound_queue as u64,
                outbound_queue_bytes: c.outbound_queue_bytes as u64,
                history_on_join: c.history_on_join,
            },
            capabilities: chat_proto::capabilities(version)
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        });
    }

    /// The user a token belongs to, or `invalid_token` (a disabled account's tokens are all
    /// revoked, and would be refused the same way). Every way of authenticating with a token
    /// (header, `hello`, `auth`) comes here, so this is where its last use is recorded: at most
    /// once per `last_used_resolution`, so that reconnecting clients cost reads, not writes.
    pub(crate) async fn check_token(&self, token: &str) -> Result<String, Fail> {
        if !token_well_formed(token) {
            return Err(Fail::new(ErrorCode::InvalidToken, "malformed token"));
        }
        let hash = token_hash(token);
        let found = self
            .ctx
            .store
            .token_use(&hash)
            .await?
            .ok_or_else(|| Fail::new(ErrorCode::InvalidToken, "unknown or revoked token"))?;
        let now = crate::clock::now_ms();
        let stale = self.ctx.config.last_used_resolution.as_millis() as i64;
        if now.saturating_sub(found.last_used_ms) >= stale
            && let Err(e) = self.ctx.store.touch_token(&hash, now).await
        {
            // Only the session list's `last_used_ts` is behind: the token is good.
            tracing::warn!(error = %e, "recording a token's last use failed");
        }
        Ok(found.user)
    }

    /// Registers this connection as `user`'s, within the per-user cap.
    pub(crate) fn become_authed(&mut self, user: &str, token_hash: [u8; 32]) -> Outcome {
        let reg = self
            .ctx
            .hub
            .register(user, self.version, Some(token_hash), self.outbox.clone())
            .ok_or_else(|| self.too_many_connections())?;
        tracing::debug!(user, conn = reg.id, "authenticated");
        self.authed = Some(Authed { reg, token_hash });
        self.ticket.authenticated();
        Ok(())
    }

    fn too_many_connections(&self) -> Fail {
        Fail::new(
            ErrorCode::TooManyConnections,
            format!(
                "this user already has {} connections, the most this server allows; close one",
                self.ctx.config.max_connections_per_user
            ),
        )
    }

    fn not_yet_authed(&self) -> Outcome {
        if self.authed.is_some() {
            Err(Fail::new(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            ))
        } else {
            Ok(())
        }
    }

    /// Runs a password hash on the hashing threads (see `hasher.rs`). A full queue means a
    /// server-wide login flood: the client is told to retry, like any rate limit.
    pub(super) async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Fail> {
        // A source gets its share of the two hashing threads, not the whole queue: 300
        // connections pipelining logins from one address made everyone else's login wait 11 s.
        // Its other logins wait in a line of their own.
        let Some(_turn) = self.ctx.throttle.hash_turn(self.ticket.ip()).await else {
            return Err(Fail {
                code: ErrorCode::RateLimited,
                message: "too many logins from your address are waiting; try again shortly".into(),
                room: None,
                retry_after_ms: Some(HASH_RETRY_MS),
            });
        };
        self.ctx.hasher.run(f).await.ok_or_else(|| Fail {
            code: ErrorCode::RateLimited,
            message: "the server is busy with other logins; try again shortly".into(),
            room: None,
            retry_after_ms: Some(HASH_RETRY_MS),
        })
    }

    async fn issue_token(&mut self, user: &str) -> Outcome {
        // Checked before a token is made, so a refused login leaves none behind.
        if self.ctx.hub.user_connections(user) >= self.ctx.config.max_connections_per_user {
            return Err(self.too_many_connections());
        }
        let token = new_token();
        let hash = token_hash(&token);
        let max = self.ctx.config.max_sessions_per_user;
        match self.ctx.store.issue_token(user, &hash, max).await? {
            Issued::Disabled => return Err(account_disabled()),
            Issued::Stored { evicted } => self.revoked(&evicted),
        }
        self.become_authed(user, hash)?;
        self.reply(&ServerFrame::AuthOk {
            user: user.to_owned(),
            token: Some(token),
        });
        Ok(())
    }

    pub(crate) async fn register(&mut self, username: String, password: String) -> Outcome {
        self.not_yet_authed()?;
        if self.ctx.config.registration == Registration::Closed {
            return Err(Fail::new(
                ErrorCode::RegistrationClosed,
                "registration is closed on this server; ask its operator for an account",
            ));
        }
        check_username(&username).map_err(|m| Fail::new(ErrorCode::InvalidName, m))?;
        check_password(&password).map_err(|m| Fail::new(ErrorCode::InvalidPassword, m))?;
        match self.ctx.store.account(&username).await? {
            Some(a) if a.disabled => return Err(account_disabled()),
            Some(_) => {
                return Err(Fail::new(
                    ErrorCode::UsernameTaken,
                    "that username is taken",
                ));
            }
            None => {}
        }
        let hash = self
            .hashing(move || hash_password(&password))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "hashing a password failed");
                Fail::new(ErrorCode::Internal, "password hashing failed")
            })?;
        match self.ctx.store.create_user(&username, &hash).await {
            Err(crate::store::StoreError::Conflict) => {
                return Err(Fail::new(
                    ErrorCode::UsernameTaken,
                    "that username is taken",
                ));
            }
            other => other?,
        }
        tracing::info!(user = %username, "registered");
        self.issue_token(&username).await
    }

    pub(crate) async fn login(&mut self, username: String, password: String) -> Outcome {
        self.not_yet_authed()?;
        let ip = self.ticket.ip();
        let found = self.ctx.store.account(&username).await?;
        let disabled = found.as_ref().is_some_and(|a| a.disabled);
        let stored = found.map(|a| a.password_hash);
        let account = stored.is_some().then_some(username.as_str());
        if let Some(wait) = self.ctx.throttle.wait(ip, account, Instant::now()) {
            // Refused before the password is even checked: a guesser learns nothing while
            // it waits.
            return Err(Fail {
                code: ErrorCode::RateLimited,
                message: "too many failed logins; wait retry_after_ms before trying again".into(),
                room: None,
                retry_after_ms: Some(crate::rate::retry_after_ms(wait)),
            });
        }
        let ok = self
            .hashing(move || {
                // Verify even for a missing user, so timing does not tell which names exist.
                let hash = stored.as_deref().unwrap_or_else(|| dummy_hash());
                verify_password(&password, hash) && stored.is_some()
            })
            .await?;
        if !ok {
            self.ctx.throttle.failed(ip, account, Instant::now());
            return Err(Fail::new(
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            ));
        }
        if disabled {
            // Said only to someone who knows the password; neither a failure nor a success
            // for the backoff.
            return Err(account_disabled());
        }
        self.ctx.throttle.succeeded(ip, &username);
        self.issue_token(&username).await
    }

    pub(crate) async fn auth(&mut self, token: String) -> Outcome {
        self.not_yet_authed()?;
        let user = self.check_token(&token).await?;
        self.become_authed(&user, token_hash(&token))?;
        self.reply(&ServerFrame::AuthOk { user, token: None });
        Ok(())
    }

    pub(crate) async fn logout(&mut self) -> Outcome {
        let hash = self.authed()?.token_hash;
        self.ctx.store.revoke_token(&hash).await?;
        self.reply(&ServerFrame::Ok);
        // This connection closes normally; the others that used the token get 4003.
        self.outbox.kick(close::NORMAL, "logged out");
        self.ctx.broker.publish(Event::TokenRevoked { hash });
        Ok(())
    }

    /// Closes, on every node, the connections that used these (just revoked) tokens: 4003.
    pub(super) fn revoked(&self, hashes: &[Vec<u8>]) {
        for hash in hashes {
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                self.ctx.broker.publish(Event::TokenRevoked { hash });
            }
        }
    }
}

fn account_disabled() -> Fail {
    Fail::new(
        ErrorCode::AccountDisabled,
        "this account is disabled; ask the server's operator",
    )
}
