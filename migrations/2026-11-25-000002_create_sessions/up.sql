-- Server-side session state for actix-session. The cookie holds a random key; only its
-- SHA-256 digest is stored, so a copy of this table cannot be replayed as cookies.
CREATE TABLE sessions (
    id BIGSERIAL PRIMARY KEY,
    key_digest BYTEA NOT NULL UNIQUE CHECK (octet_length(key_digest) = 32),
    -- Denormalised from the state so that one member's sessions can be listed and ended
    -- in one statement.
    member_id BIGINT REFERENCES members (id) ON DELETE CASCADE,
    state JSONB NOT NULL,
    ip TEXT,
    user_agent TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX sessions_member_id_idx ON sessions (member_id) WHERE member_id IS NOT NULL;
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
