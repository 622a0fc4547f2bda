// @generated automatically by Diesel CLI.

diesel::table! {
    app_sessions (id) {
        id -> Int8,
        session_id -> Int8,
        app_id -> Int8,
        code_digest -> Nullable<Bytea>,
        code_expires_at -> Timestamptz,
        key_digest -> Nullable<Bytea>,
        created_at -> Timestamptz,
        opened_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    app_groups (app_id, group_id) {
        app_id -> Int8,
        group_id -> Int8,
    }
}

diesel::table! {
    app_members (app_id, member_id) {
        app_id -> Int8,
        member_id -> Int8,
    }
}

diesel::table! {
    apps (id) {
        id -> Int8,
        name -> Text,
        origin -> Text,
        roles -> Array<Nullable<Text>>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        client_id -> Nullable<Text>,
        client_secret_digest -> Nullable<Bytea>,
        redirect_uris -> Array<Nullable<Text>>,
        post_logout_redirect_uris -> Array<Nullable<Text>>,
        backchannel_logout_uri -> Nullable<Text>,
    }
}

diesel::table! {
    group_members (group_id, member_id) {
        group_id -> Int8,
        member_id -> Int8,
        added_at -> Timestamptz,
    }
}

diesel::table! {
    groups (id) {
        id -> Int8,
        name -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    login_audit (id) {
        id -> Int8,
        occurred_at -> Timestamptz,
        event -> Text,
        email -> Nullable<Text>,
        ip -> Nullable<Inet>,
        user_agent -> Nullable<Text>,
        actor -> Nullable<Text>,
        detail -> Text,
        request_id -> Nullable<Int8>,
        prev_hash -> Bytea,
        hash -> Bytea,
        seq -> Int8,
    }
}

diesel::table! {
    login_audit_chain (singleton) {
        singleton -> Bool,
        head_hash -> Bytea,
        start_prev_hash -> Bytea,
        head_seq -> Int8,
        start_seq -> Int8,
    }
}

diesel::table! {
    login_audit_checkpoints (id) {
        id -> Int8,
        seq -> Int8,
        head_hash -> Bytea,
        start_seq -> Int8,
        start_hash -> Bytea,
        signed_at -> Timestamptz,
        signature -> Bytea,
    }
}

diesel::table! {
    member_browsers (member_id, browser_digest) {
        member_id -> Int8,
        browser_digest -> Bytea,
        first_seen_at -> Timestamptz,
        last_seen_at -> Timestamptz,
    }
}

diesel::table! {
    members (id) {
        id -> Int8,
        email -> Text,
        role -> Text,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        mailbox_key -> Text,
        name -> Nullable<Text>,
    }
}

diesel::table! {
    oidc_codes (id) {
        id -> Int8,
        code_digest -> Bytea,
        session_id -> Int8,
        app_id -> Int8,
        member_id -> Int8,
        redirect_uri -> Text,
        scope -> Text,
        nonce -> Nullable<Text>,
        code_challenge -> Nullable<Text>,
        auth_time -> Timestamptz,
        amr -> Array<Nullable<Text>>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oidc_logout_outbox (id) {
        id -> Int8,
        app_id -> Int8,
        member_id -> Int8,
        email -> Nullable<Text>,
        sid -> Text,
        created_at -> Timestamptz,
        next_attempt_at -> Timestamptz,
        attempts -> Int4,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    oidc_tokens (id) {
        id -> Int8,
        token_digest -> Bytea,
        kind -> Text,
        code_id -> Int8,
        session_id -> Int8,
        app_id -> Int8,
        scope -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        spent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signing_keys (id) {
        id -> Int8,
        kid -> Text,
        sealed -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    passkey_ceremonies (id) {
        id -> Int8,
        handle_digest -> Bytea,
        kind -> Text,
        member_id -> Nullable<Int8>,
        state -> Jsonb,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    passkeys (id) {
        id -> Int8,
        member_id -> Int8,
        credential_id -> Bytea,
        user_handle -> Bytea,
        passkey -> Jsonb,
        counter -> Int8,
        name -> Text,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Int8,
        key_digest -> Bytea,
        member_id -> Nullable<Int8>,
        state -> Jsonb,
        ip -> Nullable<Inet>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        expires_at -> Timestamptz,
        sid -> Text,
    }
}

diesel::table! {
    sign_in_prefetches (request_id, ip) {
        request_id -> Int8,
        ip -> Inet,
    }
}

diesel::table! {
    sign_in_requests (id) {
        id -> Int8,
        member_id -> Nullable<Int8>,
        token_digest -> Bytea,
        code_digest -> Bytea,
        browser_digest -> Nullable<Bytea>,
        approval_number -> Int2,
        code_failures -> Int2,
        next_path -> Text,
        requested_ip -> Nullable<Inet>,
        requested_user_agent -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        consumed_at -> Nullable<Timestamptz>,
        completed_by -> Nullable<Text>,
        approved_at -> Nullable<Timestamptz>,
        cancelled_at -> Nullable<Timestamptz>,
        requested_email -> Text,
        approval_mismatch_at -> Nullable<Timestamptz>,
        return_url -> Nullable<Text>,
    }
}

diesel::joinable!(app_groups -> apps (app_id));
diesel::joinable!(app_groups -> groups (group_id));
diesel::joinable!(app_members -> apps (app_id));
diesel::joinable!(app_members -> members (member_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> members (member_id));
diesel::joinable!(member_browsers -> members (member_id));
diesel::joinable!(app_sessions -> apps (app_id));
diesel::joinable!(app_sessions -> sessions (session_id));
diesel::joinable!(oidc_codes -> apps (app_id));
diesel::joinable!(oidc_codes -> members (member_id));
diesel::joinable!(oidc_codes -> sessions (session_id));
diesel::joinable!(oidc_logout_outbox -> apps (app_id));
diesel::joinable!(oidc_tokens -> apps (app_id));
diesel::joinable!(oidc_tokens -> oidc_codes (code_id));
diesel::joinable!(oidc_tokens -> sessions (session_id));
diesel::joinable!(passkey_ceremonies -> members (member_id));
diesel::joinable!(passkeys -> members (member_id));
diesel::joinable!(sessions -> members (member_id));
diesel::joinable!(sign_in_prefetches -> sign_in_requests (request_id));
diesel::joinable!(sign_in_requests -> members (member_id));

diesel::allow_tables_to_appear_in_same_query!(
    app_groups,
    app_members,
    app_sessions,
    apps,
    group_members,
    groups,
    login_audit,
    login_audit_chain,
    login_audit_checkpoints,
    member_browsers,
    members,
    oidc_codes,
    oidc_logout_outbox,
    oidc_tokens,
    passkey_ceremonies,
    passkeys,
    sessions,
    sign_in_prefetches,
    sign_in_requests,
    signing_keys,
);
