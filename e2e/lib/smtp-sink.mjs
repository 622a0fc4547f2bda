// A real SMTP server for the browser tests, the benchmarks and the fault drills: the
// `smtp-server` package (from the nodemailer project) listening on loopback without TLS or
// AUTH, as Latchkey's `smtp://127.0.0.1:PORT?tls=none` expects. Every accepted message is
// kept in memory and written to DIR as one `.eml` file.
//
// As a library:  const sink = await startSmtpSink({ dir }); … sink.url … await sink.close();
// As a process:  node e2e/lib/smtp-sink.mjs --port 2525 --dir /tmp/mail
//                (prints "listening 127.0.0.1:PORT" once ready; SIGTERM stops it)

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { SMTPServer } from "smtp-server";
import { simpleParser } from "mailparser";

export async function startSmtpSink({ port = 0, dir, host = "127.0.0.1" } = {}) {
  if (dir) mkdirSync(dir, { recursive: true });
  const messages = [];
  const waiters = new Set();
  let counter = 0;

  const server = new SMTPServer({
    secure: false,
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    logger: false,
    size: 1024 * 1024,
    // Latchkey's mail pool keeps connections open; don't wait 30 s for them on close.
    closeTimeout: 500,
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
  });
  server.on("error", (err) => console.error(`smtp-sink: ${err.message}`));

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const boundPort = server.server.address().port;

  return {
    port: boundPort,
    url: `smtp://${host}:${boundPort}?tls=none`,
    messages,
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
    close() {
      return new Promise((resolve) => server.close(() => resolve()));
    },
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

// Run as a process (drills and benchmarks start and kill it).
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const arg = (name, fallback) => {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : fallback;
  };
  const sink = await startSmtpSink({ port: Number(arg("--port", "0")), dir: arg("--dir") });
  console.log(`listening 127.0.0.1:${sink.port}`);
  const stop = async () => {
    await sink.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
