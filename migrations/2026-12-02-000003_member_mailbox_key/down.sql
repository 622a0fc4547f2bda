DROP INDEX members_mailbox_key_idx;
ALTER TABLE members DROP COLUMN mailbox_key;
