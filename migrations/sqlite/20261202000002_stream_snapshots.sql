-- Snapshots of long streams' folded state (an account's leases, a license's grants): a load reads
-- the latest snapshot of its state version and folds only the events after it. One row a stream,
-- replaced by newer ones. Derived data, like the read models: the erasure job deletes them all, and
-- loads fold from the log until new ones are saved.
CREATE TABLE stream_snapshots (
    stream_type    TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    state_version  INTEGER NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    state          TEXT    NOT NULL,
    saved_at       TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
) WITHOUT ROWID;
