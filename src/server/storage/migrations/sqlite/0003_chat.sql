-- Chat rooms, their messages, and notifications. A room's `last_id` hands out message ids
-- 1, 2, 3… within the room (incremented in the same transaction as the insert, so two
-- writers, even on two instances, never take the same id). Rooms keep a bounded history:
-- older messages are deleted as new ones arrive.
CREATE TABLE chat_rooms (
    name       TEXT   PRIMARY KEY,
    last_id    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE chat_messages (
    room       TEXT   NOT NULL,
    id         BIGINT NOT NULL,
    author     TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT   NOT NULL,
    title      TEXT   NOT NULL,
    message    TEXT   NOT NULL,
    sender     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
