//! The process's log: env_logger's filter (`RUST_LOG`), each line tagged with the request it
//! belongs to, written to stderr by a thread of its own in batches, so a busy server pays
//! for neither a write system call nor the stderr lock per line.

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

/// Installs the logger (once; later calls do nothing). `default_filter` applies when
/// `RUST_LOG` is not set.
pub fn init(default_filter: &str) {
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
    builder.format(|buf, record| {
        let timestamp = buf.timestamp_seconds();
        match RequestId::current() {
            Some(id) => writeln!(
                buf,
                "[{timestamp} {:<5} {} req={id}] {}",
                record.level(),
                record.target(),
                record.args()
            ),
            None => writeln!(
                buf,
                "[{timestamp} {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            ),
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
