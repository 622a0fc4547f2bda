//! The process's log: env_logger's filter (`RUST_LOG`), each line tagged with the request it
//! belongs to, written to stderr by a thread of its own in batches, so a busy server pays
//! for neither a write system call nor the stderr lock per line.
//!
//! Two formats (`LATCHKEY_LOG_FORMAT`), written by env_logger's own format hook:
//! `[time LEVEL target req=ID] message member=… app=…` for people, and one JSON object a
//! line (`time`, `level`, `target`, `request_id`, `message`, then every key-value the line
//! was logged with) for log collectors. A line names what it concerns with key-values
//! (`log::info!(target: …, member = …, app = …; "…")`), so a collector can filter on them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc;
use std::sync::OnceLock;

pub mod request_id;

use crate::logging::request_id::RequestId;

/// An error and its causes on one line, for the log.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

enum Message {
    Line(Vec<u8>),
    /// Answered once everything sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

static WRITER: OnceLock<mpsc::Sender<Message>> = OnceLock::new();

struct Batched(mpsc::Sender<Message>);

impl std::io::Write for Batched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The writer thread never exits while the process runs; if it did, lines are lost
        // rather than the request failing.
        let _ = self.0.send(Message::Line(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drains the queue on a timer rather than waking per line: a sender then never pays for
/// waking this thread, which under load cost more than the writing itself.
fn write_batches(lines: mpsc::Receiver<Message>) {
    const BUSY: std::time::Duration = std::time::Duration::from_millis(10);
    const IDLE: std::time::Duration = std::time::Duration::from_millis(50);
    let stderr = std::io::stderr();
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut pause = IDLE;
    loop {
        std::thread::sleep(pause);
        let mut waiting = Vec::new();
        loop {
            match lines.try_recv() {
                Ok(Message::Line(line)) => batch.extend_from_slice(&line),
                Ok(Message::Flush(done)) => waiting.push(done),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
            if batch.len() >= 64 * 1024 {
                write_out(&stderr, &mut batch);
            }
        }
        pause = if batch.is_empty() { IDLE } else { BUSY };
        write_out(&stderr, &mut batch);
        for done in waiting {
            let _ = done.send(());
        }
    }
}

fn write_out(stderr: &std::io::Stderr, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let mut out = stderr.lock();
    let _ = out.write_all(batch);
    let _ = out.flush();
    batch.clear();
}

/// How each line is written (`LATCHKEY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[time LEVEL target req=ID] message member=… app=…`, for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("expected text or json, got {text:?}")),
        }
    }

    /// As the setting is written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The key-values the text format shows after the message. JSON shows every key-value; the
/// access line's others repeat what its text message already says.
const TEXT_FIELDS: [&str; 2] = ["member", "app"];

/// One line of the log, with its newline, in `format`. `time` is as the format shows it.
fn write_record(
    out: &mut impl std::io::Write,
    format: LogFormat,
    time: &dyn std::fmt::Display,
    request: Option<RequestId>,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    let mut line = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = match format {
        LogFormat::Text => text_line(&mut line, time, request, record),
        LogFormat::Json => json_line(&mut line, time, request, record),
    };
    line.push('\n');
    out.write_all(line.as_bytes())
}

fn text_line(
    line: &mut String,
    time: &dyn std::fmt::Display,
    request: Option<RequestId>,
    record: &log::Record<'_>,
) -> std::fmt::Result {
    write!(line, "[{time} {:<5} {}", record.level(), record.target())?;
    if let Some(id) = request {
        write!(line, " req={id}")?;
    }
    write!(line, "] {}", record.args())?;
    let mut fields = TextFields { line };
    let _ = record.key_values().visit(&mut fields);
    Ok(())
}

/// ` key=value` for each of [`TEXT_FIELDS`]; a value with a space, a quote, an `=` or a
/// control character is quoted and escaped, so a value never forges a field or a line.
struct TextFields<'a> {
    line: &'a mut String,
}

impl<'kvs> log::kv::VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        if !TEXT_FIELDS.contains(&key.as_str()) {
            return Ok(());
        }
        let text = value.to_string();
        let plain = !text.is_empty()
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
        let written = if plain {
            write!(self.line, " {key}={text}")
        } else {
            write!(self.line, " {key}={text:?}")
        };
        written.map_err(|_| log::kv::Error::msg("formatting a field"))
    }
}

fn json_line(
    line: &mut String,
    time: &dyn std::fmt::Display,
    request: Option<RequestId>,
    record: &log::Record<'_>,
) -> std::fmt::Result {
    line.push_str("{\"time\":");
    push_json_str(line, &time.to_string());
    line.push_str(",\"level\":");
    push_json_str(line, record.level().as_str());
    line.push_str(",\"target\":");
    push_json_str(line, record.target());
    if let Some(id) = request {
        write!(line, ",\"request_id\":\"{id}\"")?;
    }
    line.push_str(",\"message\":");
    match record.args().as_str() {
        Some(message) => push_json_str(line, message),
        None => push_json_str(line, &record.args().to_string()),
    }
    let mut fields = JsonFields { line };
    let _ = record.key_values().visit(&mut fields);
    line.push('}');
    Ok(())
}

/// `,"key":value` for each key-value: numbers and booleans as such, anything else a string.
struct JsonFields<'a> {
    line: &'a mut String,
}

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.line.push(',');
        push_json_str(self.line, key.as_str());
        self.line.push(':');
        if let Some(text) = value.to_borrowed_str() {
            push_json_str(self.line, text);
        } else if let Some(n) = value.to_u64() {
            let _ = write!(self.line, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(self.line, "{n}");
        } else if let Some(n) = value.to_f64().filter(|n| n.is_finite()) {
            let _ = write!(self.line, "{n}");
        } else if let Some(b) = value.to_bool() {
            let _ = write!(self.line, "{b}");
        } else {
            push_json_str(self.line, &value.to_string());
        }
        Ok(())
    }
}

/// `text` as a JSON string, escaped by serde_json.
fn push_json_str(line: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => line.push_str(&quoted),
        // Serializing a str cannot fail; an empty string keeps the line valid if it did.
        Err(_) => line.push_str("\"\""),
    }
}

/// Installs the logger (once; later calls do nothing). `default_filter` applies when
/// `RUST_LOG` is not set.
pub fn init(default_filter: &str, format: LogFormat) {
    let (tx, rx) = mpsc::channel();
    if WRITER.set(tx.clone()).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("latchkey-log".into())
        .spawn(move || write_batches(rx));
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    if spawned.is_ok() {
        builder.target(env_logger::Target::Pipe(Box::new(Batched(tx))));
    }
    builder.format(move |buf, record| {
        let request = RequestId::current();
        match format {
            LogFormat::Text => {
                let time = buf.timestamp_seconds();
                write_record(buf, format, &time, request, record)
            }
            LogFormat::Json => {
                let time = buf.timestamp_millis();
                write_record(buf, format, &time, request, record)
            }
        }
    });
    let _ = builder.try_init();
}

/// Waits until every line logged so far is written (before the process exits).
pub fn flush() {
    let Some(writer) = WRITER.get() else {
        return;
    };
    let (done, written) = mpsc::sync_channel(1);
    if writer.send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(std::time::Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat, request: Option<RequestId>, record: &log::Record<'_>) -> String {
        let mut out = Vec::new();
        write_record(
            &mut out,
            format,
            &"2026-01-02T03:04:05.678Z",
            request,
            record,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_show_the_member_and_the_app_after_the_message() {
        let fields: &[(&str, &str)] = &[
            ("member", "ann@example.org"),
            ("app", "Wiki \"main\""),
            ("event", "signed_in"),
        ];
        let record = log::Record::builder()
            .level(log::Level::Info)
            .target("latchkey::signin")
            .args(format_args!("signed_in"))
            .key_values(&fields)
            .build();
        let id = RequestId::next();
        assert_eq!(
            line(LogFormat::Text, Some(id), &record),
            format!(
                "[2026-01-02T03:04:05.678Z INFO  latchkey::signin req={id}] signed_in \
                 member=ann@example.org app=\"Wiki \\\"main\\\"\"\n"
            )
        );
    }

    #[test]
    fn json_lines_are_one_object_with_every_field_escaped() {
        let fields: &[(&str, log::kv::Value<'_>)] = &[
            ("member", "ann@example.org".into()),
            ("status", 403u16.into()),
            ("ms", 1.5f64.into()),
        ];
        let message = "a \"quoted\"\nsecond line";
        let json = |request: Option<RequestId>| -> serde_json::Value {
            let text = line(
                LogFormat::Json,
                request,
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("latchkey::access")
                    .args(format_args!("{message}"))
                    .key_values(&fields)
                    .build(),
            );
            assert!(text.ends_with('\n'));
            assert_eq!(text.lines().count(), 1, "one line: {text}");
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(
            json(None),
            serde_json::json!({
                "time": "2026-01-02T03:04:05.678Z",
                "level": "WARN",
                "target": "latchkey::access",
                "message": message,
                "member": "ann@example.org",
                "status": 403,
                "ms": 1.5,
            })
        );
        let id = RequestId::next();
        assert_eq!(json(Some(id))["request_id"], id.to_string());
    }

    #[test]
    fn the_format_is_text_or_json() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(" Text "), Ok(LogFormat::Text));
        assert!(LogFormat::parse("yaml").is_err());
    }
}
