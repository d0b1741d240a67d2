-- The event log, the idempotency records written in the same transaction as the events, and the
-- storage of projection read models (generations with their checkpoints, and documents).
-- SQLite serialises writers, so position order is commit order and no transaction guard is needed.
-- Applied migrations are never edited: a change is a new file.

CREATE TABLE events (
    -- AUTOINCREMENT: a position is never reused, even after the newest row's transaction rolls back.
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_type     TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata        TEXT    NOT NULL CHECK (json_valid(metadata)),
    recorded_at     TEXT    NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The log is append-only: no row is ever updated or deleted.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: UPDATE on events is refused');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: DELETE on events is refused');
END;

CREATE TABLE idempotency_keys (
    idempotency_key TEXT    PRIMARY KEY,
    fingerprint     BLOB    NOT NULL,
    stream_type     TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    first_position  INTEGER NOT NULL,
    last_position   INTEGER NOT NULL,
    stream_version  INTEGER NOT NULL,
    recorded_at     TEXT    NOT NULL
);

CREATE TABLE projection_generations (
    projection  TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('building', 'active')),
    checkpoint  INTEGER NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX projection_generations_one_active
    ON projection_generations (projection) WHERE status = 'active';
CREATE UNIQUE INDEX projection_generations_one_building
    ON projection_generations (projection) WHERE status = 'building';

CREATE TABLE projection_documents (
    projection    TEXT    NOT NULL,
    generation    INTEGER NOT NULL,
    doc_key       TEXT    NOT NULL,
    body          TEXT    NOT NULL CHECK (json_valid(body)),
    last_position INTEGER NOT NULL,
    PRIMARY KEY (projection, generation, doc_key),
    FOREIGN KEY (projection, generation)
        REFERENCES projection_generations (projection, generation) ON DELETE CASCADE
);
