-- Round 2, performance (issue 20): the export cache keeps closed stretches of the audit log as
-- the NDJSON bytes an export sent for them (`src/export/cache.rs`). The log is append-only, so
-- such a stretch changes only if a row lands below the last id (an import filling a hole), or a
-- row is changed or deleted (by hand: the app never does). Each of those bumps this counter, in
-- the same transaction, whoever writes (the app, the seed command, an sqlite3 shell); an export
-- uses cached bytes only while the counter is what it was when they were written. An append at
-- the end (every ordinary write) leaves it alone: the trigger's test is one b-tree seek.
-- SQLite only: PostgreSQL exports read the database every time (its sequences commit out of
-- order, so concurrent appends land below the last id all the time).
CREATE TABLE audit_log_epoch (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    epoch    BIGINT NOT NULL
);
INSERT INTO audit_log_epoch (only_row, epoch) VALUES (1, 0);

CREATE TRIGGER audit_log_insert_below AFTER INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE id > NEW.id)
BEGIN
    UPDATE audit_log_epoch SET epoch = epoch + 1;
END;

CREATE TRIGGER audit_log_update AFTER UPDATE ON audit_log
BEGIN
    UPDATE audit_log_epoch SET epoch = epoch + 1;
END;

CREATE TRIGGER audit_log_delete AFTER DELETE ON audit_log
BEGIN
    UPDATE audit_log_epoch SET epoch = epoch + 1;
END;
