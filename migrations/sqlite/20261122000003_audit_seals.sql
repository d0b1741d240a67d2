-- Periodic seals of the committed prefix of the log: the audit chain's value (and record count) at a
-- position, signed with the service's Ed25519 key, so that a later edit of an old row is detected by
-- `pulse-account audit check`.
CREATE TABLE audit_seals (
    position   INTEGER PRIMARY KEY,
    chain_hash TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  TEXT    NOT NULL,
    sealed_at  TEXT    NOT NULL
);
