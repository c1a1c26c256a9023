//! Everything but `append`: each call is one statement, or one short transaction, on a pooled
//! connection, under the client-side deadline.

use async_trait::async_trait;
use chat_proto::limits::dm_room_name;
use chat_proto::{HistoryMessage, ReadState, RoomEvent, RoomInfo, RoomKind, Visibility};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::log;
use super::writer::Job;
use super::{PgStore, db_err, deadline};
use crate::clock::now_ms;
use crate::store::{
    AppendDone, ApplyDone, MessageInfo, NewEvent, NewMessage, RoomRecord, Store, StoreError, Viewer,
};

/// A room's columns as [`room_from_row`] reads them, from `rooms r`.
const ROOM_COLUMNS: &str = "r.name, r.kind, r.visibility, r.topic, r.epoch,
    (SELECT u.name FROM users u WHERE u.id = r.owner_id), r.members_set_topic, r.members_invite";

fn room_from_row(row: &Row) -> RoomRecord {
    let kind: &str = row.get(1);
    let vis: &str = row.get(2);
    RoomRecord {
        name: row.get(0),
        kind: if kind == "dm" {
            RoomKind::Dm
        } else {
            RoomKind::Room
        },
        visibility: if vis == "private" {
            Visibility::Private
        } else {
            Visibility::Public
        },
        topic: row.get(3),
        epoch: row.get(4),
        owner: row.get(5),
        settings: chat_proto::RoomSettings {
            members_set_topic: row.get(6),
            members_invite: row.get(7),
        },
    }
}

fn kind_str(k: RoomKind) -> &'static str {
    match k {
        RoomKind::Room => "room",
        RoomKind::Dm => "dm",
    }
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A seq from the protocol, clamped into PostgreSQL's BIGINT.
fn seq_arg(s: u64) -> i64 {
    s.min(i64::MAX as u64) as i64
}

async fn one_id(c: &impl GenericClient, sql: &str, name: &str) -> Result<i64, StoreError> {
    c.query_opt(sql, &[&name])
        .await
        .map_err(db_err)?
        .map(|r| r.get(0))
        .ok_or(StoreError::NotFound)
}

pub(super) async fn user_id(c: &impl GenericClient, name: &str) -> Result<i64, StoreError> {
    one_id(c, "SELECT id FROM users WHERE name = $1", name).await
}

pub(super) async fn room_id(c: &impl GenericClient, name: &str) -> Result<i64, StoreError> {
    one_id(c, "SELECT id FROM rooms WHERE name = $1", name).await
}

/// The ids of a room and a user, both of which must exist.
async fn pair_ids(
    c: &impl GenericClient,
    room: &str,
    user: &str,
) -> Result<(i64, i64), StoreError> {
    Ok((room_id(c, room).await?, user_id(c, user).await?))
}

async fn add_member_ids(c: &impl GenericClient, rid: i64, uid: i64) -> Result<bool, StoreError> {
    Ok(c.execute(
        "INSERT INTO members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&rid, &uid],
    )
    .await
    .map_err(db_err)?
        > 0)
}

/// Inserts a room, or `None` if the name is taken.
async fn insert_room(
    c: &impl GenericClient,
    name: &str,
    kind: RoomKind,
    visibility: Visibility,
    topic: &str,
    owner: Option<(i64, &str)>,
) -> Result<Option<(i64, RoomRecord)>, StoreError> {
    let epoch = new_epoch();
    let row = c
        .query_opt(
            "INSERT INTO rooms (name, kind, visibility, topic, epoch, owner_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING RETURNING id",
            &[
                &name,
                &kind_str(kind),
                &visibility_str(visibility),
                &topic,
                &epoch,
                &owner.map(|o| o.0),
                &now_ms(),
            ],
        )
        .await
        .map_err(db_err)?;
    Ok(row.map(|r| {
        (
            r.get(0),
            RoomRecord {
                name: name.to_owned(),
                kind,
                visibility,
                topic: topic.to_owned(),
                epoch,
                owner: owner.map(|o| o.1.to_owned()),
                settings: chat_proto::RoomSettings::default(),
            },
        )
    }))
}

impl PgStore {
    /// One statement returning a row count, on a pooled connection.
    pub(super) async fn exec(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
            c.execute(&stmt, args).await.map_err(db_err)
        })
        .await
    }

    /// One query, on a pooled connection.
    pub(super) async fn rows(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let stmt = c.prepare_cached(sql).await.map_err(db_err)?;
            c.query(&stmt, args).await.map_err(db_err)
        })
        .await
    }

    pub(super) async fn row(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }

    /// Whether `user` is paired with `room` in `table` (members or invites).
    async fn paired(&self, table: &str, room: &str, user: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT EXISTS(SELECT 1 FROM {table} p JOIN rooms r ON r.id = p.room_id
             JOIN users u ON u.id = p.user_id WHERE r.name = $1 AND u.name = $2)"
        );
        let row = self.row(&sql, &[&room, &user]).await?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// Deletes `user`'s row for `room` in `table`; true if there was one. Both must exist.
    async fn unpair(&self, table: &str, room: &str, user: &str) -> Result<bool, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let (rid, uid) = pair_ids(&c, room, user).await?;
            let n = c
                .execute(
                    &format!("DELETE FROM {table} WHERE room_id = $1 AND user_id = $2"),
                    &[&rid, &uid],
                )
                .await
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let n = self
            .exec(
                "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &password_hash, &now_ms()],
            )
            .await?;
        if n == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .row("SELECT password_hash FROM users WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .row("SELECT 1 FROM users WHERE name = $1", &[&name])
            .await?
            .is_some())
    }

    async fn create_room(
        &self,
        name: &str,
        visibility: Visibility,
        topic: &str,
        owner: &str,
    ) -> Result<RoomRecord, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let uid = user_id(&tx, owner).await?;
            let (rid, rec) = insert_room(
                &tx,
                name,
                RoomKind::Room,
                visibility,
                topic,
                Some((uid, owner)),
            )
            .await?
            .ok_or(StoreError::Conflict)?;
            add_member_ids(&tx, rid, uid).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(rec)
        })
        .await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        let sql = format!("SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.name = $1");
        Ok(self.row(&sql, &[&name]).await?.map(|r| room_from_row(&r)))
    }

    async fn rooms_for(
        &self,
        user: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RoomInfo>, StoreError> {
        let uid = deadline(async { user_id(&self.conn().await?, user).await }).await?;
        let sql = format!(
            "SELECT {ROOM_COLUMNS},
                (SELECT COUNT(*) FROM members m WHERE m.room_id = r.id),
                EXISTS(SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = $1),
                (SELECT CASE WHEN r.owner_id = m.user_id THEN 'owner' ELSE m.role END
                 FROM members m WHERE m.room_id = r.id AND m.user_id = $1),
                {}
             FROM rooms r
             WHERE r.name > $2 AND (r.visibility = 'public'
                OR EXISTS(SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = $1)
                OR EXISTS(SELECT 1 FROM invites i WHERE i.room_id = r.id AND i.user_id = $1))
             ORDER BY r.name LIMIT $3",
            log::read_columns("$1")
        );
        let rows = self
            .rows(&sql, &[&uid, &after.unwrap_or(""), &i64::from(limit)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let rec = room_from_row(r);
                let joined: bool = r.get(9);
                let role: Option<&str> = r.get(10);
                RoomInfo {
                    room: rec.name,
                    kind: rec.kind,
                    visibility: rec.visibility,
                    topic: rec.topic,
                    members: r.get::<_, i64>(8) as u64,
                    joined,
                    read: joined.then(|| log::read_from(r, 11)),
                    role: role.and_then(crate::store::log::parse_role),
                }
            })
            .collect())
    }

    async fn rooms_owned(&self, user: &str) -> Result<u64, StoreError> {
        let row = self
            .row(
                "SELECT (SELECT COUNT(*) FROM rooms r WHERE r.owner_id = u.id) FROM users u WHERE u.name = $1",
                &[&user],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn delete_room(&self, room: &str) -> Result<bool, StoreError> {
        // Messages, members and invites go with it (ON DELETE CASCADE). A writer appending to
        // the room meanwhile holds its counter row: the delete waits for that commit.
        Ok(self
            .exec("DELETE FROM rooms WHERE name = $1", &[&room])
            .await?
            > 0)
    }

    async fn set_topic(&self, room: &str, topic: &str) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE rooms SET topic = $2 WHERE name = $1",
                &[&room, &topic],
            )
            .await?;
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn open_dm(&self, a: &str, b: &str) -> Result<RoomRecord, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let (ua, ub) = (user_id(&tx, a).await?, user_id(&tx, b).await?);
            let name = dm_room_name(a, b);
            // Inserted if missing; a node opening the same pair at once makes it first, and this
            // one then reads theirs.
            let (rid, rec) =
                match insert_room(&tx, &name, RoomKind::Dm, Visibility::Private, "", None).await? {
                    Some(made) => made,
                    None => {
                        let sql =
                            format!("SELECT {ROOM_COLUMNS}, r.id FROM rooms r WHERE r.name = $1");
                        let row = tx
                            .query_opt(&sql, &[&name])
                            .await
                            .map_err(db_err)?
                            .ok_or(StoreError::NotFound)?;
                        (row.get(8), room_from_row(&row))
                    }
                };
            add_member_ids(&tx, rid, ua).await?;
            add_member_ids(&tx, rid, ub).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(rec)
        })
        .await
    }

    async fn add_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let (rid, uid) = pair_ids(&tx, room, user).await?;
            // The invite is used up by the join it allowed.
            tx.execute(
                "DELETE FROM invites WHERE room_id = $1 AND user_id = $2",
                &[&rid, &uid],
            )
            .await
            .map_err(db_err)?;
            let added = add_member_ids(&tx, rid, uid).await?;
            tx.commit().await.map_err(db_err)?;
            Ok(added)
        })
        .await
    }

    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        deadline(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            let (rid, uid) = pair_ids(&tx, room, user).await?;
            // An invite does not outlive the membership it led to.
            tx.execute(
                "DELETE FROM invites WHERE room_id = $1 AND user_id = $2",
                &[&rid, &uid],
            )
            .await
            .map_err(db_err)?;
            let n = tx
                .execute(
                    "DELETE FROM members WHERE room_id = $1 AND user_id = $2",
                    &[&rid, &uid],
                )
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.paired("members", room, user).await
    }

    async fn role(&self, room: &str, user: &str) -> Result<Option<chat_proto::Role>, StoreError> {
        super::moderation::role(self, room, user).await
    }

    async fn roles_of(
        &self,
        room: &str,
        users: &[String],
    ) -> Result<std::collections::HashMap<String, chat_proto::Role>, StoreError> {
        super::moderation::roles_of(self, room, users).await
    }

    async fn is_banned(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        super::moderation::is_banned(self, room, user).await
    }

    async fn bans(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<chat_proto::BanInfo>, StoreError> {
        super::moderation::bans(self, room, after, limit).await
    }

    async fn configure_room(
        &self,
        room: &str,
        user: &str,
        members_set_topic: Option<bool>,
        members_invite: Option<bool>,
    ) -> Result<chat_proto::RoomSettings, StoreError> {
        super::moderation::configure_room(self, room, user, members_set_topic, members_invite).await
    }

    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rid = deadline(async { room_id(&self.conn().await?, room).await }).await?;
        let rows = self
            .rows(
                "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = $1 AND u.name > $2 ORDER BY u.name LIMIT $3",
                &[&rid, &after.unwrap_or(""), &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn member_count(&self, room: &str) -> Result<u64, StoreError> {
        let row = self
            .row(
                "SELECT (SELECT COUNT(*) FROM members m WHERE m.room_id = r.id) FROM rooms r WHERE r.name = $1",
                &[&room],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn invite(&self, room: &str, user: &str) -> Result<(), StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let (rid, uid) = pair_ids(&c, room, user).await?;
            c.execute(
                "INSERT INTO invites (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&rid, &uid],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn is_invited(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.paired("invites", room, user).await
    }

    async fn decline_invite(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.unpair("invites", room, user).await
    }

    async fn append(&self, msg: NewMessage, done: AppendDone) -> Result<(), StoreError> {
        self.jobs
            .send(Job::Append(msg, done))
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn latest_seq(&self, room: &str) -> Result<u64, StoreError> {
        let row = self
            .row("SELECT last_seq FROM rooms WHERE name = $1", &[&room])
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn apply(&self, event: NewEvent, done: ApplyDone) -> Result<(), StoreError> {
        self.jobs
            .send(Job::Apply(event, done))
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: u32,
        viewer: Viewer<'_>,
    ) -> Result<(Vec<HistoryMessage>, bool), StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let rid = room_id(&c, room).await?;
            log::history_before(&c, rid, before, limit, viewer).await
        })
        .await
    }

    async fn messages_at(
        &self,
        room: &str,
        seqs: &[u64],
        viewer: Viewer<'_>,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let rid = room_id(&c, room).await?;
            log::messages_at(&c, rid, seqs, viewer).await
        })
        .await
    }

    async fn messages_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        let rid = deadline(async { room_id(&self.conn().await?, room).await }).await?;
        let rows = self
            .rows(
                &format!(
                    "SELECT {} FROM messages m JOIN users u ON u.id = m.user_id
                     WHERE m.room_id = $1 AND m.seq > $2 AND m.seq <= $3 AND m.kind = 0
                     AND NOT m.deleted ORDER BY m.seq LIMIT $4",
                    log::MSG_COLUMNS
                ),
                &[&rid, &seq_arg(after), &seq_arg(upto), &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(log::folded).collect())
    }

    async fn events_between(
        &self,
        room: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<RoomEvent>, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let rid = room_id(&c, room).await?;
            log::events_between(&c, rid, after, upto, limit).await
        })
        .await
    }

    async fn message_info(&self, room: &str, seq: u64) -> Result<Option<MessageInfo>, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let rid = room_id(&c, room).await?;
            log::message_info(&c, rid, seq).await
        })
        .await
    }

    async fn mark_read(&self, user: &str, room: &str, seq: u64) -> Result<ReadState, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let uid = user_id(&c, user).await?;
            log::mark_read(&c, uid, room, seq).await
        })
        .await
    }

    async fn read_state(&self, user: &str, room: &str) -> Result<ReadState, StoreError> {
        deadline(async {
            let c = self.conn().await?;
            let uid = user_id(&c, user).await?;
            log::read_state(&c, uid, room).await
        })
        .await
    }

    async fn search(
        &self,
        req: &crate::store::SearchRequest,
    ) -> Result<Vec<chat_proto::SearchResult>, StoreError> {
        deadline(async { super::search::search(&self.conn().await?, req).await }).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Flush(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn commit_metrics(&self) -> Option<crate::metrics::StoreMetrics> {
        Some(self.metrics.clone())
    }
}
