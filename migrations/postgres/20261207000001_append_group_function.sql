-- Group commit: `append_group` appends several independent batches (each one command's atomic
-- append) in one statement and one transaction, and answers each batch on its own. The writer
-- task in src/engine/store/group_commit.rs collects the batches that arrive while the previous
-- commit is in flight; this function writes them.
--
-- Batches are taken in order. For each: a replayed key is answered (`key_taken`); otherwise the
-- first stream whose version is not the expected one is answered (`wrong_version`), which sees the
-- events earlier batches of this group inserted; otherwise its events are inserted and a row per
-- event is answered (`written`). A refused batch writes nothing and does not stop the others.
--
-- Order matters as in `append_batch` (migration 20261202000003): readers rely on positions rising
-- in transaction-id order, and a transaction takes its id at its first write, so the first write is
-- an insert under the append lock, and the lock is held from the first insert to the last (the
-- checks between them only read). The idempotency records are written after the lock is released.
-- The caller never puts one key in two batches of a group. A writer of another process that takes
-- a version or a key between the checks and the writes makes the statement fail on a unique
-- constraint, and nothing of the group is written; the caller then appends the batches one by one.
--
-- Arguments: per batch (1-based, `batch_count` of them), the slice of the stream arrays
-- (`stream_from`..`stream_to`) and of the event arrays (`event_from`..`event_to`) it owns, its
-- metadata, key and fingerprint; per stream, type, id and expected version; per event, as in
-- `append_batch`.

CREATE FUNCTION append_group(
    batch_count       INTEGER,
    stream_from       INTEGER[],
    stream_to         INTEGER[],
    event_from        INTEGER[],
    event_to          INTEGER[],
    batch_metadata    JSONB[],
    keys              TEXT[],
    key_fingerprints  BYTEA[],
    batch_types       TEXT[],
    batch_ids         TEXT[],
    batch_expected    BIGINT[],
    stream_types      TEXT[],
    stream_ids        TEXT[],
    stream_versions   BIGINT[],
    event_ids         UUID[],
    event_types       TEXT[],
    schema_versions   INTEGER[],
    payloads          JSONB[],
    event_recorded    TIMESTAMPTZ
) RETURNS TABLE (batch INTEGER, status TEXT, out_position BIGINT, out_stream_type TEXT,
                 out_stream_id TEXT, out_version BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    b              INTEGER;
    locked         BOOLEAN := false;
    moved_type     TEXT;
    moved_id       TEXT;
    moved_actual   BIGINT;
    written        JSONB;
    outcome        JSONB;
    keyed_batches  INTEGER[] := '{}';
    keyed_outcomes JSONB[] := '{}';
BEGIN
    FOR b IN 1..batch_count LOOP
        IF keys[b] IS NOT NULL
           AND EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.idempotency_key = keys[b]) THEN
            RETURN QUERY SELECT b, 'key_taken'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                                NULL::BIGINT;
            CONTINUE;
        END IF;

        SELECT s.stream_type, s.stream_id, s.actual INTO moved_type, moved_id, moved_actual
        FROM (SELECT m.stream_type, m.stream_id, m.expected, m.ordinality,
                     COALESCE((SELECT MAX(e.stream_version) FROM events e
                               WHERE e.stream_type = m.stream_type
                                 AND e.stream_id = m.stream_id), 0) AS actual
              FROM UNNEST(batch_types[stream_from[b]:stream_to[b]],
                          batch_ids[stream_from[b]:stream_to[b]],
                          batch_expected[stream_from[b]:stream_to[b]])
                  WITH ORDINALITY AS m(stream_type, stream_id, expected, ordinality)) s
        WHERE s.actual <> s.expected
        ORDER BY s.ordinality
        LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT b, 'wrong_version'::TEXT, NULL::BIGINT, moved_type, moved_id,
                                moved_actual;
            CONTINUE;
        END IF;

        IF NOT locked THEN
            PERFORM pg_advisory_lock(8103502347400866919);
            locked := true;
        END IF;
        WITH inserted AS (
            INSERT INTO events (stream_type, stream_id, stream_version, event_id, event_type,
                                schema_version, payload, metadata, recorded_at)
            SELECT v.stream_type, v.stream_id, v.stream_version, v.event_id, v.event_type,
                   v.schema_version, v.payload, batch_metadata[b], event_recorded
            FROM UNNEST(stream_types[event_from[b]:event_to[b]],
                        stream_ids[event_from[b]:event_to[b]],
                        stream_versions[event_from[b]:event_to[b]],
                        event_ids[event_from[b]:event_to[b]],
                        event_types[event_from[b]:event_to[b]],
                        schema_versions[event_from[b]:event_to[b]],
                        payloads[event_from[b]:event_to[b]])
                WITH ORDINALITY AS v(stream_type, stream_id, stream_version, event_id,
                                     event_type, schema_version, payload, ordinality)
            ORDER BY v.ordinality
            RETURNING events.global_position, events.stream_type, events.stream_id,
                      events.stream_version
        ), per_stream AS (
            SELECT jsonb_build_object(
                       'stream', jsonb_build_object('stream_type', i.stream_type,
                                                    'stream_id', i.stream_id),
                       'positions', jsonb_agg(i.global_position ORDER BY i.global_position),
                       'stream_version', MAX(i.stream_version),
                       'replayed', false) AS outcome,
                   MIN(i.global_position) AS first_position
            FROM inserted i
            GROUP BY i.stream_type, i.stream_id
        )
        SELECT (SELECT jsonb_agg(jsonb_build_array(i.global_position, i.stream_type,
                                                   i.stream_id, i.stream_version))
                FROM inserted i),
               (SELECT jsonb_build_object('outcomes',
                                          jsonb_agg(p.outcome ORDER BY p.first_position))
                FROM per_stream p)
        INTO written, outcome;

        IF keys[b] IS NOT NULL THEN
            keyed_batches := keyed_batches || b;
            keyed_outcomes := keyed_outcomes || outcome;
        END IF;

        RETURN QUERY SELECT b, 'written'::TEXT, (w.value->>0)::BIGINT, w.value->>1, w.value->>2,
                            (w.value->>3)::BIGINT
                     FROM jsonb_array_elements(written) AS w(value);
    END LOOP;

    IF locked THEN
        PERFORM pg_advisory_unlock(8103502347400866919);
    END IF;

    INSERT INTO idempotency_keys (idempotency_key, fingerprint, outcome, recorded_at)
    SELECT keys[k.batch], key_fingerprints[k.batch], k.outcome, event_recorded
    FROM UNNEST(keyed_batches, keyed_outcomes) AS k(batch, outcome);
END;
$$;
