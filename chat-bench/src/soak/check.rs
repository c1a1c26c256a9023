//! The verdict, from the stored history (read back through the protocol's `history`, from a
//! fresh incarnation on the same database after the final stop) against what the clients were
//! told and shown: every acknowledged message stored exactly once with its seq and body, every
//! room's seqs gap-free from 1, every steady client's view equal to the history over the seqs it
//! covers, and the rogues closed with the codes the protocol promises.

use std::collections::{BTreeMap, HashMap};

use chat_proto::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::client;
use super::rogue::{self, Outcome};
use super::server::{Ending, Incarnation, Logs};
use super::view::{Kind, Sent, body, chain, msg_hash, msg_id, parse_id};

pub struct StoredMsg {
    pub seq: u64,
    pub from: String,
    pub id: String,
    /// [`msg_hash`] of it, as a view folds it.
    pub hash: u64,
    pub body_hash: u64,
}

fn body_hash(body: &str) -> u64 {
    msg_hash(0, "", "", body)
}

/// Every room's whole history, oldest first, paging back with `history`.
pub async fn read_history(
    url: &str,
    token: &str,
    rooms: &[String],
) -> anyhow::Result<Vec<Vec<StoredMsg>>> {
    let mut ws = crate::net::hello(&[url.to_owned()], 0, 1, token).await?;
    let mut all = Vec::with_capacity(rooms.len());
    for room in rooms {
        let mut pages: Vec<Vec<StoredMsg>> = Vec::new();
        let mut before = None;
        loop {
            let ask = ClientFrame::History {
                room: room.clone(),
                before_seq: before,
                limit: Some(200),
            };
            ws.send(Message::text(chat_proto::encode(&ask, None)))
                .await?;
            let (messages, has_more) = loop {
                let v = crate::net::recv_json(&mut ws).await?;
                match serde_json::from_value::<ServerFrame>(v)? {
                    ServerFrame::History {
                        messages, has_more, ..
                    } => break (messages, has_more),
                    ServerFrame::Error { code, message, .. } => {
                        anyhow::bail!("history of {room}: {code}: {message}")
                    }
                    _ => {}
                }
            };
            before = messages.first().map(|m| m.seq);
            pages.push(
                messages
                    .into_iter()
                    .map(|m| StoredMsg {
                        hash: msg_hash(m.seq, &m.from, &m.id, &m.body),
                        body_hash: body_hash(&m.body),
                        seq: m.seq,
                        from: m.from,
                        id: m.id,
                    })
                    .collect(),
            );
            if !has_more || before.is_none() {
                break;
            }
        }
        all.push(pages.into_iter().rev().flatten().collect());
    }
    let _ = ws.close(None).await;
    Ok(all)
}

/// What the run is judged on.
pub struct Inputs<'a> {
    pub seed: u64,
    pub stored: &'a [Vec<StoredMsg>],
    /// The rooms' latest seqs before any message: the members' joins, events of the log.
    pub bases: &'a [u64],
    /// The rooms' latest seqs when the clients were told to finish.
    pub targets: &'a [u64],
    pub steady: &'a [client::Report],
    pub rogues: &'a [rogue::Report],
    pub logs: &'a Logs,
    pub incarnations: &'a [Incarnation],
    pub max_rss_kib: u64,
    /// Whether the traffic was enough that a staller must have been closed (see
    /// `stall_must_close` in mod.rs).
    pub stall_must_close: bool,
}

#[derive(Default)]
pub struct Verdict {
    pub figures: BTreeMap<&'static str, u64>,
    /// How the rogues' connections ended, for the report.
    pub rogue_ends: Vec<String>,
    pub violations: Vec<String>,
}

impl Verdict {
    fn add(&mut self, key: &'static str, n: u64) {
        *self.figures.entry(key).or_default() += n;
    }

    fn fail_if(&mut self, key: &'static str, what: &str) {
        let n = self.figures.get(key).copied().unwrap_or(0);
        if n > 0 {
            self.violations.push(format!("{what}: {n}"));
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({"figures": self.figures, "rogue_ends": self.rogue_ends, "violations": self.violations})
    }
}

pub fn verify(i: &Inputs<'_>) -> Verdict {
    let mut v = Verdict::default();
    // Gap-free seqs from the first after the joins, in every room.
    for (r, room) in i.stored.iter().enumerate() {
        let mut expected = i.bases.get(r).copied().unwrap_or(0) + 1;
        for m in room {
            if m.seq != expected {
                v.add("gaps", m.seq.abs_diff(expected).max(1));
            }
            expected = m.seq + 1;
        }
        v.add("stored", room.len() as u64);
    }
    // Every (user, id) stored once.
    let mut by_id: HashMap<(&str, &str), Vec<(usize, &StoredMsg)>> = HashMap::new();
    for (r, room) in i.stored.iter().enumerate() {
        for m in room {
            by_id.entry((&m.from, &m.id)).or_default().push((r, m));
        }
    }
    v.add(
        "duplicated",
        by_id.values().map(|c| c.len() as u64 - 1).sum(),
    );
    // Every acknowledged message stored, where its ack said, with its body.
    let ledgers = i
        .steady
        .iter()
        .map(|c| (Kind::Steady, c.k, c.user.as_str(), c.sent.as_slice()))
        .chain(
            i.rogues
                .iter()
                .map(|c| (c.kind, c.k, c.user.as_str(), c.sent.as_slice())),
        );
    let mut owners: HashMap<(Kind, usize), (&str, &[Sent])> = HashMap::new();
    for (kind, k, user, sent) in ledgers {
        owners.insert((kind, k), (user, sent));
        for (n, s) in sent.iter().enumerate() {
            let id = msg_id(kind, k, n);
            let copies = by_id.get(&(user, id.as_str()));
            match *s {
                Sent::Acked { room, seq } => {
                    v.add("acked", 1);
                    match copies.and_then(|c| c.first()) {
                        None => v.add("lost", 1),
                        Some((r, m)) => {
                            if *r != room as usize
                                || m.seq != seq
                                || m.body_hash != body_hash(&body(i.seed, kind, k, n))
                            {
                                v.add("corrupted", 1);
                            }
                        }
                    }
                }
                Sent::Pending { .. } => {
                    if kind == Kind::Steady {
                        v.add("unacked_steady", 1);
                    } else {
                        v.add("unacked_rogue", 1);
                        if copies.is_some() {
                            v.add("stored_unacked_rogue", 1);
                        }
                    }
                }
            }
        }
    }
    // Nothing stored that nobody sent.
    for (from, id) in by_id.keys() {
        let known = parse_id(id).and_then(|(kind, k, n)| {
            let (user, sent) = owners.get(&(kind, k))?;
            (user == from && n < sent.len()).then_some(())
        });
        if known.is_none() {
            v.add("phantom", 1);
        }
    }
    views(i, &mut v);
    rogues(i, &mut v);
    server(i, &mut v);
    for (key, what) in [
        ("lost", "acknowledged messages not stored"),
        (
            "corrupted",
            "acknowledged messages stored elsewhere or with another body",
        ),
        ("duplicated", "messages stored more than once"),
        ("gaps", "missing seqs in stored rooms"),
        ("phantom", "stored messages nobody sent"),
        (
            "unacked_steady",
            "steady clients' messages never acknowledged",
        ),
        ("view_mismatches", "view mismatches"),
        ("ack_conflicts", "acks that disagree for one id"),
        ("acked_twice", "ids acknowledged twice as new"),
        (
            "steady_closed_4009",
            "steady clients closed 4009 although they waited",
        ),
        (
            "steady_unfinished",
            "steady clients that never reached the final state",
        ),
        (
            "steady_unexpected",
            "unexpected frames or errors at steady clients",
        ),
        ("undecodable", "frames the protocol crate cannot decode"),
        (
            "rogue_wrong_close",
            "rogue connections ended otherwise than promised",
        ),
        ("flood_survived", "flooders never closed"),
        (
            "server_died",
            "server incarnations that exited by themselves",
        ),
        ("server_panics", "panics in the server log"),
        ("bad_exit", "graceful stops that did not exit 0"),
    ] {
        v.fail_if(key, what);
    }
    let peak = v.figures.get("peak_rss_kib").copied().unwrap_or(0);
    if peak > i.max_rss_kib {
        v.violations.push(format!(
            "server peak RSS {} MiB over the bound {} MiB",
            peak / 1024,
            i.max_rss_kib / 1024
        ));
    }
    v
}

fn views(i: &Inputs<'_>, v: &mut Verdict) {
    // prefix[r][s]: the digest of room r's first s messages (seqs base+1..=base+s), as a view
    // folds them.
    let prefix: Vec<Vec<u64>> = i
        .stored
        .iter()
        .map(|room| {
            let mut d = vec![0];
            for m in room {
                d.push(chain(*d.last().unwrap_or(&0), m.hash));
            }
            d
        })
        .collect();
    let mut mismatched = 0;
    for c in i.steady {
        let f = &c.faults;
        let seen = f.shown_twice + f.view_gaps + f.early_events + f.bad_reloads + f.epoch_changed;
        mismatched += seen;
        v.add("shown_twice", f.shown_twice);
        v.add("view_gaps", f.view_gaps);
        v.add("early_events", f.early_events);
        v.add("reloads", f.reloads);
        v.add("bad_reloads", f.bad_reloads);
        v.add("ack_conflicts", f.ack_conflicts);
        v.add("acked_twice", f.acked_twice);
        v.add("undecodable", f.undecodable);
        v.add("steady_closed_4009", f.rate_abuse);
        v.add("send_server_errors", f.server_errors);
        v.add("steady_unexpected", f.unexpected.len() as u64);
        if !c.finished {
            v.add("steady_unfinished", 1);
        }
        for (what, n) in &c.ends {
            if what != "killed" && what != "by-client" {
                v.add(
                    match what.as_str() {
                        "4008" => "steady_closed_4008",
                        "4010" => "steady_closed_4010",
                        _ => "steady_dropped_other",
                    },
                    *n,
                );
            }
        }
        for (slot, view) in c.views.iter().enumerate() {
            let r = c.rooms[slot];
            let room = &i.stored[r];
            // Message seq s is stored message s - base - 1: the seqs up to base are joins.
            let base = i.bases.get(r).copied().unwrap_or(0);
            for seg in &view.segments {
                if seg.end < seg.start {
                    continue;
                }
                if seg.start <= base {
                    mismatched += 1;
                    continue;
                }
                let (start, end) = ((seg.start - base) as usize, (seg.end - base) as usize);
                let fits = end <= room.len()
                    && room.get(start - 1).is_some_and(|m| m.seq == seg.start)
                    && room.get(end - 1).is_some_and(|m| m.seq == seg.end);
                let same = fits
                    && if start == 1 {
                        prefix[r][end] == seg.digest
                    } else {
                        room[start - 1..end].iter().fold(0, |d, m| chain(d, m.hash)) == seg.digest
                    };
                if !same {
                    mismatched += 1;
                }
            }
            if view.high() < i.targets[r] {
                v.add("views_incomplete", 1);
                mismatched += 1;
            }
        }
    }
    v.add("view_mismatches", mismatched);
    if let Some(c) = i.steady.iter().find(|c| !c.faults.unexpected.is_empty()) {
        v.violations.push(format!(
            "client w{} saw, for example: {}",
            c.k,
            c.faults.unexpected.join("; ")
        ));
    }
}

fn rogues(i: &Inputs<'_>, v: &mut Verdict) {
    let mut by_kind: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for r in i.rogues {
        let expected = match r.kind {
            Kind::Flood => chat_proto::close::RATE_LIMIT_ABUSE,
            _ => chat_proto::close::SLOW_CONSUMER,
        };
        for e in &r.episodes {
            // Without a close frame (the server could not send it past what the client had
            // not read, or was killed right after) the server's log says what it did.
            let logged = e.peer.is_some_and(|p| {
                i.logs
                    .closes
                    .get(e.generation)
                    .and_then(|c| c.get(&p))
                    .is_some_and(|codes| codes.contains(&expected))
            });
            let what = match e.outcome {
                Outcome::Closed(code) if code == expected => format!("closed {code}"),
                Outcome::Closed(code) => {
                    v.add("rogue_wrong_close", 1);
                    format!("closed {code} (wrong)")
                }
                Outcome::Dropped => {
                    let inc = i.incarnations.get(e.generation);
                    // The log line comes after a grace period of 2 s: a kill soon after may
                    // have taken it.
                    let killed_soon = inc.is_some_and(|inc| {
                        inc.ending == Ending::Killed
                            && inc
                                .ended
                                .is_some_and(|t| t.saturating_duration_since(e.ended).as_secs() < 6)
                    });
                    match logged {
                        true => format!("closed {expected} (logged, no frame)"),
                        _ if killed_soon => "dropped, server killed before logging".to_owned(),
                        _ => {
                            v.add("rogue_wrong_close", 1);
                            "dropped without a logged close (wrong)".to_owned()
                        }
                    }
                }
                Outcome::Killed | Outcome::Failed if logged => {
                    format!("closed {expected} (logged, then killed or while joining)")
                }
                Outcome::Killed => "ended by a kill".to_owned(),
                Outcome::Failed => "could not connect".to_owned(),
                Outcome::Late => "outlived the chaos".to_owned(),
                Outcome::Survived => {
                    if r.kind == Kind::Flood {
                        v.add("flood_survived", 1);
                    }
                    "survived".to_owned()
                }
            };
            *by_kind.entry((r.kind.name(), what)).or_default() += 1;
        }
    }
    for ((kind, what), n) in &by_kind {
        v.rogue_ends.push(format!("{kind}: {n} {what}"));
        v.violations.extend(
            what.ends_with("(wrong)")
                .then(|| format!("{kind}: {n} connection(s) {what}")),
        );
    }
    let closed = |kind: &str| {
        by_kind
            .iter()
            .filter(|((k, w), _)| *k == kind && w.starts_with("closed 40"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    v.add("floods_closed_4009", closed("flood"));
    v.add("stalls_closed_4008", closed("stall"));
    v.add(
        "stalls_survived",
        by_kind
            .get(&("stall", "survived".to_owned()))
            .copied()
            .unwrap_or(0),
    );
    for (kind, key) in [
        ("flood", "floods_closed_4009"),
        ("stall", "stalls_closed_4008"),
    ] {
        let tried = i
            .rogues
            .iter()
            .any(|r| r.kind.name() == kind && !r.episodes.is_empty())
            && (kind == "flood" || i.stall_must_close)
            // A staller that was killed or could not join every time never got to stall.
            && i.rogues.iter().any(|r| {
                r.kind.name() == kind
                    && r.episodes.iter().any(|e| {
                        matches!(
                            e.outcome,
                            Outcome::Closed(_) | Outcome::Dropped | Outcome::Survived
                        )
                    })
            });
        if tried && v.figures.get(key).copied().unwrap_or(0) == 0 {
            v.violations.push(format!(
                "no {kind} connection was closed as the protocol promises"
            ));
        }
    }
}

fn server(i: &Inputs<'_>, v: &mut Verdict) {
    for inc in i.incarnations {
        match &inc.ending {
            Ending::Died(how) => {
                v.add("server_died", 1);
                v.violations
                    .push(format!("server pid {} exited by itself: {how}", inc.pid));
            }
            Ending::Stopped(code) if *code != Some(0) => v.add("bad_exit", 1),
            _ => {}
        }
    }
    v.add(
        "kills",
        i.incarnations
            .iter()
            .filter(|x| x.ending == Ending::Killed)
            .count() as u64,
    );
    v.add("server_panics", i.logs.panics.len() as u64);
    v.add(
        "peak_rss_kib",
        i.incarnations.iter().map(|x| x.peak_kib).max().unwrap_or(0),
    );
    for (code, n) in &i.logs.by_code {
        v.add(
            match code {
                4008 => "server_logged_4008",
                4009 => "server_logged_4009",
                4010 => "server_logged_4010",
                _ => "server_logged_other_closes",
            },
            *n,
        );
    }
}
