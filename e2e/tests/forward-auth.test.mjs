// Forward auth in a real browser, through the proxies configured exactly as
// `latchkey apps proxy-config` prints (only the frame around the printed blocks is the
// test's: tests/proxies/nginx.conf and Caddyfile): Debian's nginx and Caddy in front of a
// small app that echoes the headers it receives, Latchkey at login.lk.localhost, and headless
// Chromium with a virtual authenticator opening the apps. Each app gets a session of its own.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, REPO, freePort, startLatchkey } from "../lib/latchkey.mjs";
import { signInByMail } from "../lib/sign-in.mjs";
import { startSmtpSink } from "../lib/smtp-sink.mjs";

const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((path) => existsSync(path));
const CADDY = ["/usr/bin/caddy", "/usr/local/bin/caddy"].find((path) => existsSync(path));
const BINARY = process.env.LATCHKEY_BIN ?? join(REPO, "target", "release", "latchkey");
const STEP_TIMEOUT = 15_000;

let smtp;
let app;
let browser;
let dir;
let echoPort;
const children = [];

async function waitForPort(port, what, log) {
  for (let i = 0; i < 200; i += 1) {
    try {
      await fetch(`http://127.0.0.1:${port}/`, { redirect: "manual" });
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`${what} did not start ${log && existsSync(log) ? readFileSync(log, "utf8") : ""}`);
}

/** The real command line against the test's Latchkey. */
function latchkey(...args) {
  return execFileSync(BINARY, args, {
    env: { PATH: process.env.PATH, DATABASE_URL: app.databaseUrl, LATCHKEY_DATA_DIR: join(dir, "cli"), RUST_LOG: "warn" },
    encoding: "utf8",
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "latchkey-e2e-proxy-"));
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail-forward-auth") });
  app = await startLatchkey({
    logName: "latchkey-forward-auth.log",
    publicHost: "login.lk.localhost",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ALLOWED_DOMAINS: "example.org",
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  echoPort = await freePort();
  children.push(spawn("python3", [join(REPO, "tests/proxies/echo.py"), String(echoPort)], { stdio: "ignore" }));
  await waitForPort(echoPort, "the echo app");
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill("SIGTERM");
  await app?.stop();
  await smtp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * Registers three apps for `proxy` (a wiki and docs open to members, a staff board for admins),
 * prints each one's configuration and starts the proxy with them. Returns the apps' origins.
 */
async function startProxy(proxy) {
  const home = join(dir, proxy);
  mkdirSync(join(home, "sites"), { recursive: true });
  mkdirSync(join(home, "tmp"), { recursive: true });
  const origins = {};
  for (const [name, roles] of [["wiki", "member,admin"], ["docs", "member,admin"], ["staff", "admin"]]) {
    const port = await freePort();
    const origin = `http://${name}-${proxy}.lk.localhost:${port}`;
    latchkey("apps", "add", `${name}-${proxy}`, origin, "--roles", roles);
    const printed = latchkey(
      "apps", "proxy-config", `${name}-${proxy}`, "--proxy", proxy,
      "--upstream", app.url, "--app-upstream", `http://127.0.0.1:${echoPort}`,
    );
    assert.doesNotMatch(printed, /CHANGE-ME/, "a loopback http app runs as printed");
    writeFileSync(join(home, "sites", `${name}.${proxy === "nginx" ? "conf" : "caddy"}`), printed);
    origins[name] = { origin, port };
  }
  const frame = readFileSync(join(REPO, "tests/proxies", proxy === "nginx" ? "nginx.conf" : "Caddyfile"), "utf8").replaceAll("@DIR@", home);
  const log = join(home, "proxy.log");
  if (proxy === "nginx") {
    writeFileSync(join(home, "nginx.conf"), frame);
    children.push(spawn(NGINX, ["-p", home, "-e", log, "-c", join(home, "nginx.conf")], { stdio: "ignore" }));
  } else {
    writeFileSync(join(home, "Caddyfile"), frame);
    children.push(
      spawn(CADDY, ["run", "--config", join(home, "Caddyfile"), "--adapter", "caddyfile"], {
        env: { ...process.env, HOME: home, XDG_DATA_HOME: join(home, "data"), XDG_CONFIG_HOME: join(home, "config") },
        stdio: ["ignore", "ignore", "ignore"],
      }),
    );
  }
  for (const { port } of Object.values(origins)) await waitForPort(port, proxy, log);
  return Object.fromEntries(Object.entries(origins).map(([name, { origin }]) => [name, origin]));
}

/** A person with a browser context of their own and a virtual platform authenticator. */
async function person(label) {
  const context = await newContext(browser, { name: label });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  /** Whether the authenticator answers at once (else a request waits, as for a person away). */
  const present = (enabled) => cdp.send("WebAuthn.setAutomaticPresenceSimulation", { authenticatorId, enabled });
  return { context, page, present };
}

/** What the echo app received, as the page shows it (JSON). */
async function echoed(page) {
  return JSON.parse(await page.locator("body").innerText());
}

function onLatchkey(url, pathname) {
  return url.host.startsWith("login.lk.localhost") && url.pathname === pathname;
}

for (const proxy of ["nginx", "caddy"]) {
  const binary = proxy === "nginx" ? NGINX : CADDY;
  describe(`forward auth through ${proxy}, configured as printed`, { skip: binary ? false : `${proxy} is not installed (apt-get install -y ${proxy})` }, () => {
    const member = `mo-${proxy}@example.org`;
    let apps;
    let page;
    let present;

    before(async () => {
      apps = await startProxy(proxy);
      ({ page, present } = await person(`forward-auth-${proxy}`));
    });

    it("signed out, an app's page goes through Latchkey's sign-in and comes back to that page with the member's identity", async () => {
      await page.goto(`${apps.wiki}/notes?id=7`);
      await page.waitForURL((url) => onLatchkey(url, "/login"));
      await page.getByRole("heading", { name: new RegExp(`to continue to wiki-${proxy}`) }).waitFor();
      await screenshot(page, `forward-auth-${proxy}-login`);
      const mail = await signInByMail(page, smtp, member);
      assert.match(mail.text, new RegExp(`to continue to wiki-${proxy}`), "the mail says which app");
      await page.waitForURL(`${apps.wiki}/notes?id=7`);
      const got = await echoed(page);
      assert.deepEqual(got.headers["remote-user"], [member]);
      assert.deepEqual(got.headers["remote-groups"], ["member"]);
      assert.equal(got.headers["latchkey-assertion"][0].split(".").length, 3);
      const cookies = await page.context().cookies(apps.wiki);
      assert.deepEqual(cookies.map((c) => c.name), ["latchkey_app"], "the app holds its own cookie only");
      assert.doesNotMatch(got.headers.cookie?.[0] ?? "", /latchkey_session/, "Latchkey's session never reaches the app");
      await screenshot(page, `forward-auth-${proxy}-app`);
    });

    it("a second app opens without typing", async () => {
      await page.goto(`${apps.docs}/start`);
      await page.waitForURL(`${apps.docs}/start`);
      assert.deepEqual((await echoed(page)).headers["remote-user"], [member]);
    });

    it("client-sent look-alikes of Latchkey's headers never reach the app", async () => {
      await page.setExtraHTTPHeaders({
        "Remote-User": "mallory@evil.test",
        "Remote-Groups": "admin",
        "Remote.Email": "mallory@evil.test",
        "Latchkey-Assertion": "forged",
      });
      await page.goto(`${apps.wiki}/`);
      const got = await echoed(page);
      await page.setExtraHTTPHeaders({});
      assert.deepEqual(got.headers["remote-user"], [member]);
      assert.deepEqual(got.headers["remote-groups"], ["member"]);
      assert.equal(got.headers["remote.email"], undefined);
      assert.notDeepEqual(got.headers["latchkey-assertion"], ["forged"]);
    });

    it("an app that does not admit the member shows Latchkey's styled 403 page", async () => {
      const response = await page.goto(`${apps.staff}/`);
      assert.equal(response.status(), 403);
      await page.getByText(/is not open to you/).waitFor();
      const sheet = await page.evaluate(() => [...document.styleSheets].map((s) => s.href));
      assert.ok(sheet.some((href) => href?.endsWith("/.latchkey/static/app.css")), `${sheet}`);
      const rules = await page.evaluate(() => document.styleSheets[0].cssRules.length);
      assert.ok(rules > 0, "the stylesheet loaded through the app's proxy");
      await page.getByRole("link", { name: /sign in as someone else/i }).waitFor();
      await screenshot(page, `forward-auth-${proxy}-denied`);
    });

    it("the app's sign-out ends its session, and the next request goes through Latchkey again", async () => {
      await page.goto(`${apps.wiki}/.latchkey/logout`);
      await page.getByRole("button", { name: /sign out of wiki/i }).click();
      await page.getByRole("heading", { name: /signed out of wiki/i }).waitFor();
      // Still signed in at Latchkey: one redirect and the app is open again.
      await page.goto(`${apps.wiki}/back`);
      await page.waitForURL(`${apps.wiki}/back`);
    });

    it("a passkey sign-in that started from an app goes on to that app", async () => {
      await page.goto(`${app.publicUrl}/passkeys`);
      await page.locator("#passkey-name").fill("laptop");
      await page.getByRole("button", { name: /add a passkey/i }).click();
      await page.locator("td.passkey-name", { hasText: "laptop" }).waitFor();
      // Signing out of Latchkey ends the app sessions with it. The sign-in page it lands on
      // asks for a passkey by itself (autofill): the authenticator waits, as a person away
      // from the keyboard would, so that the sign-in starts from the app.
      await present(false);
      await page.getByRole("button", { name: /sign out/i }).first().click();
      await page.waitForURL((url) => onLatchkey(url, "/login"));
      // Chromium applies the sign-out's Clear-Site-Data after the answer, and the sign-in page
      // it lands on starts a passkey request of its own: let both settle before the next
      // navigation, or a cookie set meanwhile may be cleared under the next page.
      await page.waitForLoadState("networkidle");
      await sleep(1000);
      await page.goto(`${apps.wiki}/after-passkey`);
      await page.waitForURL((url) => onLatchkey(url, "/login"));
      await page.getByRole("heading", { name: new RegExp(`to continue to wiki-${proxy}`) }).waitFor();
      await present(true);
      const button = page.getByRole("button", { name: /sign in with a passkey/i });
      try {
        await button.click({ timeout: 3000 });
      } catch {
        // The authenticator may answer the page's autofill request before the button.
      }
      await page.waitForURL(`${apps.wiki}/after-passkey`);
      assert.deepEqual((await echoed(page)).headers["remote-user"], [member]);
      await screenshot(page, `forward-auth-${proxy}-passkey`);
    });

    it("a revoked session is refused on the app's next request", async () => {
      app.sql(`DELETE FROM sessions WHERE member_id = (SELECT id FROM members WHERE email = '${member}')`);
      await page.goto(`${apps.wiki}/again`);
      await page.waitForURL((url) => onLatchkey(url, "/login"));
    });
  });
}
