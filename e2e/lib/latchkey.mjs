// Starts the release binary of Latchkey against a real PostgreSQL for the browser tests:
// a fresh database on the server at 127.0.0.1:5432 when `pg_isready` answers, otherwise
// Latchkey's own private cluster (DATABASE_URL unset) in a temporary LATCHKEY_DATA_DIR.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export const REPO = resolve(import.meta.dirname, "..", "..");
export const OUT_DIR = join(REPO, "target", "e2e");

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function sharedServerAnswers() {
  if (process.env.LATCHKEY_E2E_PRIVATE_CLUSTER === "1") return false;
  const probe = spawnSync("pg_isready", ["-q", "-h", "127.0.0.1", "-p", "5432"]);
  return probe.status === 0;
}

function psql(url, sql) {
  const run = spawnSync("psql", ["-X", "-v", "ON_ERROR_STOP=1", "-qAt", url, "-c", sql], {
    encoding: "utf8",
  });
  if (run.status !== 0) throw new Error(`psql: ${sql}: ${run.stderr || run.error}`);
  return run.stdout.trim();
}

/**
 * Starts Latchkey; `env` adds or overrides settings; `host` is the host the browser visits and the
 * public URL's (passkeys need a name: `localhost`); `publicHost` names the public URL only (forward
 * auth: a name under the cookie domain). Resolves once `/readyz` answers 200.
 * The returned handle has `url`, `databaseUrl`, `sql(query)` and `stop()`.
 */
export async function startLatchkey({
  env = {},
  logName = "latchkey.log",
  host = "127.0.0.1",
  publicHost = null,
} = {}) {
  const binary = process.env.LATCHKEY_BIN ?? join(REPO, "target", "release", "latchkey");
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`cargo build --release\` first (scripts/test does)`);
  }
  mkdirSync(OUT_DIR, { recursive: true });
  const port = await freePort();
  // `host` names the public URL only (passkeys need a host name: `localhost`); Latchkey
  // always listens on 127.0.0.1.
  const url = `http://${host}:${port}`;
  const publicUrl = publicHost ? `http://${publicHost}:${port}` : url;
  // The working directory is empty, so a developer's .env cannot change what is tested.
  const workDir = mkdtempSync(join(tmpdir(), "latchkey-e2e-"));
  // PostgreSQL runs as `postgres` when we are root; it must be able to reach its directory.
  chmodSync(workDir, 0o755);

  const childEnv = { ...process.env };
  for (const name of Object.keys(childEnv)) {
    if (name === "DATABASE_URL" || name.startsWith("LATCHKEY_")) delete childEnv[name];
  }
  let databaseUrl = null;
  let dropDatabase = null;
  if (sharedServerAnswers()) {
    const name = `latchkey_e2e_${randomBytes(6).toString("hex")}`;
    const admin = "postgres://postgres@127.0.0.1:5432/postgres";
    psql(admin, `CREATE DATABASE ${name}`);
    databaseUrl = `postgres://postgres@127.0.0.1:5432/${name}`;
    childEnv.DATABASE_URL = databaseUrl;
    dropDatabase = () => psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
  Object.assign(childEnv, {
    LATCHKEY_DATA_DIR: join(workDir, "data"),
    LATCHKEY_BIND: `127.0.0.1:${port}`,
    // A host name (say login.lk.localhost, which Chromium maps to loopback) for forward auth.
    LATCHKEY_PUBLIC_URL: publicUrl,
    LATCHKEY_SECRET_KEY: randomBytes(32).toString("hex"),
    RUST_LOG: "info",
    ...env,
  });

  const logPath = join(OUT_DIR, logName);
  const log = createWriteStream(logPath);
  const child = spawn(binary, ["serve"], { cwd: workDir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  const exit = new Promise((resolveExit) =>
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      resolveExit(exited);
    }),
  );

  const deadline = Date.now() + 90_000; // a private cluster's initdb takes a few seconds
  for (;;) {
    if (exited) {
      throw new Error(`latchkey exited during start-up (${JSON.stringify(exited)}); see ${logPath}:\n${readFileSync(logPath, "utf8")}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`latchkey did not become ready within 90 s; see ${logPath}`);
    }
    await sleep(100);
  }

  if (!databaseUrl) {
    // The private cluster's folder is in the log line Latchkey writes when it starts it; it
    // listens only on the Unix socket in its `socket/` directory.
    const match = readFileSync(logPath, "utf8").match(/private PostgreSQL cluster in (.+) \(Unix socket only\)/);
    if (match) databaseUrl = `postgres://postgres@/latchkey?host=${encodeURIComponent(`${match[1]}/socket`)}`;
  }

  return {
    url,
    publicUrl,
    port,
    logPath,
    databaseUrl,
    /** One query through psql; rows as text lines (fields separated by `|`). */
    sql(query) {
      if (!databaseUrl) throw new Error("the database URL is unknown");
      return psql(databaseUrl, query);
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM"); // drains requests, stops a private cluster
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        await exit;
        clearTimeout(timer);
      }
      log.end();
      if (dropDatabase) {
        try {
          dropDatabase();
        } catch (err) {
          console.error(`dropping the e2e database: ${err.message}`);
        }
      }
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}
