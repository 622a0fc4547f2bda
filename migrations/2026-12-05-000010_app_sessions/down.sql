DROP TABLE app_sessions;
DROP FUNCTION latchkey_invalidate_app_session();

CREATE TABLE session_apps (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    app_id BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, app_id)
);

CREATE INDEX session_apps_app_id_idx ON session_apps (app_id);
