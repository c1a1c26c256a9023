//! Rendering tests on ratatui's TestBackend, at the smallest supported size and a large one.

use std::collections::BTreeMap;

use chat_proto::{CatchUp, Envelope, HistoryMessage, Member, ServerFrame, Status, Visibility};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::app::{App, Conn, Event, Net, Settings};

fn app_with(messages: Vec<(&str, &str)>) -> App {
    let mut a = App::new(
        Settings {
            bell: false,
            server: "ws://h/ws".into(),
        },
        "t".into(),
        BTreeMap::new(),
    );
    a.update(Event::Net(Net::Ready {
        user: "alice".into(),
    }));
    let msgs = messages
        .into_iter()
        .enumerate()
        .map(|(i, (from, body))| HistoryMessage {
            seq: i as u64 + 1,
            id: format!("m{i}"),
            from: from.into(),
            body: body.into(),
            ts: 1_700_000_000_000 + i as i64 * 60_000,
            reply_to: None,
            edited: None,
            deleted: false,
            reactions: Vec::new(),
        })
        .collect::<Vec<_>>();
    let latest = msgs.len() as u64;
    a.update(Event::Net(Net::Frame(Box::new(Envelope {
        reference: None,
        frame: ServerFrame::Joined {
            role: None,
            settings: None,
            room: "lobby".into(),
            epoch: "e".into(),
            latest_seq: latest,
            topic: "the topic".into(),
            visibility: Visibility::Public,
            members: vec![
                Member {
                    role: None,
                    user: "alice".into(),
                    status: Status::Online,
                },
                Member {
                    role: None,
                    user: "bob".into(),
                    status: Status::Away,
                },
                Member {
                    role: None,
                    user: "carol".into(),
                    status: Status::Offline,
                },
            ],
            member_count: 2,
            members_complete: true,
            catch_up: CatchUp::Recent,
            messages: msgs,
            complete: true,
            events: Vec::new(),
            read: None,
        },
    }))));
    a
}

fn render(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| crate::view::draw(f, app)).expect("draw");
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            let mut line = String::new();
            let mut x = 0;
            while x < w {
                let cell = &buf[(x, y)];
                line.push_str(cell.symbol());
                x += unicode_width::UnicodeWidthStr::width(cell.symbol()).max(1) as u16;
            }
            line
        })
        .collect()
}

#[test]
fn at_80x24_everything_is_there() {
    let a = app_with(vec![
        ("bob", "hello alice"),
        ("alice", "/me waves"),
        ("bob", "日本語のテキスト and emoji 👩‍💻 in one line"),
    ]);
    let screen = render(&a, 80, 24);
    let all = screen.join("\n");
    assert!(
        screen[0].contains("rooms")
            && screen[0].contains("#lobby  the topic")
            && screen[0].contains("members"),
        "{all}"
    );
    assert!(all.contains("bob: hello alice"), "{all}");
    assert!(all.contains("* alice waves"), "{all}");
    assert!(all.contains("日本語のテキスト"), "{all}");
    assert!(
        all.contains("online (1)") && all.contains("away (1)") && all.contains("offline (1)"),
        "{all}"
    );
    assert!(screen[23].contains("│ alice │ connected"), "{}", screen[23]);
    assert!(
        screen[22].starts_with("│") || screen[22].contains(">"),
        "the input line: {all}"
    );
    // Every row is exactly the terminal's width: wide characters did not push anything out.
    for (i, row) in screen.iter().enumerate() {
        assert_eq!(
            unicode_width::UnicodeWidthStr::width(row.as_str()),
            80,
            "row {i}: {row:?}"
        );
    }
}

#[test]
fn at_120x40_long_lines_wrap_under_the_text_column() {
    let long = "word ".repeat(60);
    let a = app_with(vec![("bob", &long)]);
    let screen = render(&a, 120, 40);
    let rows: Vec<&String> = screen.iter().filter(|r| r.contains("word")).collect();
    assert!(rows.len() >= 3, "{screen:#?}");
    let first = rows[0].find("word").expect("word");
    for r in &rows[1..] {
        assert_eq!(
            r.find("word"),
            Some(first),
            "continuation rows align with the text: {r:?}"
        );
    }
}

#[test]
fn a_narrow_terminal_drops_the_sidebars_not_the_messages() {
    let a = app_with(vec![("bob", "still readable")]);
    let screen = render(&a, 40, 12).join("\n");
    assert!(screen.contains("bob: still readable"), "{screen}");
    assert!(!screen.contains("members"), "{screen}");
}

#[test]
fn the_status_bar_counts_down_a_reconnect_and_help_lists_commands() {
    let mut a = app_with(vec![]);
    let at = std::time::Instant::now() + std::time::Duration::from_millis(3200);
    a.update(Event::Net(Net::Conn(Conn::Reconnecting {
        at,
        attempt: 4,
        why: "connection closed".into(),
    })));
    let screen = render(&a, 80, 24);
    assert!(
        screen[23].contains("reconnecting in 3.")
            && screen[23].contains("(attempt 4: connection closed)"),
        "{}",
        screen[23]
    );
    a.show_help = true;
    let screen = render(&a, 100, 40).join("\n");
    for (cmd, _, _) in crate::commands::COMMANDS {
        assert!(screen.contains(cmd), "help lacks {cmd}:\n{screen}");
    }
}

#[test]
fn the_status_bar_names_the_server_in_use() {
    let mut a = app_with(vec![]);
    assert!(render(&a, 80, 24)[23].contains(" ws://h/ws "));
    // The network task moved to the second of three URLs.
    a.update(Event::Net(Net::Server("ws://b:7878/ws (2/3)".into())));
    let screen = render(&a, 80, 24);
    assert!(
        screen[23].contains(" ws://b:7878/ws (2/3) "),
        "{}",
        screen[23]
    );
}

#[test]
fn scrolled_up_shows_the_new_messages_marker_and_unread_line() {
    let many: Vec<(String, String)> = (0..60)
        .map(|i| ("bob".to_owned(), format!("line {i}")))
        .collect();
    let mut a = app_with(many.iter().map(|(f, b)| (f.as_str(), b.as_str())).collect());
    a.scroll = 20;
    let screen = render(&a, 80, 24).join("\n");
    assert!(screen.contains("new messages below"), "{screen}");
    assert!(
        !screen.contains("line 59"),
        "scrolled away from the newest: {screen}"
    );
    let mut b = app_with(vec![("bob", "old")]);
    b.rooms.get_mut("lobby").expect("room").marker = Some(0);
    let screen = render(&b, 80, 24).join("\n");
    assert!(screen.contains("new since you last read"), "{screen}");
}

#[test]
fn hostile_text_never_reaches_the_buffer_raw() {
    let a = app_with(vec![(
        "ev\u{1b}[31mil",
        "a\u{1b}]52;c;ZXZpbA==\u{7}b\u{9b}2Jc\u{202e}d",
    )]);
    let screen = render(&a, 80, 24).join("\n");
    assert!(
        !screen.contains('\u{1b}') && !screen.contains('\u{9b}') && !screen.contains('\u{202e}'),
        "{screen:?}"
    );
    assert!(
        screen.contains('␛'),
        "escapes are shown as placeholders: {screen}"
    );
}

#[test]
fn readme_lists_every_key_and_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    for (keys, _) in crate::view::KEYS {
        assert!(
            readme.contains(&format!("| {keys} |")),
            "README.md lacks the key row `{keys}`"
        );
    }
    for (cmd, _, _) in crate::commands::COMMANDS {
        assert!(
            readme.contains(&format!("`{cmd}")),
            "README.md lacks the command {cmd}"
        );
    }
}

#[test]
fn alt_u_puts_the_first_unread_message_at_the_top() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let many: Vec<(String, String)> = (0..80)
        .map(|i| ("bob".to_owned(), format!("line {i}")))
        .collect();
    let mut a = app_with(many.iter().map(|(f, b)| (f.as_str(), b.as_str())).collect());
    // alice had read up to seq 30 (line 29) when she brought the room on screen.
    a.rooms.get_mut("lobby").expect("room").marker = Some(30);
    let area = ratatui::layout::Rect::new(0, 0, 80, 24);
    let m = crate::view::messages_area(area, &a);
    a.viewport = (m.width as usize, m.height as usize);
    a.update(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::ALT,
    )));
    assert!(a.scroll > 0);
    let screen = render(&a, 80, 24);
    let top = screen
        .iter()
        .position(|r| r.contains("new since you last read"))
        .expect("the unread line is on screen");
    assert_eq!(top, 1, "right under the topic:\n{}", screen.join("\n"));
    assert!(screen[2].contains("line 30"), "{}", screen.join("\n"));
}

#[test]
fn tiny_and_odd_terminal_sizes_never_panic() {
    let mut a = app_with(vec![(
        "bob",
        "hello 日本語 👩‍💻 and a long line that wraps a lot",
    )]);
    a.editor.insert("two\nlines");
    a.notice = Some("a notice".into());
    for w in 1..=30 {
        for h in 1..=8 {
            render(&a, w, h);
        }
    }
    a.show_help = true;
    for (w, h) in [(1, 1), (10, 3), (30, 5)] {
        render(&a, w, h);
    }
}

/// Far up a long history, a frame starts laying out at the message on screen (through the row
/// index) instead of at the bottom: it must show exactly what laying out everything shows, as
/// messages arrive, at another width, and with an unread line.
#[test]
fn a_frame_far_up_shows_what_laying_out_everything_shows() {
    let bodies: Vec<String> = (0..600)
        .map(|i| "word ".repeat(1 + (i * 7919) % 40) + &format!("#{i}"))
        .collect();
    let mut a = app_with(bodies.iter().map(|b| ("bob", b.as_str())).collect());
    let naive = |a: &App, cols: usize, height: usize, scroll: usize| -> Vec<String> {
        let r = &a.rooms["lobby"];
        let rows = super::rows_bottom_up(r, "alice", cols, |_, _| false);
        let scroll = scroll.min(rows.len().saturating_sub(height));
        rows.into_iter()
            .skip(scroll)
            .take(height)
            .rev()
            .map(|l| l.to_string())
            .collect()
    };
    let fast = |a: &App, cols: usize, height: usize, scroll: usize| -> Vec<String> {
        let r = &a.rooms["lobby"];
        super::visible_rows(r, "alice", cols, height, scroll)
            .0
            .into_iter()
            .map(|l| l.to_string())
            .collect()
    };
    for (cols, height) in [(80, 20), (57, 9)] {
        for scroll in [0, 50, 81, 300, 1234, 5000, 9999, 100_000] {
            assert_eq!(
                fast(&a, cols, height, scroll),
                naive(&a, cols, height, scroll),
                "cols {cols}, scroll {scroll}"
            );
        }
    }
    // New messages extend the index; an unread line rebuilds it.
    for i in 600..620 {
        a.update(Event::Net(Net::Frame(Box::new(Envelope {
            reference: None,
            frame: ServerFrame::Message {
                room: "lobby".into(),
                seq: i + 1,
                id: format!("m{i}"),
                from: "carol".into(),
                body: "late ".repeat(1 + (i as usize % 30)),
                ts: 1_700_000_000_000 + i as i64 * 60_000_000,
                reply_to: None,
            },
        }))));
    }
    a.rooms.get_mut("lobby").expect("room").marker = Some(300);
    for scroll in [90, 777, 4321] {
        assert_eq!(
            fast(&a, 80, 20, scroll),
            naive(&a, 80, 20, scroll),
            "scroll {scroll}"
        );
    }
}
