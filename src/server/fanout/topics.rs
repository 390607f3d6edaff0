//! `GET /api/events?topic=<t>&topic=<t>…`: one event stream for several topics (at most
//! [`TOPICS_MAX`]), so a page holds one connection for all its live parts (docs/interface.md,
//! "One connection per page").
//!
//! The features say what a topic is: each registers a [`TopicKind`] (`room:<name>`,
//! `job:<id>`, `notifications`, `metrics`, `logs`) at start-up, which checks a topic's
//! argument (400 naming the topic), checks that the user may read it (403 naming it) and
//! subscribes, then hands back the same producer its own stream route runs. Here all the
//! producers run in the stream's one task, each writing to an [`sse::Sender`] for its topic.
//! That sender adds `"topic"` to each event's data (and the topic's own id, when the event
//! has one, as `"eventId"`: what the topic's own route would have sent as the SSE id), keeps
//! every event's name, and gives each the stream's [`Cursor`] as its SSE `id`, under one lock
//! with the queueing, so the order in the body is the cursor's. So the browser's own
//! `Last-Event-ID` resumes every topic at once, each with its own
//! gap rule (a `gap` event with the topic when some of it is no longer kept).
//!
//! The cursor is opaque, short and the same on every instance: base64url of a version byte,
//! then per topic that has a position, 2 bytes of the topic's FNV-1a hash and the position as
//! a LEB128 varint. A page of 32 rooms with ids below 2 million is under 220 characters; a
//! usual page (a room, the notifications, a job) about 20. It names topics by hash, not by
//! their place in the URL, so a page that adds or drops a topic can pass its last cursor
//! (`?lastEventId=`) and keep the positions of the topics it still follows; for a topic the
//! cursor does not cover, `?start=<id>:<topic>` says what the page already has of it. Two topics of
//! one stream whose hashes collide (rare: 16 bits) both resume from the lower position: a
//! few repeats, which clients drop by id, never a loss.
//!
//! Tests: the unit tests below (cursor round trips, collisions, malformed cursors);
//! `tests/it/connections.rs` over the real server.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
    Extension, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use futures::future::BoxFuture;

use crate::server::{
    access::identity::{CurrentUser, StreamUser},
    fanout::sse::{self, Event, SseOptions},
    ApiError, AppState,
};

/// Topics one stream follows at most.
pub const TOPICS_MAX: usize = 32;

/// A topic's producer: runs until its topic ends or the stream does.
pub type Producer = Box<dyn FnOnce(sse::Sender) -> BoxFuture<'static, ()> + Send>;

/// One kind of topic, as a feature serves it.
pub trait TopicKind: Send + Sync {
    /// What comes before the `:` (or the whole topic when it takes no argument).
    fn name(&self) -> &'static str;
    /// What is wrong with the argument (`None` for a topic without `:`), if anything.
    fn problem(&self, arg: Option<&str>) -> Option<String>;
    /// Checks that `user` may read the topic and subscribes; the producer then sends what
    /// came after `after` (`None`: the topic's fresh start, as without `Last-Event-ID`).
    fn open<'a>(
        &'a self,
        state: &'a AppState,
        user: &'a CurrentUser,
        arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>>;
}

/// The problem of a topic whose argument must be a positive id (`job:42`): `None` when it
/// is one, else the sentence naming the topic's form.
pub fn id_problem(arg: Option<&str>, topic: &str, what: &str) -> Option<String> {
    match arg.map(str::parse::<i64>) {
        Some(Ok(id)) if id > 0 => None,
        _ => Some(format!("`{topic}:` takes a {what} id, like `{topic}:42`.")),
    }
}

/// Every topic kind the features registered.
#[derive(Clone, Default)]
pub struct Topics {
    kinds: Arc<Vec<Arc<dyn TopicKind>>>,
}

impl Topics {
    pub fn new(kinds: Vec<Arc<dyn TopicKind>>) -> Self {
        Self {
            kinds: Arc::new(kinds),
        }
    }

    fn kind(&self, name: &str) -> Option<&Arc<dyn TopicKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }

    /// The sentence listing the topics there are.
    fn known(&self) -> String {
        let names: Vec<String> = self
            .kinds
            .iter()
            .map(|k| match k.problem(None) {
                Some(_) => format!("{}:…", k.name()),
                None => k.name().to_string(),
            })
            .collect();
        names.join(", ")
    }
}

/// `GET /api/events`.
pub fn router(topics: Topics) -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .layer(Extension(topics))
}

fn bad_topic(message: String) -> ApiError {
    ApiError::bad_request("invalid_topic", message)
}

async fn events(
    State(state): State<AppState>,
    Extension(kinds): Extension<Topics>,
    user: StreamUser,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut topics: Vec<String> = Vec::new();
    for (k, v) in &query {
        if k == "topic" && !topics.contains(v) {
            topics.push(v.clone());
        }
    }
    if topics.is_empty() {
        return Err(bad_topic(format!(
            "Name at least one `topic` ({}).",
            kinds.known()
        )));
    }
    if topics.len() > TOPICS_MAX {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!(
                "One stream follows at most {TOPICS_MAX} topics; this asks for {}.",
                topics.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(topics.len());
    for topic in &topics {
        let (name, arg) = match topic.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (topic.as_str(), None),
        };
        let Some(kind) = kinds.kind(name) else {
            return Err(bad_topic(format!(
                "{topic:?} is not a topic; topics are {}.",
                kinds.known()
            )));
        };
        if let Some(problem) = kind.problem(arg) {
            return Err(bad_topic(format!("{topic:?}: {problem}")));
        }
        parsed.push((kind.clone(), arg));
    }
    let cursor = match sse::last_event_text(&headers, &query)? {
        Some((_, text)) => Cursor::decode(text, &topics).map_err(|why| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("`Last-Event-ID` is not a cursor of this stream: {why}."),
            )
        })?,
        None => Cursor::new(topics.len()),
    };
    // `start=<id>:<topic>`: where a topic the cursor does not cover starts (what the page
    // already shows of it).
    let mut cursor = cursor;
    for (k, v) in &query {
        if k != "start" {
            continue;
        }
        let Some((id, topic)) = start_of(v) else {
            return Err(ApiError::bad_parameter(
                "start",
                format!("is `<id>:<topic>`, like `41:room:general`, not {v:?}."),
            ));
        };
        if let Some(i) = topics.iter().position(|t| t == topic) {
            if cursor.after(i).is_none() {
                cursor.set(i, id);
            }
        }
    }
    let mut producers = Vec::with_capacity(parsed.len());
    for (i, (kind, arg)) in parsed.iter().enumerate() {
        let opened = kind.open(&state, &user.0, *arg, cursor.after(i)).await;
        match opened {
            Ok(p) => producers.push(p),
            Err(e) if matches!(e.status(), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {
                return Err(ApiError::refused(
                    StatusCode::FORBIDDEN,
                    "forbidden_topic",
                    format!("You may not read {}: {}", topics[i], e.message()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let options = SseOptions {
        send_limit: Some(state.config.slow_client),
        ..SseOptions::for_stream(&state, &user.0, topics.clone())?
    };
    Ok(sse::stream(options, state.shutdown.clone(), move |tx| {
        merge(tx, topics, producers, cursor)
    }))
}

/// Runs every topic's producer in this one task, each writing straight to the body through
/// a sender that tags its events (no hop through another task). The body ends when every
/// producer has (a finished job, say), or when the client leaves.
async fn merge(tx: sse::Sender, topics: Vec<String>, producers: Vec<Producer>, cursor: Cursor) {
    let tagger: Arc<dyn sse::Tagger> = Arc::new(Merge {
        topics,
        cursor: std::sync::Mutex::new(cursor),
    });
    let running: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(i, produce)| produce(sse::Sender::for_topic(&tx, i as u8, tagger.clone())))
        .collect();
    drop(tx);
    futures::future::join_all(running).await;
}

/// The stream's topics and its cursor, shared by its topics' senders.
struct Merge {
    topics: Vec<String>,
    cursor: std::sync::Mutex<Cursor>,
}

impl sse::Tagger for Merge {
    fn tag(&self, index: u8, event: &Event, send: &mut dyn FnMut(bytes::Bytes)) {
        let i = usize::from(index);
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(position) = event.id_str().and_then(|id| id.parse::<i64>().ok()) {
            cursor.set(i, position);
        }
        let id = (!cursor.is_empty()).then(|| cursor.encode(&self.topics));
        send(
            event
                .clone()
                .with_topic(&self.topics[i])
                .with_id(id)
                .encode(),
        );
    }
}

/// A `start=<id>:<topic>` value: the id (0 or more) and the topic, or `None` when malformed.
pub fn start_of(value: &str) -> Option<(i64, &str)> {
    let (id, topic) = value.split_once(':')?;
    Some((id.parse::<i64>().ok().filter(|i| *i >= 0)?, topic))
}

/// Where a stream is in each of its topics (`None`: nothing with a position seen yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    positions: Vec<Option<i64>>,
}

const CURSOR_VERSION: u8 = 1;

/// 16 bits of the FNV-1a hash of a topic.
fn hash16(topic: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

impl Cursor {
    pub fn new(topics: usize) -> Self {
        Self {
            positions: vec![None; topics],
        }
    }

    pub fn after(&self, topic: usize) -> Option<i64> {
        self.positions.get(topic).copied().flatten()
    }

    pub fn set(&mut self, topic: usize, position: i64) {
        if let Some(p) = self.positions.get_mut(topic) {
            *p = Some(position);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.positions.iter().all(Option::is_none)
    }

    /// The cursor's text for a stream of `topics`.
    pub fn encode(&self, topics: &[String]) -> String {
        let mut out = Vec::with_capacity(1 + self.positions.len() * 5);
        out.push(CURSOR_VERSION);
        for (topic, position) in topics.iter().zip(&self.positions) {
            let Some(position) = position else { continue };
            out.extend_from_slice(&hash16(topic).to_be_bytes());
            let mut v = (*position).max(0) as u64;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Reads a cursor for a stream of `topics`: topics it does not name start fresh; a
    /// malformed one says why.
    pub fn decode(text: &str, topics: &[String]) -> Result<Self, &'static str> {
        if text.len() > 1024 {
            return Err("it is too long");
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "it is not base64url")?;
        let (&version, mut rest) = bytes.split_first().ok_or("it is empty")?;
        if version != CURSOR_VERSION {
            return Err("its version is unknown");
        }
        let mut cursor = Self::new(topics.len());
        let hashes: Vec<u16> = topics.iter().map(|t| hash16(t)).collect();
        while !rest.is_empty() {
            if rest.len() < 3 {
                return Err("it is cut short");
            }
            let hash = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            let mut value: u64 = 0;
            let mut shift = 0;
            loop {
                let (&byte, tail) = rest.split_first().ok_or("it is cut short")?;
                rest = tail;
                if shift > 56 {
                    return Err("a position is too large");
                }
                value |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let position = i64::try_from(value).map_err(|_| "a position is too large")?;
            for (i, h) in hashes.iter().enumerate() {
                if *h == hash {
                    // A collision: the lower position, so nothing is skipped.
                    let p = &mut cursor.positions[i];
                    *p = Some(p.map_or(position, |q| q.min(position)));
                }
            }
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cursor_round_trips_and_keeps_positions_when_topics_change() {
        let t = topics(&["room:general", "notifications", "job:7", "metrics"]);
        let mut c = Cursor::new(t.len());
        c.set(0, 1234);
        c.set(1, 0);
        c.set(2, 20);
        let text = c.encode(&t);
        assert!(text.len() < 24, "{text}");
        assert_eq!(Cursor::decode(&text, &t).unwrap(), c);
        // Another order, a topic dropped and one added: the kept topics keep their places.
        let other = topics(&["job:7", "room:ops", "room:general"]);
        let d = Cursor::decode(&text, &other).unwrap();
        assert_eq!(
            (d.after(0), d.after(1), d.after(2)),
            (Some(20), None, Some(1234))
        );
    }

    #[test]
    fn thirty_two_rooms_fit_in_a_short_cursor() {
        let t: Vec<String> = (0..32).map(|i| format!("room:team-{i}")).collect();
        let mut c = Cursor::new(32);
        for i in 0..32 {
            c.set(i, 1_999_999 - i as i64);
        }
        let text = c.encode(&t);
        assert!(text.len() <= 216, "{} characters", text.len());
        assert_eq!(Cursor::decode(&text, &t).unwrap(), c);
    }

    #[test]
    fn colliding_topics_both_resume_from_the_lower_position() {
        // Find two topics whose hashes collide.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..200_000)
            .find_map(|i| {
                let t = format!("room:r{i}");
                seen.insert(hash16(&t), t.clone()).map(|other| (other, t))
            })
            .unwrap();
        let t = vec![a, b];
        let mut c = Cursor::new(2);
        c.set(0, 50);
        c.set(1, 40);
        let d = Cursor::decode(&c.encode(&t), &t).unwrap();
        assert_eq!((d.after(0), d.after(1)), (Some(40), Some(40)));
    }

    #[test]
    fn malformed_cursors_say_why() {
        let t = topics(&["metrics"]);
        assert_eq!(Cursor::decode("!!", &t), Err("it is not base64url"));
        assert_eq!(Cursor::decode("", &t), Err("it is empty"));
        assert_eq!(Cursor::decode("Ag", &t), Err("its version is unknown"));
        let cut = URL_SAFE_NO_PAD.encode([1u8, 0, 1, 0x80]);
        assert_eq!(Cursor::decode(&cut, &t), Err("it is cut short"));
        let huge = URL_SAFE_NO_PAD.encode([
            1u8, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ]);
        assert_eq!(Cursor::decode(&huge, &t), Err("a position is too large"));
        // A number (a single topic's old Last-Event-ID) is not a cursor either.
        assert!(Cursor::decode("42", &t).is_err());
    }

    #[test]
    fn events_gain_their_topic() {
        let e = Event::new(r#"{"id":3,"text":"hi"}"#)
            .id(3)
            .with_topic("room:general")
            .with_id(None);
        let mut out = Vec::new();
        e.encode_into(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"topic\":\"room:general\",\"eventId\":\"3\",\"id\":3,\"text\":\"hi\"}\n\n"
        );
        let empty = Event::new("{}").with_topic("notifications");
        assert!(empty
            .encode()
            .starts_with(b"data: {\"topic\":\"notifications\"}\n"));
    }

    // Properties (proptest): a cursor read back for any list of topics (the same, reordered,
    // some dropped, some new) gives each topic what was written for it, colliding topics the
    // lower position; and any text at all is either a cursor or a reason, never a panic.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn names() -> impl Strategy<Value = Vec<String>> {
            prop::collection::hash_set("[a-z]{1,6}:[a-z0-9-]{0,10}", 1..33)
                .prop_map(|s| s.into_iter().collect())
        }

        proptest! {
            #![proptest_config(crate::properties::config(512))]

            #[test]
            fn a_cursor_reads_back_for_any_topics(
                written in names(),
                positions in prop::collection::vec(prop::option::of(prop_oneof![0i64..300, any::<i64>()]), 32),
                read in names(),
                keep in prop::collection::vec(any::<bool>(), 32),
            ) {
                let mut c = Cursor::new(written.len());
                for (i, p) in positions.iter().take(written.len()).enumerate() {
                    if let Some(p) = p {
                        c.set(i, *p);
                    }
                }
                let text = c.encode(&written);
                prop_assert!(text.len() <= 1024);
                // Read for some of the written topics and some new ones, in another order.
                let mut topics: Vec<String> = written.iter().zip(&keep).filter(|(_, k)| **k).map(|(t, _)| t.clone()).collect();
                topics.extend(read);
                topics.reverse();
                let d = Cursor::decode(&text, &topics).expect("its own text reads back");
                for (i, topic) in topics.iter().enumerate() {
                    // Each topic resumes from the lowest position written under its hash
                    // (negative positions are written as 0).
                    let want = written
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| hash16(w) == hash16(topic))
                        .filter_map(|(j, _)| c.after(j))
                        .map(|p| p.max(0))
                        .min();
                    prop_assert_eq!(d.after(i), want, "{}", topic);
                }
            }

            #[test]
            fn any_text_is_a_cursor_or_a_reason(text in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_-]{0,40}",
                prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
                prop::collection::vec(any::<u8>(), 0..40).prop_map(|mut b| { b.insert(0, CURSOR_VERSION); URL_SAFE_NO_PAD.encode(b) }),
            ]) {
                let topics = vec!["room:general".to_owned(), "metrics".to_owned()];
                if let Ok(c) = Cursor::decode(&text, &topics) {
                    prop_assert_eq!(c.positions.len(), 2);
                    prop_assert!(c.positions.iter().flatten().all(|p| *p >= 0));
                }
            }
        }
    }
}
