-- Round 2, who hears what: private rooms with their members, each user's read position per
-- room, deleted messages kept as tombstones, notifications to some users with read state.
-- `private` and `deleted` are 0/1 (BIGINT on both databases, like `users.admin`); a room made
-- by joining it has no owner.
ALTER TABLE chat_rooms ADD COLUMN private BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chat_rooms ADD COLUMN owner TEXT;
ALTER TABLE chat_messages ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;

CREATE TABLE chat_members (
    room     TEXT   NOT NULL,
    username TEXT   NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (room, username)
);
CREATE INDEX chat_members_by_user ON chat_members (username);

CREATE TABLE chat_reads (
    username     TEXT   NOT NULL,
    room         TEXT   NOT NULL,
    last_read_id BIGINT NOT NULL,
    PRIMARY KEY (username, room)
);

-- A notification to everyone has `to_all` 1; one to some users names them here.
ALTER TABLE notifications ADD COLUMN to_all BIGINT NOT NULL DEFAULT 1;
CREATE TABLE notification_recipients (
    notification_id BIGINT NOT NULL,
    username        TEXT   NOT NULL,
    PRIMARY KEY (username, notification_id)
);

-- Each user's inbox is read up to an id.
CREATE TABLE notification_reads (
    username TEXT   PRIMARY KEY,
    up_to    BIGINT NOT NULL
);
