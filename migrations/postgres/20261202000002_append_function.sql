-- An append takes its transaction id and its positions together under the append lock (see
-- src/store/postgres.rs: readers rely on positions rising in transaction-id order). Done by the
-- client, the lock was held across three network round trips (lock, insert, unlock) and so capped
-- concurrent appends; in this function it is held only while the insert runs on the server.
-- The lock is session-level, as before: on an error the caller rolls back and releases it.
CREATE FUNCTION append_events(
    stream_types     TEXT[],
    stream_ids       TEXT[],
    stream_versions  BIGINT[],
    event_ids        UUID[],
    event_types      TEXT[],
    schema_versions  INTEGER[],
    payloads         JSONB[],
    event_metadata   JSONB,
    event_recorded   TIMESTAMPTZ
) RETURNS TABLE (out_position BIGINT, out_stream_type TEXT, out_stream_id TEXT, out_version BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_lock(8103502347400866919);
    RETURN QUERY
        INSERT INTO events (stream_type, stream_id, stream_version, event_id, event_type,
                            schema_version, payload, metadata, recorded_at)
        SELECT v.stream_type, v.stream_id, v.stream_version, v.event_id, v.event_type,
               v.schema_version, v.payload, event_metadata, event_recorded
        FROM UNNEST(stream_types, stream_ids, stream_versions, event_ids, event_types,
                    schema_versions, payloads)
            WITH ORDINALITY AS v(stream_type, stream_id, stream_version, event_id, event_type,
                                 schema_version, payload, ordinality)
        ORDER BY v.ordinality
        RETURNING events.global_position, events.stream_type, events.stream_id, events.stream_version;
    PERFORM pg_advisory_unlock(8103502347400866919);
END;
$$;
