ALTER TABLE sign_in_prefetches ALTER COLUMN ip TYPE TEXT USING host(ip);
ALTER TABLE sign_in_requests ALTER COLUMN requested_ip TYPE TEXT USING host(requested_ip);
ALTER TABLE sessions ALTER COLUMN ip TYPE TEXT USING host(ip);
ALTER TABLE login_audit ALTER COLUMN ip TYPE TEXT USING host(ip);

-- The same text as before, so the chain stays intact both ways.
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
