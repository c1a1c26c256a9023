//! Drawing: a pure function of the model (`draw(&App)`); the only state it touches is the wrap
//! cache inside each room. Only the rows that fit on screen are laid out.

use std::rc::Rc;
use std::time::Instant;

use chat_proto::Status;
use chrono::{DateTime, Local, TimeZone};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::app::{App, Conn};
use crate::commands::COMMANDS;
use crate::room::{Message, PendingState, Room};
use crate::wrap::{width, wrap};

const ROOMS_WIDTH: u16 = 20;
const MEMBERS_WIDTH: u16 = 18;
/// Nicks are cut to this many columns in the message column.
const NICK_WIDTH: usize = 12;
const PALETTE: [Color; 10] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightBlue,
    Color::LightMagenta,
];

/// The same colour for a nick everywhere, every run (FNV-1a, not the randomised std hasher).
pub fn nick_color(nick: &str) -> Color {
    let h = nick.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    });
    PALETTE[h as usize % PALETTE.len()]
}

fn local(ts: i64) -> Option<DateTime<Local>> {
    Local.timestamp_millis_opt(ts).single()
}

fn cut(s: &str, cols: usize) -> String {
    let mut out = String::new();
    for g in unicode_segmentation::UnicodeSegmentation::graphemes(s, true) {
        if width(&out) + width(g) > cols {
            break;
        }
        out.push_str(g);
    }
    out
}

pub fn draw(f: &mut Frame, app: &App) {
    let [main, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    let show_members = app.show_members && main.width >= 70;
    let side = if main.width >= 50 { ROOMS_WIDTH } else { 0 };
    let [rooms, center, members] = Layout::horizontal([
        Constraint::Length(side),
        Constraint::Min(20),
        Constraint::Length(if show_members { MEMBERS_WIDTH } else { 0 }),
    ])
    .areas(main);
    draw_rooms(f, app, rooms);
    draw_center(f, app, center);
    if show_members {
        draw_members(f, app, members);
    }
    draw_status(f, app, status);
    if app.show_help {
        draw_help(f, f.area());
    }
}

fn room_label(name: &str, me: &str) -> String {
    match name.strip_prefix(chat_proto::limits::DM_PREFIX) {
        Some(pair) => {
            let other = pair.split(':').find(|u| *u != me).unwrap_or(pair);
            format!("@{other}")
        }
        None => format!("#{name}"),
    }
}

fn draw_rooms(f: &mut Frame, app: &App, area: Rect) {
    if area.width == 0 {
        return;
    }
    let me = app.me.as_deref().unwrap_or_default();
    let lines: Vec<Line> = app
        .rooms
        .values()
        .map(|r| {
            let mut label = cut(&room_label(&r.name, me), area.width as usize - 6);
            if r.unread > 0 {
                label.push_str(&format!(" {}", r.unread.min(999)));
            }
            let mark = if r.mention { "!" } else { " " };
            let mut style = Style::default();
            if app.focus.as_deref() == Some(r.name.as_str()) {
                style = style.add_modifier(Modifier::REVERSED);
            } else if r.mention {
                style = style.fg(Color::Red).add_modifier(Modifier::BOLD);
            } else if r.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            Line::from(vec![
                Span::styled(mark, Style::default().fg(Color::Red)),
                Span::styled(label, style),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("rooms")),
        area,
    );
}

fn draw_center(f: &mut Frame, app: &App, area: Rect) {
    let input_rows = app.editor.text().split('\n').count().clamp(1, 5) as u16;
    let [topic, body, typing, notice, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(app.notice.is_some())),
        Constraint::Length(input_rows),
    ])
    .areas(area);
    let room = app.focus.as_ref().and_then(|f| app.rooms.get(f));
    let me = app.me.as_deref().unwrap_or_default();
    let title = match room {
        Some(r) => format!("{}  {}", room_label(&r.name, me), r.topic),
        None => "no room: /join ROOM or /create ROOM".to_owned(),
    };
    f.render_widget(
        Paragraph::new(cut(&title, topic.width as usize))
            .style(Style::default().add_modifier(Modifier::BOLD)),
        topic,
    );
    if let Some(r) = room {
        draw_messages(f, app, r, body);
        if let Some(t) = r.typing_line() {
            f.render_widget(
                Paragraph::new(t).style(
                    Style::default()
                        .fg(Color::DarkGray)
                        .add_modifier(Modifier::ITALIC),
                ),
                typing,
            );
        }
    }
    if let Some(n) = &app.notice {
        f.render_widget(
            Paragraph::new(cut(n, notice.width as usize)).style(Style::default().fg(Color::Yellow)),
            notice,
        );
    }
    draw_input(f, app, input);
}

/// One message (or pending line) as rows: a prefix column of time and nick, then the body
/// wrapped to what is left.
/// Columns left for a message's body once its prefix (time, nick, separator) is drawn.
fn body_width(m: &Message, cols: usize) -> usize {
    let time = 6; // "HH:MM " or "--:-- "
    let sep = if m.action { 3 } else { 2 }; // "* " + nick + " ", or nick + ": "
    cols.saturating_sub(time + width(&cut(&m.from, NICK_WIDTH)) + sep)
        .max(8)
}

fn message_rows(r: &Room, m: &Message, me: &str, cols: usize) -> Vec<Line<'static>> {
    debug_assert!(
        crate::sanitize::is_terminal_safe(&m.from)
            && m.lines.iter().all(|l| crate::sanitize::is_terminal_safe(l)),
        "unsanitized text reached the view"
    );
    let time = local(m.ts)
        .map(|t| t.format("%H:%M ").to_string())
        .unwrap_or_else(|| "--:-- ".into());
    let nick = cut(&m.from, NICK_WIDTH);
    let own = m.from == me;
    let mut nick_style = Style::default().fg(nick_color(&m.from));
    if own {
        nick_style = nick_style.add_modifier(Modifier::BOLD);
    }
    let head: Vec<Span<'static>> = if m.action {
        vec![
            Span::raw(time).dark_gray(),
            Span::raw("* "),
            Span::styled(nick.clone(), nick_style),
            Span::raw(" "),
        ]
    } else {
        vec![
            Span::raw(time).dark_gray(),
            Span::styled(nick.clone(), nick_style),
            Span::raw(": "),
        ]
    };
    let prefix_w: usize = head.iter().map(|s| width(&s.content)).sum();
    let avail = cols.saturating_sub(prefix_w).max(8);
    debug_assert_eq!(
        avail,
        body_width(m, cols),
        "body_width agrees with the drawn prefix"
    );
    let body = body_rows(r, m.seq, &m.lines, avail);
    let body_style = if own {
        Style::default().fg(Color::Gray)
    } else {
        Style::default()
    };
    body.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut spans = if i == 0 {
                head.clone()
            } else {
                vec![Span::raw(" ".repeat(prefix_w))]
            };
            spans.push(Span::styled(row.clone(), body_style));
            Line::from(spans)
        })
        .collect()
}

fn body_rows(r: &Room, seq: u64, lines: &[String], avail: usize) -> Rc<Vec<String>> {
    if let Some((w, rows)) = r.wrapped.borrow().get(&seq)
        && *w == avail
    {
        return rows.clone();
    }
    let rows: Rc<Vec<String>> = Rc::new(lines.iter().flat_map(|l| wrap(l, avail)).collect());
    r.wrapped.borrow_mut().insert(seq, (avail, rows.clone()));
    rows
}

fn day_line(ts: i64, cols: usize) -> Line<'static> {
    let day = local(ts)
        .map(|t| t.format(" %a %d %b %Y ").to_string())
        .unwrap_or_default();
    let side = cols.saturating_sub(width(&day)) / 2;
    Line::from(format!("{}{day}{}", "─".repeat(side), "─".repeat(side))).dark_gray()
}

/// The room's rows from the bottom up (pending lines, then messages newest first with their day
/// separators and the unread line), until `enough` says to stop. Drawing and the jump to the
/// first unread message count rows with this one function, so they always agree.
fn rows_bottom_up(
    r: &Room,
    me: &str,
    cols: usize,
    enough: impl FnMut(usize, u64) -> bool,
) -> Vec<Line<'static>> {
    rows_from(r, me, cols, None, enough)
}

/// [`rows_bottom_up`] starting at message `from` (and older), without the pending lines below.
fn rows_from(
    r: &Room,
    me: &str,
    cols: usize,
    from: Option<u64>,
    mut enough: impl FnMut(usize, u64) -> bool,
) -> Vec<Line<'static>> {
    let mut rows: Vec<Line<'static>> = Vec::new();
    let pending = if from.is_some() {
        &[][..]
    } else {
        &r.pending[..]
    };
    for p in pending.iter().rev() {
        let (tag, style) = match &p.state {
            PendingState::Waiting => ("sending… ".to_owned(), Style::default().fg(Color::DarkGray)),
            PendingState::Failed(why) => {
                (format!("failed ({why}) "), Style::default().fg(Color::Red))
            }
        };
        let text = p.body.replace('\n', " ");
        for row in wrap(&format!("{tag}{text}"), cols).into_iter().rev() {
            rows.push(Line::styled(row, style));
        }
    }
    let mut iter = r
        .messages
        .range(..=from.unwrap_or(u64::MAX))
        .map(|(_, m)| m)
        .rev()
        .peekable();
    while let Some(m) = iter.next() {
        if enough(rows.len(), m.seq) {
            break;
        }
        for row in message_rows(r, m, me, cols).into_iter().rev() {
            rows.push(row);
        }
        if r.marker.is_some_and(|mark| m.seq == mark + 1) {
            rows.push(Line::from("── new since you last read ──").red());
        }
        let older_day = iter
            .peek()
            .and_then(|o| local(o.ts))
            .map(|t| t.date_naive());
        let this_day = local(m.ts).map(|t| t.date_naive());
        if older_day != this_day {
            rows.push(day_line(m.ts, cols));
        }
    }
    rows
}

/// Where the messages go on a screen of `area`: the model keeps this to scroll exactly.
pub fn messages_area(area: Rect, app: &App) -> Rect {
    let [main, _status] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let show_members = app.show_members && main.width >= 70;
    let side = if main.width >= 50 { ROOMS_WIDTH } else { 0 };
    let [_, center, _] = Layout::horizontal([
        Constraint::Length(side),
        Constraint::Min(20),
        Constraint::Length(if show_members { MEMBERS_WIDTH } else { 0 }),
    ])
    .areas(main);
    let input_rows = app.editor.text().split('\n').count().clamp(1, 5) as u16;
    let [_, body, _, _, _] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(u16::from(app.notice.is_some())),
        Constraint::Length(input_rows),
    ])
    .areas(center);
    body
}

/// The scroll offset (rows up from the bottom) that puts the message `seq`'s first row at the
/// top of a `cols` x `height` message area, or 0 if it is visible at the bottom already.
pub fn scroll_to(r: &Room, me: &str, seq: u64, cols: usize, height: usize) -> usize {
    let rows = rows_bottom_up(r, me, cols, |_, s| s < seq);
    rows.len().saturating_sub(height)
}

/// Rows each message adds to the room's layout at one width (its body, its unread line, its day
/// line), oldest first, with running sums: a frame scrolled far up starts laying out at the
/// message on screen instead of at the bottom. Extended as messages arrive; rebuilt when the
/// width, the unread line or the history's shape changes.
#[derive(Debug, Default, Clone)]
pub struct RowIndex {
    /// Width, unread line, and the room's `reshaped` count it was built for.
    key: Option<(usize, Option<u64>, u64)>,
    seqs: Vec<u64>,
    /// `sums[i]`: rows of the messages before `seqs[i]`; one more entry for the total.
    sums: Vec<usize>,
}

fn message_block(r: &Room, m: &Message, older: Option<&Message>, cols: usize) -> usize {
    // Counted, not kept: the wrap cache holds only what has been on screen (100,000 messages
    // wrapped and kept would be another 50 MB).
    let n_rows = match r.wrapped.borrow().get(&m.seq) {
        Some((w, rows)) if *w == body_width(m, cols) => Some(rows.len()),
        _ => None,
    };
    let mut n = n_rows.unwrap_or_else(|| {
        let avail = body_width(m, cols);
        m.lines.iter().map(|l| wrap(l, avail).len()).sum()
    });

    if r.marker.is_some_and(|mark| m.seq == mark + 1) {
        n += 1;
    }
    if older.and_then(|o| local(o.ts)).map(|t| t.date_naive())
        != local(m.ts).map(|t| t.date_naive())
    {
        n += 1;
    }
    n
}

fn update_index(r: &Room, cols: usize) {
    let key = (cols, r.marker, r.reshaped);
    let mut idx = r.row_index.borrow_mut();
    if idx.key.as_ref() != Some(&key) {
        *idx = RowIndex {
            key: Some(key),
            seqs: Vec::with_capacity(r.messages.len()),
            sums: vec![0],
        };
    }
    let after = idx.seqs.last().map_or(0, |s| s + 1);
    let mut older = idx.seqs.last().and_then(|s| r.messages.get(s));
    for m in r.messages.range(after..).map(|(_, m)| m) {
        let total = idx.sums.last().copied().unwrap_or(0) + message_block(r, m, older, cols);
        idx.seqs.push(m.seq);
        idx.sums.push(total);
        older = Some(m);
    }
}

/// The `height` rows on screen `scroll` rows up from the bottom (clamped), newest last, and the
/// scroll actually applied.
fn visible_rows(
    r: &Room,
    me: &str,
    cols: usize,
    height: usize,
    scroll: usize,
) -> (Vec<Line<'static>>, usize) {
    let need = height + scroll;
    // Near the bottom, laying out from the bottom is cheapest and needs no index.
    if scroll <= 4 * height.max(1) || r.messages.is_empty() {
        let rows = rows_bottom_up(r, me, cols, |n, _| n >= need);
        let scroll = scroll.min(rows.len().saturating_sub(height));
        return (
            rows.into_iter().skip(scroll).take(height).rev().collect(),
            scroll,
        );
    }
    update_index(r, cols);
    let idx = r.row_index.borrow();
    // The pending lines alone: stop at the first message.
    let pending: usize = rows_from(r, me, cols, None, |_, _| true).len();
    let total = pending + idx.sums.last().copied().unwrap_or(0);
    let scroll = scroll.min(total.saturating_sub(height));
    // The message whose rows hold the row `scroll` up from the bottom: the oldest one with no
    // more than `scroll` rows below it. Everything below it is skipped, not laid out.
    let n = idx.seqs.len();
    let below = |i: usize| pending + idx.sums[n] - idx.sums[i + 1];
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if below(mid) <= scroll {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo == n {
        drop(idx);
        let rows = rows_bottom_up(r, me, cols, |n, _| n >= need);
        return (
            rows.into_iter().skip(scroll).take(height).rev().collect(),
            scroll,
        );
    }
    let (start, skipped) = (idx.seqs[lo], below(lo));
    drop(idx);
    let rows = rows_from(r, me, cols, Some(start), |n, _| skipped + n >= need);
    (
        rows.into_iter()
            .skip(scroll - skipped)
            .take(height)
            .rev()
            .collect(),
        scroll,
    )
}

fn draw_messages(f: &mut Frame, app: &App, r: &Room, area: Rect) {
    let cols = area.width as usize;
    let height = area.height as usize;
    let me = app.me.as_deref().unwrap_or_default();
    let visible = visible_rows(r, me, cols, height, app.scroll);
    let scroll = visible.1;
    let visible = visible.0;
    let pad = height.saturating_sub(visible.len());
    let mut lines: Vec<Line> = vec![Line::default(); pad];
    lines.extend(visible);
    f.render_widget(Paragraph::new(lines), area);
    if scroll > 0 && area.height > 0 {
        let note = " ↓ new messages below (PgDn) ";
        let w = (width(note) as u16).min(area.width);
        let at = Rect::new(area.x + area.width - w, area.y + area.height - 1, w, 1);
        f.render_widget(
            Paragraph::new(note).style(Style::default().fg(Color::Black).bg(Color::Yellow)),
            at,
        );
    }
}

fn draw_members(f: &mut Frame, app: &App, area: Rect) {
    let Some(r) = app.focus.as_ref().and_then(|f| app.rooms.get(f)) else {
        f.render_widget(Block::bordered().title("members"), area);
        return;
    };
    let mut lines = Vec::new();
    for (status, title, style) in [
        (Status::Online, "online", Style::default().fg(Color::Green)),
        (Status::Away, "away", Style::default().fg(Color::Yellow)),
        (
            Status::Offline,
            "offline",
            Style::default().fg(Color::DarkGray),
        ),
    ] {
        let names: Vec<&String> = r
            .members
            .iter()
            .filter(|(_, s)| **s == status)
            .map(|(u, _)| u)
            .collect();
        if names.is_empty() {
            continue;
        }
        lines.push(Line::styled(
            format!("{title} ({})", names.len()),
            style.add_modifier(Modifier::BOLD),
        ));
        for n in names {
            let s = if status == Status::Offline {
                style
            } else {
                Style::default().fg(nick_color(n))
            };
            lines.push(Line::styled(
                format!(" {}", cut(n, area.width as usize - 3)),
                s,
            ));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("members")),
        area,
    );
}

fn draw_input(f: &mut Frame, app: &App, area: Rect) {
    // A terminal too small to leave the input a row: nothing to draw, no cursor to place.
    if area.height == 0 || area.width == 0 {
        return;
    }
    let text = app.editor.text();
    let lines: Vec<&str> = text.split('\n').collect();
    let before = &text[..app.editor.cursor()];
    let cur_line = before.matches('\n').count();
    let cur_col = width(before.rsplit('\n').next().unwrap_or_default());
    let first = (cur_line + 1).saturating_sub(area.height as usize);
    let shown: Vec<Line> = lines
        .iter()
        .enumerate()
        .skip(first)
        .take(area.height as usize)
        .map(|(i, l)| Line::from(format!("{}{l}", if i == 0 { "> " } else { "  " })))
        .collect();
    // Long lines scroll horizontally so the cursor stays visible.
    let x_off = (cur_col + 2).saturating_sub(area.width.saturating_sub(1) as usize) as u16;
    f.render_widget(Paragraph::new(shown).scroll((0, x_off)), area);
    if !app.show_help {
        let x = area.x
            + (cur_col as u16 + 2)
                .saturating_sub(x_off)
                .min(area.width.saturating_sub(1));
        let y = area.y + (cur_line - first) as u16;
        f.set_cursor_position((x, y));
    }
}

/// The connection state in words: "connected", "reconnecting in 3.2 s (attempt 4)", ...
pub fn conn_text(conn: &Conn, now: Instant) -> String {
    match conn {
        Conn::Connected => "connected".into(),
        Conn::Connecting { attempt: 0 } => "connecting…".into(),
        Conn::Connecting { attempt } => format!("connecting… (attempt {})", attempt + 1),
        Conn::Reconnecting { at, attempt, why } => {
            let secs = at.saturating_duration_since(now).as_secs_f32();
            format!("reconnecting in {secs:.1} s (attempt {attempt}: {why})")
        }
        Conn::Offline { reason } => format!("offline: {reason} (/reconnect)"),
    }
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let conn = conn_text(&app.conn, Instant::now());
    let conn_style = match app.conn {
        Conn::Connected => Style::default().fg(Color::Green),
        Conn::Offline { .. } => Style::default().fg(Color::Red),
        _ => Style::default().fg(Color::Yellow),
    };
    let mut spans = vec![
        Span::raw(format!(" {} ", app.server)),
        Span::raw(format!("│ {} │ ", app.me.as_deref().unwrap_or("?"))),
        Span::styled(conn, conn_style),
    ];
    if let (Some(rtt), Conn::Connected) = (app.rtt, &app.conn) {
        spans.push(Span::raw(format!(" │ {} ms", rtt.as_millis())));
    }
    spans.push(Span::raw(" │ F1 help").dark_gray());
    f.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::default().bg(Color::Black)),
        area,
    );
}

/// Every key the client knows, for the help overlay and README.md.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the line (or run the /command)"),
    ("Alt+Enter, Shift+Enter, Ctrl+J", "new line in the message"),
    (
        "Tab",
        "complete a command, #room or nick (again: next match)",
    ),
    ("Ctrl+N / Ctrl+P, Alt+↓ / Alt+↑", "next / previous room"),
    ("Alt+1 … Alt+9", "go to room 1 … 9"),
    ("Alt+U", "jump to the first unread message"),
    ("PgUp / PgDn, mouse wheel", "scroll the messages"),
    ("F2", "show or hide the members"),
    ("F1", "this help (Esc closes it)"),
    ("← → Home End, Ctrl+A / Ctrl+E", "move in the line"),
    ("Ctrl+← / Ctrl+→, Alt+B / Alt+F", "move by word"),
    ("Ctrl+W, Alt+Backspace", "delete the previous word"),
    ("Ctrl+U", "clear the line"),
    ("↑ / ↓", "previous / next line sent in this room"),
    ("Ctrl+C", "quit"),
];

fn draw_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(76);
    let h = area.height.min((KEYS.len() + COMMANDS.len() + 5) as u16);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let mut lines = vec![Line::from("Keys").bold()];
    for (k, what) in KEYS {
        lines.push(Line::from(vec![
            Span::raw(format!(" {k:<32}")).cyan(),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::from("Commands").bold());
    for (c, args, what) in COMMANDS {
        lines.push(Line::from(vec![
            Span::raw(format!(" {:<32}", format!("{c} {args}"))).cyan(),
            Span::raw(*what),
        ]));
    }
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("help (Esc closes)")),
        popup,
    );
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
