DROP TABLE login_audit_checkpoints;

CREATE OR REPLACE FUNCTION login_audit_chain_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head BYTEA;
BEGIN
    SELECT head_hash INTO head FROM login_audit_chain WHERE singleton FOR UPDATE;
    NEW.id := nextval('login_audit_id_seq');
    -- Microsecond precision is what the hash covers; round now, not later.
    NEW.occurred_at := date_trunc('microseconds', COALESCE(NEW.occurred_at, now()));
    NEW.prev_hash := head;
    NEW.hash := login_audit_row_hash(head, NEW);
    UPDATE login_audit_chain SET head_hash = NEW.hash WHERE singleton;
    RETURN NEW;
END
$$;

-- The function's row type loses `seq` below; the old hash must not mention it.
CREATE OR REPLACE FUNCTION login_audit_row_hash(prev BYTEA, r login_audit) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(
        encode(prev, 'hex') || '|' || r.id || '|'
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

DROP INDEX login_audit_seq_idx;
ALTER TABLE login_audit DROP COLUMN seq;
ALTER TABLE login_audit_chain DROP COLUMN head_seq, DROP COLUMN start_seq;

-- Re-hash the chain without seq, as the old code verifies it.
ALTER TABLE login_audit DISABLE TRIGGER login_audit_append_only;
DO $$
DECLARE
    r login_audit;
    prev BYTEA;
BEGIN
    SELECT start_prev_hash INTO prev FROM login_audit_chain WHERE singleton FOR UPDATE;
    FOR r IN SELECT * FROM login_audit ORDER BY id LOOP
        r.prev_hash := prev;
        r.hash := login_audit_row_hash(prev, r);
        UPDATE login_audit SET prev_hash = r.prev_hash, hash = r.hash WHERE id = r.id;
        prev := r.hash;
    END LOOP;
    UPDATE login_audit_chain SET head_hash = prev WHERE singleton;
END
$$;
ALTER TABLE login_audit ENABLE TRIGGER login_audit_append_only;
