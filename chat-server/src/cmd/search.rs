//! search (protocol 2): the query parsed once here (chat_proto::search), then run by the store's
//! full-text index over the rooms the user is a member of.

use chat_proto::search::{SEARCH_PAGE_DEFAULT, SEARCH_PAGE_MAX, parse_query};
use chat_proto::{ErrorCode, ServerFrame};

use crate::reply::{self, Keep};
use crate::session::{Fail, Outcome, Session};
use crate::store::{Cursor, SearchRequest};

fn invalid(message: impl Into<String>) -> Fail {
    Fail::new(ErrorCode::InvalidQuery, message)
}

/// The parts of a `search` frame.
pub(crate) struct SearchFrame {
    pub query: String,
    pub room: Option<String>,
    pub before: Option<String>,
    pub before_seq: Option<u64>,
    pub limit: Option<u64>,
}

impl Session {
    pub(crate) async fn search(&mut self, f: SearchFrame) -> Outcome {
        let q = parse_query(&f.query).map_err(|e| invalid(e.to_string()))?;
        let room = match (f.room, q.room) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid("in: names another room than room").in_room(&a));
            }
            (a, b) => a.or(b),
        };
        if f.before_seq.is_some() && room.is_none() {
            return Err(invalid("before_seq needs room"));
        }
        let before = match f.before {
            Some(c) => Some(
                Cursor::decode(&c)
                    .ok_or_else(|| invalid("before is not a next this server gave"))?,
            ),
            None => None,
        };
        if let Some(r) = &room {
            self.require_member(r).await?;
        }
        let limit = super::page_limit(f.limit, SEARCH_PAGE_DEFAULT, SEARCH_PAGE_MAX);
        let room_for_it = self.reserve_reply().await?;
        let req = SearchRequest {
            user: self.authed()?.reg.user.to_string(),
            phrases: q.phrases,
            from: q.from,
            room,
            before,
            before_seq: f.before_seq,
            limit: limit + 1,
        };
        let mut results = self.ctx.store.search(&req).await?;
        let mut more = results.len() > limit as usize;
        results.truncate(limit as usize);
        more |= reply::cap(&mut results, Keep::Oldest);
        let next = more.then(|| results.last()).flatten().map(|r| {
            Cursor {
                ts: r.ts,
                room: r.room.clone(),
                seq: r.seq,
            }
            .encode()
        });
        self.reply_reserved(&ServerFrame::SearchResults { results, next }, room_for_it);
        Ok(())
    }
}
