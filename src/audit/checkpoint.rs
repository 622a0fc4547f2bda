//! Signed checkpoints of the login audit: what stops whoever can write to the database (the
//! application's own role included) from rewriting or dropping rows and rebuilding the chain.
//!
//! A checkpoint signs, with a key derived from `LATCHKEY_SECRET_KEY` that the database never
//! sees, the chain's head (`seq` and `head_hash`), where the chain starts after purges
//! (`start_seq`, `start_hash`) and when it was taken. Because every row's hash covers its
//! predecessor's, a checkpoint vouches for every row up to its `seq`; `latchkey audit verify`
//! (see [`crate::audit::chain::verify`]) checks them.
//!
//! They are written at least once every [`INTERVAL`] while rows are added (by the server's
//! [`Checkpointer`]), when the server stops, by every command-line command that appended rows,
//! by `latchkey purge` (in its own transaction, signing the new start of the chain) and by
//! `latchkey audit checkpoint`. Each is published ([`Publisher`]): logged at info as one line
//! and appended to `LATCHKEY_AUDIT_ANCHORS` when set. Except for `audit checkpoint`, which an
//! operator runs on purpose, nothing signs a chain that no longer extends the last head this
//! process signed or saw signed ([`sign_extending`]): rows cut off the end or rewritten are
//! refused, audited `audit_chain_broken` and told to the admins.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use ring::hmac;

use crate::audit::anchor;
use crate::audit::rows::{appended_by_this_process, AuditEvent, NewAuditRow};
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

/// The newest checkpoint whose signature verifies with `key`: one written by whoever can
/// write to the database, but without the key, is never believed.
pub fn newest_signed(conn: &mut PgConnection, key: &hmac::Key) -> QueryResult<Option<Checkpoint>> {
    Ok(newest(conn)?.filter(|newest| newest.signature_is_valid(key)))
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

/// Where a signed checkpoint goes besides the database: the log, at info, as one line, and
/// `LATCHKEY_AUDIT_ANCHORS` when set. Copies the database cannot take back are what show rows
/// cut off the end of the audit ([`crate::audit::anchor`]).
#[derive(Debug, Clone, Default)]
pub struct Publisher {
    anchors: Option<PathBuf>,
}

impl Publisher {
    pub fn new(anchors: Option<PathBuf>) -> Self {
        Self { anchors }
    }

    /// Blocking file I/O when an anchors file is set: call it off the async executor.
    pub fn publish(&self, checkpoint: &Checkpoint) {
        log::info!(target: LOG_TARGET, "{}", checkpoint.line());
        if let Some(path) = &self.anchors {
            if let Err(err) = anchor::append(path, checkpoint) {
                log::error!(
                    target: LOG_TARGET,
                    "appending the audit checkpoint to {} (LATCHKEY_AUDIT_ANCHORS): {err}",
                    path.display()
                );
            }
        }
    }
}

/// The log target of checkpoint lines, so an operator can route them apart.
pub const LOG_TARGET: &str = "latchkey::audit";

/// A head some checkpoint signed: the chain must go on extending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub signed_at: DateTime<Utc>,
}

impl SignedHead {
    fn of(checkpoint: &Checkpoint) -> Self {
        Self {
            seq: checkpoint.seq,
            hash: checkpoint.head_hash.clone(),
            signed_at: checkpoint.signed_at,
        }
    }
}

/// What [`sign_extending`] did.
#[derive(Debug)]
pub enum Signing {
    Signed(Checkpoint),
    /// The newest checkpoint already covers the chain as it is.
    UpToDate,
    /// The chain no longer extends this head: rows were cut off the end or rewritten since it
    /// was signed. Nothing was signed.
    Broken(SignedHead),
}

/// Signs the chain if it is behind, and only if it still extends `last` (the newest head this
/// process signed or saw signed); a newer checkpoint another process signed becomes `last`.
/// Runs under the chain's lock, so no row is appended between the check and the signature.
pub fn sign_extending(
    conn: &mut PgConnection,
    key: &hmac::Key,
    last: &mut Option<SignedHead>,
) -> QueryResult<Signing> {
    conn.transaction(|conn| {
        let chain = lock_chain(conn)?;
        let newest = newest_signed(conn, key)?;
        if let Some(head) = last.as_ref() {
            let signed_start_seq = newest.as_ref().map(|newest| newest.start_seq);
            if anchor::covers(conn, &chain, signed_start_seq, head.seq, &head.hash)?.is_err() {
                return Ok(Signing::Broken(head.clone()));
            }
        }
        if let Some(newest) = &newest {
            if last.as_ref().is_none_or(|head| newest.seq >= head.seq) {
                *last = Some(SignedHead::of(newest));
            }
            if newest.seq == chain.head_seq
                && newest.head_hash == chain.head_hash
                && newest.start_seq == chain.start_seq
                && newest.start_hash == chain.start_hash
            {
                return Ok(Signing::UpToDate);
            }
        }
        let signed = sign_and_insert(conn, key, &chain)?;
        *last = Some(SignedHead::of(&signed));
        Ok(Signing::Signed(signed))
    })
}

/// The newest validly signed checkpoint's head: where a process starts from.
pub fn newest_signed_head(
    conn: &mut PgConnection,
    key: &hmac::Key,
) -> QueryResult<Option<SignedHead>> {
    Ok(newest_signed(conn, key)?.map(|newest| SignedHead::of(&newest)))
}

/// Told once per head found missing, with the connection that audited it (the server mails
/// the admins).
pub type OnBroken = Box<dyn Fn(&mut PgConnection, &SignedHead) + Send + Sync>;

/// The newest head this process signed or saw signed; read from the database when it starts.
#[derive(Debug, Default)]
struct Memory {
    loaded: bool,
    last: Option<SignedHead>,
}

/// The server's signer: the periodic task and the last checkpoint on shutdown share it, and
/// with it the last head this process signed or saw signed.
pub struct Checkpointer {
    db: Db,
    key: hmac::Key,
    publisher: Publisher,
    memory: Mutex<Memory>,
    reported: Mutex<HashSet<(i64, Vec<u8>)>>,
    on_broken: OnBroken,
}

impl Checkpointer {
    /// Starts from the newest validly signed checkpoint in the database, read when the task
    /// starts ([`Checkpointer::spawn`]) or at the first signature, whichever comes first.
    pub fn new(db: Db, key: hmac::Key, publisher: Publisher, on_broken: OnBroken) -> Arc<Self> {
        Arc::new(Self {
            db,
            key,
            publisher,
            memory: Mutex::new(Memory::default()),
            reported: Mutex::new(HashSet::new()),
            on_broken,
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn load(&self, conn: &mut PgConnection) -> QueryResult<()> {
        let mut memory = self.memory();
        if !memory.loaded {
            memory.last = newest_signed_head(conn, &self.key)?;
            memory.loaded = true;
        }
        Ok(())
    }

    /// The head this process now holds the chain to.
    pub fn last_head(&self) -> Option<SignedHead> {
        self.memory().last.clone()
    }

    /// Signs what this process (or any other) appended, unless the chain no longer extends
    /// the last signed head: then it refuses, logs an error, and audits `audit_chain_broken`
    /// and tells the admins once for that head.
    pub async fn sign_if_behind(self: &Arc<Self>) -> Result<Option<Checkpoint>, DbError> {
        let this = Arc::clone(self);
        let signing = self
            .db
            .query(move |conn| {
                this.load(conn)?;
                let mut memory = this.memory();
                let signing = sign_extending(conn, &this.key, &mut memory.last)?;
                drop(memory);
                match &signing {
                    Signing::Signed(checkpoint) => this.publisher.publish(checkpoint),
                    Signing::Broken(head) => this.refuse(conn, head)?,
                    Signing::UpToDate => {}
                }
                Ok(signing)
            })
            .await?;
        Ok(match signing {
            Signing::Signed(checkpoint) => Some(checkpoint),
            Signing::UpToDate | Signing::Broken(_) => None,
        })
    }

    fn refuse(&self, conn: &mut PgConnection, head: &SignedHead) -> QueryResult<()> {
        log::error!(
            target: LOG_TARGET,
            "audit chain broken: it no longer extends the checkpoint of seq={} head={} signed \
             at {}; rows were cut off the end or rewritten since. Not signing it; compare with \
             `latchkey audit verify --anchors`",
            head.seq,
            hex::encode(&head.hash),
            head.signed_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let first_time = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((head.seq, head.hash.clone()));
        if first_time {
            NewAuditRow::new(AuditEvent::AuditChainBroken)
                .detail(format!(
                    "the chain no longer extends the checkpoint of seq {} (head {}, signed {}): \
                     rows were cut off the end or rewritten",
                    head.seq,
                    hex::encode(&head.hash),
                    head.signed_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ))
                .insert(conn)?;
            (self.on_broken)(conn, head);
        }
        Ok(())
    }

    /// Every `interval`, if this process appended audit rows since the last look, signs the
    /// chain (through [`Db::run`], off the executor). While no rows are added it touches
    /// nothing, not even the database.
    pub fn spawn(self: &Arc<Self>, interval: Duration) {
        let this = Arc::clone(self);
        actix_web::rt::spawn(async move {
            let loader = Arc::clone(&this);
            if let Err(err) = this.db.query(move |conn| loader.load(conn)).await {
                // The first signature reads it instead.
                log::warn!("reading the newest audit checkpoint: {err}");
            }
            let mut ticks = actix_web::rt::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = 0;
            loop {
                ticks.tick().await;
                let appended = appended_by_this_process();
                if appended == seen {
                    continue;
                }
                match this.sign_if_behind().await {
                    // A refusal's own audit row counts as appended: the next tick looks once
                    // more, finds it reported, and then rests until new rows come.
                    Ok(_) => seen = appended,
                    // `seen` stays, so the next tick tries again.
                    Err(err) => log::warn!("writing an audit checkpoint: {err}"),
                }
            }
        });
    }
}

/// The command line's signer for what a command appended: no memory beyond the newest signed
/// checkpoint, which it must still extend.
pub fn sign_after_command(
    conn: &mut PgConnection,
    key: &hmac::Key,
    publisher: &Publisher,
) -> QueryResult<Signing> {
    let mut last = newest_signed_head(conn, key)?;
    let signing = sign_extending(conn, key, &mut last)?;
    if let Signing::Signed(checkpoint) = &signing {
        publisher.publish(checkpoint);
    }
    Ok(signing)
}

/// A checkpoint of seq 7 signed with `key`, for the room's unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) fn sample(key: &hmac::Key) -> Checkpoint {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(key: &hmac::Key) -> Checkpoint {
        sample(key)
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
