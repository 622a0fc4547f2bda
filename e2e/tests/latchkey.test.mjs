// Latchkey in a real browser: headless Debian Chromium (playwright-core) against the release
// binary, a real PostgreSQL and a real SMTP server. The tests run in order and share one
// Latchkey; each person has a browser context of their own (its own cookies).
//
// Run with `scripts/test` (which builds the release binary and runs `npm ci` first), or
// `cd e2e && npm test`. Screenshots of every page land in target/e2e/.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, reports, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, startLatchkey } from "../lib/latchkey.mjs";
import { signInParts, startSmtpSink } from "../lib/smtp-sink.mjs";

const ADMIN = "admin@example.org";
const MEMBER = "mia@example.org";
const CROSS_DEVICE = "cy@example.org";
const STEP_TIMEOUT = 15_000;

let smtp;
let app;
let browser;
/** Browser contexts by person; kept open across tests, as a person keeps their browser. */
const people = {};
/** Set by the first test; the admin's later tests skip (rather than time out) without it. */
let adminSignedIn = false;

function needsAdmin(t) {
  if (!adminSignedIn) t.skip("the admin could not sign in (see the first test)");
  return !adminSignedIn;
}

before(async () => {
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail") });
  app = await startLatchkey({
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ADMINS: ADMIN,
      // Anyone at example.org may sign in as a member, so no member needs adding first.
      LATCHKEY_ALLOWED_DOMAINS: "example.org",
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  browser = await launchBrowser();
});

after(async () => {
  writeFileSync(join(OUT_DIR, "browser-reports.json"), JSON.stringify(reports, null, 2));
  await browser?.close();
  await app?.stop();
  await smtp?.close();
});

async function person(name) {
  people[name] ??= await newContext(browser, { name });
  return people[name];
}

async function openPage(context) {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT);
  return page;
}

/** The next sign-in mail to `email` that arrived after `since` mails. */
function signInMailTo(email, since) {
  return smtp.waitFor(
    (mail) => smtp.messages.indexOf(mail) >= since && mail.to.includes(email) && /\/auth\/verify\?token=/.test(mail.text),
    { description: `sign-in mail to ${email}` },
  );
}

/** Types the address on /login and submits; returns the page showing "Check your inbox". */
async function askForLink(page, email, label) {
  await page.goto(`${app.url}/login`);
  await page.locator("#email").fill(email);
  await page.getByRole("button", { name: /email me a sign-in link/i }).click();
  await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
  await screenshot(page, `${label}-check-inbox`);
}

/** The whole flow by link in one browser, as a person does it. */
async function signInByLink(context, email, label) {
  const page = await openPage(context);
  const since = smtp.messages.length;
  await askForLink(page, email, label);
  const { link } = signInParts(await signInMailTo(email, since));
  await page.goto(link);
  await page.getByRole("heading", { name: `Sign in as ${email}?` }).waitFor();
  await screenshot(page, `${label}-confirm`);
  await page.getByRole("button", { name: /^sign in$/i }).click();
  await page.waitForURL(`${app.url}/`);
  await signedInAs(page, email);
  await screenshot(page, `${label}-dashboard`);
  return page;
}

/** Waits for the dashboard, with `email` named as the signed-in member in the header. */
async function signedInAs(page, email) {
  await page.locator("#dashboard").waitFor();
  await page.locator("header .who", { hasText: email }).waitFor();
}

/** Audit events (oldest first) for an address, straight from the database. */
function auditEvents(email) {
  return app
    .sql(`SELECT event FROM login_audit WHERE email = '${email}' ORDER BY id`)
    .split("\n")
    .filter(Boolean);
}

/** Whether a page of the app exists yet (others are building /audit and /sessions). */
async function routeExists(page, path) {
  const res = await page.request.get(`${app.url}${path}`, { maxRedirects: 0 });
  return res.status() !== 404;
}

describe("Latchkey in Chromium", { concurrency: 1 }, () => {
  it("signs in by typing the address, reading the mail, opening the link and confirming", async () => {
    const context = await person("admin");
    const page = await openPage(context);
    await page.goto(`${app.url}/login`);
    await screenshot(page, "login");

    // The form is posted by HTMX: the card is swapped, the page is not reloaded.
    await page.evaluate(() => {
      window.__e2eMarker = "login page still loaded";
    });
    const since = smtp.messages.length;
    // Typed with spaces and a capitalised domain: the canonical address is what signs in.
    await page.locator("#email").fill(`  ${ADMIN.replace("example.org", "Example.ORG")} `);
    await page.getByRole("button", { name: /email me a sign-in link/i }).click();
    await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
    assert.equal(await page.evaluate(() => window.__e2eMarker), "login page still loaded");
    assert.equal(new URL(page.url()).pathname, "/login");
    await screenshot(page, "check-inbox");

    const mail = await signInMailTo(ADMIN, since);
    assert.ok(mail.to.includes(ADMIN), `mail goes to the stored address: ${mail.to}`);
    const { link, code } = signInParts(mail);
    assert.ok(link.startsWith(`${app.url}/auth/verify?token=`), link);
    assert.match(code, /^\d{6}$/);

    // Opening the link only shows a confirmation page; nothing is consumed yet.
    await page.goto(link);
    await page.getByRole("heading", { name: `Sign in as ${ADMIN}?` }).waitFor();
    await screenshot(page, "confirm");
    assert.equal(app.sql("SELECT count(*) FROM sign_in_requests WHERE consumed_at IS NOT NULL"), "0");

    await page.getByRole("button", { name: /^sign in$/i }).click();
    await page.waitForURL(`${app.url}/`);
    await signedInAs(page, ADMIN);
    assert.match(await page.locator("header .who").textContent(), /\(admin\)/);
    await screenshot(page, "dashboard");

    adminSignedIn = true;
    assert.deepEqual(
      auditEvents(ADMIN).filter((e) => e !== "member_added"),
      ["link_requested", "link_sent", "signed_in"],
    );
  });

  it("filters the audit log with HTMX: rows swapped in place, URL pushed", async (t) => {
    if (needsAdmin(t)) return;
    const page = await openPage(await person("admin"));
    if (!(await routeExists(page, "/audit"))) {
      t.skip("GET /audit answers 404: the audit page is not in this build yet");
      return;
    }
    await page.goto(`${app.url}/audit`);
    await page.locator("#audit-rows").waitFor();
    await screenshot(page, "audit");
    const allRows = await page.locator("#audit-rows tbody tr").count();
    assert.ok(allRows >= 3, `the unfiltered audit shows the sign-in (${allRows} rows)`);

    await page.evaluate(() => {
      window.__e2eMarker = "audit page still loaded";
    });
    const swapped = page.waitForResponse(
      (res) => new URL(res.url()).pathname === "/audit" && res.request().headers()["hx-request"] === "true",
    );
    await page.locator("form.filters select[name=event]").selectOption("signed_in");
    await page.locator("form.filters").getByRole("button", { name: /filter/i }).click();
    const response = await swapped;
    assert.equal(response.status(), 200);
    const partial = await response.text();
    assert.ok(!/<html/i.test(partial), "the HTMX answer is just the rows, not a whole page");

    await page.waitForURL((url) => url.pathname === "/audit" && url.searchParams.get("event") === "signed_in");
    assert.equal(
      await page.evaluate(() => window.__e2eMarker),
      "audit page still loaded",
      "a full page load would have cleared the marker",
    );
    const rows = page.locator("#audit-rows tbody tr");
    await rows.first().waitFor();
    const classes = await rows.evaluateAll((trs) => trs.map((tr) => tr.className));
    assert.ok(classes.length >= 1 && classes.length < allRows, `filtered rows: ${classes}`);
    for (const cls of classes) assert.match(cls, /\bevent-signed_in\b/);
    await screenshot(page, "audit-filtered");

    // The pushed URL is a real page: loading it directly shows the same filter.
    await page.reload();
    assert.equal(await page.locator("form.filters select[name=event]").inputValue(), "signed_in");
    assert.equal(await page.locator("#audit-rows tbody tr").count(), classes.length);
  });

  it("revokes another member's session at /sessions", async (t) => {
    if (needsAdmin(t)) return;
    const adminPage = await openPage(await person("admin"));
    if (!(await routeExists(adminPage, "/sessions"))) {
      t.skip("GET /sessions answers 404: the sessions page is not in this build yet");
      return;
    }
    const memberContext = await person("member");
    const memberPage = await signInByLink(memberContext, MEMBER, "member");

    await adminPage.goto(`${app.url}/sessions`);
    await screenshot(adminPage, "sessions");
    const row = adminPage.locator("tr, li").filter({ hasText: MEMBER }).filter({
      has: adminPage.getByRole("button", { name: /revoke/i }),
    });
    assert.equal(await row.count(), 1, `one revocable session of ${MEMBER} is listed`);
    await row.getByRole("button", { name: /revoke/i }).click();
    await adminPage.waitForFunction(
      (email) => ![...document.querySelectorAll("tr, li")].some((el) => el.textContent.includes(email) && /revoke/i.test(el.textContent)),
      MEMBER,
    );
    await adminPage.waitForLoadState();
    await screenshot(adminPage, "sessions-revoked");

    // The member's browser is signed out at once.
    await memberPage.goto(`${app.url}/`);
    await memberPage.waitForURL((url) => url.pathname === "/login");
    await screenshot(memberPage, "member-after-revoke");
    assert.ok(auditEvents(MEMBER).includes("session_revoked"), auditEvents(MEMBER).join(","));
  });

  it("signs out, and the session is gone", async (t) => {
    if (needsAdmin(t)) return;
    const page = await openPage(await person("admin"));
    await page.goto(`${app.url}/`);
    await page.getByRole("button", { name: /sign out/i }).click();
    await page.waitForURL((url) => url.pathname === "/login");
    await screenshot(page, "signed-out");
    await page.goto(`${app.url}/`);
    await page.waitForURL((url) => url.pathname === "/login" && url.searchParams.get("next") === "/");
    assert.ok(auditEvents(ADMIN).includes("signed_out"));
  });

  it("approves a sign-in from another device by typing the number the asking browser shows", async () => {
    const asking = await openPage(await person("laptop"));
    const since = smtp.messages.length;
    await askForLink(asking, CROSS_DEVICE, "laptop");
    // The waiting page polls /auth/wait (at once, then every 3 s) and shows the number.
    const shown = asking.locator("#wait .number");
    await shown.waitFor({ timeout: 10_000 });
    const number = (await shown.textContent()).trim();
    assert.match(number, /^\d{2}$/);
    await screenshot(asking, "laptop-number");

    const phone = await openPage(await person("phone"));
    const { link } = signInParts(await signInMailTo(CROSS_DEVICE, since));
    await phone.goto(link);
    await phone.getByRole("heading", { name: /on another device/i }).waitFor();
    // The phone shows nothing to pick from: the number must come from the asking browser.
    assert.equal(await phone.locator("button[name=number]").count(), 0, "no numbers offered");
    assert.ok(!(await phone.locator("form.approve").innerText()).includes(number), "the number is not revealed");
    assert.match(await phone.locator("#approve").innerText(), /self-reported/);
    await screenshot(phone, "phone-approve");
    await phone.getByLabel(/number shown on the other device/i).fill(number);
    await phone.getByRole("button", { name: /^approve$/i }).click();
    await phone.getByRole("heading", { name: /approved/i }).waitFor();
    await screenshot(phone, "phone-approved");

    // The asking browser is signed in by its next poll; the phone is not.
    await asking.waitForURL(`${app.url}/`, { timeout: 10_000 });
    await signedInAs(asking, CROSS_DEVICE);
    await screenshot(asking, "laptop-dashboard");
    await phone.goto(`${app.url}/`);
    await phone.waitForURL((url) => url.pathname === "/login");

    const detail = app.sql(
      `SELECT detail FROM login_audit WHERE email = '${CROSS_DEVICE}' AND event = 'signed_in' ORDER BY id DESC LIMIT 1`,
    );
    assert.match(detail, /approval/);
  });

  it("shows form errors in place: a malformed address (422) and a wrong code (400)", async () => {
    const page = await openPage(await person("typo"));
    await page.goto(`${app.url}/login`);
    // A browser that does not check type=email itself (or an address it accepts and the
    // server does not): the server's 422 answer must reach the person.
    await page.locator("#email").evaluate((input) => input.setAttribute("type", "text"));
    await page.locator("#email").fill("not an address");
    await page.getByRole("button", { name: /email me a sign-in link/i }).click();
    await page.locator("#email-error").waitFor({ timeout: 5_000 });
    await screenshot(page, "malformed-address");

    await askForLink(page, "typo@example.org", "typo");
    await page.locator("#code").fill("000000");
    await page.getByRole("button", { name: /sign in with the code/i }).click();
    await page.locator("#code-error").waitFor({ timeout: 5_000 });
    await screenshot(page, "wrong-code");
  });

  it("loads error pages too; no page broke the Content Security Policy or logged an error", async () => {
    const page = await openPage(await person("visitor"));
    await page.goto(`${app.url}/no-such-page`);
    await screenshot(page, "not-found");
    await page.goto(`${app.url}/auth/verify?token=not-a-token`);
    await screenshot(page, "invalid-link");
    await page.goto(`${app.url}/login?next=/audit`);
    await screenshot(page, "login-with-next");

    const { cspViolations, cspConsole, pageErrors, consoleErrors } = reports;
    assert.deepEqual(cspViolations, [], "securitypolicyviolation events");
    assert.deepEqual(cspConsole, [], "console messages about the Content Security Policy");
    assert.deepEqual(pageErrors, [], "uncaught errors in pages");
    // The browser reports every 4xx answer on the console; the tests ask for some on purpose.
    const unexpected = consoleErrors.filter(
      (entry) => !/^Failed to load resource: the server responded with a status of 4\d\d/.test(entry.text),
    );
    assert.deepEqual(unexpected, [], "console errors");
  });
});
