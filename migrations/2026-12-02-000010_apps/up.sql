-- Apps protected through forward auth (`/auth/check`), who may open each, and which apps each
-- session has opened (for the sessions page, and so `app_opened` is audited once).
CREATE TABLE apps (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (name <> '' AND length(name) <= 100),
    -- scheme://host[:port], as the `url` crate serialises an origin (lower-case, punycode,
    -- default port left out): the check compares it byte for byte.
    origin TEXT NOT NULL UNIQUE CHECK (origin ~ '^https?://[^/?#@\\]+$'),
    roles TEXT[] NOT NULL DEFAULT '{}'
        CHECK (roles <@ ARRAY['admin', 'auditor', 'member']::TEXT[]),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Members listed by name on an app, besides its roles.
CREATE TABLE app_members (
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    member_id BIGINT NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, member_id)
);

CREATE INDEX app_members_member_id_idx ON app_members (member_id);

-- One row the first time a session passes the check for an app; ends with the session.
CREATE TABLE session_apps (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, app_id)
);

CREATE INDEX session_apps_app_id_idx ON session_apps (app_id);

-- Where the browser returns after sign-in when it came from an app (`/login?rd=`): a URL on a
-- registered app's origin, checked when the link was asked for and again before redirecting.
ALTER TABLE sign_in_requests ADD COLUMN return_url TEXT;
