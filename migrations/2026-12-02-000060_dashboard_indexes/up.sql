-- The dashboard's chart counts sign-ins and failed attempts per day over 30 days: by event
-- and time, so each event's window is one index-only range scan (the older audit is never
-- read). The 24-hour counts use it too.
CREATE INDEX login_audit_event_occurred_at_idx ON login_audit (event, occurred_at);

-- "Access not used" asks, for each active member, when they last signed in: one step into
-- this partial index per member (a third of the audit's rows at most are sign-ins).
CREATE INDEX login_audit_sign_ins_idx ON login_audit (email, occurred_at)
    WHERE event = 'signed_in';
