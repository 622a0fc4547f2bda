-- Passkey ceremonies under way. A ceremony's challenge used to wait in the session's state,
-- and each request works on its own copy of that state: sixteen racing finishes each found
-- the challenge and each signed in. Here a finish consumes its row with one DELETE …
-- RETURNING, so of racing requests exactly one gets it.
--
-- `handle_digest` is SHA-256 of a random handle that only the session holds. `state` is
-- webauthn-rs's ceremony state with what the finish needs besides (the name, the `next`
-- path). A sign-in has no member yet; adding or confirming a passkey is bound to the member
-- who started it.
CREATE TABLE passkey_ceremonies (
    id BIGSERIAL PRIMARY KEY,
    handle_digest BYTEA NOT NULL UNIQUE CHECK (octet_length(handle_digest) = 32),
    kind TEXT NOT NULL CHECK (kind IN ('sign_in', 'registration', 'confirmation')),
    member_id BIGINT REFERENCES members (id) ON DELETE CASCADE,
    state JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'sign_in') = (member_id IS NULL))
);

-- For the sweeper, which deletes what has expired.
CREATE INDEX passkey_ceremonies_expires_at_idx ON passkey_ceremonies (expires_at);
CREATE INDEX passkey_ceremonies_member_id_idx ON passkey_ceremonies (member_id);
