DROP TABLE sign_in_prefetches;
ALTER TABLE sign_in_requests DROP COLUMN approval_mismatch_at;
DROP INDEX sign_in_requests_email_created_idx;
ALTER TABLE sign_in_requests DROP COLUMN requested_email;
DELETE FROM sign_in_requests WHERE member_id IS NULL;
ALTER TABLE sign_in_requests DROP CONSTRAINT sign_in_requests_decoy_has_browser;
ALTER TABLE sign_in_requests ALTER COLUMN member_id SET NOT NULL;
