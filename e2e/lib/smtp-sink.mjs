// A real SMTP server for the browser tests, the benchmarks, the fault drills and the Rust
// integration tests: the `smtp-server` package (from the nodemailer project). By default it
// listens on loopback without TLS or AUTH, as Latchkey's `smtp://127.0.0.1:PORT?tls=none`
// expects; options add STARTTLS or implicit TLS with a given key and certificate, and a
// required AUTH. Every accepted message is kept in memory and, with DIR, written there as one
// `.eml` file.
//
// As a library:  const sink = await startSmtpSink({ dir }); … sink.url … await sink.close();
// As a process:  node e2e/lib/smtp-sink.mjs --port 2525 --dir /tmp/mail
//                (prints "listening 127.0.0.1:PORT" once ready; SIGTERM stops it)
//   --tls starttls|implicit --key FILE --cert FILE   TLS with that key and certificate
//   --user USER --password PASSWORD                  AUTH (PLAIN, LOGIN) required
//   --control   JSON requests on stdin, one answer line each on stdout (tests/api uses it):
//               {"op":"received"} {"op":"commands"} {"op":"failing","on":true}
//               {"op":"shutdown"} {"op":"restart"}; the process ends when stdin closes.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { SMTPServer } from "smtp-server";

/**
 * tls:  { mode: "starttls" | "implicit", key, cert } (PEM strings or Buffers); none: plain.
 * auth: { user, password }: AUTH required before MAIL; none: AUTH not offered.
 * parse: false keeps only the envelope and the raw message (no subject, text or html), and
 *        spares loading mailparser, which is most of the start-up time.
 */
export async function startSmtpSink({ port = 0, dir, host = "127.0.0.1", tls, auth, parse = true } = {}) {
  if (dir) mkdirSync(dir, { recursive: true });
  const simpleParser = parse ? (await import("mailparser")).simpleParser : async () => ({});
  if (tls && !["starttls", "implicit"].includes(tls.mode)) {
    throw new Error(`smtp-sink: tls.mode must be starttls or implicit, not ${tls.mode}`);
  }
  const messages = [];
  // Every command verb received, in order (AUTH without its arguments), to prove what a
  // client did or did not send.
  const commands = [];
  const waiters = new Set();
  let counter = 0;
  let failing = false;
  let server = null;
  const sockets = new Set();

  const disabledCommands = [];
  if (!tls || tls.mode === "implicit") disabledCommands.push("STARTTLS");
  if (!auth) disabledCommands.push("AUTH");

  // smtp-server logs each command at debug level with its verb; nothing else is kept.
  const logger = {
    debug(entry) {
      if (entry?.tnx === "command" && entry.command) commands.push(entry.command);
    },
    trace() {},
    info() {},
    warn() {},
    error() {},
    fatal() {},
  };

  const options = {
    secure: tls?.mode === "implicit",
    ...(tls ? { key: tls.key, cert: tls.cert } : {}),
    authOptional: !auth,
    authMethods: ["PLAIN", "LOGIN"],
    disabledCommands,
    logger,
    size: 1024 * 1024,
    // Latchkey's mail pool keeps connections open; don't wait 30 s for them on close.
    closeTimeout: 500,
    onAuth(attempt, session, callback) {
      if (auth && attempt.username === auth.user && attempt.password === auth.password) {
        return callback(null, { user: attempt.username });
      }
      const err = new Error("Invalid username or password");
      err.responseCode = 535;
      callback(err);
    },
    onMailFrom(address, session, callback) {
      if (!failing) return callback();
      const err = new Error("4.3.0 temporarily unable to accept mail");
      err.responseCode = 451;
      callback(err);
    },
    onData(stream, session, callback) {
      const chunks = [];
      stream.on("data", (chunk) => chunks.push(chunk));
      stream.on("error", callback);
      stream.on("end", async () => {
        const raw = Buffer.concat(chunks);
        counter += 1;
        const name = `${Date.now()}-${String(counter).padStart(5, "0")}.eml`;
        if (dir) writeFileSync(join(dir, name), raw);
        try {
          const parsed = await simpleParser(raw);
          messages.push({
            file: dir ? join(dir, name) : null,
            to: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
            envelope: {
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
              to: session.envelope.rcptTo.map((r) => r.address),
            },
            subject: parsed.subject ?? "",
            text: parsed.text ?? "",
            html: parsed.html || "",
            raw: raw.toString("utf8"),
          });
        } catch (err) {
          return callback(err);
        }
        for (const wake of waiters) wake();
        callback(null, "queued");
      });
    },
  };

  const listen = async (onPort) => {
    server = new SMTPServer(options);
    // A failed TLS handshake is the client refusing the certificate; the client reports it.
    server.on("error", (err) => err.code === "TLSError" || console.error(`smtp-sink: ${err.message}`));
    server.server.on("connection", (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    await new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(onPort, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return server.server.address().port;
  };
  const stopListening = () => {
    const closing = server;
    server = null;
    if (!closing) return Promise.resolve();
    return new Promise((resolve) => {
      closing.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  };

  const boundPort = await listen(port);
  const scheme = tls?.mode === "implicit" ? "smtps" : "smtp";
  return {
    port: boundPort,
    url: tls ? `${scheme}://${host}:${boundPort}` : `smtp://${host}:${boundPort}?tls=none`,
    messages,
    commands,
    /** While set, MAIL FROM is answered 451 (try again later). */
    setFailing(on) {
      failing = Boolean(on);
    },
    /** Resolves with the first message (oldest first) that `match` accepts. */
    waitFor(match, { timeoutMs = 15000, description = "a mail" } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.find(match);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${description} within ${timeoutMs} ms (${messages.length} mail(s) received)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    /** Stops listening and drops every open connection; what was received is kept. */
    shutdown: stopListening,
    /** Listens again on the same port. */
    async restart() {
      await stopListening();
      await listen(boundPort);
    },
    close: stopListening,
  };
}

/** The sign-in link, the "Not you?" link and the code from a sign-in mail's plain text. */
export function signInParts(mail) {
  const link = mail.text.match(/https?:\/\/\S+\/auth\/verify\?token=\S+/)?.[0];
  const cancel = mail.text.match(/https?:\/\/\S+\/auth\/cancel\?token=\S+/)?.[0];
  const code = mail.text.match(/code[^0-9]{0,40}(\d{6})/i)?.[1];
  if (!link) throw new Error(`no sign-in link in the mail:\n${mail.text}`);
  return { link, cancel, code };
}

/** Answers one --control request. */
async function control(sink, request) {
  switch (request.op) {
    case "received":
      return {
        messages: sink.messages.map((m) => ({ from: m.envelope.from, to: m.envelope.to, raw: m.raw })),
      };
    case "commands":
      return { commands: sink.commands };
    case "failing":
      sink.setFailing(request.on);
      return {};
    case "shutdown":
      await sink.shutdown();
      return {};
    case "restart":
      await sink.restart();
      return {};
    default:
      throw new Error(`unknown op ${JSON.stringify(request.op)}`);
  }
}

// Run as a process (drills, benchmarks and the Rust tests start and kill it).
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const arg = (name, fallback) => {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : fallback;
  };
  const mode = arg("--tls");
  const tls = mode ? { mode, key: readFileSync(arg("--key")), cert: readFileSync(arg("--cert")) } : undefined;
  const user = arg("--user");
  const auth = user !== undefined ? { user, password: arg("--password", "") } : undefined;
  const controlled = process.argv.includes("--control");
  const sink = await startSmtpSink({
    port: Number(arg("--port", "0")),
    dir: arg("--dir"),
    tls,
    auth,
    parse: !controlled,
  });
  console.log(`listening 127.0.0.1:${sink.port}`);
  const stop = async () => {
    await sink.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (controlled) {
    // One request at a time, answered in order.
    let queue = Promise.resolve();
    const lines = createInterface({ input: process.stdin });
    lines.on("line", (line) => {
      queue = queue.then(async () => {
        let answer;
        try {
          answer = { ok: true, ...(await control(sink, JSON.parse(line))) };
        } catch (err) {
          answer = { ok: false, error: err.message };
        }
        process.stdout.write(`${JSON.stringify(answer)}\n`);
      });
    });
    lines.on("close", () => queue.then(stop));
  }
}
