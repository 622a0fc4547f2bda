//! Anchors: checkpoint lines kept outside the database (a log, a file on another machine, a
//! ticket). The database alone cannot prove that nothing was cut off the end of the audit:
//! whoever deletes the newest rows together with their checkpoints, or truncates it all,
//! leaves a chain that checks out. An anchor can: the chain must still cover every row an
//! anchor signed, with the hash it signed.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use ring::hmac;

use super::checkpoint::{message, ChainState, Checkpoint};
use crate::schema::login_audit;

/// What every checkpoint line starts with (after whatever a log puts before it).
const MARKER: &str = "audit checkpoint ";

/// A checkpoint as its line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub start_seq: i64,
    pub start_hash: Vec<u8>,
    pub signed_at: DateTime<Utc>,
    signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("not a checkpoint line (one starts `audit checkpoint N: seq=…`)")]
    NotALine,
    #[error("its {0} is missing or malformed")]
    Field(&'static str),
    #[error("its signature does not verify (it was altered, or LATCHKEY_SECRET_KEY is not the key that signed it)")]
    BadSignature,
}

impl Anchor {
    /// Reads a checkpoint line, as `latchkey audit checkpoint` prints it or as the log holds
    /// it (anything before `audit checkpoint` is ignored), and checks its signature.
    pub fn parse(line: &str, key: &hmac::Key) -> Result<Self, AnchorError> {
        let start = line.find(MARKER).ok_or(AnchorError::NotALine)?;
        let fields: Vec<(&str, &str)> = line[start + MARKER.len()..]
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .collect();
        let field = |name: &'static str| {
            fields
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
                .ok_or(AnchorError::Field(name))
        };
        let number = |name: &'static str| {
            field(name)?
                .parse::<i64>()
                .map_err(|_| AnchorError::Field(name))
        };
        let bytes =
            |name: &'static str| hex::decode(field(name)?).map_err(|_| AnchorError::Field(name));
        let anchor = Self {
            seq: number("seq")?,
            head_hash: bytes("head")?,
            start_seq: number("start_seq")?,
            start_hash: bytes("start")?,
            signed_at: DateTime::parse_from_rfc3339(field("signed_at")?)
                .map_err(|_| AnchorError::Field("signed_at"))?
                .with_timezone(&Utc),
            signature: bytes("signature")?,
        };
        let signed = message(
            anchor.seq,
            &anchor.head_hash,
            anchor.start_seq,
            &anchor.start_hash,
            anchor.signed_at,
        );
        hmac::verify(key, &signed, &anchor.signature).map_err(|_| AnchorError::BadSignature)?;
        Ok(anchor)
    }

    /// Every anchor in a file: each line that holds a checkpoint line (a copied log works);
    /// other lines are skipped, and a checkpoint line that does not parse or verify is an
    /// error naming its line number.
    pub fn read_file(path: &Path, key: &hmac::Key) -> anyhow::Result<Vec<Self>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| line.contains(MARKER))
            .map(|(n, line)| {
                Self::parse(line, key)
                    .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))
            })
            .collect()
    }
}

/// Why the chain no longer covers an anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorProblem {
    /// The chain now ends at `head_seq`, before the anchor's row: rows were cut off the end
    /// (with their checkpoints), or the whole audit was truncated.
    CutOff { head_seq: i64 },
    /// The row with the anchor's seq has another hash: it, or a row before it, was rewritten
    /// and the chain rebuilt.
    Rewritten,
    /// The chain now starts after the anchor's row, but at a point no purge signed.
    StartMoved { start_seq: i64 },
}

impl fmt::Display for AnchorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnchorProblem::CutOff { head_seq } => write!(
                f,
                "the chain now ends at seq {head_seq}, before it: rows were cut off the end \
                 (with their checkpoints), or the whole audit was truncated"
            ),
            AnchorProblem::Rewritten => f.write_str(
                "the row with that seq has another hash: it or a row before it was rewritten \
                 and the chain rebuilt",
            ),
            AnchorProblem::StartMoved { start_seq } => write!(
                f,
                "the chain now starts after seq {start_seq}, which no purge signed"
            ),
        }
    }
}

/// Whether the chain still holds the row with `seq`, with `head_hash`, as an anchor (or a
/// head this process signed) says. `signed_start_seq` is the start the newest validly signed
/// checkpoint names: a purge moves the start, and signs it.
pub(crate) fn covers(
    conn: &mut PgConnection,
    chain: &ChainState,
    signed_start_seq: Option<i64>,
    seq: i64,
    head_hash: &[u8],
) -> QueryResult<Result<(), AnchorProblem>> {
    if seq > chain.head_seq {
        return Ok(Err(AnchorProblem::CutOff {
            head_seq: chain.head_seq,
        }));
    }
    if seq == chain.start_seq {
        return Ok(if chain.start_hash == head_hash {
            Ok(())
        } else {
            Err(AnchorProblem::Rewritten)
        });
    }
    if seq < chain.start_seq {
        // Purged past it: fine when a signed checkpoint says the chain starts there.
        return Ok(if signed_start_seq == Some(chain.start_seq) {
            Ok(())
        } else {
            Err(AnchorProblem::StartMoved {
                start_seq: chain.start_seq,
            })
        });
    }
    let hash: Option<Vec<u8>> = login_audit::table
        .filter(login_audit::seq.eq(seq))
        .select(login_audit::hash)
        .first(conn)
        .optional()?;
    Ok(match hash {
        Some(hash) if hash == head_hash => Ok(()),
        _ => Err(AnchorProblem::Rewritten),
    })
}

/// Appends a checkpoint's line to `LATCHKEY_AUDIT_ANCHORS` (blocking file I/O: call it off
/// the async executor).
pub fn append(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{}\n", checkpoint.line()).as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[9; 32])
    }

    fn checkpoint() -> Checkpoint {
        super::super::checkpoint::sample(&key())
    }

    #[test]
    fn a_checkpoint_line_reads_back_as_its_anchor_even_inside_a_log_line() {
        let line = checkpoint().line();
        let anchor = Anchor::parse(&line, &key()).unwrap();
        assert_eq!((anchor.seq, anchor.head_hash.clone()), (7, vec![1; 32]));
        let logged = format!("[2027-01-15T08:00:00Z INFO  latchkey::audit] {line}");
        assert_eq!(Anchor::parse(&logged, &key()).unwrap(), anchor);
    }

    #[test]
    fn a_forged_or_mangled_line_is_refused_by_name() {
        let line = checkpoint().line();
        assert_eq!(
            Anchor::parse(&line.replace("seq=7 ", "seq=9 "), &key()),
            Err(AnchorError::BadSignature)
        );
        assert_eq!(
            Anchor::parse(&line, &hmac::Key::new(hmac::HMAC_SHA256, &[8; 32])),
            Err(AnchorError::BadSignature)
        );
        assert_eq!(
            Anchor::parse(&line.replace("head=", "hd="), &key()),
            Err(AnchorError::Field("head"))
        );
        assert_eq!(
            Anchor::parse("checkpoint seq=7", &key()),
            Err(AnchorError::NotALine)
        );
    }
}
