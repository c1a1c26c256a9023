//! The model and `update(event) -> commands`: everything the client knows and decides, with no
//! I/O. Network frames enter here (and are sanitized here, once); keys become intents; what must
//! happen outside (send a frame, ring the bell, quit) comes back as [`Command`]s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_proto::{CatchUp, ClientFrame, ErrorCode, HistoryMessage, Ref, ServerFrame, Status};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use crate::commands::{self, COMMANDS, Slash};
use crate::editor::Editor;
use crate::room::{Message, Room};
use crate::sanitize;

/// The connection as the user sees it in the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting {
        attempt: u32,
    },
    Connected,
    /// Waiting to try again.
    Reconnecting {
        at: Instant,
        attempt: u32,
        /// Why the last connection ended, for the status bar.
        why: String,
    },
    /// Given up (the server ended the session on purpose).
    Offline {
        reason: String,
    },
}

/// What the network task reports.
#[derive(Debug, Clone)]
pub enum Net {
    Conn(Conn),
    /// The server the next connection goes to (its URL, and its place in the list).
    Server(String),
    /// Authenticated as this user on a fresh connection.
    Ready {
        user: String,
    },
    Frame(Box<chat_proto::Envelope<ServerFrame>>),
    Rtt(Duration),
}

#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    Paste(String),
    Mouse(MouseEvent),
    Resize,
    Net(Net),
    Tick(Instant),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Send(ClientFrame, Option<Ref>),
    Bell,
    Reconnect,
    Quit,
    /// Read positions changed: persist them.
    SaveReadMarks,
}

/// Settings the model needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bell: bool,
    pub server: String,
}

/// Lines scrolled per PgUp/PgDn and wheel step.
const PAGE: usize = 10;
const WHEEL: usize = 3;
/// A typing indicator is refreshed this often while the user keeps typing.
const TYPING_REFRESH: Duration = Duration::from_secs(3);

pub struct App {
    pub settings: Settings,
    /// The server in use or being tried, for the status bar: with several URLs it changes
    /// when the connection moves to another.
    pub server: String,
    pub me: Option<String>,
    pub conn: Conn,
    pub rtt: Option<Duration>,
    pub rooms: BTreeMap<String, Room>,
    pub focus: Option<String>,
    pub editor: Editor,
    /// Per-room input history lives in the editor of each room; this is the active one's.
    pub editors: BTreeMap<String, Editor>,
    pub show_members: bool,
    pub show_help: bool,
    /// The last notice or error, shown above the input.
    pub notice: Option<String>,
    /// Rows scrolled up from the bottom of the focused room (0: following new messages).
    pub scroll: usize,
    /// The message area's size (columns, rows) at the last draw, for exact scrolling.
    pub viewport: (usize, usize),
    id_prefix: String,
    next_id: u64,
    typing_sent: Option<(String, Instant)>,
    completion: Option<(usize, Vec<String>, usize)>,
    /// Read positions restored from disk, applied when a room first appears.
    saved_read: BTreeMap<String, u64>,
}

/// The `history` request for the next missing range of `r`, if seqs are missing; marks the
/// fetch as under way so a second jump does not ask again.
fn fill_gap(r: &mut Room) -> Option<Command> {
    let fetch = r.gap()?;
    r.fetching = true;
    let frame = ClientFrame::History {
        room: r.name.clone(),
        before_seq: Some(fetch.before),
        limit: Some(u64::from(fetch.limit)),
    };
    r.fetch = Some(fetch);
    Some(Command::Send(frame, None))
}

fn message_from(h: HistoryMessage) -> Message {
    let (action, body) = match h.body.strip_prefix("/me ") {
        Some(rest) => (true, rest),
        None => (false, h.body.as_str()),
    };
    Message {
        seq: h.seq,
        id: h.id,
        from: sanitize::name(&h.from, sanitize::MAX_NAME_GRAPHEMES),
        lines: sanitize::body(body, sanitize::MAX_BODY_LINES, sanitize::MAX_LINE_GRAPHEMES),
        ts: h.ts,
        action,
    }
}

impl App {
    /// `id_prefix` makes message ids unique across runs (random per process in main).
    pub fn new(settings: Settings, id_prefix: String, saved_read: BTreeMap<String, u64>) -> Self {
        Self {
            server: settings.server.clone(),
            settings,
            me: None,
            conn: Conn::Connecting { attempt: 0 },
            rtt: None,
            rooms: BTreeMap::new(),
            focus: None,
            editor: Editor::default(),
            editors: BTreeMap::new(),
            show_members: true,
            show_help: false,
            notice: None,
            scroll: 0,
            viewport: (80, 20),
            id_prefix,
            next_id: 0,
            typing_sent: None,
            completion: None,
            saved_read,
        }
    }

    pub fn read_marks(&self) -> BTreeMap<String, u64> {
        let mut marks = self.saved_read.clone();
        for (name, r) in &self.rooms {
            marks.insert(name.clone(), r.last_read);
        }
        marks
    }

    fn room(&mut self, name: &str) -> &mut Room {
        let saved = self.saved_read.get(name).copied();
        self.rooms.entry(name.to_owned()).or_insert_with(|| {
            let mut r = Room::new(name);
            r.last_read = saved.unwrap_or(0);
            r
        })
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.notice = Some(text.into());
    }

    /// Switches the focused room, swapping in its editor and reading it.
    pub fn focus_room(&mut self, name: &str) -> Vec<Command> {
        if self.focus.as_deref() == Some(name) {
            return vec![];
        }
        if let Some(old) = self.focus.take() {
            let ed = std::mem::take(&mut self.editor);
            self.editors.insert(old, ed);
        }
        self.editor = self.editors.remove(name).unwrap_or_default();
        self.focus = Some(name.to_owned());
        self.scroll = 0;
        self.room(name).mark_read();
        vec![Command::SaveReadMarks]
    }

    fn cycle_room(&mut self, forward: bool) -> Vec<Command> {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        if names.is_empty() {
            return vec![];
        }
        let i = self
            .focus
            .as_ref()
            .and_then(|f| names.iter().position(|n| n == f))
            .unwrap_or(0);
        let next = if forward {
            (i + 1) % names.len()
        } else {
            (i + names.len() - 1) % names.len()
        };
        self.focus_room(&names[next].clone())
    }

    pub fn update(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Key(k) if k.kind == KeyEventKind::Press => self.key(k),
            Event::Key(_) | Event::Resize => vec![],
            Event::Paste(text) => {
                // Pasted text is the user's own, but it can still hold escapes: keep it printable.
                let clean = sanitize::body(
                    &text,
                    sanitize::MAX_BODY_LINES,
                    sanitize::MAX_LINE_GRAPHEMES,
                )
                .join("\n");
                self.editor.insert(&clean);
                self.typing_activity(Instant::now())
            }
            Event::Mouse(m) => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll += WHEEL,
                    MouseEventKind::ScrollDown => self.scroll = self.scroll.saturating_sub(WHEEL),
                    _ => {}
                }
                vec![]
            }
            Event::Tick(now) => {
                for r in self.rooms.values_mut() {
                    r.expire_typing(now);
                }
                vec![]
            }
            Event::Net(net) => self.net(net),
        }
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Command> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        let shift = k.modifiers.contains(KeyModifiers::SHIFT);
        if !matches!(k.code, KeyCode::Tab) {
            self.completion = None;
        }
        if self.show_help {
            if matches!(k.code, KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q')) {
                self.show_help = false;
            }
            return vec![];
        }
        match k.code {
            KeyCode::Char('c') if ctrl => return vec![Command::Quit],
            KeyCode::Char('n') if ctrl => return self.cycle_room(true),
            KeyCode::Char('p') if ctrl => return self.cycle_room(false),
            KeyCode::Down if alt => return self.cycle_room(true),
            KeyCode::Up if alt => return self.cycle_room(false),
            KeyCode::Char(d @ '1'..='9') if alt => {
                let i = d as usize - '1' as usize;
                if let Some(name) = self.rooms.keys().nth(i).cloned() {
                    return self.focus_room(&name);
                }
                return vec![];
            }
            KeyCode::Char('u') if alt => {
                self.jump_to_unread();
                return vec![];
            }
            KeyCode::F(1) => self.show_help = true,
            KeyCode::F(2) => self.show_members = !self.show_members,
            KeyCode::PageUp => self.scroll += PAGE,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(PAGE),
            KeyCode::Enter if alt || shift => {
                self.editor.insert("\n");
            }
            KeyCode::Char('j') if ctrl => {
                self.editor.insert("\n");
            }
            KeyCode::Enter => return self.submit(),
            KeyCode::Tab => self.complete(),
            KeyCode::Left if ctrl => self.editor.word_left(),
            KeyCode::Right if ctrl => self.editor.word_right(),
            KeyCode::Char('b') if alt => self.editor.word_left(),
            KeyCode::Char('f') if alt => self.editor.word_right(),
            KeyCode::Left => self.editor.left(),
            KeyCode::Right => self.editor.right(),
            KeyCode::Home => self.editor.home(),
            KeyCode::End => self.editor.end(),
            KeyCode::Char('a') if ctrl => self.editor.home(),
            KeyCode::Char('e') if ctrl => self.editor.end(),
            KeyCode::Char('w') if ctrl => self.editor.delete_word(),
            KeyCode::Backspace if alt || ctrl => self.editor.delete_word(),
            KeyCode::Char('u') if ctrl => self.editor.clear(),
            KeyCode::Backspace => self.editor.backspace(),
            KeyCode::Delete => self.editor.delete(),
            KeyCode::Up => self.editor.history_up(),
            KeyCode::Down => self.editor.history_down(),
            KeyCode::Char(c) if !ctrl && !alt => {
                let mut buf = [0u8; 4];
                self.editor.insert(c.encode_utf8(&mut buf));
                return self.typing_activity(Instant::now());
            }
            _ => {}
        }
        vec![]
    }

    /// Scrolls so the first message after the read position (the "new since you last read"
    /// line) is at the top of the screen.
    fn jump_to_unread(&mut self) {
        let Some(focus) = self.focus.clone() else {
            return;
        };
        let room = &self.rooms[&focus];
        let target = room
            .marker
            .map(|m| m + 1)
            .filter(|s| room.messages.range(s..).next().is_some())
            .or_else(|| room.first_unread());
        match target.and_then(|s| room.messages.range(s..).next().map(|(k, _)| *k)) {
            Some(seq) => {
                let me = self.me.clone().unwrap_or_default();
                let (cols, rows) = self.viewport;
                // The rows counted include the unread line drawn above that message.
                self.scroll = crate::view::scroll_to(room, &me, seq, cols, rows);
            }
            None => self.notice("no unread messages here"),
        }
    }

    /// Sends `typing` while the user types in a room, refreshed every few seconds.
    fn typing_activity(&mut self, now: Instant) -> Vec<Command> {
        let Some(room) = self.focus.clone() else {
            return vec![];
        };
        if self.editor.text().starts_with('/') || self.conn != Conn::Connected {
            return vec![];
        }
        let fresh = match &self.typing_sent {
            Some((r, at)) => r != &room || now.duration_since(*at) >= TYPING_REFRESH,
            None => true,
        };
        if !fresh {
            return vec![];
        }
        self.typing_sent = Some((room.clone(), now));
        vec![Command::Send(
            ClientFrame::Typing { room, active: true },
            None,
        )]
    }

    fn complete(&mut self) {
        // Tab again (no other key between): the next candidate, in place of the last one.
        if let Some((start, cands, i)) = &mut self.completion
            && !cands.is_empty()
        {
            *i = (*i + 1) % cands.len();
            let (start, pick) = (*start, cands[*i].clone());
            self.editor.replace_word(start, &pick);
            return;
        }
        let (start, word) = self.editor.word_at_cursor();
        let word = word.to_owned();
        let first_word = start == 0;
        let mut cands: Vec<String> = if first_word && word.starts_with('/') {
            COMMANDS
                .iter()
                .map(|(c, _, _)| format!("{c} "))
                .filter(|c| c.starts_with(&word))
                .collect()
        } else if let Some(prefix) = word.strip_prefix('#') {
            self.rooms
                .keys()
                .filter(|r| r.starts_with(prefix))
                .map(|r| format!("{r} "))
                .collect()
        } else {
            let joining = self.editor.text().starts_with("/join ")
                || self.editor.text().starts_with("/part ");
            let (at, prefix) = match word.strip_prefix('@') {
                Some(p) => ("@", p),
                None => ("", word.as_str()),
            };
            let mut c: Vec<String> = if joining {
                self.rooms
                    .keys()
                    .filter(|r| r.starts_with(prefix))
                    .map(|r| format!("{r} "))
                    .collect()
            } else {
                let members = self
                    .focus
                    .as_ref()
                    .and_then(|f| self.rooms.get(f))
                    .map(|r| r.members.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                let suffix = if first_word && at.is_empty() {
                    ": "
                } else {
                    " "
                };
                members
                    .into_iter()
                    .filter(|m| m.starts_with(prefix))
                    .map(|m| format!("{at}{m}{suffix}"))
                    .collect()
            };
            c.sort();
            c
        };
        cands.dedup();
        if let Some(first) = cands.first().cloned() {
            self.editor.replace_word(start, &first);
            self.completion = Some((start, cands, 0));
        }
    }

    fn submit(&mut self) -> Vec<Command> {
        let text = self.editor.take();
        if text.trim().is_empty() {
            return vec![];
        }
        self.typing_sent = None;
        self.scroll = 0;
        if text.starts_with('/') && !text.starts_with("//") {
            return match commands::parse(&text) {
                Ok(slash) => self.slash(slash),
                Err(e) => {
                    self.notice(e);
                    vec![]
                }
            };
        }
        // `//text` sends a line that starts with a slash.
        let body = text
            .strip_prefix('/')
            .filter(|_| text.starts_with("//"))
            .unwrap_or(&text)
            .to_owned();
        self.send_body(body)
    }

    fn send_body(&mut self, body: String) -> Vec<Command> {
        let Some(room) = self.focus.clone() else {
            self.notice("join a room first: /join ROOM");
            return vec![];
        };
        if let Err(why) = chat_proto::limits::check_body(&body) {
            self.notice(why);
            return vec![];
        }
        let id = self.new_id();
        let live = self.conn == Conn::Connected && self.room(&room).live;
        self.room(&room).queue(id.clone(), body.clone());
        if live {
            vec![Command::Send(
                ClientFrame::Send {
                    room,
                    id: id.clone(),
                    body,
                    reply_to: None,
                },
                Some(Ref::Str(id)),
            )]
        } else {
            // Shown as pending; sent with this id once the room is joined again.
            vec![]
        }
    }

    fn slash(&mut self, s: Slash) -> Vec<Command> {
        let focus = self.focus.clone();
        let send = |f: ClientFrame| vec![Command::Send(f, None)];
        match s {
            Slash::Join(room) => {
                self.room(&room);
                let mut out = self.focus_room(&room);
                out.extend(send(ClientFrame::Join {
                    room,
                    since_seq: None,
                    epoch: None,
                }));
                out
            }
            Slash::Part(room) => match room.or(focus) {
                Some(room) => send(ClientFrame::Leave { room }),
                None => {
                    self.notice("no room to leave");
                    vec![]
                }
            },
            Slash::Create { room, private } => {
                let visibility = if private {
                    chat_proto::Visibility::Private
                } else {
                    chat_proto::Visibility::Public
                };
                let mut out = send(ClientFrame::CreateRoom {
                    room: room.clone(),
                    visibility,
                    topic: None,
                });
                self.room(&room);
                out.extend(self.focus_room(&room));
                out.extend(send(ClientFrame::Join {
                    room,
                    since_seq: None,
                    epoch: None,
                }));
                out
            }
            Slash::Invite(user) => match focus {
                Some(room) => send(ClientFrame::Invite { room, user }),
                None => {
                    self.notice("invite into which room? switch to it first");
                    vec![]
                }
            },
            Slash::Msg { user, text } => {
                let me = self.me.clone().unwrap_or_default();
                let room = chat_proto::limits::dm_room_name(&me, &user);
                let mut out = send(ClientFrame::OpenDm { user });
                self.room(&room);
                out.extend(self.focus_room(&room));
                out.extend(send(ClientFrame::Join {
                    room,
                    since_seq: None,
                    epoch: None,
                }));
                if let Some(text) = text {
                    out.extend(self.send_body(text));
                }
                out
            }
            Slash::Me(action) => self.send_body(format!("/me {action}")),
            Slash::Topic(topic) => match focus {
                Some(room) => send(ClientFrame::SetTopic { room, topic }),
                None => vec![],
            },
            Slash::Away => send(ClientFrame::SetStatus {
                status: Status::Away,
            }),
            Slash::Back => send(ClientFrame::SetStatus {
                status: Status::Online,
            }),
            Slash::Who => {
                let who = focus
                    .and_then(|f| self.rooms.get(&f))
                    .map(|r| {
                        r.members
                            .iter()
                            .map(|(u, s)| format!("{u} ({s:?})").to_lowercase())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                self.notice(if who.is_empty() {
                    "nobody here".to_owned()
                } else {
                    who
                });
                vec![]
            }
            Slash::Reconnect => vec![Command::Reconnect],
            Slash::Quit => vec![Command::Quit],
            Slash::Help => {
                self.show_help = true;
                vec![]
            }
        }
    }

    fn net(&mut self, net: Net) -> Vec<Command> {
        match net {
            Net::Conn(c) => {
                if c != Conn::Connected {
                    for r in self.rooms.values_mut() {
                        r.live = false;
                        r.typing.clear();
                    }
                }
                self.conn = c;
                vec![]
            }
            Net::Server(label) => {
                self.server = label;
                vec![]
            }
            Net::Rtt(d) => {
                self.rtt = Some(d);
                vec![]
            }
            Net::Ready { user } => {
                self.me = Some(sanitize::name(&user, sanitize::MAX_NAME_GRAPHEMES));
                self.conn = Conn::Connected;
                // Rejoin every room we hold, from where we are; list_rooms finds the others.
                let mut out = vec![Command::Send(
                    ClientFrame::ListRooms {
                        after: None,
                        limit: None,
                    },
                    None,
                )];
                for r in self.rooms.values() {
                    let (since_seq, epoch) = match r.since() {
                        Some((s, e)) => (Some(s), Some(e)),
                        None => (None, None),
                    };
                    out.push(Command::Send(
                        ClientFrame::Join {
                            room: r.name.clone(),
                            since_seq,
                            epoch,
                        },
                        None,
                    ));
                }
                out
            }
            Net::Frame(env) => self.frame(env.frame, env.reference),
        }
    }

    fn frame(&mut self, frame: ServerFrame, reference: Option<Ref>) -> Vec<Command> {
        let me = self.me.clone().unwrap_or_default();
        let now = Instant::now();
        match frame {
            ServerFrame::RoomList { rooms, next } => {
                // The list comes in pages: ask for the next one first.
                let mut out = match next {
                    Some(after) => vec![Command::Send(
                        ClientFrame::ListRooms {
                            after: Some(after),
                            limit: None,
                        },
                        None,
                    )],
                    None => vec![],
                };
                for info in rooms.into_iter().filter(|r| r.joined) {
                    if !self.rooms.contains_key(&info.room) {
                        self.room(&info.room).topic = sanitize::one_line(&info.topic, 200);
                        out.push(Command::Send(
                            ClientFrame::Join {
                                room: info.room,
                                since_seq: None,
                                epoch: None,
                            },
                            None,
                        ));
                    }
                }
                if self.focus.is_none()
                    && let Some(first) = self.rooms.keys().next().cloned()
                {
                    out.extend(self.focus_room(&first));
                }
                out
            }
            ServerFrame::Joined {
                room,
                epoch,
                latest_seq,
                topic,
                members,
                catch_up,
                messages,
                complete,
                ..
            } => {
                let focused = self.focus.as_deref() == Some(room.as_str());
                let r = self.room(&room);
                r.topic = sanitize::one_line(&topic, 200);
                r.members = members
                    .into_iter()
                    .map(|m| {
                        (
                            sanitize::name(&m.user, sanitize::MAX_NAME_GRAPHEMES),
                            m.status,
                        )
                    })
                    .collect();
                let msgs: Vec<Message> = messages.into_iter().map(message_from).collect();
                for m in &msgs {
                    r.count_unread(m, &me, focused);
                }
                r.snapshot(&epoch, catch_up == CatchUp::Reload, msgs, latest_seq);
                r.live = complete;
                r.joined_latest = latest_seq;
                let mut out = vec![];
                if complete {
                    r.caught_up(latest_seq);
                    out.extend(self.after_caught_up(&room));
                }
                if self.focus.is_none() {
                    out.extend(self.focus_room(&room));
                }
                out
            }
            ServerFrame::Replay {
                room,
                messages,
                complete,
                ..
            } => {
                let focused = self.focus.as_deref() == Some(room.as_str());
                let r = self.room(&room);
                for m in messages.into_iter().map(message_from) {
                    r.count_unread(&m, &me, focused);
                    r.insert(m);
                }
                r.live = complete;
                if complete {
                    let latest = r.joined_latest;
                    r.caught_up(latest);
                    self.after_caught_up(&room)
                } else {
                    vec![]
                }
            }
            ServerFrame::Message {
                room,
                seq,
                id,
                from,
                body,
                ts,
                ..
            } => {
                let focused = self.focus.as_deref() == Some(room.as_str());
                let m = message_from(HistoryMessage {
                    seq,
                    id,
                    from,
                    body,
                    ts,
                    reply_to: None,
                    edited: None,
                    deleted: false,
                    reactions: Vec::new(),
                });
                let from = m.from.clone();
                let dm = room.starts_with(chat_proto::limits::DM_PREFIX);
                let bell = self.settings.bell;
                let r = self.room(&room);
                r.set_typing(&from, false, now);
                let unread_before = r.mention;
                if !r.messages.contains_key(&m.seq) {
                    r.count_unread(&m, &me, focused);
                }
                if !r.insert(m) {
                    return vec![];
                }
                let mut out = vec![];
                let notable = (r.mention && !unread_before) || (dm && from != me);
                if !focused && notable && bell {
                    out.push(Command::Bell);
                }
                if focused {
                    out.push(Command::SaveReadMarks);
                }
                if !r.fetching {
                    out.extend(fill_gap(r));
                }
                out
            }
            ServerFrame::History {
                room,
                messages,
                has_more,
                ..
            } => {
                let r = self.room(&room);
                r.fetching = false;
                let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
                for m in messages.into_iter().map(message_from) {
                    r.insert(m);
                }
                if let Some(f) = r.fetch.take() {
                    r.gap_filled(&f, &seqs, has_more);
                }
                match fill_gap(r) {
                    Some(cmd) => vec![cmd],
                    None => vec![],
                }
            }
            ServerFrame::Ack { id, room, .. } => {
                self.room(&room).acked(&id);
                vec![]
            }
            ServerFrame::Presence { room, changes } => {
                let r = self.room(&room);
                for c in changes {
                    let user = sanitize::name(&c.user, sanitize::MAX_NAME_GRAPHEMES);
                    if c.status == Status::Offline {
                        r.typing.remove(&user);
                    }
                    r.members.insert(user, c.status);
                }
                vec![]
            }
            ServerFrame::MemberLeft { room, user } => {
                let r = self.room(&room);
                let user = sanitize::name(&user, sanitize::MAX_NAME_GRAPHEMES);
                r.members.remove(&user);
                r.typing.remove(&user);
                vec![]
            }
            ServerFrame::Typing { room, user, active } => {
                let user = sanitize::name(&user, sanitize::MAX_NAME_GRAPHEMES);
                if user != me {
                    self.room(&room).set_typing(&user, active, now);
                }
                vec![]
            }
            ServerFrame::Topic { room, topic, by } => {
                self.room(&room).topic = sanitize::one_line(&topic, 200);
                let by = sanitize::name(&by, sanitize::MAX_NAME_GRAPHEMES);
                self.notice(format!(
                    "{by} set the topic of {}",
                    sanitize::name(&room, 64)
                ));
                vec![]
            }
            ServerFrame::RoomDeleted { room } => {
                self.notice(format!(
                    "{} was deleted by its owner",
                    sanitize::name(&room, 64)
                ));
                self.frame(
                    ServerFrame::Left {
                        room,
                        removed: None,
                    },
                    None,
                )
            }
            ServerFrame::Left { room, .. } => {
                self.rooms.remove(&room);
                self.editors.remove(&room);
                if self.focus.as_deref() == Some(room.as_str()) {
                    self.focus = None;
                    if let Some(first) = self.rooms.keys().next().cloned() {
                        return self.focus_room(&first);
                    }
                }
                vec![]
            }
            ServerFrame::Invited { room, by } => {
                let by = sanitize::name(&by, sanitize::MAX_NAME_GRAPHEMES);
                if room.starts_with(chat_proto::limits::DM_PREFIX) {
                    // A direct message: join it so it shows in the room list.
                    let out = if self.rooms.contains_key(&room) {
                        vec![]
                    } else {
                        self.room(&room);
                        vec![Command::Send(
                            ClientFrame::Join {
                                room,
                                since_seq: None,
                                epoch: None,
                            },
                            None,
                        )]
                    };
                    self.notice(format!("{by} opened a direct conversation"));
                    return out;
                }
                self.notice(format!(
                    "{by} invited you to {}: /join {}",
                    sanitize::name(&room, 64),
                    sanitize::name(&room, 64)
                ));
                vec![]
            }
            ServerFrame::RoomCreated { .. }
            | ServerFrame::MemberList { .. }
            | ServerFrame::DmOpened { .. }
            | ServerFrame::Ok
            | ServerFrame::Pong { .. } => vec![],
            // Protocol 2 frames: this client speaks version 1, so the server sends none
            // (and it never asks for a session list).
            ServerFrame::Event { .. }
            | ServerFrame::Applied { .. }
            | ServerFrame::Read { .. }
            | ServerFrame::SessionList { .. }
            | ServerFrame::SearchResults { .. }
            | ServerFrame::BanList { .. } => {
                vec![]
            }
            ServerFrame::Welcome { .. } | ServerFrame::AuthOk { .. } => vec![],
            ServerFrame::Error {
                code,
                message,
                room,
                ..
            } => self.error(code, &message, room, reference),
        }
    }

    /// A room is caught up: pending messages typed offline go out now, with their ids.
    fn after_caught_up(&mut self, room: &str) -> Vec<Command> {
        let r = self.room(room);
        let mut out: Vec<Command> = r
            .to_resend()
            .map(|p| {
                Command::Send(
                    ClientFrame::Send {
                        room: room.to_owned(),
                        id: p.id.clone(),
                        body: p.body.clone(),
                        reply_to: None,
                    },
                    Some(Ref::Str(p.id.clone())),
                )
            })
            .collect();
        out.extend(fill_gap(r));
        out
    }

    fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        room: Option<String>,
        reference: Option<Ref>,
    ) -> Vec<Command> {
        let message = sanitize::one_line(message, 300);
        // A send's ref is its message id: that message failed.
        if let (Some(Ref::Str(id)), Some(room)) = (&reference, &room)
            && let Some(r) = self.rooms.get_mut(room)
            && r.pending.iter().any(|p| &p.id == id)
        {
            match code {
                // Not the message's fault: it stays queued and goes out on the next connection.
                ErrorCode::RateLimited
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::NotMember => {}
                _ => r.failed(id, &format!("{code}: {message}")),
            }
        }
        if matches!(code, ErrorCode::NoSuchRoom | ErrorCode::NotInvited)
            && let Some(room) = &room
            && self
                .rooms
                .get(room)
                .is_some_and(|r| r.messages.is_empty() && r.epoch.is_none())
        {
            self.rooms.remove(room);
            if self.focus.as_deref() == Some(room.as_str()) {
                self.focus = None;
                if let Some(first) = self.rooms.keys().next().cloned() {
                    self.focus_room(&first);
                }
            }
        }
        self.notice(format!("{code}: {message}"));
        vec![]
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
