-- Call history. Written to run unchanged on PostgreSQL and SQLite: times are
-- Unix milliseconds in BIGINT, flags are 0/1 BIGINT, no backend-only types.

-- One row per call, from the newest revision (version) of the call seen.
CREATE TABLE IF NOT EXISTS calls (
    call_id            TEXT PRIMARY KEY,
    initiator_id       TEXT NOT NULL,
    initiator_username TEXT NOT NULL,
    is_video           BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    ended_at_ms        BIGINT,
    version            BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_created ON calls (created_at_ms);
CREATE INDEX IF NOT EXISTS calls_by_initiator ON calls (initiator_id);

-- Invitees and participants of a call, in the order of the snapshot.
CREATE TABLE IF NOT EXISTS attendees (
    call_id       TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    username      TEXT NOT NULL,
    position      BIGINT NOT NULL,
    invited_at_ms BIGINT,
    joined_at_ms  BIGINT,
    left_at_ms    BIGINT,
    outcome       TEXT NOT NULL,
    -- The call's start, copied here so that missed calls need no join to filter.
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (call_id, user_id)
);
CREATE INDEX IF NOT EXISTS attendees_missed ON attendees (user_id, outcome, created_at_ms);
CREATE INDEX IF NOT EXISTS attendees_by_created ON attendees (created_at_ms);

-- Which calls appear in whose history (initiator and attendees): the keyset
-- index of ListUserCalls.
CREATE TABLE IF NOT EXISTS user_calls (
    user_id       TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, call_id)
);
CREATE INDEX IF NOT EXISTS user_calls_newest ON user_calls (user_id, created_at_ms DESC, call_id DESC);
CREATE INDEX IF NOT EXISTS user_calls_by_call ON user_calls (call_id);
CREATE INDEX IF NOT EXISTS user_calls_by_created ON user_calls (created_at_ms);

-- Missed calls that started up to seen_until_ms are not reported again.
CREATE TABLE IF NOT EXISTS user_marks (
    user_id       TEXT PRIMARY KEY,
    seen_until_ms BIGINT NOT NULL
);

-- Users who asked to be forgotten: later revisions of calls that started
-- before then do not bring them back.
CREATE TABLE IF NOT EXISTS forgotten_users (
    user_id          TEXT PRIMARY KEY,
    forgotten_at_ms  BIGINT NOT NULL
);
