-- The mailbox an address reaches, so that deactivating a member also holds for the other
-- spellings of their address (`Carol@corp.test`, `carol+x@corp.test`): the local part
-- lower-cased and without a `+tag`, `@`, the canonical domain. The application computes it
-- (`EmailAddress::mailbox_key`) for every row it inserts; this backfill is the same rule in
-- SQL. `lower()` follows the database's LC_CTYPE, which agrees with Rust for ASCII local parts;
-- a non-ASCII one is folded as far as the locale knows how.
--
-- Not unique: an admin may list two spellings of one mailbox as two members.
ALTER TABLE members ADD COLUMN mailbox_key TEXT;

WITH split AS (
    -- The last `@` ends the local part (a quoted local part may hold an `@` of its own).
    SELECT id,
           left(email, length(email) - position('@' IN reverse(email))) AS local_part,
           right(email, position('@' IN reverse(email)) - 1) AS domain
    FROM members
), unquoted AS (
    SELECT id, domain,
           CASE WHEN length(local_part) >= 2 AND local_part LIKE '"%"'
                THEN regexp_replace(substr(local_part, 2, length(local_part) - 2), '\\(.)', '\1', 'g')
                ELSE local_part
           END AS local_part
    FROM split
)
UPDATE members
SET mailbox_key = lower(
        CASE WHEN position('+' IN unquoted.local_part) > 1
             THEN left(unquoted.local_part, position('+' IN unquoted.local_part) - 1)
             ELSE unquoted.local_part
        END
    ) || '@' || unquoted.domain
FROM unquoted
WHERE members.id = unquoted.id;

ALTER TABLE members ALTER COLUMN mailbox_key SET NOT NULL;

CREATE INDEX members_mailbox_key_idx ON members (mailbox_key);
