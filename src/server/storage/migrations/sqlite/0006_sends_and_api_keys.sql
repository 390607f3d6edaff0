-- Round 2, one connection per page and other servers.
-- `chat_sends`: a sender's `clientId` (WebSocket) or `Idempotency-Key` (POST) and the message it
-- stored, so a repeat within 24 h gets the first answer instead of a second copy. The row is
-- claimed (message_id 0) before the message is stored, in the same transaction: two instances
-- racing on one key wait on the primary key, and the second sees the first's message.
CREATE TABLE chat_sends (
    author     TEXT   NOT NULL,
    send_key   TEXT   NOT NULL,
    room       TEXT   NOT NULL,
    message_id BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (author, send_key)
);
CREATE INDEX chat_sends_by_age ON chat_sends (at);

-- API keys for other servers: only the SHA-256 of the key is kept (a key is 32 random bytes,
-- so a fast hash is enough: there is nothing to guess). Revoked keys stay listed nowhere.
CREATE TABLE api_keys (
    id           TEXT   NOT NULL PRIMARY KEY,
    name         TEXT   NOT NULL,
    hash         TEXT   NOT NULL UNIQUE,
    created_by   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
