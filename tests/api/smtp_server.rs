//! A real SMTP server for the tests: the npm `smtp-server` package, run by
//! `e2e/lib/smtp-sink.mjs --control` (the sink the browser tests and the drills use), one
//! process per server. Plain on loopback by default; STARTTLS or implicit TLS with a
//! certificate from a throwaway CA, and a required AUTH, on request. Switches make it refuse
//! mail or go away, so delivery is tested end to end without mocks.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

/// One accepted message: the envelope and the DATA exactly as received (dot-unstuffed).
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain at first, STARTTLS offered (what `smtp://` needs).
    StartTls,
    /// TLS from the first byte (what `smtps://` needs).
    Implicit,
}

/// What the server offers; the default is plain text without AUTH.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Served with the certificate of [`pki`], issued by its `ca`.
    pub tls: Option<Tls>,
    /// AUTH (PLAIN, LOGIN) required before MAIL, with this user and password.
    pub auth: Option<(String, String)>,
}

pub struct SmtpServer {
    port: u16,
    tls: Option<Tls>,
    control: Mutex<Control>,
}

/// The sink process; it answers each request line with one line, in order.
struct Control {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub async fn start() -> SmtpServer {
    start_with(Options::default()).await
}

pub async fn start_with(options: Options) -> SmtpServer {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    assert!(
        root.join("node_modules/smtp-server").is_dir(),
        "the test SMTP server needs e2e/node_modules: run `npm ci --prefix e2e` (scripts/test does)"
    );
    let mut command = Command::new("node");
    command
        .arg(root.join("lib/smtp-sink.mjs"))
        .arg("--control")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(tls) = options.tls {
        let pki = pki();
        let mode = match tls {
            Tls::StartTls => "starttls",
            Tls::Implicit => "implicit",
        };
        command.args(["--tls", mode]);
        command.arg("--key").arg(&pki.server_key);
        command.arg("--cert").arg(&pki.server_cert);
    }
    if let Some((user, password)) = &options.auth {
        command.args(["--user", user, "--password", password]);
    }
    let mut child = command
        .spawn()
        .expect("starting node (the test SMTP server)");
    let stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("listening 127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the test SMTP server did not start: {line:?}"));
    SmtpServer {
        port,
        tls: options.tls,
        control: Mutex::new(Control {
            child,
            stdin,
            stdout,
        }),
    }
}

impl SmtpServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `LATCHKEY_EMAIL` for this server, without user or `ca=`.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("smtp://127.0.0.1:{}?tls=none", self.port),
            Some(Tls::StartTls) => format!("smtp://127.0.0.1:{}", self.port),
            Some(Tls::Implicit) => format!("smtps://127.0.0.1:{}", self.port),
        }
    }

    /// One request to the sink and its answer. It blocks, for about a millisecond: the
    /// accessors stay synchronous, and the answer comes after everything the sink did before.
    fn request(&self, request: Value) -> Value {
        let mut control = self.control.lock().unwrap();
        writeln!(control.stdin, "{request}").expect("writing to the test SMTP server");
        control.stdin.flush().unwrap();
        let mut line = String::new();
        control
            .stdout
            .read_line(&mut line)
            .expect("reading from the test SMTP server");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the test SMTP server answered {line:?}: {e}"));
        assert_eq!(answer["ok"], true, "the test SMTP server: {answer}");
        answer
    }

    /// While set, `MAIL FROM` is answered `451` (try again later).
    pub fn set_failing(&self, failing: bool) {
        self.request(json!({ "op": "failing", "on": failing }));
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        let answer = self.request(json!({ "op": "received" }));
        answer["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mail| ReceivedMail {
                from: mail["from"].as_str().unwrap().to_string(),
                to: mail["to"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|to| to.as_str().unwrap().to_string())
                    .collect(),
                data: mail["raw"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// Every command verb received, in order.
    pub fn commands(&self) -> Vec<String> {
        let answer = self.request(json!({ "op": "commands" }));
        answer["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|verb| verb.as_str().unwrap().to_string())
            .collect()
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
        self.request(json!({ "op": "shutdown" }));
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn restart(&self) {
        self.request(json!({ "op": "restart" }));
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Ok(control) = self.control.get_mut() {
            let _ = control.child.kill();
            let _ = control.child.wait();
        }
    }
}

/// Throwaway certificates, made once per test run with the `openssl` CLI: a CA, a server
/// certificate it issued for `localhost` and 127.0.0.1, and a second CA that issued nothing
/// here (a root the server's certificate does not chain to).
pub struct Pki {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_key: PathBuf,
    pub server_cert: PathBuf,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "pki-{}",
            hex::encode(latchkey::crypto::random_bytes::<6>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = make_ca(&dir, "ca", "Latchkey test CA");
        let other_ca = make_ca(&dir, "other-ca", "Latchkey other test CA");
        let server_key = dir.join("server.key");
        let server_cert = dir.join("server.pem");
        let csr = dir.join("server.csr");
        let extensions = dir.join("server.ext");
        std::fs::write(
            &extensions,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            path(&server_key),
            "-out",
            path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            path(&csr),
            "-CA",
            path(&ca),
            "-CAkey",
            path(&dir.join("ca.key")),
            "-CAcreateserial",
            "-extfile",
            path(&extensions),
            "-out",
            path(&server_cert),
        ]);
        Pki {
            ca,
            other_ca,
            server_key,
            server_cert,
        }
    })
}

fn make_ca(dir: &Path, name: &str, common_name: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={common_name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        path(&dir.join(format!("{name}.key"))),
        "-out",
        path(&cert),
    ]);
    cert
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (the test certificates need the openssl CLI)");
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
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
