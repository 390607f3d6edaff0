//! Puts a topic's envelopes back in id order before an instance delivers them.
//!
//! With several instances, two writers take ids for one chat room in turn. Each instance
//! delivers its own messages at once and hears the others' a moment later through Redis, so
//! its sockets would often see id n+1 before n. Left to each socket, a thousand sockets would
//! each hold n+1, and each read the room back from storage if n were late. Here the instance
//! does it once for all of them: an [`Envelope::ordered`] envelope that comes before the one
//! after the last delivered is held until the missing one arrives, for at most the wait given
//! to [`Reorder::new`] (counted from when the first of them came). After that the held ones go
//! out anyway and each subscriber, seeing the
//! hole, reads it back from storage (stored ids stay the truth).
//!
//! Nothing is dropped: an envelope at or below the last delivered id (one that came after its
//! hole was given up on) is delivered too, and subscribers skip what they already have.
//! Memory is bounded: past [`HELD_MAX`] envelopes held for a topic they all go out, and topics
//! quiet for [`FORGET_AFTER`] are forgotten.
//!
//! Tests: `cargo test --features ssr server::fanout::reorder`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

use crate::server::fanout::bus::Envelope;

/// Envelopes held per topic at most; one more and the topic's hole is given up on at once.
pub const HELD_MAX: usize = 1024;
/// A topic with nothing held and nothing new for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One ordered topic's state.
#[derive(Debug)]
struct Line {
    /// The newest id delivered in order.
    last: i64,
    /// Envelopes beyond `last + 1`, waiting for the hole before them.
    held: BTreeMap<i64, Envelope>,
    /// Since when the current hole has been waited for.
    since: Option<Instant>,
    /// When an envelope last came.
    seen: Instant,
}

impl Line {
    /// Delivers what `held` has in order after `last`. What stays held keeps its `since`
    /// (that of the oldest held), so nothing waits longer than the wait in all.
    fn release(&mut self, deliver: &mut impl FnMut(Envelope)) {
        while let Some(e) = self.held.remove(&(self.last + 1)) {
            self.last = e.id;
            deliver(e);
        }
        if self.held.is_empty() {
            self.since = None;
        }
    }

    /// Gives up on the hole: delivers everything held, in order.
    fn flush(&mut self, deliver: &mut impl FnMut(Envelope)) {
        for (id, e) in std::mem::take(&mut self.held) {
            self.last = self.last.max(id);
            deliver(e);
        }
        self.since = None;
    }
}

/// Per-topic reordering; see the module docs.
#[derive(Debug)]
pub struct Reorder {
    wait: Duration,
    lines: Mutex<HashMap<String, Line>>,
    /// Told when a topic starts waiting for a hole (see [`Reorder::run`]).
    waiting: tokio::sync::Notify,
}

impl Reorder {
    /// Holds an early envelope for at most `wait`.
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            lines: Mutex::new(HashMap::new()),
            waiting: tokio::sync::Notify::new(),
        }
    }

    /// Hands `deliver` what may go out now that `e` came, in order (envelopes that are not
    /// [`Envelope::ordered`] at once, without the lock). For ordered ones `deliver` runs under
    /// this reorderer's lock, so two callers cannot interleave their deliveries.
    pub fn offer(&self, e: Envelope, now: Instant, mut deliver: impl FnMut(Envelope)) {
        if !e.ordered {
            return deliver(e);
        }
        let mut lines = self.lines.lock().expect("reorder lock");
        let line = match lines.get_mut(&e.topic) {
            Some(line) => line,
            // The first this instance hears of the topic: nothing to wait for.
            None => lines.entry(e.topic.clone()).or_insert(Line {
                last: e.id - 1,
                held: BTreeMap::new(),
                since: None,
                seen: now,
            }),
        };
        line.seen = now;
        if e.id > line.last + 1 {
            line.held.insert(e.id, e);
            if line.since.is_none() {
                line.since = Some(now);
                self.waiting.notify_one();
            }
            if line.held.len() > HELD_MAX {
                line.flush(&mut deliver);
            }
            return;
        }
        if e.id == line.last + 1 {
            line.last = e.id;
            deliver(e);
            line.release(&mut deliver);
        } else {
            // Late: its hole was given up on. Subscribers that read it back skip it.
            deliver(e);
        }
    }

    /// Delivers what has waited out the wait (each subscriber then reads its hole back), and
    /// forgets quiet topics. Returns when the next hole falls due, if any is held.
    pub fn expire(&self, now: Instant, mut deliver: impl FnMut(Envelope)) -> Option<Instant> {
        let mut lines = self.lines.lock().expect("reorder lock");
        let mut next: Option<Instant> = None;
        lines.retain(|_, line| {
            if let Some(since) = line.since {
                if now >= since + self.wait {
                    line.flush(&mut deliver);
                } else {
                    let due = since + self.wait;
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            !line.held.is_empty() || now.duration_since(line.seen) < FORGET_AFTER
        });
        next
    }

    /// Calls [`Reorder::expire`] whenever a hole falls due, until `stop`; `deliver` as there.
    pub async fn run(
        &self,
        stop: impl std::future::Future<Output = ()>,
        mut deliver: impl FnMut(Envelope),
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let next = self.expire(Instant::now(), &mut deliver);
            // Quiet topics are forgotten on the next pass after a minute at most.
            let wake = next.unwrap_or_else(|| Instant::now() + FORGET_AFTER);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.waiting.notified() => {}
            }
        }
    }

    /// Delivers everything held and forgets every topic (after the bus was cut off: what
    /// was missed is read back from storage, and each topic's tracking starts afresh).
    pub fn reset(&self, mut deliver: impl FnMut(Envelope)) {
        let mut lines = self.lines.lock().expect("reorder lock");
        for line in lines.values_mut() {
            line.flush(&mut deliver);
        }
        lines.clear();
    }

    /// Topics followed now.
    pub fn topic_count(&self) -> usize {
        self.lines.lock().expect("reorder lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, id: i64) -> Envelope {
        Envelope::new(topic, id, "chat-message", format!("{{\"id\":{id}}}")).in_order()
    }

    fn offer(r: &Reorder, e: Envelope, now: Instant) -> Vec<i64> {
        let mut out = Vec::new();
        r.offer(e, now, |e| out.push(e.id));
        out
    }

    #[test]
    fn early_envelopes_wait_for_the_one_before_them() {
        let r = Reorder::new(Duration::from_millis(250));
        let t = Instant::now();
        assert_eq!(
            offer(&r, msg("room:a", 5), t),
            [5],
            "the first one goes at once"
        );
        assert_eq!(offer(&r, msg("room:a", 7), t), Vec::<i64>::new());
        assert_eq!(offer(&r, msg("room:a", 8), t), Vec::<i64>::new());
        assert_eq!(offer(&r, msg("room:b", 1), t), [1], "topics are apart");
        assert_eq!(offer(&r, msg("room:a", 6), t), [6, 7, 8]);
        assert_eq!(offer(&r, msg("room:a", 9), t), [9]);
        let unordered = Envelope::new("room:a", 0, "presence", "{}".into());
        let mut out = Vec::new();
        r.offer(unordered, t, |e| out.push(e.kind));
        assert_eq!(
            out,
            ["presence"],
            "envelopes without ordered ids pass at once"
        );
    }

    #[test]
    fn a_hole_that_stays_is_given_up_on_after_the_wait_and_late_ones_still_go_out() {
        let wait = Duration::from_millis(250);
        let r = Reorder::new(wait);
        let t = Instant::now();
        offer(&r, msg("room:a", 1), t);
        assert!(offer(&r, msg("room:a", 3), t).is_empty());
        assert!(offer(&r, msg("room:a", 4), t + wait / 2).is_empty());
        let mut out = Vec::new();
        assert_eq!(r.expire(t + wait / 2, |e| out.push(e.id)), Some(t + wait));
        assert!(out.is_empty(), "not yet due");
        assert_eq!(r.expire(t + wait, |e| out.push(e.id)), None);
        assert_eq!(
            out,
            [3, 4],
            "given up on: delivered in order, the hole read back by each"
        );
        assert_eq!(
            offer(&r, msg("room:a", 2), t + wait),
            [2],
            "late, but not dropped"
        );
        assert_eq!(offer(&r, msg("room:a", 5), t + wait), [5]);
    }

    #[test]
    fn nothing_waits_longer_than_the_wait_even_behind_several_holes() {
        let wait = Duration::from_millis(250);
        let r = Reorder::new(wait);
        let t = Instant::now();
        offer(&r, msg("room:a", 1), t);
        assert!(offer(&r, msg("room:a", 3), t).is_empty());
        assert!(offer(&r, msg("room:a", 5), t).is_empty());
        assert_eq!(offer(&r, msg("room:a", 2), t + wait / 2), [2, 3]);
        let mut out = Vec::new();
        r.expire(t + wait, |e| out.push(e.id));
        assert_eq!(
            out,
            [5],
            "5 came at t: due at t + wait, not a wait after 3 went"
        );
    }

    #[test]
    fn held_envelopes_are_bounded_and_quiet_topics_forgotten() {
        let r = Reorder::new(Duration::from_secs(3600));
        let t = Instant::now();
        offer(&r, msg("room:a", 1), t);
        for id in 3..(3 + HELD_MAX as i64) {
            assert!(offer(&r, msg("room:a", id), t).is_empty());
        }
        let out = offer(&r, msg("room:a", 3 + HELD_MAX as i64), t);
        assert_eq!(out.len(), HELD_MAX + 1, "one too many: all of them go out");
        assert_eq!(out.first(), Some(&3));
        assert_eq!(offer(&r, msg("room:a", 4 + HELD_MAX as i64), t).len(), 1);
        assert_eq!(r.topic_count(), 1);
        r.expire(t + FORGET_AFTER, |_| {});
        assert_eq!(r.topic_count(), 0, "quiet for a minute: forgotten");
        offer(&r, msg("room:a", 9), t);
        offer(&r, msg("room:a", 11), t);
        let mut out = Vec::new();
        r.reset(|e| out.push(e.id));
        assert_eq!((out, r.topic_count()), (vec![11], 0));
    }

    // Properties (proptest): two topics' envelopes arriving in any order, some never, with
    // the clock moving and `expire` called at random moments. Checked after every step: each
    // envelope goes out exactly once; out of order only as the one just offered, late after
    // its hole was given up on; nothing held once it has waited the wait; and `expire` names
    // a time no later than when the oldest held one falls due.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{HashMap, HashSet};

        #[derive(Clone, Debug)]
        enum Step {
            Offer { topic: usize, id: i64 },
            Expire,
        }

        /// Each topic's ids 1..=n, shuffled, some dropped (they never come), with expiries
        /// mixed in, and the milliseconds before each step.
        fn steps() -> impl Strategy<Value = Vec<(u64, Step)>> {
            let topic = |t: usize| {
                (2i64..60)
                    .prop_flat_map(|n| Just((1..=n).collect::<Vec<_>>()).prop_shuffle())
                    .prop_flat_map(move |ids| {
                        let keep = prop::collection::vec(prop::bool::weighted(0.9), ids.len());
                        (Just(ids), keep)
                    })
                    .prop_map(move |(ids, keep)| {
                        ids.into_iter()
                            .zip(keep)
                            .filter(|(_, k)| *k)
                            .map(|(id, _)| Step::Offer { topic: t, id })
                            .collect::<Vec<_>>()
                    })
            };
            (
                topic(0),
                topic(1),
                prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            )
                .prop_flat_map(|(a, b, expiries)| {
                    // Interleave the two topics (each keeps its own order), then put the
                    // expiries in at random places.
                    let mut all: Vec<Step> = Vec::new();
                    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
                    let mut flip = false;
                    while a.peek().is_some() || b.peek().is_some() {
                        flip = !flip;
                        let next = if flip {
                            a.next().or_else(|| b.next())
                        } else {
                            b.next().or_else(|| a.next())
                        };
                        all.extend(next);
                    }
                    for at in expiries {
                        let i = at.index(all.len() + 1);
                        all.insert(i, Step::Expire);
                    }
                    let n = all.len();
                    (
                        Just(all),
                        prop::collection::vec(prop_oneof![3 => 0u64..5, 1 => 0u64..400], n),
                    )
                })
                .prop_map(|(all, gaps)| gaps.into_iter().zip(all).collect())
        }

        proptest! {
            #![proptest_config(crate::properties::config(512))]

            #[test]
            fn nothing_is_lost_reordered_or_held_past_the_wait(steps in steps()) {
                let wait = Duration::from_millis(250);
                let topics = ["room:a", "room:b"];
                let r = Reorder::new(wait);
                let mut now = Instant::now();
                // Offered and not yet out: (topic, id) -> when it was offered.
                let mut waiting: HashMap<(usize, i64), Instant> = HashMap::new();
                let mut out: HashSet<(usize, i64)> = HashSet::new();
                let mut highest = [i64::MIN; 2];
                let topic_of = |e: &Envelope| topics.iter().position(|t| *t == e.topic).unwrap();
                for (gap, step) in steps {
                    now += Duration::from_millis(gap);
                    let mut got = Vec::new();
                    let (offered, next) = match step {
                        Step::Offer { topic, id } => {
                            waiting.insert((topic, id), now);
                            r.offer(msg(topics[topic], id), now, |e| got.push((topic_of(&e), e.id)));
                            (Some((topic, id)), None)
                        }
                        Step::Expire => (None, Some(r.expire(now, |e| got.push((topic_of(&e), e.id))))),
                    };
                    for (topic, id) in got {
                        prop_assert!(out.insert((topic, id)), "{} {} went out twice", topics[topic], id);
                        waiting.remove(&(topic, id));
                        if id < highest[topic] {
                            prop_assert_eq!(offered, Some((topic, id)), "out of order, and not a late one");
                        }
                        highest[topic] = highest[topic].max(id);
                    }
                    // After an expiry: nothing has waited the wait, and the next one is due
                    // no later than the oldest held.
                    if let (Some(next), Some(oldest)) = (next, waiting.values().min()) {
                        prop_assert!(*oldest + wait > now, "held past the wait");
                        let next = next.expect("a time to come back while something is held");
                        prop_assert!(next <= *oldest + wait, "comes back too late");
                    }
                }
                // In the end every one goes out.
                let mut rest = Vec::new();
                r.expire(now + wait, |e| rest.push((topic_of(&e), e.id)));
                for key in rest {
                    prop_assert!(out.insert(key), "went out twice");
                    waiting.remove(&key);
                }
                prop_assert!(waiting.is_empty(), "never went out: {:?}", waiting);
            }
        }
    }
}
