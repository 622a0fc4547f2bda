-- A pending sign-in: one email with a link (token) and a 6-digit code.
-- Only keyed digests of the token id, the code and the asking browser's id are stored.
CREATE TABLE sign_in_requests (
    id BIGSERIAL PRIMARY KEY,
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    token_digest BYTEA NOT NULL UNIQUE CHECK (octet_length(token_digest) = 32),
    code_digest BYTEA NOT NULL CHECK (octet_length(code_digest) = 32),
    -- Digest of the asking browser's binding secret; NULL only for break-glass links
    -- (`latchkey link`), which no browser asked for.
    browser_digest BYTEA CHECK (octet_length(browser_digest) = 32),
    -- The number the asking browser shows, for approval from another device.
    approval_number SMALLINT NOT NULL CHECK (approval_number BETWEEN 10 AND 99),
    code_failures SMALLINT NOT NULL DEFAULT 0,
    next_path TEXT NOT NULL DEFAULT '/',
    requested_ip TEXT,
    requested_user_agent TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    -- Set once, by the statement that consumes the request: link, code or approval.
    consumed_at TIMESTAMPTZ,
    completed_by TEXT CHECK (completed_by IN ('link', 'code', 'approval')),
    -- Approved from another device; the asking browser completes it through /auth/wait.
    approved_at TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ
);

CREATE INDEX sign_in_requests_member_created_idx ON sign_in_requests (member_id, created_at);
CREATE INDEX sign_in_requests_expires_at_idx ON sign_in_requests (expires_at);

-- Browsers a member has signed in from, to send a "new sign-in" email for the others.
CREATE TABLE member_browsers (
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    browser_digest BYTEA NOT NULL CHECK (octet_length(browser_digest) = 32),
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, browser_digest)
);
