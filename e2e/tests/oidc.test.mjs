// Latchkey as an OpenID Provider for relying parties we did not write, in a real browser:
// (a) panva's `openid-client` (OpenID Certified) in the small Node app e2e/oidc/rp.mjs: the code
//     flow with PKCE, state and nonce, the library's own checks of the ID token (signature
//     included), userinfo, refresh-token rotation, and RP-initiated logout;
// (b) Debian's Apache httpd with mod_auth_openidc (e2e/oidc/apache.conf.in) protecting a page:
//     Chromium signs in through it, and removing the member in Latchkey ends the Apache session
//     by back-channel logout.
// Latchkey runs at http://localhost:PORT and the apps at http://127.0.0.1:PORT, so that the
// browser keeps Latchkey's cookies apart from the apps' (cookies ignore the port). Each app is
// registered with the real `latchkey apps add … --oidc` and configured with what it prints.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import * as oidc from "openid-client";

import { launchBrowser, newContext, reports, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, REPO, freePort, startLatchkey } from "../lib/latchkey.mjs";
import { signInByMail } from "../lib/sign-in.mjs";
import { startSmtpSink } from "../lib/smtp-sink.mjs";
import { startRelyingParty } from "../oidc/rp.mjs";

const BINARY = process.env.LATCHKEY_BIN ?? join(REPO, "target", "release", "latchkey");
const APACHE = ["/usr/sbin/apache2", "/usr/sbin/httpd"].find((path) => existsSync(path));
const APACHE_MODULES = "/usr/lib/apache2/modules";
const MOD_AUTH_OPENIDC = join(APACHE_MODULES, "mod_auth_openidc.so");
// With CI=true (.ci/run installs both) a missing one fails the Apache tests instead of skipping.
const APACHE_MISSING = !APACHE
  ? "apache2 is not installed"
  : !existsSync(MOD_AUTH_OPENIDC)
    ? "mod_auth_openidc is not installed"
    : null;
const ON_CI = process.env.CI === "true";
const STEP_TIMEOUT = 15_000;
// How long a back-channel logout may take to end the Apache session ("within seconds").
const BACKCHANNEL_DEADLINE_MS = 15_000;

let smtp;
let app;
let browser;
let dir;
/** The same secret key for the server and the command line, as in a real deployment. */
const secretKey = randomBytes(32).toString("hex");

/** The real command line against the test's Latchkey. */
function latchkey(...args) {
  return execFileSync(BINARY, args, {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: app.databaseUrl,
      LATCHKEY_DATA_DIR: join(dir, "cli"),
      LATCHKEY_PUBLIC_URL: app.url,
      LATCHKEY_SECRET_KEY: secretKey,
      RUST_LOG: "warn",
    },
    encoding: "utf8",
  });
}

/** Registers an OIDC app; returns what `apps add` printed: `client_id` and `client_secret`. */
function addOidcApp(name, origin, ...options) {
  const printed = latchkey("apps", "add", name, origin, "--oidc", ...options);
  const clientId = printed.match(/^client_id:\s*(\S+)\s*$/m)?.[1];
  const clientSecret = printed.match(/^client_secret:\s*(\S+)\s*$/m)?.[1];
  assert.ok(clientId, `apps add printed no client_id line:\n${printed}`);
  return { clientId, clientSecret, printed };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "latchkey-e2e-oidc-"));
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail-oidc") });
  app = await startLatchkey({
    logName: "latchkey-oidc.log",
    host: "localhost",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_SECRET_KEY: secretKey,
      LATCHKEY_ALLOWED_DOMAINS: "example.org",
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await smtp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A person with a browser context (a cookie jar) of their own. */
async function person(label) {
  const context = await newContext(browser, { name: label });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  return { context, page };
}

function onLatchkey(url, pathname) {
  return url.origin === app.url && url.pathname === pathname;
}

/**
 * Waits for the browser to reach `url`; when it does not, the error says where it stopped and
 * what that page said, with a screenshot, since the chain of redirects crosses three servers.
 */
async function arriveAt(page, url, label) {
  try {
    await page.waitForURL(url);
  } catch (err) {
    const body = await page.locator("body").innerText().catch(() => "(no page)");
    await screenshot(page, `${label}-stuck`).catch(() => {});
    // A redirect that the page's CSP refused (form-action) shows up only in the console.
    const csp = [...reports.cspViolations, ...reports.cspConsole].map((r) => r.text ?? `${r.directive} ${r.blocked}`);
    throw new Error(
      `${err.message.split("\n")[0]}\n  stopped at ${page.url()}\n  showing: ${body.slice(0, 800)}` +
        (csp.length ? `\n  CSP reports: ${csp.join("\n    ")}` : ""),
    );
  }
}

/** The JSON that the relying party's page shows. */
async function shown(page) {
  return JSON.parse(await page.locator("#claims").innerText());
}

/** A raw userinfo request, to see the status and `WWW-Authenticate` the library turns into errors. */
async function userinfo(config, accessToken) {
  const res = await fetch(config.serverMetadata().userinfo_endpoint, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  return { status: res.status, challenge: res.headers.get("www-authenticate"), body: await res.text() };
}

/** The OAuth error code with which the library's refresh grant was refused. */
async function refreshRefusal(config, refreshToken) {
  try {
    await oidc.refreshTokenGrant(config, refreshToken);
  } catch (err) {
    assert.ok(err instanceof oidc.ResponseBodyError, `a protocol error, not ${err}`);
    return { error: err.error, status: err.status };
  }
  assert.fail("the refresh token still worked");
}

describe("openid-client (OpenID Certified) in a small Node app", () => {
  const member = "ann@example.org";
  let rp;
  let registered;
  let page;
  let context;
  /** The tokens of the first sign-in, kept across the tests below. */
  let firstTokens;

  before(async () => {
    latchkey("groups", "add", "ops");
    latchkey("members", "add", member, "--name", "Ann Lee", "--group", "ops");
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    registered = addOidcApp(
      "notes", origin,
      "--redirect-uri", `${origin}/cb`,
      "--post-logout-redirect-uri", `${origin}/bye`,
      "--roles", "member,admin",
    );
    assert.ok(registered.clientSecret, `a confidential client has a secret:\n${registered.printed}`);
    rp = await startRelyingParty({
      issuer: app.url,
      clientId: registered.clientId,
      clientSecret: registered.clientSecret,
      port,
    });
    ({ context, page } = await person("oidc-rp"));
  });

  after(async () => {
    await rp?.close();
  });

  it("discovery answers what the library needs, with the issuer exactly the public URL", () => {
    const metadata = rp.config.serverMetadata();
    assert.equal(metadata.issuer, app.url);
    assert.deepEqual(metadata.code_challenge_methods_supported, ["S256"]);
    assert.deepEqual(metadata.id_token_signing_alg_values_supported, ["RS256"]);
    assert.equal(metadata.authorization_response_iss_parameter_supported, true);
    assert.equal(metadata.backchannel_logout_supported, true);
    for (const endpoint of ["authorization", "token", "userinfo", "revocation", "introspection", "end_session"]) {
      assert.ok(metadata[`${endpoint}_endpoint`]?.startsWith(`${app.url}/oidc/`), `${endpoint}_endpoint`);
    }
  });

  it("signs in by email through Latchkey; the library checks the ID token, and userinfo answers the same claims", async () => {
    await page.goto(rp.url);
    await page.waitForURL((url) => onLatchkey(url, "/login"));
    await page.getByRole("heading", { name: /to continue to notes/ }).waitFor();
    await screenshot(page, "oidc-rp-login");
    await signInByMail(page, smtp, member, "oidc-rp");
    await arriveAt(page, `${rp.url}/me`, "oidc-rp-signed-in");
    await screenshot(page, "oidc-rp-signed-in");
    const { claims, userinfo: info } = await shown(page);
    const session = rp.lastSession();
    firstTokens = session.tokens[0];
    assert.deepEqual(session.events, ["authorize", "signed_in"]);
    // What the authorize request sent came back unchanged, with the issuer (RFC 9207).
    assert.equal(session.callback.state, session.state);
    assert.equal(session.callback.iss, app.url);

    assert.equal(claims.iss, app.url);
    assert.equal(claims.aud, registered.clientId);
    assert.equal(claims.email, member);
    assert.equal(claims.email_verified, true);
    assert.equal(claims.name, "Ann Lee");
    assert.equal(claims.preferred_username, member);
    assert.ok(claims.groups.includes("ops"), `groups ${claims.groups}`);
    assert.ok(claims.groups.includes("latchkey:member"), `groups ${claims.groups}`);
    assert.equal(typeof claims.sub, "string");
    assert.notEqual(claims.sub, member);
    assert.ok(!claims.sub.includes(member), `sub ${claims.sub} is not the address`);
    assert.ok(claims.amr.includes("otp"), `amr ${claims.amr}: a link is otp`);
    assert.equal(typeof claims.sid, "string");
    assert.equal(typeof claims.auth_time, "number");
    assert.ok(claims.exp - claims.iat <= 300, "the ID token lives 5 minutes");

    assert.equal(info.sub, claims.sub);
    assert.equal(info.email, member);
    assert.equal(info.email_verified, true);
    assert.equal(info.name, "Ann Lee");
    assert.deepEqual([...info.groups].sort(), [...claims.groups].sort());

    assert.equal(firstTokens.token_type.toLowerCase(), "bearer");
    assert.ok(firstTokens.refresh_token, "offline_access gives a refresh token");
    assert.ok(firstTokens.scope.split(" ").includes("offline_access"), firstTokens.scope);
    const cookies = await context.cookies(rp.url);
    assert.ok(!cookies.some((c) => c.name.startsWith("latchkey")), "Latchkey's cookies stay on its own host");
  });

  it("a refresh rotates the refresh token; the spent one is refused with invalid_grant and takes its family with it", async (t) => {
    if (!firstTokens) return t.skip("the sign-in above failed: no tokens to refresh");
    await page.goto(`${rp.url}/refresh`);
    await arriveAt(page, `${rp.url}/me`, "oidc-rp-refresh");
    const shownAfter = await shown(page);
    assert.equal(shownAfter.refreshed, 1);
    assert.equal(shownAfter.claims.sub, rp.lastSession().claims.sub);
    const refreshed = rp.lastSession().tokens[1];
    assert.ok(refreshed.refresh_token, "a new refresh token");
    assert.notEqual(refreshed.refresh_token, firstTokens.refresh_token);
    assert.notEqual(refreshed.access_token, firstTokens.access_token);
    assert.equal((await userinfo(rp.config, refreshed.access_token)).status, 200);

    // The old refresh token again, through the library: spent.
    assert.deepEqual(await refreshRefusal(rp.config, firstTokens.refresh_token), { error: "invalid_grant", status: 400 });
    // A spent token presented again revokes the whole family, the newest tokens included.
    const revoked = await userinfo(rp.config, refreshed.access_token);
    assert.equal(revoked.status, 401, revoked.body);
    assert.match(revoked.challenge ?? "", /^Bearer\b.*error="invalid_token"/);
    assert.equal((await refreshRefusal(rp.config, refreshed.refresh_token)).error, "invalid_grant");
  });

  it("still signed in at Latchkey, the app's next sign-in comes back without typing", async () => {
    // The app forgets its own session; Latchkey's is still there.
    await context.clearCookies({ name: "rp_session" });
    await page.goto(rp.url);
    await page.waitForURL(`${rp.url}/me`);
    const { claims } = await shown(page);
    assert.equal(claims.email, member);
    assert.deepEqual(rp.lastSession().events, ["authorize", "signed_in"]);
  });

  it("RP-initiated logout: Latchkey asks first, then ends its session and returns to the app with the state", async () => {
    const session = rp.lastSession();
    const tokens = session.tokens.at(-1);
    assert.equal((await userinfo(rp.config, tokens.access_token)).status, 200);

    await page.goto(`${rp.url}/logout`);
    await page.waitForURL((url) => onLatchkey(url, "/oidc/logout"));
    await screenshot(page, "oidc-rp-logout-confirm");
    const button = page.locator("#main form[method='post' i]").getByRole("button");
    assert.equal(await button.count(), 1, "one button, in a POST form");
    await button.click();
    await page.waitForURL((url) => url.origin === rp.url && url.pathname === "/bye");
    await screenshot(page, "oidc-rp-bye");
    const bye = await shown(page);
    assert.equal(bye.state, session.logoutState);
    assert.equal(bye.stateMatches, true);

    // The tokens died with the Latchkey session.
    const after = await userinfo(rp.config, tokens.access_token);
    assert.equal(after.status, 401, after.body);
    assert.match(after.challenge ?? "", /^Bearer\b.*error="invalid_token"/);
    assert.equal((await refreshRefusal(rp.config, tokens.refresh_token)).error, "invalid_grant");
    // And Latchkey itself asks for a sign-in again.
    await page.goto(`${app.url}/`);
    await page.waitForURL((url) => onLatchkey(url, "/login"));
  });

  it("a member the app does not admit signs in and is sent back to the app with error=access_denied", async () => {
    const outsider = "cy@example.org";
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const staff = addOidcApp("staff", origin, "--redirect-uri", `${origin}/cb`, "--roles", "admin");
    const staffRp = await startRelyingParty({
      issuer: app.url,
      clientId: staff.clientId,
      clientSecret: staff.clientSecret,
      port,
    });
    try {
      const { page: outsiderPage } = await person("oidc-rp-denied");
      await outsiderPage.goto(staffRp.url);
      await outsiderPage.waitForURL((url) => onLatchkey(url, "/login"));
      await signInByMail(outsiderPage, smtp, outsider, "oidc-rp-denied");
      // The refusal goes back to the app's redirect URI (RFC 6749 §4.1.2.1), which the
      // library reads as an error response; the app then says it could not sign in.
      await arriveAt(outsiderPage, (url) => url.origin === staffRp.url && url.pathname === "/cb", "oidc-rp-denied");
      const refused = await shown(outsiderPage);
      assert.equal(refused.oauthError, "access_denied", JSON.stringify(refused));
      await screenshot(outsiderPage, "oidc-rp-denied");
      const audited = app.sql(`SELECT count(*) FROM login_audit WHERE event = 'app_denied' AND email = '${outsider}'`);
      assert.ok(Number(audited) >= 1, "the refusal is audited app_denied");
    } finally {
      await staffRp.close();
    }
  });
});

describe(
  "Apache httpd with mod_auth_openidc",
  { skip: APACHE_MISSING && !ON_CI ? `${APACHE_MISSING} (apt-get install -y apache2 libapache2-mod-auth-openidc)` : false },
  () => {
    const member = "bo@example.org";
    let site;
    let page;
    let context;
    let apache;
    let home;
    /** Set by the sign-in test; the removal test skips (rather than fails twice) without it. */
    let signedIn = false;

    before(async () => {
      assert.equal(APACHE_MISSING, null, `${APACHE_MISSING}; .ci/run installs apache2 and libapache2-mod-auth-openidc`);
      latchkey("members", "add", member);
      const port = await freePort();
      site = `http://127.0.0.1:${port}`;
      const registered = addOidcApp(
        "apache-site", site,
        "--redirect-uri", `${site}/protected/redirect_uri`,
        "--backchannel-logout-uri", `${site}/protected/redirect_uri?logout=backchannel`,
        "--roles", "member,admin",
      );
      assert.ok(registered.clientSecret, `mod_auth_openidc is a confidential client:\n${registered.printed}`);
      home = join(dir, "apache");
      mkdirSync(join(home, "run"), { recursive: true });
      mkdirSync(join(home, "htdocs", "protected"), { recursive: true });
      // Run as root (as CI is), httpd's workers switch to www-data, which must read the page.
      chmodSync(dir, 0o755);
      chmodSync(home, 0o755);
      writeFileSync(
        join(home, "htdocs", "protected", "index.html"),
        '<!doctype html><title>Protected</title><h1>Protected by mod_auth_openidc</h1>\n' +
          '<p id="user"><!--#echo var="REMOTE_USER" --></p>\n' +
          '<p id="name"><!--#echo var="OIDC_CLAIM_name" --></p>\n' +
          '<p id="groups"><!--#echo var="OIDC_CLAIM_groups" --></p>\n',
      );
      const config = readFileSync(join(REPO, "e2e", "oidc", "apache.conf.in"), "utf8")
        .replaceAll("@DIR@", home)
        .replaceAll("@PORT@", String(port))
        .replaceAll("@ISSUER@", app.url)
        .replaceAll("@CLIENT_ID@", registered.clientId)
        .replaceAll("@CLIENT_SECRET@", registered.clientSecret)
        .replaceAll("@PASSPHRASE@", randomBytes(24).toString("hex"))
        .replaceAll("@RUN_AS@", userInfo().uid === 0 ? "User www-data\nGroup www-data" : "");
      writeFileSync(join(home, "httpd.conf"), config);
      apache = spawn(APACHE, ["-f", join(home, "httpd.conf"), "-DFOREGROUND"], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      apache.stderr.on("data", (chunk) => {
        stderr += chunk;
      });
      for (let i = 0; ; i += 1) {
        try {
          await fetch(`${site}/`, { redirect: "manual" });
          break;
        } catch {
          if (i >= 200 || apache.exitCode !== null) {
            throw new Error(`apache2 did not start: ${stderr}${errorLog()}`);
          }
          await sleep(50);
        }
      }
      ({ context, page } = await person("oidc-apache"));
    });

    after(async () => {
      if (apache && apache.exitCode === null) {
        // SIGTERM stops httpd's children as well; wait for it so the temp dir can go.
        const exited = new Promise((resolve) => apache.once("exit", resolve));
        apache.kill("SIGTERM");
        await Promise.race([exited, sleep(10_000)]);
      }
      if (home && existsSync(join(home, "error.log"))) {
        mkdirSync(OUT_DIR, { recursive: true });
        writeFileSync(join(OUT_DIR, "apache-oidc-error.log"), readFileSync(join(home, "error.log")));
      }
    });

    function errorLog() {
      const path = join(home, "error.log");
      return existsSync(path) ? `\n--- ${path} (end) ---\n${readFileSync(path, "utf8").slice(-4000)}` : "";
    }

    /** One request to the protected page with the browser's cookies, redirects not followed. */
    async function protectedPage() {
      const res = await context.request.get(`${site}/protected/`, {
        maxRedirects: 0,
        headers: { Accept: "text/html" },
      });
      return { status: res.status(), location: res.headers().location ?? "" };
    }

    it("Chromium signs in through mod_auth_openidc by email and sees the protected page as the member", async () => {
      await page.goto(`${site}/protected/`);
      await page.waitForURL((url) => onLatchkey(url, "/login"));
      await page.getByRole("heading", { name: /to continue to apache-site/ }).waitFor();
      await signInByMail(page, smtp, member, "oidc-apache");
      await arriveAt(page, `${site}/protected/`, "oidc-apache-signed-in");
      await screenshot(page, "oidc-apache-protected");
      assert.equal(await page.locator("#user").innerText(), member, errorLog());
      assert.match(await page.locator("#groups").innerText(), /latchkey:member/);
      assert.equal((await protectedPage()).status, 200, "the session holds for the next request");
      signedIn = true;
    });

    it("removing the member in Latchkey ends the Apache session through back-channel logout", async (t) => {
      if (!signedIn) return t.skip("the sign-in above failed: no Apache session to end");
      assert.equal((await protectedPage()).status, 200);
      const sentBefore = Number(app.sql("SELECT count(*) FROM login_audit WHERE event = 'oidc_logout_sent'"));
      const removed = Date.now();
      latchkey("members", "remove", member);
      let last;
      for (;;) {
        last = await protectedPage();
        if (last.status !== 200) break;
        if (Date.now() - removed > BACKCHANNEL_DEADLINE_MS) break;
        await sleep(200);
      }
      const elapsed = Date.now() - removed;
      assert.equal(last.status, 302, `the Apache session still held ${elapsed} ms after the removal${errorLog()}`);
      assert.ok(last.location.startsWith(`${app.url}/oidc/authorize?`), `back to sign-in: ${last.location}`);
      console.log(`    back-channel logout ended the Apache session ${elapsed} ms after \`members remove\``);

      // The delivery is audited once Apache has answered it, which may be just after our poll.
      let sent = [];
      for (const deadline = Date.now() + 5_000; Date.now() < deadline; await sleep(100)) {
        sent = app
          .sql("SELECT email, detail FROM login_audit WHERE event = 'oidc_logout_sent' ORDER BY id")
          .split("\n")
          .filter(Boolean);
        if (sent.length > sentBefore) break;
      }
      assert.ok(sent.length > sentBefore, `an oidc_logout_sent row in the audit (rows: ${sent.join(" / ")})`);
      assert.ok(!app.sql("SELECT event FROM login_audit WHERE event = 'oidc_logout_failed'"), "no failed delivery");

      // In the browser: the protected page goes through Latchkey's sign-in again.
      await page.goto(`${site}/protected/`);
      await page.waitForURL((url) => onLatchkey(url, "/login"));
      await screenshot(page, "oidc-apache-after-logout");
    });
  },
);
