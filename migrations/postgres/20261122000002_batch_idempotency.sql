-- Idempotency records now answer for atomic appends to several streams: the whole outcome (every
-- stream's positions and version) is kept as JSON. Existing single-stream records are converted;
-- the per-stream columns of the first migration are then dropped.

ALTER TABLE idempotency_keys ADD COLUMN outcome JSONB;

UPDATE idempotency_keys SET outcome = jsonb_build_object('outcomes', jsonb_build_array(jsonb_build_object(
    'stream', jsonb_build_object('stream_type', stream_type, 'stream_id', stream_id),
    'positions', (SELECT jsonb_agg(position ORDER BY position) FROM generate_series(first_position, last_position) AS position),
    'stream_version', stream_version,
    'replayed', false)));

ALTER TABLE idempotency_keys
    ALTER COLUMN outcome SET NOT NULL,
    DROP COLUMN stream_type,
    DROP COLUMN stream_id,
    DROP COLUMN first_position,
    DROP COLUMN last_position,
    DROP COLUMN stream_version;
