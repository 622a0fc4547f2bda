//! Signed checkpoints of the login audit: what stops whoever can write to the database (the
//! application's own role included) from rewriting or dropping rows and rebuilding the chain.
//!
//! A checkpoint signs, with a key derived from `LATCHKEY_SECRET_KEY` that the database never
//! sees, the chain's head (`seq` and `head_hash`), where the chain starts after purges
//! (`start_seq`, `start_hash`) and when it was taken. Because every row's hash covers its
//! predecessor's, a checkpoint vouches for every row up to its `seq`; `latchkey audit verify`
//! (see [`crate::audit::chain::verify`]) checks them.
//!
//! They are written at least once every [`INTERVAL`] while rows are added (by
//! [`spawn_checkpointer`] in the server), when the server stops, by every command-line
//! command that appended rows, by `latchkey purge` (in its own transaction, signing the new
//! start of the chain) and by `latchkey audit checkpoint`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use ring::hmac;

use crate::audit::rows::appended_by_this_process;
use crate::db::{Db, DbError};
use crate::domain::ids::CheckpointId;
use crate::schema::{login_audit_chain, login_audit_checkpoints};

/// A checkpoint is written at least this often while rows are being added.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One signed checkpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = login_audit_checkpoints, check_for_backend(diesel::pg::Pg))]
pub struct Checkpoint {
    pub id: CheckpointId,
    /// The newest row covered (`start_seq` when the chain was empty).
    pub seq: i64,
    pub head_hash: Vec<u8>,
    /// The seq just before the oldest row the chain then held, and that row's `prev_hash`.
    pub start_seq: i64,
    pub start_hash: Vec<u8>,
    pub signed_at: DateTime<Utc>,
    pub signature: Vec<u8>,
}

#[derive(Insertable)]
#[diesel(table_name = login_audit_checkpoints)]
struct NewCheckpoint<'a> {
    seq: i64,
    head_hash: &'a [u8],
    start_seq: i64,
    start_hash: &'a [u8],
    signed_at: DateTime<Utc>,
    signature: &'a [u8],
}

/// The chain's state as `login_audit_chain` records it.
#[derive(Debug, Clone, Queryable)]
pub(crate) struct ChainState {
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
    pub start_seq: i64,
    pub start_hash: Vec<u8>,
}

/// What is signed: every field but the id, in a fixed, unambiguous text form.
pub(super) fn message(
    seq: i64,
    head_hash: &[u8],
    start_seq: i64,
    start_hash: &[u8],
    signed_at: DateTime<Utc>,
) -> Vec<u8> {
    format!(
        "latchkey audit checkpoint v1|{seq}|{}|{start_seq}|{}|{}",
        hex::encode(head_hash),
        hex::encode(start_hash),
        signed_at.timestamp_micros()
    )
    .into_bytes()
}

impl Checkpoint {
    pub fn signature_is_valid(&self, key: &hmac::Key) -> bool {
        let signed = message(
            self.seq,
            &self.head_hash,
            self.start_seq,
            &self.start_hash,
            self.signed_at,
        );
        hmac::verify(key, &signed, &self.signature).is_ok()
    }

    /// One line, for keeping outside the database (a log, a ticket, another machine).
    pub fn line(&self) -> String {
        format!(
            "audit checkpoint {id}: seq={seq} head={head} start_seq={start_seq} start={start} \
             signed_at={at} signature={signature}",
            id = self.id,
            seq = self.seq,
            head = hex::encode(&self.head_hash),
            start_seq = self.start_seq,
            start = hex::encode(&self.start_hash),
            at = self.signed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            signature = hex::encode(&self.signature),
        )
    }
}

/// Reads the chain's state, holding its lock until the transaction ends, so no row is
/// appended between reading the head and signing it.
pub(crate) fn lock_chain(conn: &mut PgConnection) -> QueryResult<ChainState> {
    login_audit_chain::table
        .select((
            login_audit_chain::head_seq,
            login_audit_chain::head_hash,
            login_audit_chain::start_seq,
            login_audit_chain::start_prev_hash,
        ))
        .for_update()
        .first(conn)
}

#[derive(QueryableByName)]
struct Clock {
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// Signs the chain as it is now. Takes the chain's lock (inside the caller's transaction, if
/// any, as `purge` has it).
pub fn write(conn: &mut PgConnection, key: &hmac::Key) -> QueryResult<Checkpoint> {
    conn.transaction(|conn| {
        let chain = lock_chain(conn)?;
        sign_and_insert(conn, key, &chain)
    })
}

/// Signs the chain unless the newest checkpoint already covers it as it is: what the server
/// and the command line call after adding rows. `None` when there was nothing to sign.
pub fn write_if_behind(
    conn: &mut PgConnection,
    key: &hmac::Key,
) -> QueryResult<Option<Checkpoint>> {
    conn.transaction(|conn| {
        let chain = lock_chain(conn)?;
        if let Some(newest) = newest(conn)? {
            if newest.seq == chain.head_seq
                && newest.head_hash == chain.head_hash
                && newest.start_seq == chain.start_seq
                && newest.start_hash == chain.start_hash
            {
                return Ok(None);
            }
        }
        sign_and_insert(conn, key, &chain).map(Some)
    })
}

/// The checkpoint covering the most rows (the later of equals).
pub fn newest(conn: &mut PgConnection) -> QueryResult<Option<Checkpoint>> {
    login_audit_checkpoints::table
        .select(Checkpoint::as_select())
        .order((
            login_audit_checkpoints::seq.desc(),
            login_audit_checkpoints::signed_at.desc(),
            login_audit_checkpoints::id.desc(),
        ))
        .first(conn)
        .optional()
}

fn sign_and_insert(
    conn: &mut PgConnection,
    key: &hmac::Key,
    chain: &ChainState,
) -> QueryResult<Checkpoint> {
    // The database's clock, as for the rows' `occurred_at`; read after taking the lock, so
    // checkpoints are stamped in the order they cover the chain.
    let signed_at = diesel::sql_query("SELECT clock_timestamp() AS at")
        .get_result::<Clock>(conn)?
        .at;
    let signed = message(
        chain.head_seq,
        &chain.head_hash,
        chain.start_seq,
        &chain.start_hash,
        signed_at,
    );
    let signature = hmac::sign(key, &signed);
    diesel::insert_into(login_audit_checkpoints::table)
        .values(NewCheckpoint {
            seq: chain.head_seq,
            head_hash: &chain.head_hash,
            start_seq: chain.start_seq,
            start_hash: &chain.start_hash,
            signed_at,
            signature: signature.as_ref(),
        })
        .returning(Checkpoint::as_returning())
        .get_result(conn)
}

/// [`write_if_behind`] from async code, on the blocking pool.
pub async fn write_if_behind_async(
    db: &Db,
    key: &hmac::Key,
) -> Result<Option<Checkpoint>, DbError> {
    let key = key.clone();
    db.query(move |conn| write_if_behind(conn, &key)).await
}

/// The server's checkpoint task: every `interval`, if this process appended audit rows since
/// the last look, signs the chain (through [`Db::run`], off the executor). While no rows are
/// added it touches nothing, not even the database. Other processes (a second instance, the
/// command line) sign their own rows.
pub fn spawn_checkpointer(db: Db, key: hmac::Key, interval: Duration) {
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = 0;
        loop {
            ticks.tick().await;
            let appended = appended_by_this_process();
            if appended == seen {
                continue;
            }
            match write_if_behind_async(&db, &key).await {
                Ok(written) => {
                    seen = appended;
                    if let Some(checkpoint) = written {
                        log::debug!("{}", checkpoint.line());
                    }
                }
                // `seen` stays, so the next tick tries again.
                Err(err) => log::warn!("writing an audit checkpoint: {err}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(key: &hmac::Key) -> Checkpoint {
        let signed_at = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        let signature = hmac::sign(key, &message(7, &[1; 32], 0, &[0; 32], signed_at));
        Checkpoint {
            id: CheckpointId::new(3),
            seq: 7,
            head_hash: vec![1; 32],
            start_seq: 0,
            start_hash: vec![0; 32],
            signed_at,
            signature: signature.as_ref().to_vec(),
        }
    }

    #[test]
    fn a_signature_covers_every_field_and_needs_the_key() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]);
        let good = checkpoint(&key);
        assert!(good.signature_is_valid(&key));
        assert!(!good.signature_is_valid(&hmac::Key::new(hmac::HMAC_SHA256, &[8; 32])));
        let changes: [fn(&mut Checkpoint); 5] = [
            |c| c.seq += 1,
            |c| c.head_hash[0] ^= 1,
            |c| c.start_seq += 1,
            |c| c.start_hash[31] ^= 1,
            |c| c.signed_at += chrono::Duration::microseconds(1),
        ];
        for change in changes {
            let mut changed = good.clone();
            change(&mut changed);
            assert!(!changed.signature_is_valid(&key), "{changed:?}");
        }
    }

    #[test]
    fn the_line_is_one_line_naming_everything() {
        let line = checkpoint(&hmac::Key::new(hmac::HMAC_SHA256, &[9; 32])).line();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("audit checkpoint 3: seq=7 head=0101"),
            "{line}"
        );
        assert!(
            line.contains("signed_at=2027-01-15T08:00:00.123456Z"),
            "{line}"
        );
        assert!(line.contains(" signature="), "{line}");
    }
}
