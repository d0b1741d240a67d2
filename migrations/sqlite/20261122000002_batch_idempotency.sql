-- Idempotency records now answer for atomic appends to several streams: the whole outcome (every
-- stream's positions and version) is kept as JSON. Existing single-stream records are converted;
-- the per-stream columns of the first migration are then dropped.

ALTER TABLE idempotency_keys ADD COLUMN outcome TEXT CHECK (outcome IS NULL OR json_valid(outcome));

UPDATE idempotency_keys SET outcome = json_object('outcomes', json_array(json_object(
    'stream', json_object('stream_type', stream_type, 'stream_id', stream_id),
    'positions', (
        WITH RECURSIVE series(position) AS (
            SELECT idempotency_keys.first_position
            UNION ALL
            SELECT position + 1 FROM series WHERE position < idempotency_keys.last_position
        )
        SELECT json_group_array(position) FROM series
    ),
    'stream_version', stream_version,
    'replayed', json('false'))));

ALTER TABLE idempotency_keys DROP COLUMN stream_type;
ALTER TABLE idempotency_keys DROP COLUMN stream_id;
ALTER TABLE idempotency_keys DROP COLUMN first_position;
ALTER TABLE idempotency_keys DROP COLUMN last_position;
ALTER TABLE idempotency_keys DROP COLUMN stream_version;
