use super::*;
use crate::outbox::OutboxReceiver;

fn hub() -> Hub {
    Hub::new(HubConfig {
        typing_timeout: Duration::from_millis(50),
        max_held: 8,
        max_held_bytes: 1 << 20,
        max_connections_per_user: 1000,
        rate_per_sec: 0,
        rate_burst: 1,
        presence_interval: Duration::ZERO,
        presence_ttl: Duration::from_secs(30),
    })
}

fn conn(h: &Hub, user: &str) -> (Registered, OutboxReceiver) {
    let (out, rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
    (h.register(user, 1, None, out).expect("under the cap"), rx)
}

fn drain(rx: &mut OutboxReceiver) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    while let Some(out) = rx.try_recv() {
        for f in out.frames() {
            v.push(serde_json::from_str(f).expect("json"));
        }
    }
    v
}

fn msg(seq: u64) -> Event {
    Event::Room {
        room: "r".into(),
        seq: Some(seq),
        frame: format!(r#"{{"type":"message","seq":{seq}}}"#).into(),
    }
}

#[test]
fn joining_holds_live_frames_and_drops_snapshot_ones() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.dispatch(msg(1));
    h.dispatch(msg(2));
    h.dispatch(msg(3));
    assert!(drain(&mut arx).is_empty(), "nothing before go_live");
    h.go_live("r", a.id, 2);
    let got: Vec<_> = drain(&mut arx).iter().map(|v| v["seq"].as_u64()).collect();
    assert_eq!(got, vec![Some(3)]);
    h.dispatch(msg(4));
    assert_eq!(drain(&mut arx)[0]["seq"], 4);
}

#[test]
fn a_message_published_after_going_live_but_in_the_snapshot_is_not_sent_again() {
    // The snapshot read seq 5 as committed, but its publication comes after go_live.
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.go_live("r", a.id, 5);
    h.dispatch(msg(5));
    assert!(drain(&mut arx).is_empty(), "seq 5 was in the snapshot");
    h.dispatch(msg(6));
    h.dispatch(msg(6));
    let got: Vec<_> = drain(&mut arx).iter().map(|v| v["seq"].as_u64()).collect();
    assert_eq!(
        got,
        vec![Some(6)],
        "and each seq once, even if published twice"
    );
}

fn run(seqs: std::ops::RangeInclusive<u64>) -> Event {
    Event::Messages {
        room: "r".into(),
        items: seqs
            .map(|s| (s, format!(r#"{{"type":"message","seq":{s}}}"#).into()))
            .collect(),
    }
}

#[test]
fn a_run_of_messages_is_one_item_trimmed_by_each_floor() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.go_live("r", a.id, 3);
    let (b, mut brx) = conn(&h, "bob");
    h.subscribe("r", &b);
    drain(&mut arx);
    h.dispatch(run(2..=6));
    // alice had up to 3: she gets 4..=6 as one queue item.
    let item = arx.try_recv().expect("one item");
    let seqs: Vec<u64> = item
        .frames()
        .iter()
        .map(|f| {
            serde_json::from_str::<serde_json::Value>(f).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, vec![4, 5, 6]);
    assert!(arx.try_recv().is_none(), "one wakeup for the run");
    // bob is joining: held, then released above his snapshot.
    assert!(drain(&mut brx).is_empty());
    h.go_live("r", b.id, 4);
    let got: Vec<_> = drain(&mut brx).iter().map(|v| v["seq"].as_u64()).collect();
    assert_eq!(got, vec![Some(5), Some(6)]);
    // A run already delivered is not delivered again.
    h.dispatch(run(5..=6));
    assert!(drain(&mut arx).is_empty() && drain(&mut brx).is_empty());
}

/// A run whose last seq is older than the ones before it: a resend acked as a duplicate is
/// offered to the room again after newer messages were published.
#[test]
fn a_run_with_an_older_seq_after_newer_ones_delivers_each_once_in_order() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.go_live("r", a.id, 9);
    let (b, mut brx) = conn(&h, "bob");
    h.subscribe("r", &b);
    h.go_live("r", b.id, 3);
    drain(&mut arx);
    drain(&mut brx);
    let items = [10u64, 11, 5]
        .iter()
        .map(|s| (*s, format!(r#"{{"type":"message","seq":{s}}}"#).into()))
        .collect();
    h.dispatch(Event::Messages {
        room: "r".into(),
        items,
    });
    let seqs = |rx: &mut OutboxReceiver| -> Vec<u64> {
        drain(rx).iter().filter_map(|v| v["seq"].as_u64()).collect()
    };
    // alice had up to 9: 10 and 11, not 5 again, and nothing of the run skipped.
    assert_eq!(seqs(&mut arx), vec![10, 11]);
    // bob had up to 3: 10 and 11 in order; 5 after 11 would be a step back, so it is not sent.
    assert_eq!(seqs(&mut brx), vec![10, 11]);
    // And the next message goes to both once.
    h.dispatch(run(12..=12));
    assert_eq!(seqs(&mut arx), vec![12]);
    assert_eq!(seqs(&mut brx), vec![12]);
}

#[test]
fn presence_changes_once_per_user_not_per_connection() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.go_live("r", a.id, 0);
    let (b1, _b1rx) = conn(&h, "bob");
    let (b2, _b2rx) = conn(&h, "bob");
    let (statuses, _) = h.subscribe("r", &b1);
    assert_eq!(statuses.get("bob"), Some(&Status::Online));
    assert_eq!(statuses.get("alice"), Some(&Status::Online));
    h.subscribe("r", &b2);
    let seen = drain(&mut arx);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["changes"][0]["status"], "online");
    h.unregister(b1.id);
    assert!(drain(&mut arx).is_empty(), "bob still has a connection");
    h.set_away(&b2, true);
    assert_eq!(drain(&mut arx)[0]["changes"][0]["status"], "away");
    h.unregister(b2.id);
    assert_eq!(drain(&mut arx)[0]["changes"][0]["status"], "offline");
}

#[test]
fn presence_changes_within_the_interval_go_out_as_one_diff() {
    let h = Hub::new(HubConfig {
        presence_interval: Duration::from_secs(3600),
        ..hub().config
    });
    let (a, mut arx) = conn(&h, "alice");
    h.subscribe("r", &a);
    h.go_live("r", a.id, 0);
    let mut joiners = Vec::new();
    for u in ["u1", "u2", "u3", "u4"] {
        let (r, rx) = conn(&h, u);
        h.subscribe("r", &r);
        h.go_live("r", r.id, 0);
        joiners.push((r, rx));
    }
    // alice's own join was the room's presence change for this interval (sent at once, to
    // nobody else); u1..u4 wait for the next.
    assert!(drain(&mut arx).is_empty());
    h.unregister(joiners[1].0.id);
    h.tick(Instant::now());
    assert!(drain(&mut arx).is_empty(), "the interval has not passed");
    h.tick(Instant::now() + Duration::from_secs(3601));
    let seen = drain(&mut arx);
    assert_eq!(seen.len(), 1, "one frame for the batch: {seen:?}");
    let changes: Vec<(String, String)> = seen[0]["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (c["user"].to_string(), c["status"].to_string()))
        .collect();
    assert_eq!(
        changes,
        [
            (r#""u1""#.into(), r#""online""#.into()),
            (r#""u2""#.into(), r#""offline""#.into()),
            (r#""u3""#.into(), r#""online""#.into()),
            (r#""u4""#.into(), r#""online""#.into()),
        ],
        "one entry per user, their latest status, in first-change order"
    );
    // Every member, joiners included, gets the same diff: the statuses are absolute, so
    // one a joiner already had from `joined` changes nothing.
    let u4 = drain(&mut joiners[3].1);
    assert_eq!(
        u4.last().expect("diff")["changes"].as_array().map(Vec::len),
        Some(4)
    );
    h.tick(Instant::now() + Duration::from_secs(7300));
    assert!(drain(&mut arx).is_empty(), "nothing pending, nothing sent");
}

#[test]
fn typing_reaches_others_and_expires() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    let (b, mut brx) = conn(&h, "bob");
    for r in [&a, &b] {
        h.subscribe("r", r);
        h.go_live("r", r.id, 0);
    }
    drain(&mut arx);
    h.typing("r", "bob", true);
    assert_eq!(drain(&mut arx)[0]["active"], true);
    assert!(drain(&mut brx).is_empty(), "not echoed to the typist");
    h.tick(Instant::now());
    assert!(drain(&mut arx).is_empty(), "not expired yet");
    h.tick(Instant::now() + Duration::from_millis(60));
    let seen = drain(&mut arx);
    assert_eq!(
        (seen[0]["type"].as_str(), &seen[0]["active"]),
        (Some("typing"), &false.into())
    );
    h.typing("r", "bob", true);
    drain(&mut arx);
    h.unregister(b.id);
    let seen = drain(&mut arx);
    assert_eq!(
        seen[0]["active"], false,
        "disconnect clears typing: {seen:?}"
    );
    assert_eq!(seen[1]["changes"][0]["status"], "offline");
}

#[test]
fn too_much_held_while_joining_is_a_slow_consumer() {
    let h = hub();
    let (out, _rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
    let a = h
        .register("alice", 1, None, out.clone())
        .expect("under the cap");
    h.subscribe("r", &a);
    for s in 1..=9 {
        h.dispatch(msg(s));
    }
    assert_eq!(
        out.close_reason().map(|c| c.0),
        Some(chat_proto::close::SLOW_CONSUMER)
    );
}

#[test]
fn leaving_unsubscribes_every_connection_of_the_user() {
    let h = hub();
    let (a, mut arx) = conn(&h, "alice");
    let (b1, mut b1rx) = conn(&h, "bob");
    let (b2, mut b2rx) = conn(&h, "bob");
    for r in [&a, &b1, &b2] {
        h.subscribe("r", r);
        h.go_live("r", r.id, 0);
    }
    drain(&mut arx);
    drain(&mut b1rx);
    h.dispatch(Event::Left {
        room: "r".into(),
        user: "bob".into(),
        except: Some(b1.id),
        removed: None,
    });
    assert!(
        drain(&mut b1rx).is_empty(),
        "the requester gets its own reply"
    );
    assert_eq!(drain(&mut b2rx).last().expect("left")["type"], "left");
    assert_eq!(drain(&mut arx)[0]["type"], "member_left");
    assert!(!h.is_subscribed("r", b2.id));
    h.dispatch(msg(1));
    assert!(drain(&mut b2rx).is_empty());
}

#[test]
fn maps_give_their_memory_back_when_connections_go() {
    let h = hub();
    let conns: Vec<_> = (0..2000).map(|i| conn(&h, &format!("u{i}"))).collect();
    for (r, _) in &conns {
        h.subscribe("r", r);
    }
    let peak = lock(&h.registry).conns.capacity();
    assert!(peak >= 2000);
    for (r, _) in &conns[..1990] {
        h.unregister(r.id);
    }
    let reg = lock(&h.registry);
    assert!(
        reg.conns.capacity() <= 64,
        "{} slots kept",
        reg.conns.capacity()
    );
    assert!(reg.users.capacity() <= 64);
    let room = h.room("r").expect("room");
    let room = lock(&room);
    assert!(room.subs.capacity() <= 64 && room.presence.capacity() <= 64);
}

#[test]
fn revoking_a_token_kicks_its_connections_only() {
    let h = hub();
    let (o1, _r1) = Outbox::new(4, 1 << 30, crate::outbox::Budget::new(1 << 30));
    let (o2, _r2) = Outbox::new(4, 1 << 30, crate::outbox::Budget::new(1 << 30));
    h.register("alice", 1, Some([1; 32]), o1.clone())
        .expect("under the cap");
    h.register("alice", 1, Some([2; 32]), o2.clone())
        .expect("under the cap");
    h.dispatch(Event::TokenRevoked { hash: [1; 32] });
    assert_eq!(
        o1.close_reason().map(|c| c.0),
        Some(chat_proto::close::AUTH_FAILED)
    );
    assert!(!o2.is_kicked());
}

fn event(seq: u64) -> (u64, Utf8Bytes) {
    (
        seq,
        format!(r#"{{"type":"event","room":"r","seq":{seq},"kind":"delete","target":1}}"#).into(),
    )
}

fn message(seq: u64) -> (u64, Utf8Bytes) {
    (seq, format!(r#"{{"type":"message","seq":{seq}}}"#).into())
}

#[test]
fn a_run_of_messages_and_events_reaches_each_version_as_it_defines_them() {
    let h = hub();
    let (out, mut v1rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
    let v1 = h.register("old", 1, None, out).expect("under the cap");
    let (out, mut v2rx) = Outbox::new(64, 1 << 30, crate::outbox::Budget::new(1 << 30));
    let v2 = h.register("new", 2, None, out).expect("under the cap");
    for c in [&v1, &v2] {
        h.subscribe("r", c);
        h.go_live("r", c.id, 0);
    }
    drain(&mut v1rx);
    drain(&mut v2rx);
    h.dispatch(Event::Messages {
        room: "r".into(),
        items: vec![message(1), event(2), message(3)],
    });
    let seqs = |v: Vec<serde_json::Value>| -> Vec<(String, u64)> {
        v.iter()
            .map(|f| {
                (
                    f["type"].as_str().unwrap_or_default().to_owned(),
                    f["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(
        seqs(drain(&mut v2rx)),
        vec![
            ("message".into(), 1),
            ("event".into(), 2),
            ("message".into(), 3)
        ]
    );
    assert_eq!(
        seqs(drain(&mut v1rx)),
        vec![("message".into(), 1), ("message".into(), 3)],
        "version 1 skips the event"
    );
    // A run of events only: version 1 gets nothing, but its floor moves past them, so a
    // repeat of an older seq is still dropped.
    h.dispatch(Event::Messages {
        room: "r".into(),
        items: vec![event(4), event(5)],
    });
    assert!(drain(&mut v1rx).is_empty());
    assert_eq!(drain(&mut v2rx).len(), 2);
    h.dispatch(Event::Messages {
        room: "r".into(),
        items: vec![message(3), message(6)],
    });
    assert_eq!(seqs(drain(&mut v1rx)), vec![("message".into(), 6)]);
    assert_eq!(seqs(drain(&mut v2rx)), vec![("message".into(), 6)]);
    // Frames outside runs: `topic` is version 1's, `event` version 2's.
    h.dispatch(Event::Room {
        room: "r".into(),
        seq: None,
        frame: r#"{"type":"topic","room":"r","topic":"t","by":"a"}"#.into(),
    });
    assert_eq!(drain(&mut v1rx).len(), 1);
    assert!(drain(&mut v2rx).is_empty());
}
