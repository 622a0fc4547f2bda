-- Client addresses as `inet` rather than text: the database refuses what is not an address,
-- and the audit's IP filter compares addresses, not spellings.
--
-- The audit chain hashes each row's address as text. It now hashes `host(ip)` (the address
-- without a `/32` or `/128`), which is the text Latchkey wrote for every address it has
-- seen; should a row's old text spell its address differently, converting it would break
-- the chain, so the migration stops instead and changes nothing.
DO $$
DECLARE
    respelled BIGINT;
BEGIN
    SELECT count(*) INTO respelled FROM login_audit WHERE ip IS NOT NULL AND host(ip::inet) <> ip;
    IF respelled > 0 THEN
        RAISE EXCEPTION '% audit rows spell their IP address other than PostgreSQL does; '
            'converting them would break the audit chain', respelled;
    END IF;
END
$$;

-- Before the function that reads it as inet: its body is checked when it is created.
ALTER TABLE login_audit ALTER COLUMN ip TYPE inet USING ip::inet;

CREATE OR REPLACE FUNCTION login_audit_row_hash(prev BYTEA, r login_audit) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(
        encode(prev, 'hex') || '|' || r.id || '|' || r.seq || '|'
        || floor(extract(epoch FROM r.occurred_at) * 1000000)::BIGINT || '|'
        || login_audit_field(r.event)
        || login_audit_field(r.email)
        || login_audit_field(host(r.ip))
        || login_audit_field(r.user_agent)
        || login_audit_field(r.actor)
        || login_audit_field(r.detail)
        || login_audit_field(r.request_id::TEXT),
        'UTF8'))
$$;

ALTER TABLE sessions ALTER COLUMN ip TYPE inet USING ip::inet;
ALTER TABLE sign_in_requests ALTER COLUMN requested_ip TYPE inet USING requested_ip::inet;
-- Prefetch notes are kept only while their request lives; one that names no address
-- ('unknown', which only a connection without a peer address could write) is dropped.
DELETE FROM sign_in_prefetches WHERE ip = 'unknown';
ALTER TABLE sign_in_prefetches ALTER COLUMN ip TYPE inet USING ip::inet;
