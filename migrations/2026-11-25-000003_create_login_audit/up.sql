-- The login audit: append-only and hash-chained.
--
-- Every row's `hash` is SHA-256 over the previous row's hash and this row's canonical fields
-- (see login_audit_row_hash; `latchkey audit verify` recomputes it in Rust). The id and the
-- chain link are assigned by a trigger while holding the lock on the chain's head row, so
-- concurrent inserts still form one chain and ids follow chain order.
CREATE SEQUENCE login_audit_id_seq;

CREATE TABLE login_audit (
    id BIGINT PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    event TEXT NOT NULL CHECK (event ~ '^[a-z_]{1,40}$'),
    email TEXT,
    ip TEXT,
    user_agent TEXT,
    actor TEXT,
    detail TEXT NOT NULL DEFAULT '',
    -- The sign-in request this event concerns (requested -> sent -> signed in).
    request_id BIGINT,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

ALTER SEQUENCE login_audit_id_seq OWNED BY login_audit.id;

CREATE INDEX login_audit_occurred_at_idx ON login_audit (occurred_at);
CREATE INDEX login_audit_email_id_idx ON login_audit (email, id);
CREATE INDEX login_audit_event_id_idx ON login_audit (event, id);
CREATE INDEX login_audit_ip_id_idx ON login_audit (ip, id);
CREATE INDEX login_audit_request_id_idx ON login_audit (request_id) WHERE request_id IS NOT NULL;

-- The chain's head, and where the chain starts after a retention purge.
CREATE TABLE login_audit_chain (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    head_hash BYTEA NOT NULL,
    start_prev_hash BYTEA NOT NULL
);
INSERT INTO login_audit_chain (head_hash, start_prev_hash)
VALUES (decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'));

-- Length-prefixed, so no choice of field values can make two rows encode alike.
CREATE FUNCTION login_audit_field(value TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value IS NULL THEN '-;' ELSE octet_length(value) || ':' || value || ';' END
$$;

CREATE FUNCTION login_audit_row_hash(prev BYTEA, r login_audit) RETURNS BYTEA
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

CREATE FUNCTION login_audit_chain_insert() RETURNS trigger
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

CREATE TRIGGER login_audit_chain_insert
BEFORE INSERT ON login_audit
FOR EACH ROW EXECUTE FUNCTION login_audit_chain_insert();

-- Rows are never updated; they are deleted only by the retention purge, which sets
-- latchkey.audit_purge for its own transaction.
CREATE FUNCTION login_audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('latchkey.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'login_audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER login_audit_append_only
BEFORE UPDATE OR DELETE ON login_audit
FOR EACH ROW EXECUTE FUNCTION login_audit_refuse_change();

CREATE TRIGGER login_audit_no_truncate
BEFORE TRUNCATE ON login_audit
FOR EACH STATEMENT EXECUTE FUNCTION login_audit_refuse_change();
