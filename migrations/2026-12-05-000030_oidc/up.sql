-- Latchkey as an OpenID Provider (src/oidc/): apps that sign their users in through OpenID
-- Connect, their one-time codes and tokens (only digests), the RSA keys that sign ID tokens
-- (sealed with a key derived from LATCHKEY_SECRET_KEY), and the back-channel logouts owed.

-- An OIDC app is an app like any other (same policy, launcher and audit) with a client id.
-- Public clients have no secret; a confidential client's secret is stored as its SHA-256.
ALTER TABLE apps
    ADD COLUMN client_id TEXT UNIQUE CHECK (client_id ~ '^[A-Za-z0-9_-]{16,64}$'),
    ADD COLUMN client_secret_digest BYTEA CHECK (length(client_secret_digest) = 32),
    ADD COLUMN redirect_uris TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN post_logout_redirect_uris TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN backchannel_logout_uri TEXT,
    ADD CONSTRAINT apps_oidc_needs_client_id CHECK (
        client_id IS NOT NULL OR (
            client_secret_digest IS NULL AND redirect_uris = '{}'
            AND post_logout_redirect_uris = '{}' AND backchannel_logout_uri IS NULL
        )
    );

-- `sid` in ID tokens and logout tokens: a random handle for the session, never its id or the
-- digest of its key (122 random bits).
ALTER TABLE sessions
    ADD COLUMN sid TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- RSA signing keys. `sealed` is the 12-byte AES-256-GCM nonce followed by the sealed PKCS#1
-- DER private key. One key is current (retired_at NULL); retired keys stay published for a
-- day, longer than anything they signed lives.
CREATE TABLE signing_keys (
    id BIGSERIAL PRIMARY KEY,
    kid TEXT NOT NULL UNIQUE,
    sealed BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

-- One row per authorization: its one-time code (60 s) and what the token endpoint must check
-- it against. The row outlives its use as the family every token issued from it belongs to,
-- so a replayed code or a spent refresh token can revoke the family.
CREATE TABLE oidc_codes (
    id BIGSERIAL PRIMARY KEY,
    code_digest BYTEA NOT NULL UNIQUE CHECK (length(code_digest) = 32),
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    auth_time TIMESTAMPTZ NOT NULL,
    amr TEXT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ
);
CREATE INDEX oidc_codes_session_id_idx ON oidc_codes (session_id);
CREATE INDEX oidc_codes_app_id_idx ON oidc_codes (app_id);
CREATE INDEX oidc_codes_member_id_idx ON oidc_codes (member_id);

-- Access tokens (10 minutes) and refresh tokens, by digest. A spent refresh token is kept
-- (spent_at) so that presenting it again is recognised as theft.
CREATE TABLE oidc_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_digest BYTEA NOT NULL UNIQUE CHECK (length(token_digest) = 32),
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    code_id BIGINT NOT NULL REFERENCES oidc_codes (id) ON DELETE CASCADE,
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    spent_at TIMESTAMPTZ,
    CHECK (kind = 'refresh' OR spent_at IS NULL)
);
CREATE INDEX oidc_tokens_code_id_idx ON oidc_tokens (code_id);
CREATE INDEX oidc_tokens_session_id_idx ON oidc_tokens (session_id);
CREATE INDEX oidc_tokens_app_id_idx ON oidc_tokens (app_id);
CREATE INDEX oidc_tokens_expires_at_idx ON oidc_tokens (expires_at);

-- Every instance caches tokens by digest (src/session/cache.rs): a token revoked, spent or
-- gone with its session, app or family is forgotten everywhere.
CREATE FUNCTION latchkey_invalidate_oidc_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 't:' || encode(OLD.token_digest, 'hex'));
  RETURN NULL;
END $$;
CREATE TRIGGER oidc_tokens_invalidate AFTER UPDATE OR DELETE ON oidc_tokens
  FOR EACH ROW EXECUTE FUNCTION latchkey_invalidate_oidc_token();
CREATE TRIGGER oidc_tokens_invalidate_truncate AFTER TRUNCATE ON oidc_tokens
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();

-- A new current key, or a retired one: every instance reloads its key ring.
CREATE FUNCTION latchkey_signing_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'k');
  RETURN NULL;
END $$;
CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signing_keys
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_signing_keys_changed();

-- Back-channel logouts owed to apps: written by the trigger below in the same transaction as
-- the session's end, whatever ends it (logout, revoke, deactivation, purge, psql), and sent
-- by whichever instance is up (src/oidc/outbox.rs).
CREATE TABLE oidc_logout_outbox (
    id BIGSERIAL PRIMARY KEY,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL,
    email TEXT,
    sid TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX oidc_logout_outbox_due_idx ON oidc_logout_outbox (next_attempt_at);

-- BEFORE the delete, while the session's codes (which cascade with it) are still there.
CREATE FUNCTION latchkey_session_logout_owed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  owed INT;
BEGIN
  INSERT INTO oidc_logout_outbox (app_id, member_id, email, sid)
  SELECT DISTINCT c.app_id, c.member_id, m.email, OLD.sid
  FROM oidc_codes c
  JOIN apps a ON a.id = c.app_id
  JOIN members m ON m.id = c.member_id
  WHERE c.session_id = OLD.id AND c.used_at IS NOT NULL
    AND a.backchannel_logout_uri IS NOT NULL;
  GET DIAGNOSTICS owed = ROW_COUNT;
  IF owed > 0 THEN
    PERFORM pg_notify('latchkey_invalidate', 'o');
  END IF;
  RETURN OLD;
END $$;
CREATE TRIGGER sessions_logout_owed BEFORE DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION latchkey_session_logout_owed();
