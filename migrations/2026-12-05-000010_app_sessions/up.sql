-- Each app gets a session of its own (as Cloudflare Access and Pomerium do): a host-only
-- cookie on the app's host worth that one app, tied to the Latchkey session it came from.
-- `session_apps` (which apps a session opened) is what these rows now say.
DROP TABLE session_apps;

CREATE TABLE app_sessions (
    id BIGSERIAL PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- The one-time code `/auth/app` hands the app's `/.latchkey/callback`, until it is
    -- redeemed; then the digest of the app cookie it was traded for. Never both.
    code_digest BYTEA UNIQUE CHECK (length(code_digest) = 32),
    code_expires_at TIMESTAMPTZ NOT NULL,
    key_digest BYTEA UNIQUE CHECK (length(key_digest) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    opened_at TIMESTAMPTZ,
    CHECK ((code_digest IS NULL) <> (key_digest IS NULL)),
    CHECK ((key_digest IS NULL) = (opened_at IS NULL))
);

CREATE INDEX app_sessions_session_id_idx ON app_sessions (session_id);
CREATE INDEX app_sessions_app_id_idx ON app_sessions (app_id);
-- `purge` deletes codes nobody redeemed.
CREATE INDEX app_sessions_unredeemed_idx ON app_sessions (code_expires_at)
    WHERE key_digest IS NULL;

-- Every instance caches app sessions by their cookie's digest (src/session/cache.rs): an app
-- session that ends (its app's sign-out, its Latchkey session's end, its app's removal, all
-- through this delete or its cascade) is forgotten everywhere.
CREATE FUNCTION latchkey_invalidate_app_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'x:' || encode(OLD.key_digest, 'hex'));
  RETURN NULL;
END $$;

CREATE TRIGGER app_sessions_invalidate_delete AFTER DELETE ON app_sessions
  FOR EACH ROW WHEN (OLD.key_digest IS NOT NULL)
  EXECUTE FUNCTION latchkey_invalidate_app_session();

CREATE TRIGGER app_sessions_invalidate_truncate AFTER TRUNCATE ON app_sessions
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();
