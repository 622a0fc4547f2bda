-- Decoy requests: an address that may not sign in (unknown, deactivated, over its mail limit)
-- still gets a request, bound to the asking browser, whose token and code nobody knows. Its
-- browser then sees what a member's sees at every later step, and it can never complete.
ALTER TABLE sign_in_requests ALTER COLUMN member_id DROP NOT NULL;
ALTER TABLE sign_in_requests
    ADD CONSTRAINT sign_in_requests_decoy_has_browser
    CHECK (member_id IS NOT NULL OR browser_digest IS NOT NULL);

-- The canonical address the request was asked for: a decoy's wrong codes are counted per
-- address as a member's are counted per member, so the 24-hour code lock looks alike.
ALTER TABLE sign_in_requests ADD COLUMN requested_email TEXT;
UPDATE sign_in_requests r SET requested_email = m.email FROM members m WHERE m.id = r.member_id;
ALTER TABLE sign_in_requests ALTER COLUMN requested_email SET NOT NULL;
CREATE INDEX sign_in_requests_email_created_idx ON sign_in_requests (requested_email, created_at);

-- Set when a wrong approval number cancelled the request; three in 24 hours lock approval
-- for the member.
ALTER TABLE sign_in_requests ADD COLUMN approval_mismatch_at TIMESTAMPTZ;

-- One `link_prefetched` row per request and client IP, however often the link is fetched.
CREATE TABLE sign_in_prefetches (
    request_id BIGINT NOT NULL REFERENCES sign_in_requests (id) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    PRIMARY KEY (request_id, ip)
);
