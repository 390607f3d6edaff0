//! `tidings chat`: a terminal chat over the WebSocket, with the same `protocol::chat` types as
//! the server and the browser.
//!
//! Signs in, joins a room, prints what arrives (messages, presence, gaps, notifications,
//! errors) and sends each line typed. `/join <room>` switches rooms, `/rooms` lists the rooms
//! with my unread counts, `/private <room>` makes a private room and joins it, `/add <user>`
//! and `/remove <user>` change the current private room's members (its owner only), `/quit`
//! (or end of input) leaves. `--rooms` prints the list and exits; `--private` makes `--room`
//! private first; `--add USER` adds members to it. When the connection drops it reconnects by itself with backoff and
//! rejoins with `lastMessageId`, so the room continues exactly after the last message shown.
//! Every line is sent with a `clientId` and kept until the server's `chat-ack`: after a
//! reconnect the unacknowledged ones are sent again with the same ids, so a line typed into a
//! dying connection is neither lost nor stored twice.
//! Text from others is printed with control characters replaced, so a message cannot drive
//! the terminal.
//!
//! Tests: `tests/it/chat_cli.rs` runs the real binary through a proxy that cuts its connection.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use reqwest::cookie::CookieStore;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

use super::{backoff, sign_in, Connection};
use crate::protocol::chat::{
    clock_of, room_name_problem, ClientMsg, CreateRoom, RoomList, ServerMsg, DEFAULT_ROOM,
};

/// How long the connection may stay silent before it is taken for dead.
const SILENCE_MAX: Duration = Duration::from_secs(60);

/// `tidings chat` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// The room to join.
    #[arg(long, default_value = DEFAULT_ROOM)]
    pub room: String,
    /// First wait before reconnecting, in milliseconds (doubles up to 30 s).
    #[arg(long, default_value_t = 500)]
    pub retry_ms: u64,
    /// Give up after this many failed connection attempts in a row (0: never).
    #[arg(long, default_value_t = 0)]
    pub max_retries: u32,
    /// Make `--room` a private room first (you become its owner; 409 if the name is taken).
    #[arg(long)]
    pub private: bool,
    /// Add this user to `--room`'s members first (you must own it); may be repeated.
    #[arg(long = "add", value_name = "USER")]
    pub add: Vec<String>,
    /// Print the rooms I can use, with my unread counts, and exit.
    #[arg(long)]
    pub rooms: bool,
}

/// The HTTP side of the room commands: the server's base URL and a signed-in client.
struct Rooms<'a> {
    http: &'a reqwest::Client,
    server: &'a str,
}

impl Rooms<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    /// The server's sentence for a refusal.
    async fn refusal(res: reqwest::Response) -> anyhow::Error {
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no reason given");
        anyhow::anyhow!("{status}: {message}")
    }

    /// `GET /api/rooms`, one line per room: name, private, unread.
    async fn list(&self) -> anyhow::Result<String> {
        let res = self.http.get(self.url("/api/rooms")).send().await?;
        if !res.status().is_success() {
            return Err(Self::refusal(res).await);
        }
        let list: RoomList = res.json().await?;
        Ok(rooms_text(&list))
    }

    /// `POST /api/rooms` as private.
    async fn create_private(&self, room: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .post(self.url("/api/rooms"))
            .json(&CreateRoom {
                name: room.to_string(),
                private: true,
            })
            .send()
            .await?;
        if !res.status().is_success() {
            return Err(Self::refusal(res).await);
        }
        Ok(())
    }

    /// `PUT` (add) or `DELETE` (remove) `/api/rooms/{room}/members/{user}`.
    async fn member(&self, room: &str, user: &str, add: bool) -> anyhow::Result<()> {
        let url = self.url(&format!("/api/rooms/{room}/members/{user}"));
        let req = if add {
            self.http.put(url)
        } else {
            self.http.delete(url)
        };
        let res = req.send().await?;
        if !res.status().is_success() {
            return Err(Self::refusal(res).await);
        }
        Ok(())
    }
}

/// The room list as the terminal shows it.
pub fn rooms_text(list: &RoomList) -> String {
    list.rooms
        .iter()
        .map(|r| {
            format!(
                "#{}{}  {} unread  (last message {})",
                printable(&r.name),
                if r.private { " [private]" } else { "" },
                r.unread,
                r.last_message_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces control characters (escape sequences included) so text prints as text.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// One line for a server message; `last` is the newest message id shown (updated).
fn line_for(msg: &ServerMsg, last: &mut i64, room: &mut String) -> Option<String> {
    match msg {
        ServerMsg::ChatJoined {
            room: r,
            members,
            history,
        } => {
            *room = r.clone();
            let mut out = vec![format!(
                "* joined #{r}; here now: {}",
                printable(&members.join(", "))
            )];
            for m in history {
                if m.id > *last {
                    *last = m.id;
                    out.push(format!(
                        "[{}] {}: {}",
                        clock_of(&m.timestamp),
                        printable(&m.display_name),
                        printable(&m.text)
                    ));
                }
            }
            Some(out.join("\n"))
        }
        // A message of the room just left, still in flight.
        ServerMsg::ChatMessage(m) if m.room != *room => None,
        ServerMsg::ChatMessage(m) if m.id > *last => {
            *last = m.id;
            Some(format!(
                "[{}] {}: {}",
                clock_of(&m.timestamp),
                printable(&m.display_name),
                printable(&m.text)
            ))
        }
        ServerMsg::ChatMessage(_) => None,
        ServerMsg::ChatPresence(p) => Some(format!("* {}", printable(&p.message))),
        ServerMsg::ChatGap(g) => Some(format!(
            "* messages {} to {} are no longer kept",
            g.after_id + 1,
            g.first_available_id - 1
        )),
        ServerMsg::ChatError { message, .. } => Some(format!("! {}", printable(message))),
        ServerMsg::Notification(n) => Some(format!(
            "[{}] {}",
            printable(&n.title),
            printable(&n.message)
        )),
        ServerMsg::ChatRemoved { room: r } => {
            Some(format!("* you were removed from #{}", printable(r)))
        }
        ServerMsg::ChatTyping { display_name, .. } => {
            Some(format!("* {} is typing…", printable(display_name)))
        }
        ServerMsg::ChatDelete { id, .. } => Some(format!("* message {id} was deleted")),
        ServerMsg::NotificationsGap(g) => Some(format!(
            "* notifications {} to {} are no longer kept",
            g.after_id + 1,
            g.first_available_id - 1
        )),
        ServerMsg::ChatRead { .. }
        | ServerMsg::ChatAck { .. }
        | ServerMsg::NotificationsRead { .. }
        | ServerMsg::RoomActivity { .. } => None,
    }
}

/// Lines sent but not yet acknowledged, oldest first: sent again after a reconnect.
#[derive(Default)]
struct Unacked {
    /// This run's prefix for client ids (random, so two runs never share one).
    prefix: String,
    next: u64,
    lines: Vec<(String, String, String)>,
}

/// Unacknowledged lines kept at most; past it, new lines are refused until some are acked.
const UNACKED_MAX: usize = 1000;

impl Unacked {
    fn new() -> Self {
        let mut bytes = [0u8; 6];
        let _ = getrandom::getrandom(&mut bytes);
        Self {
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            ..Self::default()
        }
    }

    /// The frame for a new line to `room`, kept until acknowledged; `None` when full.
    fn add(&mut self, room: &str, text: &str) -> Option<Message> {
        if self.lines.len() >= UNACKED_MAX {
            return None;
        }
        self.next += 1;
        let id = format!("{}-{}", self.prefix, self.next);
        self.lines
            .push((id.clone(), room.to_string(), text.to_string()));
        Some(frame(room, text, &id))
    }

    fn acked(&mut self, client_id: &str) {
        self.lines.retain(|(id, _, _)| id != client_id);
    }

    /// The frames to send again once `room` is joined.
    fn again(&self, room: &str) -> Vec<Message> {
        self.lines
            .iter()
            .filter(|(_, r, _)| r == room)
            .map(|(id, r, text)| frame(r, text, id))
            .collect()
    }
}

fn frame(room: &str, text: &str, client_id: &str) -> Message {
    let msg = ClientMsg::ChatMessage {
        text: text.to_string(),
        room: Some(room.to_string()),
        client_id: Some(client_id.to_string()),
    };
    Message::Text(serde_json::to_string(&msg).expect("serializable").into())
}

/// Why a connection ended.
enum Ended {
    /// The user left (`/quit` or end of input).
    Quit,
    /// The connection broke; reconnect.
    Dropped(String),
}

/// Runs the chat until the user quits; errors when it cannot connect at all.
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    if let Some(problem) = room_name_problem(&args.room) {
        anyhow::bail!("{problem}");
    }
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let server_url: reqwest::Url = args
        .conn
        .server
        .parse()
        .with_context(|| format!("{:?} is not a URL", args.conn.server))?;
    let ws_url = {
        let mut u = server_url.clone();
        let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
        u.set_scheme(scheme)
            .map_err(|_| anyhow::anyhow!("cannot make a WebSocket URL of {server_url}"))?;
        u.set_path("/ws");
        u.to_string()
    };

    // Typed lines, read on a plain thread so they survive reconnects (and so a read that
    // never returns cannot hold the runtime open at exit, as tokio's stdin would).
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<Option<String>>(64);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if lines_tx.blocking_send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = lines_tx.blocking_send(None);
    });

    let mut room = args.room.clone();
    let mut last = 0i64;
    let mut unacked = Unacked::new();
    let mut failures = 0u32;
    let mut signed_in = false;
    let rooms = Rooms {
        http: &http,
        server: &args.conn.server,
    };
    if args.rooms || args.private || !args.add.is_empty() {
        sign_in(
            &http,
            &args.conn.server,
            &args.conn.username,
            &args.conn.password,
        )
        .await?;
        signed_in = true;
        if args.private {
            rooms.create_private(&room).await?;
            eprintln!("* made #{room}, private, with you as its owner");
        }
        for user in &args.add {
            rooms.member(&room, user, true).await?;
            eprintln!("* added {user} to #{room}");
        }
        if args.rooms {
            println!("{}", rooms.list().await?);
            return Ok(());
        }
    }
    loop {
        if !signed_in {
            match sign_in(
                &http,
                &args.conn.server,
                &args.conn.username,
                &args.conn.password,
            )
            .await
            {
                Ok(_) => signed_in = true,
                Err(e) if failures == 0 && e.to_string().contains("(4") => return Err(e),
                Err(e) => eprintln!("! {e:#}"),
            }
        }
        let ended = if signed_in {
            session(
                &ws_url,
                &server_url,
                &jar,
                &rooms,
                &mut room,
                &mut last,
                &mut unacked,
                &mut lines,
                &mut failures,
            )
            .await
        } else {
            Ended::Dropped("not signed in".into())
        };
        match ended {
            Ended::Quit => return Ok(()),
            Ended::Dropped(why) => {
                failures += 1;
                if args.max_retries > 0 && failures > args.max_retries {
                    anyhow::bail!("gave up after {} attempts: {why}", failures);
                }
                if why.contains("401") {
                    signed_in = false;
                }
                let wait = backoff(
                    failures - 1,
                    Duration::from_millis(args.retry_ms),
                    Duration::from_secs(30),
                );
                eprintln!(
                    "* disconnected ({why}); reconnecting in {:.1} s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One connection: join (resuming after `last`), then print and send until it ends.
#[allow(clippy::too_many_arguments)]
async fn session(
    ws_url: &str,
    server_url: &reqwest::Url,
    jar: &reqwest::cookie::Jar,
    rooms: &Rooms<'_>,
    room: &mut String,
    last: &mut i64,
    unacked: &mut Unacked,
    lines: &mut tokio::sync::mpsc::Receiver<Option<String>>,
    failures: &mut u32,
) -> Ended {
    let mut request = match ws_url.into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Dropped(e.to_string()),
    };
    if let Some(cookie) = jar.cookies(server_url) {
        if let Ok(v) = HeaderValue::from_bytes(cookie.as_bytes()) {
            request.headers_mut().insert("cookie", v);
        }
    }
    let (socket, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(s) => s,
        Err(e) => return Ended::Dropped(e.to_string()),
    };
    let (mut tx, mut rx) = socket.split();
    let join = |room: &str, last: i64| {
        let msg = ClientMsg::ChatJoin {
            room: room.to_string(),
            last_message_id: (last > 0).then_some(last),
        };
        Message::Text(serde_json::to_string(&msg).expect("serializable").into())
    };
    // One room at a time here: a switch leaves the old one (its unsent lines wait for it).
    let leave = |room: &str| {
        let msg = ClientMsg::ChatLeave {
            room: Some(room.to_string()),
        };
        Message::Text(serde_json::to_string(&msg).expect("serializable").into())
    };
    if let Err(e) = tx.send(join(room, *last)).await {
        return Ended::Dropped(e.to_string());
    }
    loop {
        tokio::select! {
            // The server pings a quiet socket every 20 s: a minute of nothing is a dead link.
            frame = tokio::time::timeout(SILENCE_MAX, rx.next()) => match frame.unwrap_or_else(|_| {
                Some(Err(tokio_tungstenite::tungstenite::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "nothing heard from the server for a minute",
                ))))
            }) {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(t.as_str()) {
                    Ok(msg) => {
                        if let ServerMsg::ChatJoined { room: joined, .. } = &msg {
                            *failures = 0;
                            for again in unacked.again(joined) {
                                if let Err(e) = tx.send(again).await {
                                    return Ended::Dropped(e.to_string());
                                }
                            }
                        }
                        if let ServerMsg::ChatAck { client_id, .. } = &msg {
                            unacked.acked(client_id);
                        }
                        if let Some(line) = line_for(&msg, last, room) {
                            println!("{line}");
                        }
                    }
                    Err(_) => eprintln!("! the server sent a message this client does not know"),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "closed".into());
                    return Ended::Dropped(why);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Dropped(e.to_string()),
                None => return Ended::Dropped("the connection ended".into()),
            },
            line = lines.recv() => {
                let Some(Some(line)) = line else {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ended::Quit;
                };
                let line = line.trim();
                let frame = if line.is_empty() {
                    continue;
                } else if line == "/quit" {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ended::Quit;
                } else if line == "/rooms" {
                    match rooms.list().await {
                        Ok(text) => println!("{text}"),
                        Err(e) => eprintln!("! {e:#}"),
                    }
                    continue;
                } else if let Some(who) = line.strip_prefix("/add ").or_else(|| line.strip_prefix("/remove ")) {
                    let add = line.starts_with("/add ");
                    match rooms.member(room, who.trim(), add).await {
                        Ok(()) => eprintln!("* {} {} #{room}", who.trim(), if add { "added to" } else { "removed from" }),
                        Err(e) => eprintln!("! {e:#}"),
                    }
                    continue;
                } else if let Some(next) = line.strip_prefix("/private ") {
                    let next = next.trim();
                    if let Err(e) = rooms.create_private(next).await {
                        eprintln!("! {e:#}");
                        continue;
                    }
                    eprintln!("* made #{next}, private, with you as its owner");
                    if let Err(e) = tx.send(leave(room)).await {
                        return Ended::Dropped(e.to_string());
                    }
                    *room = next.to_string();
                    *last = 0;
                    join(room, 0)
                } else if let Some(next) = line.strip_prefix("/join ") {
                    let next = next.trim();
                    if let Some(problem) = room_name_problem(next) {
                        eprintln!("! {problem}");
                        continue;
                    }
                    if let Err(e) = tx.send(leave(room)).await {
                        return Ended::Dropped(e.to_string());
                    }
                    *room = next.to_string();
                    *last = 0;
                    join(room, 0)
                } else {
                    match unacked.add(room, line) {
                        Some(frame) => frame,
                        None => {
                            eprintln!("! {UNACKED_MAX} lines wait for the server; try again once they are sent");
                            continue;
                        }
                    }
                };
                if let Err(e) = tx.send(frame).await {
                    return Ended::Dropped(e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::chat::ChatMessage;

    #[test]
    fn the_room_list_shows_private_rooms_and_unread_counts() {
        let list: RoomList = serde_json::from_value(serde_json::json!({"rooms": [
            {"name": "club", "lastId": 5, "members": 0, "private": true, "owner": "ann",
             "lastMessageId": 5, "lastReadId": 2, "unread": 3},
            {"name": "general", "lastId": 1, "members": 2}
        ]}))
        .unwrap();
        assert_eq!(
            rooms_text(&list),
            "#club [private]  3 unread  (last message 5)\n#general  0 unread  (last message 0)"
        );
    }

    #[test]
    fn control_characters_cannot_drive_the_terminal() {
        assert_eq!(
            printable("hi \u{1b}[2Jthere\r\n"),
            "hi \u{FFFD}[2Jthere\u{FFFD}\u{FFFD}"
        );
        assert_eq!(printable("plain <b>text</b>"), "plain <b>text</b>");
    }

    #[test]
    fn messages_print_once_in_order() {
        let m = |id| {
            ServerMsg::ChatMessage(ChatMessage {
                id,
                room: "general".into(),
                display_name: "ann".into(),
                text: format!("n{id}"),
                timestamp: "2026-11-23T10:11:12.000Z".into(),
                deleted: false,
            })
        };
        let (mut last, mut room) = (0, "general".to_string());
        assert_eq!(
            line_for(&m(1), &mut last, &mut room).as_deref(),
            Some("[10:11:12] ann: n1")
        );
        assert_eq!(
            line_for(&m(1), &mut last, &mut room),
            None,
            "a repeat is skipped"
        );
        assert!(line_for(&m(2), &mut last, &mut room).is_some());
        assert_eq!(last, 2);
    }
}
