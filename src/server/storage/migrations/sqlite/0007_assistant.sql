-- Round 2, AI token streams (issue 19). A chat is a prompt and the answer generated for it on
-- the server, whether or not anyone watches. Its tokens are stored as they stream, in chunks
-- (one row per chat per write batch: tokens first_id..last_id, their texts as a JSON array),
-- so a reader resumes at the next token after a reload or on another instance.
CREATE TABLE assistant_chats (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id          BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prompt            TEXT   NOT NULL,
    -- running | completed | cancelled | failed
    status            TEXT   NOT NULL,
    -- Set once it ended: the stop reason (done), or the error sentence (failed).
    finish_reason     TEXT,
    error             TEXT,
    -- The id of the last token (the terminal event's id is one more).
    tokens            BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    -- Tokens per second, times 100.
    speed_centi       BIGINT NOT NULL DEFAULT 0,
    cancel_requested  BIGINT NOT NULL DEFAULT 0,
    -- Which instance generates it, and until when that claim holds.
    claimed_by        TEXT,
    lease_until       BIGINT,
    created_at        BIGINT NOT NULL,
    ended_at          BIGINT
);
CREATE INDEX assistant_chats_by_owner ON assistant_chats (owner_id, id);
CREATE INDEX assistant_chats_by_status ON assistant_chats (status, claimed_by);

CREATE TABLE assistant_tokens (
    chat_id  BIGINT NOT NULL REFERENCES assistant_chats (id) ON DELETE CASCADE,
    first_id BIGINT NOT NULL,
    last_id  BIGINT NOT NULL,
    texts    TEXT   NOT NULL,
    PRIMARY KEY (chat_id, first_id)
);
