-- Per-person data keys: personal data in event payloads is sealed with AES-256-GCM under a key of
-- the person it is about, and that key is stored here wrapped (AES-256-GCM) by the master key.
-- Erasing a person nulls `wrapped_key` (crypto-shredding); the log itself is never rewritten.
-- A person has at most one live key; keys erased earlier stay as tombstones so sealed values that
-- name them read as erased.
CREATE TABLE person_keys (
    key_id      TEXT PRIMARY KEY,
    person_id   TEXT NOT NULL,
    wrapped_key BLOB,
    created_at  TEXT NOT NULL,
    erased_at   TEXT,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);
CREATE UNIQUE INDEX person_keys_live ON person_keys (person_id) WHERE erased_at IS NULL;
-- Every process counts erased keys once a second to notice erasures made by others.
CREATE INDEX person_keys_erased ON person_keys (erased_at) WHERE erased_at IS NOT NULL;
