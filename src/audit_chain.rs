//! Checking the login audit's hash chain (`latchkey audit verify`), and cutting its oldest
//! rows off at the retention limit (`latchkey purge`) so that what remains still verifies.
//!
//! The chain itself is kept by the database (see the `create_login_audit` migration): each
//! row's `prev_hash` is its predecessor's `hash`, `login_audit_chain.head_hash` is the newest
//! row's `hash`, and `start_prev_hash` is what the oldest remaining row points back to.

use std::fmt;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable};

use crate::models::audit::AuditRow;
use crate::schema::{login_audit, login_audit_chain};

/// Rows read per query: memory stays constant however long the audit grows.
const BATCH: i64 = 1000;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every row links to the one before it, and the last one is the recorded head.
    Intact { rows: u64 },
    /// `id` is the first row (in chain order) that does not check out.
    Broken { id: i64, reason: BreakReason },
    /// Every remaining row checks out, but the recorded head is not the last of them: rows
    /// after `after` (the last row left, `None` if none is left) were deleted.
    Truncated { after: Option<i64>, rows: u64 },
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
        }
    }
}

#[derive(Debug, Queryable)]
struct ChainEnds {
    head_hash: Vec<u8>,
    start_prev_hash: Vec<u8>,
}

fn chain_ends(conn: &mut PgConnection) -> QueryResult<ChainEnds> {
    login_audit_chain::table
        .select((
            login_audit_chain::head_hash,
            login_audit_chain::start_prev_hash,
        ))
        .first(conn)
}

/// Walks the whole chain in id order, `BATCH` rows at a time, in one read-only snapshot (rows
/// appended meanwhile are neither seen nor counted against the head).
pub fn verify(conn: &mut PgConnection) -> QueryResult<Verification> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(walk)
}

fn walk(conn: &mut PgConnection) -> QueryResult<Verification> {
    let ends = chain_ends(conn)?;
    let mut prev = ends.start_prev_hash;
    let mut last_id: Option<i64> = None;
    let mut rows: u64 = 0;
    loop {
        let mut query = login_audit::table
            .select(AuditRow::as_select())
            .order(login_audit::id.asc())
            .limit(BATCH)
            .into_boxed();
        if let Some(last_id) = last_id {
            query = query.filter(login_audit::id.gt(last_id));
        }
        let batch: Vec<AuditRow> = query.load(conn)?;
        let fetched = batch.len();
        for row in batch {
            if row.prev_hash != prev {
                let first = last_id.is_none();
                return Ok(Verification::Broken {
                    id: row.id,
                    reason: BreakReason::PrevHashMismatch { first },
                });
            }
            if row.expected_hash(&prev) != row.hash {
                return Ok(Verification::Broken {
                    id: row.id,
                    reason: BreakReason::HashMismatch,
                });
            }
            prev = row.hash;
            last_id = Some(row.id);
            rows += 1;
        }
        if fetched < BATCH as usize {
            break;
        }
    }
    if prev != ends.head_hash {
        return Ok(Verification::Truncated {
            after: last_id,
            rows,
        });
    }
    Ok(Verification::Intact { rows })
}

#[derive(QueryableByName)]
struct Boundary {
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
}

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deletes the oldest audit rows, those that occurred more than `retention` ago, and moves the
/// chain's start to what the oldest remaining row points back to; all in one transaction that
/// holds the chain's lock, so no row is appended meanwhile.
///
/// Rows go in chain (id) order: the purge stops at the first row still inside the retention
/// window, so a row stamped older than rows before it (a clock step back) stays until they go.
/// Returns the number of rows deleted.
pub fn purge_older_than(conn: &mut PgConnection, retention: Duration) -> QueryResult<usize> {
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
                "UPDATE login_audit_chain SET start_prev_hash = COALESCE(\
                     (SELECT prev_hash FROM login_audit ORDER BY id LIMIT 1), head_hash) \
                 WHERE singleton",
            )
            .execute(conn)?;
        }
        Ok(usize::try_from(deleted.n).unwrap_or(usize::MAX))
    })
}

/// The chain's start and head, for tests and diagnostics.
pub fn start_and_head(conn: &mut PgConnection) -> QueryResult<(Vec<u8>, Vec<u8>)> {
    let ends = chain_ends(conn)?;
    Ok((ends.start_prev_hash, ends.head_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_row() {
        let broken = Verification::Broken {
            id: 42,
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
            after: Some(7),
            rows: 7
        }
        .to_string()
        .contains("after row 7"));
        assert!(!broken.is_intact());
    }
}
