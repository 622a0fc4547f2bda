-- Passkeys (WebAuthn credentials) of members. `passkey` is webauthn-rs's serialised
-- `Passkey` (credential id, public key, counter, flags): what verifying an assertion needs.
-- `credential_id` and `counter` are kept beside it so that lookups and the replay check are
-- plain indexed SQL. `user_handle` is the random WebAuthn user id the authenticator stores
-- with a discoverable credential; one member's passkeys share it.
CREATE TABLE passkeys (
    id BIGSERIAL PRIMARY KEY,
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    credential_id BYTEA NOT NULL UNIQUE,
    user_handle BYTEA NOT NULL CHECK (octet_length(user_handle) = 16),
    passkey JSONB NOT NULL,
    counter BIGINT NOT NULL DEFAULT 0 CHECK (counter >= 0),
    name TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ
);

CREATE INDEX passkeys_member_id_idx ON passkeys (member_id);

-- A passkey sign-in is recorded as a sign-in request completed at once, so that its
-- `signed_in` audit row names a request like every other sign-in.
ALTER TABLE sign_in_requests DROP CONSTRAINT sign_in_requests_completed_by_check;
ALTER TABLE sign_in_requests ADD CONSTRAINT sign_in_requests_completed_by_check
    CHECK (completed_by IN ('link', 'code', 'approval', 'passkey'));
