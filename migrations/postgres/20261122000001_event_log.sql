-- The event log, the idempotency records written in the same transaction as the events, and the
-- storage of projection read models (generations with their checkpoints, and documents).
-- Applied migrations are never edited: a change is a new file.

CREATE TABLE events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_type     TEXT        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version >= 1),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    -- The writing transaction: readers only take rows of transactions older than every transaction
    -- still running, so a late commit with an earlier position is never skipped.
    transaction_id  XID8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_type, stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The log is append-only: no row is ever updated or deleted, and the table is never truncated.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is refused', TG_OP;
END;
$$;
CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

CREATE TABLE idempotency_keys (
    idempotency_key TEXT        PRIMARY KEY,
    fingerprint     BYTEA       NOT NULL,
    stream_type     TEXT        NOT NULL,
    stream_id       TEXT        NOT NULL,
    first_position  BIGINT      NOT NULL,
    last_position   BIGINT      NOT NULL,
    stream_version  BIGINT      NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE projection_generations (
    projection  TEXT        NOT NULL,
    generation  BIGINT      NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('building', 'active')),
    checkpoint  BIGINT      NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX projection_generations_one_active
    ON projection_generations (projection) WHERE status = 'active';
CREATE UNIQUE INDEX projection_generations_one_building
    ON projection_generations (projection) WHERE status = 'building';

CREATE TABLE projection_documents (
    projection    TEXT   NOT NULL,
    generation    BIGINT NOT NULL,
    doc_key       TEXT   NOT NULL,
    body          JSONB  NOT NULL,
    last_position BIGINT NOT NULL,
    PRIMARY KEY (projection, generation, doc_key),
    FOREIGN KEY (projection, generation)
        REFERENCES projection_generations (projection, generation) ON DELETE CASCADE
);
