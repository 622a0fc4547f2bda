-- Every instance caches live sessions, members and apps (src/session_cache.rs) and forgets an
-- entry when this channel names it. The triggers send in the same transaction as the change,
-- so a change made anywhere (any instance, the command line, psql) reaches every instance,
-- and only once it is committed.

CREATE FUNCTION latchkey_invalidate_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 's:' || encode(OLD.key_digest, 'hex'));
  RETURN NULL;
END $$;

CREATE TRIGGER sessions_invalidate_delete AFTER DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION latchkey_invalidate_session();

-- "Last seen" moves once a minute per session and changes nothing a decision reads except the
-- idle expiry, which only moves forward; a cached expiry that is too early is re-read, so such
-- writes need no notification. Anything else a decision reads does.
CREATE TRIGGER sessions_invalidate_update AFTER UPDATE ON sessions
  FOR EACH ROW
  WHEN (OLD.member_id IS DISTINCT FROM NEW.member_id
        OR NEW.expires_at < OLD.expires_at
        OR (OLD.state - 'latchkey.seen_at') IS DISTINCT FROM (NEW.state - 'latchkey.seen_at'))
  EXECUTE FUNCTION latchkey_invalidate_session();

CREATE FUNCTION latchkey_invalidate_member() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'm:' || OLD.id);
  RETURN NULL;
END $$;

CREATE TRIGGER members_invalidate AFTER UPDATE OR DELETE ON members
  FOR EACH ROW EXECUTE FUNCTION latchkey_invalidate_member();

CREATE FUNCTION latchkey_invalidate_passkey_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'm:' || COALESCE(OLD.member_id, NEW.member_id));
  RETURN NULL;
END $$;

CREATE TRIGGER passkeys_invalidate AFTER INSERT OR DELETE ON passkeys
  FOR EACH ROW EXECUTE FUNCTION latchkey_invalidate_passkey_owner();

CREATE FUNCTION latchkey_invalidate_apps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'a');
  RETURN NULL;
END $$;

CREATE TRIGGER apps_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apps
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_apps();
CREATE TRIGGER app_members_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON app_members
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_apps();

CREATE FUNCTION latchkey_invalidate_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_invalidate', 'all');
  RETURN NULL;
END $$;

CREATE TRIGGER sessions_invalidate_truncate AFTER TRUNCATE ON sessions
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();
CREATE TRIGGER members_invalidate_truncate AFTER TRUNCATE ON members
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();
