-- Groups say which apps a member may open; roles keep saying what they may do in Latchkey.
-- A member belongs to any number of groups, an app may let groups in besides roles and listed
-- members, and a member may have a display name that pages show and apps receive.

-- Lower-case letters, digits and `-`, not starting with `-` (it would read as an option on the
-- command line); the application parses names the same way (src/domain/group_name.rs).
CREATE TABLE groups (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, member_id)
);

-- The session cache reads a member's groups with the member.
CREATE INDEX group_members_member_id_idx ON group_members (member_id);

-- Groups let in by an app, besides its roles and listed members (`app_members`).
CREATE TABLE app_groups (
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, group_id)
);

CREATE INDEX app_groups_group_id_idx ON app_groups (group_id);

-- The display name is handed to apps in a header (`Remote-Name`), so it is one line of
-- printable text: no C0 or C1 controls, no line or paragraph separators, no bidi overrides,
-- no blanks around it (src/domain/member_name.rs says the same).
ALTER TABLE members ADD COLUMN name TEXT CHECK (
    name IS NULL OR (
        char_length(name) BETWEEN 1 AND 100
        AND name = btrim(name)
        AND name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]'
    )
);

-- The session cache (src/session/cache.rs) keeps each member with their groups and each app
-- with the groups it lets in. A change of someone's groups forgets that member everywhere
-- (their sessions are read again with them); a change of an app's groups forgets the apps.
-- A group's removal reaches both through the cascades above; its rename (nothing renames one
-- today, but psql can) changes what every cached member and app holds, so it forgets all.
CREATE FUNCTION latchkey_invalidate_group_member() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('latchkey_invalidate', 'm:' || OLD.member_id);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('latchkey_invalidate', 'm:' || NEW.member_id);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER group_members_invalidate AFTER INSERT OR UPDATE OR DELETE ON group_members
  FOR EACH ROW EXECUTE FUNCTION latchkey_invalidate_group_member();
CREATE TRIGGER group_members_invalidate_truncate AFTER TRUNCATE ON group_members
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();

CREATE TRIGGER app_groups_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON app_groups
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_apps();

CREATE TRIGGER groups_invalidate AFTER UPDATE OR DELETE OR TRUNCATE ON groups
  FOR EACH STATEMENT EXECUTE FUNCTION latchkey_invalidate_all();
