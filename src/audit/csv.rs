//! The audit as CSV: a header row naming the contract's columns, then the rows a batch at a
//! time, so an export of any size holds at most one batch in memory.

use actix_web::web::Bytes;
use chrono::SecondsFormat;

use super::query::{self, AuditFilter};
use super::rows::AuditRow;
use crate::db::Db;
use crate::domain::ids::AuditId;

/// Rows fetched per database round trip while streaming the CSV.
const CSV_BATCH: i64 = 1000;

const CSV_HEADER: [&str; 9] = [
    "id",
    "occurred_at",
    "event",
    "email",
    "ip",
    "user_agent",
    "actor",
    "detail",
    "request_id",
];

/// Spreadsheets run cells that start like a formula; a leading `'` makes them text.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

fn csv_bytes(
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> anyhow::Result<Bytes> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    write(&mut writer)?;
    let bytes = writer
        .into_inner()
        .map_err(|err| anyhow::anyhow!("flushing CSV: {err}"))?;
    Ok(Bytes::from(bytes))
}

fn csv_rows(rows: &[AuditRow]) -> anyhow::Result<Bytes> {
    csv_bytes(|writer| {
        for row in rows {
            let id = row.id.to_string();
            let occurred_at = row.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true);
            let request_id = row.request_id.map(|id| id.to_string()).unwrap_or_default();
            let cells = [
                id.as_str(),
                occurred_at.as_str(),
                row.event.as_str(),
                row.email.as_deref().unwrap_or(""),
                row.ip.as_deref().unwrap_or(""),
                row.user_agent.as_deref().unwrap_or(""),
                row.actor.as_deref().unwrap_or(""),
                row.detail.as_str(),
                request_id.as_str(),
            ];
            writer.write_record(cells.iter().map(|cell| neutralise(cell).into_owned()))?;
        }
        Ok(())
    })
}

/// Where the export has got to: the next batch is older than `before`.
pub struct CsvCursor {
    db: Db,
    filter: AuditFilter,
    before: Option<AuditId>,
    header_sent: bool,
}

impl CsvCursor {
    /// The next chunk and the cursor after it; `None` when the export is complete.
    pub async fn next(mut self) -> Option<(anyhow::Result<Bytes>, Option<Self>)> {
        if !self.header_sent {
            self.header_sent = true;
            return Some((
                csv_bytes(|writer| writer.write_record(CSV_HEADER)),
                Some(self),
            ));
        }
        let filter = self.filter.clone();
        let before = self.before;
        let fetched = self
            .db
            .query(move |conn| query::page(conn, &filter, before, CSV_BATCH))
            .await;
        let rows = match fetched {
            Ok(rows) => rows,
            // The status line has gone out: all that is left is to cut the download short.
            Err(err) => return Some((Err(anyhow::Error::new(err)), None)),
        };
        let last = rows.last()?.id;
        let chunk = csv_rows(&rows);
        let more = i64::try_from(rows.len()).is_ok_and(|n| n == CSV_BATCH);
        self.before = Some(last);
        Some((chunk, more.then_some(self)))
    }
}

impl CsvCursor {
    /// An export of the rows `filter` selects, older than `before` when given.
    pub fn new(db: Db, filter: AuditFilter, before: Option<AuditId>) -> Self {
        Self {
            db,
            filter,
            before,
            header_sent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(cell), format!("'{cell}"));
        }
        assert_eq!(neutralise("ann@example.org"), "ann@example.org");
        assert_eq!(neutralise(""), "");
    }
}
