//! Checking the login audit's hash chain (`latchkey audit verify`), and cutting its oldest
//! rows off at the retention limit (`latchkey purge`) so that what remains still verifies.
//!
//! The chain itself is kept by the database (see the `create_login_audit` migration): each
//! row's `prev_hash` is its predecessor's `hash`, `login_audit_chain.head_hash` is the newest
//! row's `hash`, and `start_prev_hash` is what the oldest remaining row points back to; rows
//! are numbered by a gapless `seq` (see the `audit_checkpoints` migration), and the chain is
//! vouched for by signed checkpoints ([`crate::audit::checkpoint`]).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable};
use ring::hmac;

use crate::audit::anchor::{covers, Anchor, AnchorProblem};
use crate::audit::checkpoint::{self, Checkpoint, INTERVAL};
use crate::audit::rows::AuditRow;
use crate::domain::ids::{AuditId, CheckpointId};
use crate::schema::{login_audit, login_audit_chain, login_audit_checkpoints};

/// Rows read per query: memory stays constant however long the audit grows.
const BATCH: i64 = 1000;

/// Rows may wait this long for a checkpoint: the checkpoint interval, plus room for a slow
/// tick, a long transaction (`occurred_at` is its start) and a clock a little off.
pub const UNSIGNED_LIMIT: Duration = Duration::from_secs(INTERVAL.as_secs() + 30);

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every row links to the one before it, and the last one is the recorded head.
    Intact { rows: u64 },
    /// `id` is the first row (in chain order) that does not check out.
    Broken { id: AuditId, reason: BreakReason },
    /// Every remaining row checks out, but the recorded head is not the last of them: rows
    /// after `after` (the last row left, `None` if none is left) were deleted.
    Truncated { after: Option<AuditId>, rows: u64 },
    /// The checkpoint `id` (for the row with `seq`) is forged, or the chain no longer holds
    /// what it signed.
    BadCheckpoint {
        id: CheckpointId,
        seq: i64,
        problem: CheckpointProblem,
    },
    /// Row `id` (and any after it) was added more than [`UNSIGNED_LIMIT`] ago, yet no
    /// checkpoint covers it: the newest checkpoints were deleted (and perhaps the rows they
    /// covered rewritten), or Latchkey stopped without writing one (a crash).
    Unsigned {
        id: AuditId,
        seq: i64,
        occurred_at: DateTime<Utc>,
    },
    /// A checkpoint line kept outside the database (an anchor, signed at `signed_at` for the
    /// row with `seq`) is no longer covered by the chain.
    AnchorNotCovered {
        seq: i64,
        signed_at: DateTime<Utc>,
        problem: AnchorProblem,
    },
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        matches!(self, Verification::Intact { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakReason {
    /// The row does not point at its predecessor's hash (or, for the oldest row, at the
    /// chain's start): a row before it was deleted or rewritten.
    PrevHashMismatch { first: bool },
    /// The row's contents do not hash to its `hash`: the row was altered.
    HashMismatch,
    /// The row links to its predecessor, but its `seq` is not the next number: rows were
    /// deleted and the chain rebuilt over the gap.
    SeqGap { expected: i64, found: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// Its signature does not verify with the key derived from `LATCHKEY_SECRET_KEY`.
    BadSignature,
    /// The audit has no row with the checkpoint's seq any more.
    RowMissing,
    /// The row with the checkpoint's seq (`row_id`) has another hash: a row with a seq after
    /// `after_seq` (the last point that did check out) and up to this one was rewritten,
    /// deleted or inserted, and the chain rebuilt.
    HashMismatch { row_id: AuditId, after_seq: i64 },
    /// The chain does not start where the newest checkpoint says (`signed_start_seq`), or
    /// where an older one says it could have started: rows were removed outside of
    /// `latchkey purge`, or the start was moved.
    StartMismatch { signed_start_seq: i64 },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::PrevHashMismatch { first: true } => f.write_str(
                "prev_hash does not match the chain's start (rows before it were deleted \
                 outside of `latchkey purge`, or it was rewritten)",
            ),
            BreakReason::PrevHashMismatch { first: false } => f.write_str(
                "prev_hash does not match the previous row's hash (a row before it was \
                 deleted or rewritten)",
            ),
            BreakReason::HashMismatch => {
                f.write_str("hash does not match the row's contents (the row was altered)")
            }
            BreakReason::SeqGap { expected, found } => write!(
                f,
                "seq is {found} where {expected} comes next (rows were deleted and the chain \
                 rebuilt over the gap)"
            ),
        }
    }
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointProblem::BadSignature => f.write_str(
                "its signature does not verify (it was forged or altered, or \
                 LATCHKEY_SECRET_KEY is not the key that signed it)",
            ),
            CheckpointProblem::RowMissing => f.write_str(
                "the audit has no row with that seq any more (rows it covered were deleted)",
            ),
            CheckpointProblem::HashMismatch { row_id, after_seq } => write!(
                f,
                "row {row_id}, which has that seq, does not have the signed hash (a row with \
                 seq after {after_seq} and up to this one was rewritten, deleted or inserted, \
                 and the chain rebuilt)"
            ),
            CheckpointProblem::StartMismatch { signed_start_seq } => write!(
                f,
                "it says the chain starts after seq {signed_start_seq}, which the chain does \
                 not (rows were removed outside of `latchkey purge`, or the start was moved)"
            ),
        }
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verification::Intact { rows } => write!(f, "audit chain intact: {rows} rows"),
            Verification::Broken { id, reason } => {
                write!(f, "audit chain broken at row {id}: {reason}")
            }
            Verification::Truncated {
                after: Some(id),
                rows,
            } => write!(
                f,
                "audit chain broken after row {id}: the recorded head is not the last row, so \
                 rows after it were deleted ({rows} rows checked)"
            ),
            Verification::Truncated { after: None, .. } => f.write_str(
                "audit chain broken: there are no rows, but the recorded head says there were \
                 (every row was deleted)",
            ),
            Verification::BadCheckpoint { id, seq, problem } => {
                write!(f, "audit checkpoint {id} (seq {seq}) broken: {problem}")
            }
            Verification::Unsigned {
                id,
                seq,
                occurred_at,
            } => write!(
                f,
                "audit chain unsigned from row {id} (seq {seq}, added {}): no checkpoint covers \
                 it though it is older than {} s (the newest checkpoints were deleted, or \
                 Latchkey stopped without writing one; if you trust these rows, \
                 `latchkey audit checkpoint` signs them)",
                occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                UNSIGNED_LIMIT.as_secs()
            ),
            Verification::AnchorNotCovered {
                seq,
                signed_at,
                problem,
            } => write!(
                f,
                "audit anchor seq={seq} (signed {}) is no longer covered: {problem}",
                signed_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }
}

fn chain_state(conn: &mut PgConnection) -> QueryResult<checkpoint::ChainState> {
    login_audit_chain::table
        .select((
            login_audit_chain::head_seq,
            login_audit_chain::head_hash,
            login_audit_chain::start_seq,
            login_audit_chain::start_prev_hash,
        ))
        .first(conn)
}

/// Checks the login audit in one read-only snapshot (rows appended meanwhile are not seen):
///
/// 1. the chain: walking rows in order from the recorded start, each links to the one before
///    (or to the start), hashes to its `hash`, and has the next `seq`; the last is the head;
/// 2. every checkpoint: its signature verifies with `key`, and the row with its `seq` has its
///    head hash (so, through the links, every row up to it is what was signed); the newest
///    checkpoint's start is the chain's start, and no older one's start lies after it;
/// 3. that no checkpoint is missing: every row older than [`UNSIGNED_LIMIT`] is covered by
///    some checkpoint.
///
/// Why this rule is enough: a checkpoint vouches for every row up to its seq, so deleting
/// checkpoints in the middle hides nothing; only the newest ones matter. Deleting them (with
/// or without the rows after the remaining ones) leaves rows that no checkpoint covers, and
/// since one is written at least every [`INTERVAL`] while rows are added, rows older than
/// [`UNSIGNED_LIMIT`] without one mean a checkpoint was removed (or the writer died). The
/// known limit: rows of the last [`UNSIGNED_LIMIT`] are unsigned, and someone who deletes the
/// newest checkpoints together with every row after the previous one (or who rewrites
/// unsigned rows' `occurred_at`) is caught only by comparing with a checkpoint line kept
/// outside the database (`latchkey audit checkpoint`).
pub fn verify(conn: &mut PgConnection, key: &hmac::Key) -> QueryResult<Verification> {
    verify_with_anchors(conn, key, &[])
}

/// [`verify`], and then (in the same snapshot) that the chain still covers each anchor: the
/// row it signed is there with the hash it signed, or a signed purge moved the start past it.
/// This is what catches rows cut off the end together with their checkpoints, and a
/// truncated audit, which the database alone cannot show.
pub fn verify_with_anchors(
    conn: &mut PgConnection,
    key: &hmac::Key,
    anchors: &[Anchor],
) -> QueryResult<Verification> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            let chain = chain_state(conn)?;
            let walked = walk(conn, &chain)?;
            if !walked.is_intact() {
                return Ok(walked);
            }
            if let Some(uncovered) = uncovered_anchor(conn, key, &chain, anchors)? {
                return Ok(uncovered);
            }
            if let Some(broken) = check_checkpoints(conn, key, &chain)? {
                return Ok(broken);
            }
            if let Some(unsigned) = oldest_unsigned(conn)? {
                return Ok(unsigned);
            }
            Ok(walked)
        })
}

/// The first anchor the chain no longer covers.
fn uncovered_anchor(
    conn: &mut PgConnection,
    key: &hmac::Key,
    chain: &checkpoint::ChainState,
    anchors: &[Anchor],
) -> QueryResult<Option<Verification>> {
    if anchors.is_empty() {
        return Ok(None);
    }
    let signed_start_seq = checkpoint::newest_signed(conn, key)?.map(|newest| newest.start_seq);
    for anchor in anchors {
        if let Err(problem) = covers(conn, chain, signed_start_seq, anchor.seq, &anchor.head_hash)?
        {
            return Ok(Some(Verification::AnchorNotCovered {
                seq: anchor.seq,
                signed_at: anchor.signed_at,
                problem,
            }));
        }
    }
    Ok(None)
}

fn walk(conn: &mut PgConnection, chain: &checkpoint::ChainState) -> QueryResult<Verification> {
    let mut prev = chain.start_hash.clone();
    let mut prev_seq = chain.start_seq;
    let mut last_id: Option<AuditId> = None;
    let mut rows: u64 = 0;
    loop {
        let batch: Vec<AuditRow> = login_audit::table
            .select(AuditRow::as_select())
            .filter(login_audit::seq.gt(prev_seq))
            .order(login_audit::seq.asc())
            .limit(BATCH)
            .load(conn)?;
        let fetched = batch.len();
        for row in batch {
            if row.prev_hash != prev {
                let first = last_id.is_none();
                return Ok(Verification::Broken {
                    id: row.id,
                    reason: BreakReason::PrevHashMismatch { first },
                });
            }
            if row.seq != prev_seq + 1 {
                return Ok(Verification::Broken {
                    id: row.id,
                    reason: BreakReason::SeqGap {
                        expected: prev_seq + 1,
                        found: row.seq,
                    },
                });
            }
            if row.expected_hash(&prev) != row.hash {
                return Ok(Verification::Broken {
                    id: row.id,
                    reason: BreakReason::HashMismatch,
                });
            }
            prev = row.hash;
            prev_seq = row.seq;
            last_id = Some(row.id);
            rows += 1;
        }
        if fetched < BATCH as usize {
            break;
        }
    }
    // Rows stamped at or before the start (a seq that went backwards) were not walked.
    let before_start: Option<AuditId> = login_audit::table
        .filter(login_audit::seq.le(chain.start_seq))
        .order(login_audit::seq.asc())
        .select(login_audit::id)
        .first(conn)
        .optional()?;
    if let Some(id) = before_start {
        return Ok(Verification::Broken {
            id,
            reason: BreakReason::PrevHashMismatch { first: true },
        });
    }
    if prev != chain.head_hash || prev_seq != chain.head_seq {
        return Ok(Verification::Truncated {
            after: last_id,
            rows,
        });
    }
    Ok(Verification::Intact { rows })
}

/// Step 2 of [`verify`], in seq order, on a chain that step 1 found whole.
fn check_checkpoints(
    conn: &mut PgConnection,
    key: &hmac::Key,
    chain: &checkpoint::ChainState,
) -> QueryResult<Option<Verification>> {
    let broken = |checkpoint: &Checkpoint, problem| {
        Ok(Some(Verification::BadCheckpoint {
            id: checkpoint.id,
            seq: checkpoint.seq,
            problem,
        }))
    };
    let mut after: Option<(i64, DateTime<Utc>, CheckpointId)> = None;
    let mut newest: Option<Checkpoint> = None;
    let mut matched_seq = chain.start_seq;
    loop {
        let mut query = login_audit_checkpoints::table
            .select(Checkpoint::as_select())
            .order((
                login_audit_checkpoints::seq.asc(),
                login_audit_checkpoints::signed_at.asc(),
                login_audit_checkpoints::id.asc(),
            ))
            .limit(BATCH)
            .into_boxed();
        if let Some((seq, at, id)) = after {
            use login_audit_checkpoints::dsl as c;
            query = query.filter(
                c::seq
                    .gt(seq)
                    .or(c::seq.eq(seq).and(c::signed_at.gt(at)))
                    .or(c::seq.eq(seq).and(c::signed_at.eq(at)).and(c::id.gt(id))),
            );
        }
        let batch: Vec<Checkpoint> = query.load(conn)?;
        let fetched = batch.len();
        let seqs: Vec<i64> = batch.iter().map(|c| c.seq).collect();
        let rows: HashMap<i64, (AuditId, Vec<u8>)> = login_audit::table
            .filter(login_audit::seq.eq_any(&seqs))
            .select((login_audit::seq, login_audit::id, login_audit::hash))
            .load::<(i64, AuditId, Vec<u8>)>(conn)?
            .into_iter()
            .map(|(seq, id, hash)| (seq, (id, hash)))
            .collect();
        for checkpoint in batch {
            if !checkpoint.signature_is_valid(key) {
                return broken(&checkpoint, CheckpointProblem::BadSignature);
            }
            let starts_later = checkpoint.start_seq > chain.start_seq;
            let start_differs = checkpoint.start_seq == chain.start_seq
                && checkpoint.start_hash != chain.start_hash;
            if starts_later || start_differs {
                return broken(
                    &checkpoint,
                    CheckpointProblem::StartMismatch {
                        signed_start_seq: checkpoint.start_seq,
                    },
                );
            }
            if checkpoint.seq == chain.start_seq {
                // Signed when the chain was empty here, or its row was purged since: then
                // its hash is what the oldest remaining row points back to.
                if checkpoint.head_hash != chain.start_hash {
                    return broken(&checkpoint, CheckpointProblem::RowMissing);
                }
            } else {
                match rows.get(&checkpoint.seq) {
                    None => return broken(&checkpoint, CheckpointProblem::RowMissing),
                    Some((row_id, hash)) if *hash != checkpoint.head_hash => {
                        return broken(
                            &checkpoint,
                            CheckpointProblem::HashMismatch {
                                row_id: *row_id,
                                after_seq: matched_seq,
                            },
                        )
                    }
                    Some(_) => matched_seq = checkpoint.seq,
                }
            }
            after = Some((checkpoint.seq, checkpoint.signed_at, checkpoint.id));
            newest = Some(checkpoint);
        }
        if fetched < BATCH as usize {
            break;
        }
    }
    match newest {
        Some(newest) if newest.start_seq != chain.start_seq => {
            let problem = CheckpointProblem::StartMismatch {
                signed_start_seq: newest.start_seq,
            };
            broken(&newest, problem)
        }
        _ => Ok(None),
    }
}

#[derive(QueryableByName)]
struct UnsignedRow {
    #[diesel(sql_type = BigInt)]
    id: AuditId,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    occurred_at: DateTime<Utc>,
}

/// Step 3 of [`verify`]: the first row past the newest checkpoint that has waited longer
/// than [`UNSIGNED_LIMIT`] for one.
fn oldest_unsigned(conn: &mut PgConnection) -> QueryResult<Option<Verification>> {
    let row: Option<UnsignedRow> = diesel::sql_query(
        "SELECT id, seq, occurred_at FROM login_audit \
         WHERE seq > COALESCE((SELECT max(seq) FROM login_audit_checkpoints), \
                              (SELECT start_seq FROM login_audit_chain WHERE singleton)) \
           AND occurred_at < now() - make_interval(secs => $1) \
         ORDER BY seq LIMIT 1",
    )
    .bind::<Double, _>(UNSIGNED_LIMIT.as_secs_f64())
    .get_result(conn)
    .optional()?;
    Ok(row.map(|row| Verification::Unsigned {
        id: row.id,
        seq: row.seq,
        occurred_at: row.occurred_at,
    }))
}

#[derive(QueryableByName)]
struct Boundary {
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<AuditId>,
}

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deletes the oldest audit rows, those that occurred more than `retention` ago, moves the
/// chain's start to what the oldest remaining row points back to, drops the checkpoints that
/// named deleted rows, and signs a checkpoint of the new start (with `key`); all in one
/// transaction that holds the chain's lock, so no row is appended meanwhile.
///
/// Rows go in chain (id) order: the purge stops at the first row still inside the retention
/// window, so a row stamped older than rows before it (a clock step back) stays until they go.
/// Returns the number of rows deleted.
pub fn purge_older_than(
    conn: &mut PgConnection,
    retention: Duration,
    key: &hmac::Key,
) -> QueryResult<usize> {
    let seconds = retention.as_secs_f64();
    conn.transaction(|conn| {
        // The append-only trigger lets DELETE through only with this set, for this transaction.
        diesel::sql_query("SET LOCAL latchkey.audit_purge = 'on'").execute(conn)?;
        diesel::sql_query("SELECT 1 FROM login_audit_chain WHERE singleton FOR UPDATE")
            .execute(conn)?;
        // Walks the primary key from the oldest row, so it reads only what is about to go.
        let boundary: Boundary = diesel::sql_query(
            "SELECT (SELECT id FROM login_audit \
                     WHERE occurred_at >= now() - make_interval(secs => $1) \
                     ORDER BY id LIMIT 1) AS id",
        )
        .bind::<Double, _>(seconds)
        .get_result(conn)?;
        let deleted: Deleted = match boundary.id {
            Some(keep_from) => diesel::sql_query(
                "WITH gone AS (DELETE FROM login_audit WHERE id < $1 RETURNING 1) \
                 SELECT count(*) AS n FROM gone",
            )
            .bind::<BigInt, _>(keep_from)
            .get_result(conn)?,
            None => diesel::sql_query(
                "WITH gone AS (DELETE FROM login_audit RETURNING 1) SELECT count(*) AS n FROM gone",
            )
            .get_result(conn)?,
        };
        if deleted.n > 0 {
            diesel::sql_query(
                "UPDATE login_audit_chain SET \
                     start_prev_hash = COALESCE(\
                         (SELECT prev_hash FROM login_audit ORDER BY seq LIMIT 1), head_hash), \
                     start_seq = COALESCE(\
                         (SELECT seq - 1 FROM login_audit ORDER BY seq LIMIT 1), head_seq) \
                 WHERE singleton",
            )
            .execute(conn)?;
            // Their rows are gone; the new checkpoint vouches for everything that is left.
            diesel::sql_query(
                "DELETE FROM login_audit_checkpoints \
                 WHERE seq <= (SELECT start_seq FROM login_audit_chain WHERE singleton)",
            )
            .execute(conn)?;
        }
        checkpoint::write(conn, key)?;
        Ok(usize::try_from(deleted.n).unwrap_or(usize::MAX))
    })
}

/// The chain's start and head, for tests and diagnostics.
pub fn start_and_head(conn: &mut PgConnection) -> QueryResult<(Vec<u8>, Vec<u8>)> {
    let chain = chain_state(conn)?;
    Ok((chain.start_hash, chain.head_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_row() {
        let broken = Verification::Broken {
            id: AuditId::new(42),
            reason: BreakReason::HashMismatch,
        };
        assert!(broken
            .to_string()
            .starts_with("audit chain broken at row 42: "));
        assert_eq!(
            Verification::Intact { rows: 3 }.to_string(),
            "audit chain intact: 3 rows"
        );
        assert!(Verification::Truncated {
            after: Some(AuditId::new(7)),
            rows: 7
        }
        .to_string()
        .contains("after row 7"));
        assert!(!broken.is_intact());
    }
}
