-- The requests that passkey sign-ins left behind cannot satisfy the old constraint; their
-- story stays in the audit, which names them by id only.
DELETE FROM sign_in_requests WHERE completed_by = 'passkey';
ALTER TABLE sign_in_requests DROP CONSTRAINT sign_in_requests_completed_by_check;
ALTER TABLE sign_in_requests ADD CONSTRAINT sign_in_requests_completed_by_check
    CHECK (completed_by IN ('link', 'code', 'approval'));

DROP TABLE passkeys;
