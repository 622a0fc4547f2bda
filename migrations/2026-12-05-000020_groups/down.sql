DROP TRIGGER groups_invalidate ON groups;
DROP TRIGGER app_groups_invalidate ON app_groups;
DROP TRIGGER group_members_invalidate_truncate ON group_members;
DROP TRIGGER group_members_invalidate ON group_members;
DROP FUNCTION latchkey_invalidate_group_member();
ALTER TABLE members DROP COLUMN name;
DROP TABLE app_groups;
DROP TABLE group_members;
DROP TABLE groups;
