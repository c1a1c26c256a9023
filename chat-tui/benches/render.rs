//! How fast chat-tui draws a room holding 100,000 messages at 200x60, and what holding them
//! costs. Run with `cargo bench -p chat-tui --bench render` (docs/benchmarks.md).
//!
//! Drawing goes to ratatui's TestBackend: this measures the model and the view (layout,
//! wrapping, styling, the buffer diff), not the terminal emulator.

use std::collections::BTreeMap;
use std::hint::black_box;

use chat_proto::{CatchUp, Envelope, HistoryMessage, Member, ServerFrame, Status, Visibility};
use chat_tui::app::{App, Event, Net, Settings};
use criterion::{Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const MESSAGES: u64 = 100_000;
const USERS: usize = 40;

/// Deterministic bodies of 1 to ~400 columns, some with wide characters and emoji, so that
/// wrapping and width handling do real work.
fn body(i: u64) -> String {
    const WORDS: [&str; 12] = [
        "the",
        "deploy",
        "is",
        "green",
        "again",
        "日本語",
        "👩‍💻",
        "café",
        "tomorrow",
        "at",
        "standup",
        "https://example.org/a/very/long/path",
    ];
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n = 1 + (x >> 33) % 60;
    let mut s = String::new();
    for _ in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[((x >> 33) % WORDS.len() as u64) as usize]);
    }
    s
}

fn message(seq: u64) -> HistoryMessage {
    HistoryMessage {
        seq,
        id: format!("id-{seq}"),
        from: format!("user{}", seq as usize % USERS),
        body: body(seq),
        ts: 1_700_000_000_000 + seq as i64 * 7_000,
        reply_to: None,
        edited: None,
        deleted: false,
        reactions: Vec::new(),
    }
}

fn frame(frame: ServerFrame) -> Event {
    Event::Net(Net::Frame(Box::new(Envelope {
        reference: None,
        frame,
    })))
}

fn app_with_history() -> App {
    let mut a = App::new(
        Settings {
            bell: false,
            server: "ws://bench/ws".into(),
        },
        "bench".into(),
        BTreeMap::new(),
    );
    a.update(Event::Net(Net::Ready {
        user: "user0".into(),
    }));
    a.update(frame(ServerFrame::Joined {
        role: None,
        settings: None,
        room: "lobby".into(),
        epoch: "e".into(),
        latest_seq: MESSAGES,
        topic: "a year of history".into(),
        visibility: Visibility::Public,
        members: (0..USERS)
            .map(|u| Member {
                role: None,
                user: format!("user{u}"),
                status: if u % 3 == 0 {
                    Status::Offline
                } else {
                    Status::Online
                },
            })
            .collect(),
        member_count: 2,
        members_complete: true,
        catch_up: CatchUp::Recent,
        messages: (1..=MESSAGES).map(message).collect(),
        complete: true,
        events: Vec::new(),
        read: None,
    }));
    a
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn render(c: &mut Criterion) {
    let before = rss_kib();
    let mut app = app_with_history();
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    term.draw(|f| chat_tui::view::draw(f, &app)).expect("draw");
    let held = rss_kib().saturating_sub(before);
    let count = app.rooms.get("lobby").map_or(0, |r| r.messages.len());
    eprintln!(
        "holding {count} messages (one room, after the first draw): RSS +{:.1} MiB",
        held as f64 / 1024.0
    );
    assert_eq!(count as u64, MESSAGES, "the room keeps every message");

    c.bench_function("draw 200x60, 100k messages, at the bottom", |b| {
        b.iter(|| {
            term.draw(|f| chat_tui::view::draw(f, black_box(&app)))
                .expect("draw");
        })
    });
    app.scroll = 50_000;
    let first = std::time::Instant::now();
    term.draw(|f| chat_tui::view::draw(f, &app)).expect("draw");
    eprintln!(
        "first frame scrolled 50k rows up (lays out every message once, for the row index): {:.1} ms",
        first.elapsed().as_secs_f64() * 1000.0
    );
    eprintln!(
        "after it: RSS +{:.1} MiB over the start",
        rss_kib().saturating_sub(before) as f64 / 1024.0
    );
    c.bench_function("draw 200x60, 100k messages, scrolled 50k rows up", |b| {
        b.iter(|| {
            term.draw(|f| chat_tui::view::draw(f, black_box(&app)))
                .expect("draw");
        })
    });
    app.scroll = 0;
    let mut seq = MESSAGES;
    c.bench_function("a message arrives, then draw 200x60", |b| {
        b.iter(|| {
            seq += 1;
            let m = message(seq);
            app.update(frame(ServerFrame::Message {
                room: "lobby".into(),
                seq: m.seq,
                id: m.id,
                from: m.from,
                body: m.body,
                ts: m.ts,
                reply_to: None,
            }));
            term.draw(|f| chat_tui::view::draw(f, black_box(&app)))
                .expect("draw");
        })
    });
    let mut width = 200;
    c.bench_function("resize (width 200 <-> 199), then draw", |b| {
        b.iter(|| {
            width = if width == 200 { 199 } else { 200 };
            term.backend_mut().resize(width, 60);
            term.autoresize().expect("resize");
            term.draw(|f| chat_tui::view::draw(f, black_box(&app)))
                .expect("draw");
        })
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
