// @generated automatically by Diesel CLI.

diesel::table! {
    members (id) {
        id -> Int8,
        email -> Text,
        role -> Text,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Int8,
        key_digest -> Bytea,
        member_id -> Nullable<Int8>,
        state -> Jsonb,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(sessions -> members (member_id));

diesel::allow_tables_to_appear_in_same_query!(members, sessions,);
