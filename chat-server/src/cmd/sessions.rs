//! The protocol-2 account frames: change_password, sessions, revoke_session. A session is a
//! token; its public id is derived from the token's stored hash (`auth::session_id`).

use std::time::Instant;

use chat_proto::limits::check_password;
use chat_proto::{ErrorCode, ServerFrame, SessionInfo};

use crate::auth::{hash_password, session_id, verify_password};
use crate::session::{Fail, Outcome, Session};
use crate::store::accounts::Revoke;

impl Session {
    pub(crate) async fn change_password(
        &mut self,
        old_password: String,
        new_password: String,
        revoke_others: bool,
    ) -> Outcome {
        let authed = self.authed()?;
        let (user, own) = (authed.reg.user.to_string(), authed.token_hash);
        check_password(&new_password).map_err(|m| Fail::new(ErrorCode::InvalidPassword, m))?;
        // The old password is a password guess like a login's: a stolen token must not make
        // guessing it cheaper, so the same backoff counts and applies.
        let ip = self.ticket.ip();
        if let Some(wait) = self.ctx.throttle.wait(ip, Some(&user), Instant::now()) {
            return Err(Fail {
                code: ErrorCode::RateLimited,
                message: "too many wrong passwords; wait retry_after_ms before trying again".into(),
                room: None,
                retry_after_ms: Some(crate::rate::retry_after_ms(wait)),
            });
        }
        let stored = self
            .ctx
            .store
            .account(&user)
            .await?
            .map(|a| a.password_hash)
            .unwrap_or_default();
        let ok = self
            .hashing(move || verify_password(&old_password, &stored))
            .await?;
        if !ok {
            self.ctx.throttle.failed(ip, Some(&user), Instant::now());
            return Err(Fail::new(
                ErrorCode::InvalidCredentials,
                "old_password is not the current password",
            ));
        }
        self.ctx.throttle.succeeded(ip, &user);
        let hash = self
            .hashing(move || hash_password(&new_password))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "hashing a password failed");
                Fail::new(ErrorCode::Internal, "password hashing failed")
            })?;
        let revoke = match revoke_others {
            true => Revoke::AllBut(&own),
            false => Revoke::None,
        };
        let gone = self.ctx.store.set_password(&user, &hash, revoke).await?;
        tracing::info!(user = %user, revoked = gone.len(), "password changed");
        self.reply(&ServerFrame::Ok);
        self.revoked(&gone);
        Ok(())
    }

    pub(crate) async fn sessions(&mut self) -> Outcome {
        let authed = self.authed()?;
        let (user, own) = (authed.reg.user.to_string(), authed.token_hash);
        // At most `max_sessions_per_user` (1000 at most) entries of about 100 bytes: the reply
        // is bounded, and takes its room in the outbound bounds like the other lists.
        let room_for_it = self.reserve_reply().await?;
        let records = self
            .ctx
            .store
            .sessions(&user, self.ctx.config.max_sessions_per_user)
            .await?;
        let sessions = records
            .into_iter()
            .map(|r| SessionInfo {
                id: session_id(&r.hash),
                created_ts: r.created_ms,
                last_used_ts: r.last_used_ms,
                current: r.hash == own,
            })
            .collect();
        self.reply_reserved(&ServerFrame::SessionList { sessions }, room_for_it);
        Ok(())
    }

    pub(crate) async fn revoke_session(&mut self, id: String) -> Outcome {
        let authed = self.authed()?;
        let (user, own) = (authed.reg.user.to_string(), authed.token_hash);
        let no_such = || {
            Fail::new(
                ErrorCode::NoSuchSession,
                "no session of yours has that id; list them with sessions",
            )
        };
        let found = self
            .ctx
            .store
            .sessions(&user, self.ctx.config.max_sessions_per_user)
            .await?
            .into_iter()
            .find(|r| session_id(&r.hash) == id)
            .ok_or_else(no_such)?;
        if found.hash == own {
            return self.logout().await;
        }
        if !self.ctx.store.revoke_token(&found.hash).await? {
            // Revoked meanwhile, from another connection or by the operator.
            return Err(no_such());
        }
        self.reply(&ServerFrame::Ok);
        self.revoked(&[found.hash]);
        Ok(())
    }
}
