//! A small but real SMTP server for the tests: enough RFC 5321 for lettre, no TLS, and
//! switches to refuse mail or go away, so delivery is tested end to end without mocks.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One accepted message: the envelope and the DATA exactly as received (dot-unstuffed).
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    /// Every command verb seen, in order, to prove what a client did (or did not) send.
    commands: Mutex<Vec<String>>,
    failing: AtomicBool,
}

pub struct SmtpServer {
    port: u16,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

pub async fn start() -> SmtpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = Arc::new(Shared::default());
    let task = tokio::spawn(serve(listener, shared.clone()));
    SmtpServer {
        port,
        shared,
        task: Mutex::new(Some(task)),
    }
}

impl SmtpServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// While set, `MAIL FROM` is answered `451` (try again later).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.shared.mails.lock().unwrap().clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages arrived; panics after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.received();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} mail(s) within {timeout:?}, got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening and drops every open connection.
    pub async fn shutdown(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn restart(&self) {
        self.shutdown().await;
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebinding port {}: {e}", self.port),
            }
        };
        let task = tokio::spawn(serve(listener, self.shared.clone()));
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Connections live in a `JoinSet` owned by this task, so aborting it closes them all.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(session(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 latchkey-test ESMTP\r\n").await?;
    let mut from: Option<String> = None;
    let mut to = Vec::new();
    loop {
        let Some(line) = read_line(&mut lines).await? else {
            return Ok(());
        };
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        shared.commands.lock().unwrap().push(verb.clone());
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            // Nothing that needs TLS is advertised: no STARTTLS, no AUTH.
            "EHLO" => b"250-latchkey-test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 latchkey-test\r\n",
            "MAIL" if !upper.starts_with("MAIL FROM:") => b"501 syntax: MAIL FROM:<address>\r\n",
            "MAIL" if shared.failing.load(Ordering::SeqCst) => {
                b"451 4.3.0 temporarily unable to accept mail\r\n"
            }
            "MAIL" => {
                from = Some(path(&line));
                to.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" if from.is_none() => b"503 5.5.1 MAIL first\r\n",
            "RCPT" if !upper.starts_with("RCPT TO:") => b"501 syntax: RCPT TO:<address>\r\n",
            "RCPT" => {
                to.push(path(&line));
                b"250 2.1.5 ok\r\n"
            }
            "DATA" if to.is_empty() => b"503 5.5.1 RCPT first\r\n",
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    let Some(line) = read_line(&mut lines).await? else {
                        return Ok(());
                    };
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push_str("\r\n");
                }
                shared.mails.lock().unwrap().push(ReceivedMail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// One line without its CRLF; `None` at end of stream.
async fn read_line(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    if lines.read_until(b'\n', &mut bytes).await? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&bytes);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// The address between `<` and `>` in `MAIL FROM:<a> PARAMS` or `RCPT TO:<b>`.
fn path(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_string()
}

/// A MIME part: its unfolded headers and its raw body.
#[derive(Debug, Clone)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Part {
    fn parse(raw: &str) -> Part {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        Part {
            headers,
            body: body.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// The leaf parts, depth first; a non-multipart part is its own only leaf.
    pub fn leaves(&self) -> Vec<Part> {
        let Some(boundary) = self.boundary() else {
            return vec![self.clone()];
        };
        let delimiter = format!("--{boundary}");
        let mut leaves = Vec::new();
        for chunk in self.body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            leaves.extend(Part::parse(chunk).leaves());
        }
        leaves
    }

    fn boundary(&self) -> Option<String> {
        let content_type = self.header("content-type")?;
        if !content_type.to_ascii_lowercase().starts_with("multipart/") {
            return None;
        }
        content_type.split(';').find_map(|param| {
            let (key, value) = param.trim().split_once('=')?;
            key.eq_ignore_ascii_case("boundary")
                .then(|| value.trim_matches('"').to_string())
        })
    }

    /// The body with its transfer encoding undone.
    pub fn decoded(&self) -> String {
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        match encoding.as_str() {
            "base64" => {
                use base64::Engine as _;
                let joined: String = self.body.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(joined)
                    .expect("valid base64");
                String::from_utf8(bytes).expect("UTF-8 body")
            }
            "quoted-printable" => decode_quoted_printable(&self.body),
            _ => self.body.clone(),
        }
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut input = text.as_bytes();
    while let Some((&byte, rest)) = input.split_first() {
        input = rest;
        if byte != b'=' {
            bytes.push(byte);
        } else if input.starts_with(b"\r\n") {
            input = &input[2..];
        } else if input.starts_with(b"\n") {
            input = &input[1..];
        } else {
            let hex = std::str::from_utf8(&input[..2]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).expect("a quoted-printable escape"));
            input = &input[2..];
        }
    }
    String::from_utf8(bytes).expect("UTF-8 body")
}

impl ReceivedMail {
    pub fn message(&self) -> Part {
        Part::parse(&self.data)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.message().header(name).map(str::to_string)
    }

    fn body_of(&self, content_type: &str) -> Option<String> {
        self.message()
            .leaves()
            .into_iter()
            .find(|part| part.content_type() == content_type)
            .map(|part| part.decoded())
    }

    pub fn text(&self) -> String {
        self.body_of("text/plain").expect("a text/plain part")
    }

    pub fn html(&self) -> String {
        self.body_of("text/html").expect("a text/html part")
    }

    /// The first URL in the plain-text part that starts with `prefix`.
    pub fn extract_link(&self, prefix: &str) -> String {
        let text = self.text();
        let start = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no link starting with {prefix} in:\n{text}"));
        text[start..].split_whitespace().next().unwrap().to_string()
    }

    /// The six digits that follow the word "code" in the plain-text part.
    pub fn extract_code(&self) -> String {
        let text = self.text();
        let lower = text.to_ascii_lowercase();
        lower
            .match_indices("code")
            .find_map(|(at, _)| {
                let after = &text[at + 4..];
                let digits_at = after.find(|c: char| c.is_ascii_digit())?;
                let digits: String = after[digits_at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                (digits_at < 40 && digits.len() == 6).then_some(digits)
            })
            .unwrap_or_else(|| panic!("no 6-digit code in:\n{text}"))
    }
}
