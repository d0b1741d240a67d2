-- An append is one statement. The idempotency check, the version check, the insert under the
-- append lock and the idempotency record all run inside `append_batch`, in the statement's own
-- transaction, so an append is one round trip instead of six (key pre-check, BEGIN, versions,
-- insert, key, COMMIT).
--
-- Order matters. Readers rely on positions rising in transaction-id order (src/store/postgres.rs),
-- and a transaction takes its id at its first write, so that write must be the insert under the
-- lock: both checks only read. A replayed key is answered before the versions are checked, so a
-- retry whose streams have moved on still gets its first outcome. The idempotency record is
-- written after the lock is released; it holds the batch's outcome in the shape the service reads
-- (`BatchOutcome` in src/store/mod.rs, as migration 20261122000002 built it for older rows).
--
-- Answers: a row per event written (`written`); or one `key_taken` row; or one `wrong_version`
-- row with the first stream that moved and its version. A writer that takes a version or the key
-- between the checks and the writes makes the statement fail on `events_stream_version_key` or
-- `idempotency_keys_pkey`, and nothing is written; the caller then releases the session lock,
-- which the function may still hold.
--
-- `append_events` (migration 20261202000002) stays: processes of the previous release, still
-- serving during a rolling deploy, append through it. The release after this one drops it.

CREATE FUNCTION append_batch(
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
    event_metadata    JSONB,
    event_recorded    TIMESTAMPTZ,
    key               TEXT,
    key_fingerprint   BYTEA
) RETURNS TABLE (status TEXT, out_position BIGINT, out_stream_type TEXT, out_stream_id TEXT,
                 out_version BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    written JSONB;
    outcome JSONB;
BEGIN
    IF key IS NOT NULL
       AND EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.idempotency_key = key) THEN
        RETURN QUERY SELECT 'key_taken'::TEXT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::BIGINT;
        RETURN;
    END IF;

    RETURN QUERY
        SELECT 'wrong_version'::TEXT, NULL::BIGINT, s.stream_type, s.stream_id, s.actual
        FROM (SELECT b.stream_type, b.stream_id, b.expected, b.ordinality,
                     COALESCE((SELECT MAX(e.stream_version) FROM events e
                               WHERE e.stream_type = b.stream_type
                                 AND e.stream_id = b.stream_id), 0) AS actual
              FROM UNNEST(batch_types, batch_ids, batch_expected)
                  WITH ORDINALITY AS b(stream_type, stream_id, expected, ordinality)) s
        WHERE s.actual <> s.expected
        ORDER BY s.ordinality
        LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_lock(8103502347400866919);
    WITH inserted AS (
        INSERT INTO events (stream_type, stream_id, stream_version, event_id, event_type,
                            schema_version, payload, metadata, recorded_at)
        SELECT v.stream_type, v.stream_id, v.stream_version, v.event_id, v.event_type,
               v.schema_version, v.payload, event_metadata, event_recorded
        FROM UNNEST(stream_types, stream_ids, stream_versions, event_ids, event_types,
                    schema_versions, payloads)
            WITH ORDINALITY AS v(stream_type, stream_id, stream_version, event_id, event_type,
                                 schema_version, payload, ordinality)
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
    SELECT (SELECT jsonb_agg(jsonb_build_array(i.global_position, i.stream_type, i.stream_id,
                                               i.stream_version))
            FROM inserted i),
           (SELECT jsonb_build_object('outcomes', jsonb_agg(p.outcome ORDER BY p.first_position))
            FROM per_stream p)
    INTO written, outcome;
    PERFORM pg_advisory_unlock(8103502347400866919);

    IF key IS NOT NULL THEN
        INSERT INTO idempotency_keys (idempotency_key, fingerprint, outcome, recorded_at)
        VALUES (key, key_fingerprint, outcome, event_recorded);
    END IF;

    RETURN QUERY
        SELECT 'written'::TEXT, (w.value->>0)::BIGINT, w.value->>1, w.value->>2,
               (w.value->>3)::BIGINT
        FROM jsonb_array_elements(written) AS w(value);
END;
$$;
