-- Round 2, safe to deploy: accounts created as admins (`tidings users add NAME --admin`), and
-- an index for picking jobs fairly across their owners.
ALTER TABLE users ADD COLUMN admin BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_by_owner_status ON jobs (owner_id, status);
