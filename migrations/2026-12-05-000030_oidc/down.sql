DROP TRIGGER sessions_logout_owed ON sessions;
DROP FUNCTION latchkey_session_logout_owed();
DROP TABLE oidc_logout_outbox;
DROP TABLE signing_keys;
DROP FUNCTION latchkey_signing_keys_changed();
DROP TABLE oidc_tokens;
DROP FUNCTION latchkey_invalidate_oidc_token();
DROP TABLE oidc_codes;
ALTER TABLE sessions DROP COLUMN sid;
ALTER TABLE apps
    DROP CONSTRAINT apps_oidc_needs_client_id,
    DROP COLUMN client_id,
    DROP COLUMN client_secret_digest,
    DROP COLUMN redirect_uris,
    DROP COLUMN post_logout_redirect_uris,
    DROP COLUMN backchannel_logout_uri;
