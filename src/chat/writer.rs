//! The chat's one writer task: stores queued messages in batches (one transaction for whatever
//! arrived meanwhile), then publishes each on its room's topic and answers its sender.
//!
//! Tests: `chat::hub`'s unit tests (stored, published, still stored at shutdown).

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::{
    store::{ChatRow, NewChatMessage},
    wire::{json, message_of, topic},
};
use crate::{
    protocol::chat::ServerMsg,
    retry,
    server::{
        fanout::bus::{Bus, Envelope},
        observe::metrics,
        storage::Store,
        Shutdown,
    },
};

/// Messages stored per transaction at most.
pub(super) const WRITE_BATCH: usize = 256;
/// Messages waiting to be stored at most; senders wait beyond it.
pub(super) const WRITE_QUEUE: usize = 4096;

/// A message handed to the writer, and where its stored row (or `None`: refused) goes.
pub(super) struct Pending {
    pub message: NewChatMessage,
    pub reply: oneshot::Sender<Option<ChatRow>>,
}

/// Stores queued messages in batches, then publishes each (in id order) and answers its
/// sender. A failed batch is retried with backoff a few times before its senders hear
/// `Unavailable`. At shutdown it takes no more, but stores what was already queued: a
/// message a sender handed over is either stored or refused, never dropped unanswered.
pub(super) async fn write_loop(
    store: Store,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    keep: i64,
    mut rx: mpsc::Receiver<Pending>,
    activity: Activity,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(WRITE_BATCH);
    let mut stop = std::pin::pin!(shutdown.cancelled_owned());
    let mut closing = false;
    // Send keys older than a day are forgotten now and then (each is also replaced when
    // reused after a day).
    let mut forget = tokio::time::interval(Duration::from_secs(600));
    loop {
        let received = tokio::select! {
            biased;
            _ = &mut stop, if !closing => {
                // No new messages from here on; the ones queued are still stored below.
                rx.close();
                closing = true;
                continue;
            }
            // Whatever arrived meanwhile, up to a batch; 0: closed and drained.
            n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
            _ = forget.tick(), if !closing => {
                if let Err(e) = store.forget_send_keys(crate::server::clock::now_ms()).await {
                    tracing::warn!(error = %e, "forgetting old chat send keys failed");
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let messages: Vec<NewChatMessage> = batch.iter().map(|p| p.message.clone()).collect();
        match store.append_chat_messages(&messages, keep).await {
            Ok(rows) => {
                for (pending, row) in batch.drain(..).zip(rows) {
                    if !row.repeat {
                        activity.note(&row);
                        publish(&*bus, &row);
                    }
                    let _ = pending.reply.send(Some(row));
                }
            }
            Err(e) => {
                // One at a time, so a message the database refuses fails alone, and a
                // passing failure is retried with backoff.
                tracing::warn!(error = %e, messages = batch.len(), "storing a chat batch failed; storing one by one");
                for pending in batch.drain(..) {
                    let mut stored = None;
                    for attempt in 0..3u32 {
                        match store
                            .append_chat_messages(std::slice::from_ref(&pending.message), keep)
                            .await
                        {
                            Ok(mut rows) => {
                                stored = rows.pop();
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, attempt, "storing a chat message failed");
                                tokio::time::sleep(retry::backoff(
                                    attempt,
                                    Duration::from_millis(50),
                                    Duration::from_millis(500),
                                ))
                                .await;
                            }
                        }
                    }
                    if let Some(row) = stored.as_ref().filter(|r| !r.repeat) {
                        activity.note(row);
                        publish(&*bus, row);
                    }
                    let _ = pending.reply.send(stored);
                }
            }
        }
    }
}

/// The rooms that had new messages since the last [`Activity::take`], with their newest id.
#[derive(Clone, Default)]
pub(super) struct Activity(Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>);

impl Activity {
    fn note(&self, row: &ChatRow) {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The room's name is copied once per tick, not once per message.
        match rooms.get_mut(&row.room) {
            Some(last) => *last = (*last).max(row.id),
            None => {
                rooms.insert(row.room.clone(), row.id);
            }
        }
    }

    /// What was noted, and forgets it.
    pub(super) fn take(&self) -> Vec<(String, i64)> {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rooms.drain().collect()
    }
}

/// Publishes a stored message to its room.
fn publish(bus: &dyn Bus, row: &ChatRow) {
    metrics::record_messages(1);
    let msg = ServerMsg::ChatMessage(message_of(row));
    bus.publish(Envelope::new(topic(&row.room), row.id, "chat-message", json(&msg)).in_order());
}
