// Forward auth in a real browser: Debian's nginx (auth_request, the configuration of
// docs/forward-auth.md from tests/proxies/nginx.conf) in front of a small app that echoes the
// headers it receives, Latchkey at login.lk.localhost sharing its session cookie with
// lk.localhost, and headless Chromium opening the app.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, REPO, freePort, startLatchkey } from "../lib/latchkey.mjs";
import { signInParts, startSmtpSink } from "../lib/smtp-sink.mjs";

const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((path) => existsSync(path));
const MEMBER = "mo@example.org";
const STEP_TIMEOUT = 15_000;

let smtp;
let app;
let browser;
let dir;
let wiki;
let staff;
const children = [];

async function waitForPort(port, what) {
  for (let i = 0; i < 200; i += 1) {
    try {
      await fetch(`http://127.0.0.1:${port}/`, { redirect: "manual" });
      return;
    } catch {
      await sleep(50);
    }
  }
  const log = dir && existsSync(join(dir, "error.log")) ? readFileSync(join(dir, "error.log"), "utf8") : "";
  throw new Error(`${what} did not start ${log}`);
}

before(async () => {
  if (!NGINX) return;
  dir = mkdtempSync(join(tmpdir(), "latchkey-e2e-proxy-"));
  mkdirSync(join(dir, "tmp"));
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail-forward-auth") });
  app = await startLatchkey({
    logName: "latchkey-forward-auth.log",
    publicHost: "login.lk.localhost",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ALLOWED_DOMAINS: "example.org",
      LATCHKEY_COOKIE_DOMAIN: "lk.localhost",
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  const upstreamPort = await freePort();
  children.push(spawn("python3", [join(REPO, "tests/proxies/echo.py"), String(upstreamPort)], { stdio: "ignore" }));
  await waitForPort(upstreamPort, "the echo app");
  const port = await freePort();
  const conf = readFileSync(join(REPO, "tests/proxies/nginx.conf"), "utf8")
    .replaceAll("@DIR@", dir)
    .replaceAll("@LISTEN@", `127.0.0.1:${port}`)
    .replaceAll("@SERVER_NAME@", "wiki.lk.localhost staff.lk.localhost")
    .replaceAll("@LATCHKEY@", app.url)
    .replaceAll("@UPSTREAM@", `http://127.0.0.1:${upstreamPort}`);
  writeFileSync(join(dir, "nginx.conf"), conf);
  children.push(
    spawn(NGINX, ["-p", dir, "-e", join(dir, "error.log"), "-c", join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "inherit"] }),
  );
  await waitForPort(port, "nginx");
  wiki = `http://wiki.lk.localhost:${port}`;
  staff = `http://staff.lk.localhost:${port}`;
  // Two apps: the wiki for every member, the staff board for admins only.
  app.sql(`INSERT INTO apps (name, origin, roles) VALUES ('Wiki', '${wiki}', '{member}'), ('Staff', '${staff}', '{admin}')`);
  browser = await launchBrowser({ extraArgs: ["--host-resolver-rules=MAP *.lk.localhost 127.0.0.1"] });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill("SIGTERM");
  await app?.stop();
  await smtp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the echo app received, as the page shows it (JSON). */
async function echoed(page) {
  return JSON.parse(await page.locator("body").innerText());
}

describe("forward auth through nginx", { skip: NGINX ? false : "nginx is not installed (apt-get install -y nginx)" }, () => {
  let context;
  let page;

  it("an app opened while signed out goes through Latchkey's sign-in and comes back with the member's identity", async () => {
    context = await newContext(browser, { name: "forward-auth" });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    await page.goto(`${wiki}/notes?id=7`);
    await page.waitForURL((url) => url.host.startsWith("login.lk.localhost") && url.pathname === "/login");
    assert.equal(new URL(page.url()).searchParams.get("rd"), `${wiki}/notes?id=7`);
    await screenshot(page, "forward-auth-login");
    const since = smtp.messages.length;
    await page.locator("#email").fill(MEMBER);
    await page.getByRole("button", { name: /email me a sign-in link/i }).click();
    await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
    const mail = await smtp.waitFor(
      (m) => smtp.messages.indexOf(m) >= since && m.to.includes(MEMBER) && /\/auth\/verify\?token=/.test(m.text),
      { description: `sign-in mail to ${MEMBER}` },
    );
    await page.goto(signInParts(mail).link);
    await page.getByRole("button", { name: /^sign in$/i }).click();
    await page.waitForURL(`${wiki}/notes?id=7`);
    const got = await echoed(page);
    assert.deepEqual(got.headers["remote-user"], [MEMBER]);
    assert.deepEqual(got.headers["remote-groups"], ["member"]);
    assert.equal(got.headers["latchkey-assertion"][0].split(".").length, 3);
    await screenshot(page, "forward-auth-app");
  });

  it("a Remote-User header sent by the client never reaches the app", async () => {
    await page.setExtraHTTPHeaders({ "Remote-User": "mallory@evil.test", "Remote-Groups": "admin" });
    await page.goto(`${wiki}/`);
    const got = await echoed(page);
    assert.deepEqual(got.headers["remote-user"], [MEMBER]);
    assert.deepEqual(got.headers["remote-groups"], ["member"]);
    await page.setExtraHTTPHeaders({});
  });

  it("an app that does not admit the member shows Latchkey's 403 page", async () => {
    const response = await page.goto(`${staff}/`);
    assert.equal(response.status(), 403);
    await page.getByText(/is not open to you/).waitFor();
    await screenshot(page, "forward-auth-denied");
  });

  it("a revoked session is refused on the app's next request", async () => {
    await page.goto(`${wiki}/`);
    assert.deepEqual((await echoed(page)).headers["remote-user"], [MEMBER]);
    app.sql(`DELETE FROM sessions WHERE member_id = (SELECT id FROM members WHERE email = '${MEMBER}')`);
    await page.goto(`${wiki}/again`);
    await page.waitForURL((url) => url.host.startsWith("login.lk.localhost") && url.pathname === "/login");
    await screenshot(page, "forward-auth-revoked");
  });
});
