//! Closes this node's connections whose token was revoked where this node could not hear it:
//! by the `chat-server user` commands (which only write the database), or by another node while
//! the broker was down. Every [`POLL`] the node reads the revocation log past the last row it
//! saw (one indexed range read of what is new, usually nothing) and closes the connections that
//! used those tokens with 4003. So a disabled account's connections are closed within `POLL`
//! plus one read, on every node.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Event;
use crate::server::Ctx;

/// How often the log is read: the bound on how long a revoked token's connection stays open.
pub const POLL: Duration = Duration::from_secs(2);

/// Rows per read; more are read at once in further pages.
const PAGE: u32 = 1000;

/// Runs until the server stops reading. `cursor` is the log's newest id when the server
/// started (every connection is newer than the rows up to it), or `None` if it could not be
/// read then; it is read again at the next tick.
pub async fn poll(ctx: Arc<Ctx>, mut cursor: Option<i64>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ctx.stop_reading.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = match cursor {
            None => ctx.store.revocation_cursor().await,
            Some(after) => catch_up(&ctx, after).await,
        };
        match read {
            Ok(at) => {
                if failing {
                    tracing::info!("the revocation log is readable again");
                    failing = false;
                }
                cursor = Some(at);
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "reading the revocation log failed; retrying every {}s", POLL.as_secs());
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Applies every row past `after`; returns the last id applied.
async fn catch_up(ctx: &Ctx, mut after: i64) -> Result<i64, crate::store::StoreError> {
    loop {
        let rows = ctx.store.revocations_after(after, PAGE).await?;
        for row in &rows {
            after = after.max(row.id);
            if let Ok(hash) = <[u8; 32]>::try_from(row.hash.as_slice()) {
                // This node's connections only: every node reads the log itself.
                ctx.hub.dispatch(Event::TokenRevoked { hash });
            }
        }
        if rows.len() < PAGE as usize {
            return Ok(after);
        }
    }
}
