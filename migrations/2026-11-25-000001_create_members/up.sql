-- Members of the team. `email` is the canonical address (trimmed, domain lower-cased and in
-- punycode); the application parses it before it reaches this table.
CREATE TABLE members (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE CHECK (octet_length(email) BETWEEN 3 AND 254),
    role TEXT NOT NULL CHECK (role IN ('admin', 'auditor', 'member')),
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
