-- A gapless sequence number on every audit row, and signed checkpoints of the chain.
--
-- `seq` counts rows from 1 without gaps (ids may skip a value when a transaction rolls
-- back; seq never does): the insert trigger assigns head_seq + 1 under the chain's lock,
-- and the row hash covers it, so dropping or reordering rows shows as a gap or a break.
-- Checkpoints (seq, head hash, start of the chain, time) are signed by Latchkey with a key
-- derived from LATCHKEY_SECRET_KEY, which the database never sees; `latchkey audit verify`
-- checks them against the chain (see src/audit_chain.rs).
ALTER TABLE login_audit ADD COLUMN seq BIGINT;
ALTER TABLE login_audit_chain
    ADD COLUMN head_seq BIGINT NOT NULL DEFAULT 0,
    -- The seq of the last row removed by a retention purge: the oldest remaining row has
    -- start_seq + 1 and points back to start_prev_hash.
    ADD COLUMN start_seq BIGINT NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION login_audit_row_hash(prev BYTEA, r login_audit) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(
        encode(prev, 'hex') || '|' || r.id || '|' || r.seq || '|'
        || floor(extract(epoch FROM r.occurred_at) * 1000000)::BIGINT || '|'
        || login_audit_field(r.event)
        || login_audit_field(r.email)
        || login_audit_field(r.ip)
        || login_audit_field(r.user_agent)
        || login_audit_field(r.actor)
        || login_audit_field(r.detail)
        || login_audit_field(r.request_id::TEXT),
        'UTF8'))
$$;

-- Existing rows are numbered in chain (id) order and re-hashed, so the chain covers seq
-- from the first row on. Nothing is signed yet, so nothing signed is invalidated.
ALTER TABLE login_audit DISABLE TRIGGER login_audit_append_only;
DO $$
DECLARE
    r login_audit;
    prev BYTEA;
    n BIGINT := 0;
BEGIN
    SELECT start_prev_hash INTO prev FROM login_audit_chain WHERE singleton FOR UPDATE;
    FOR r IN SELECT * FROM login_audit ORDER BY id LOOP
        n := n + 1;
        r.seq := n;
        r.prev_hash := prev;
        r.hash := login_audit_row_hash(prev, r);
        UPDATE login_audit SET seq = r.seq, prev_hash = r.prev_hash, hash = r.hash
        WHERE id = r.id;
        prev := r.hash;
    END LOOP;
    UPDATE login_audit_chain SET head_seq = n, head_hash = prev WHERE singleton;
END
$$;
ALTER TABLE login_audit ENABLE TRIGGER login_audit_append_only;

ALTER TABLE login_audit ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX login_audit_seq_idx ON login_audit (seq);

CREATE OR REPLACE FUNCTION login_audit_chain_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chain login_audit_chain;
BEGIN
    SELECT * INTO chain FROM login_audit_chain WHERE singleton FOR UPDATE;
    NEW.id := nextval('login_audit_id_seq');
    NEW.seq := chain.head_seq + 1;
    -- Microsecond precision is what the hash covers; round now, not later.
    NEW.occurred_at := date_trunc('microseconds', COALESCE(NEW.occurred_at, now()));
    NEW.prev_hash := chain.head_hash;
    NEW.hash := login_audit_row_hash(chain.head_hash, NEW);
    UPDATE login_audit_chain SET head_hash = NEW.hash, head_seq = NEW.seq WHERE singleton;
    RETURN NEW;
END
$$;

CREATE TABLE login_audit_checkpoints (
    id BIGSERIAL PRIMARY KEY,
    -- The newest row covered (start_seq when the chain was empty) and its hash.
    seq BIGINT NOT NULL,
    head_hash BYTEA NOT NULL,
    -- Where the chain started then (see login_audit_chain).
    start_seq BIGINT NOT NULL,
    start_hash BYTEA NOT NULL,
    signed_at TIMESTAMPTZ NOT NULL,
    -- HMAC-SHA256 over all of the above (src/audit_chain.rs, `Checkpoint::message`).
    signature BYTEA NOT NULL
);
CREATE INDEX login_audit_checkpoints_seq_idx ON login_audit_checkpoints (seq);
