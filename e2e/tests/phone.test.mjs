// Every page on a phone (issue 25, point 5): at 390 px (and 360 px) nothing scrolls sideways,
// tables become stacked rows, "Sign out" and every table's buttons are on screen. At 1440 px
// the dashboard's chart fills its card and the launcher is a grid of tiles. Members see no
// process id; a row no browser wrote shows no browser; a favicon means no console error.
//
// Screenshots land in target/e2e/ as NN-phone-*.png.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, reports, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, startLatchkey } from "../lib/latchkey.mjs";
import { signInParts, startSmtpSink } from "../lib/smtp-sink.mjs";

const ADMIN = "phone-admin@example.org";
const MEMBER = "phone-member@example.org";
const STEP_TIMEOUT = 15_000;
const PHONE = { width: 390, height: 844 };
const SMALL_PHONE = { width: 360, height: 740 };
/** Tablets and small laptops: no screenshots, the same checks. */
const IN_BETWEEN = [{ width: 800, height: 1000 }, { width: 1024, height: 800 }];
const WIDE = { width: 1440, height: 900 };

let smtp;
let app;
let browser;
let phoneAgent;

before(async () => {
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail-phone") });
  app = await startLatchkey({
    logName: "latchkey-phone.log",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ADMINS: ADMIN,
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  browser = await launchBrowser();
  const major = browser.version().split(".")[0];
  phoneAgent = `Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${major}.0.0.0 Mobile Safari/537.36`;
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await smtp?.close();
});

function sql(query) {
  return app.sql(query);
}

/**
 * A browser like a phone's: a mobile viewport honours <meta name="viewport"> and, as a phone
 * does, zooms out to show a page wider than the screen (which `assertFits` catches).
 */
async function phoneContext(name, userAgent = phoneAgent) {
  const context = await newContext(browser, { name, userAgent, device: { viewport: PHONE, isMobile: true, hasTouch: true } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  return { context, page };
}

/** Signs in by link; the page ends on the dashboard. */
async function signIn(page, email) {
  await page.goto(`${app.url}/login`);
  const since = smtp.messages.length;
  await page.locator("#email").fill(email);
  await page.getByRole("button", { name: /email me a sign-in link/i }).click();
  await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
  await page.goto(signInParts(await mailTo(email, since)).link);
  await page.getByRole("button", { name: /^sign in$/i }).click();
  await page.waitForURL(`${app.url}/`);
}

function mailTo(email, since) {
  return smtp.waitFor(
    (mail) => smtp.messages.indexOf(mail) >= since && mail.to.includes(email) && /\/auth\/verify\?token=/.test(mail.text),
    { description: `sign-in mail to ${email}` },
  );
}

/**
 * Where the page is wider than the window: the document's scroll width, any `.table-scroll`
 * that scrolls on its own, and (to find the culprit) the first elements reaching past the edge.
 */
function measure(page) {
  return page.evaluate(() => {
    const edge = document.documentElement.clientWidth;
    const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
    const describe = (el) => `${el.outerHTML.slice(0, 140)} (right ${Math.round(el.getBoundingClientRect().right)})`;
    return {
      innerWidth: window.innerWidth,
      clientWidth: edge,
      scrollWidth: document.documentElement.scrollWidth,
      bodyScrollWidth: document.body.scrollWidth,
      scrollingInside: [...document.querySelectorAll(".table-scroll, figure, details, main, section")]
        .filter((el) => el.scrollWidth > el.clientWidth + 1)
        .map(describe),
      pastTheEdge: [...document.querySelectorAll("body *")]
        .filter((el) => visible(el) && el.getBoundingClientRect().right > edge + 0.5)
        .slice(0, 5)
        .map(describe),
      // Every control a person presses: the bar's "Sign out" and each table's buttons.
      controls: [...document.querySelectorAll(".signout button, table button, table select, table summary, table a")]
        .filter(visible)
        .map((el) => {
          const box = el.getBoundingClientRect();
          return { what: el.outerHTML.slice(0, 100), left: box.left, right: box.right };
        }),
      tableButtons: [...document.querySelectorAll("table button")].filter(visible).length,
      signOut: document.querySelector(".signout button")?.textContent.trim() ?? null,
    };
  });
}

/** Nothing scrolls sideways at this width and every control is inside the window. */
async function assertFits(page, what, { width } = page.viewportSize()) {
  const m = await measure(page);
  const where = `${what} at ${width} px: ${JSON.stringify(m, null, 1)}`;
  assert.equal(m.innerWidth, width, `the window is ${width} px wide (no zooming out to fit) — ${where}`);
  assert.ok(m.scrollWidth <= width, `the page scrolls sideways — ${where}`);
  assert.ok(m.bodyScrollWidth <= width, `the body is wider than the window — ${where}`);
  assert.deepEqual(m.scrollingInside, [], `something scrolls sideways inside the page — ${where}`);
  for (const control of m.controls) {
    assert.ok(control.left >= 0 && control.right <= width + 0.5, `off-screen: ${control.what} — ${where}`);
  }
  return m;
}

/** A page signed in, checked at the phone's width, with a screenshot. */
async function visit(page, path, label, { heading } = {}) {
  const response = await page.goto(`${app.url}${path}`);
  if (heading) await page.locator("main h1").first().waitFor();
  const m = await assertFits(page, path);
  await screenshot(page, `phone-${label}`);
  return { m, status: response.status() };
}

/** Tables are stacked rows on a phone: one block per row, each cell labelled. */
async function assertStacked(page, selector) {
  const rows = await page.locator(`${selector} tbody tr`).evaluateAll((trs) =>
    trs.map((tr) => ({
      display: getComputedStyle(tr).display,
      labels: [...tr.querySelectorAll("td[data-label]")]
        .filter((td) => td.getClientRects().length > 0)
        .map((td) => getComputedStyle(td, "::before").content),
    })),
  );
  assert.ok(rows.length > 0, `${selector} has rows`);
  for (const row of rows) {
    assert.equal(row.display, "block", `${selector}: a stacked row`);
    assert.ok(row.labels.length > 0 && row.labels.every((label) => /^".+"$/.test(label)), `${selector}: labelled cells ${JSON.stringify(row)}`);
  }
}

describe("Every page on a phone, in Chromium", { concurrency: 1 }, () => {
  let admin;
  let adminPage;

  it("seeds apps, members, a passkey and audit rows so that every table has rows", () => {
    // Apps the admin may open (the launcher's tiles), one with a long name.
    sql(`INSERT INTO apps (name, origin, roles) VALUES
      ('Wiki', 'https://wiki.example.org', '{admin,auditor,member}'),
      ('Grafana', 'https://grafana.example.org', '{admin}'),
      ('Issue tracker for the operations team', 'https://issues.operations.example.org:8443', '{admin,member}'),
      ('Files', 'https://files.example.org', '{admin,member}')`);
    // Two of them members for months who never signed in: the "access not used" table.
    sql(`INSERT INTO members (email, role, mailbox_key, created_at) VALUES
      ('${MEMBER}', 'member', '${MEMBER}', now()),
      ('a.very.long.address.for.a.phone.screen@subdivision.example.org', 'auditor', 'a.very.long.address.for.a.phone.screen@subdivision.example.org', now() - interval '200 days'),
      ('sam@example.org', 'member', 'sam@example.org', now() - interval '200 days')`);
    // Audit rows: one written by Latchkey itself (no User-Agent: no browser was involved), one
    // whose User-Agent names no browser, and one with a long agent and a long detail.
    sql(`INSERT INTO login_audit (occurred_at, event, email, ip, user_agent, detail) VALUES
      (now() - interval '2 minutes', 'session_expired', 'sam@example.org', NULL, NULL, 'phone-seed: expired by Latchkey'),
      (now() - interval '3 minutes', 'code_failed', 'sam@example.org', '2001:db8:85a3::8a2e:370:7334', 'Seeder/1.0', 'phone-seed: odd agent'),
      (now() - interval '4 minutes', 'login_denied', 'stranger-with-a-long-address@unknown-domain.example.net', '203.0.113.77',
       'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80 SomeToolbar/1.2.3.4.5.6.7.8.9',
       'phone-seed: not a member; a detail long enough to wrap over several lines on a narrow screen, with-a-very-long-unbroken-word-in-it-that-must-not-widen-the-page')`);
  });

  it("signs in on a phone: the login page and the check-your-inbox page fit", async () => {
    admin = await phoneContext("phone-admin");
    const { page } = admin;
    await visit(page, "/login", "login");
    const since = smtp.messages.length;
    await page.locator("#email").fill(ADMIN);
    await page.getByRole("button", { name: /email me a sign-in link/i }).click();
    await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
    const mail = await mailTo(ADMIN, since);
    await page.locator("#wait .number").waitFor({ timeout: 10_000 });
    await assertFits(page, "check your inbox");
    await screenshot(page, "phone-check-inbox");
    await page.goto(signInParts(mail).link);
    await page.getByRole("heading", { name: `Sign in as ${ADMIN}?` }).waitFor();
    await assertFits(page, "confirm");
    await screenshot(page, "phone-confirm");
    await page.getByRole("button", { name: /^sign in$/i }).click();
    await page.waitForURL(`${app.url}/`);
    adminPage = page;
    // A second session of the admin's, from a laptop, so the sessions table has two rows.
    const laptop = await newContext(browser, {
      name: "phone-admin-laptop",
      userAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    });
    const laptopPage = await laptop.newPage();
    laptopPage.setDefaultTimeout(STEP_TIMEOUT);
    await signIn(laptopPage, ADMIN);
    // A passkey of the admin's (a row only: the page lists it, nobody uses it here).
    sql(`INSERT INTO passkeys (member_id, credential_id, user_handle, passkey, name)
         SELECT id, '\\x0102030405'::bytea, '\\x000102030405060708090a0b0c0d0e0f'::bytea, '{}'::jsonb, 'Work laptop with a rather long name'
         FROM members WHERE email = '${ADMIN}'`);
  });

  it("shows the dashboard on a phone: tiles, stacked tables, the chart inside its card", async () => {
    const page = adminPage;
    const { m } = await visit(page, "/", "dashboard", { heading: true });
    assert.equal(m.signOut, "Sign out");
    assert.equal(await page.locator("#launcher a.tile").count(), 4, "one tile per app the admin may open");
    await assertStacked(page, "table.latest");
    await assertStacked(page, "table.unused");
    // The admin may be asked why two instances differ: the process is named for them.
    assert.match(await page.locator("#dashboard > p.hint").last().textContent(), /process \d+/);
    // No browser was involved in a row Latchkey wrote itself: nothing is shown, not "Unknown
    // browser"; a string that names no browser is still "Unknown browser".
    const browserOf = (detail) =>
      page.locator("table.latest tbody tr", { hasText: detail }).locator("td.agent").textContent();
    assert.equal((await browserOf("phone-seed: expired by Latchkey")).trim(), "");
    assert.equal((await browserOf("phone-seed: odd agent")).trim(), "Unknown browser");
  });

  it("shows the audit, team, apps, sessions and passkeys pages on a phone, tables stacked", async () => {
    const page = adminPage;
    for (const [path, table] of [
      ["/audit", "table.audit"],
      ["/team", "table.team"],
      ["/apps", "table.apps"],
      ["/sessions", "table.sessions"],
      ["/passkeys", "table.passkeys"],
    ]) {
      const { m } = await visit(page, path, path.slice(1), { heading: true });
      assert.equal(m.signOut, "Sign out", path);
      await assertStacked(page, table);
      if (path !== "/audit") assert.ok(m.tableButtons > 0, `${path}: the table's buttons are there to press`);
    }
    // The apps page's "Change" opens a form inside the stacked row; it fits too.
    await page.goto(`${app.url}/apps`);
    await page.locator("table.apps summary").first().click();
    await assertFits(page, "/apps with a form open");
    await screenshot(page, "phone-apps-change-open");
    // An audit row's raw User-Agent, opened: long, and wrapped.
    await page.goto(`${app.url}/audit`);
    await page.locator("table.audit tr", { hasText: "phone-seed: not a member" }).locator("td.agent summary").click();
    await assertFits(page, "/audit with a user agent open");
    await screenshot(page, "phone-audit-agent-open");
  });

  it("shows error pages on a phone", async () => {
    const { status } = await visit(adminPage, "/no-such-page", "not-found");
    assert.equal(status, 404);
    const visitor = await phoneContext("phone-visitor");
    const { status: invalid } = await visit(visitor.page, "/auth/verify?token=not-a-token", "invalid-link");
    assert.equal(invalid, 400);
    await visit(visitor.page, "/no-such-page", "not-found-signed-out");
  });

  it("fits at 360 px, and at tablet widths, on every page", async () => {
    const page = adminPage;
    for (const size of [SMALL_PHONE, ...IN_BETWEEN]) {
      await page.setViewportSize(size);
      for (const path of ["/", "/audit", "/team", "/apps", "/sessions", "/passkeys", "/no-such-page"]) {
        await page.goto(`${app.url}${path}`);
        await assertFits(page, path, size);
        // The widest page, as a picture.
        if (size === SMALL_PHONE && path === "/audit") await screenshot(page, "phone-360-audit");
        if (size === SMALL_PHONE && path === "/") await screenshot(page, "phone-360-dashboard");
      }
    }
    await page.setViewportSize(PHONE);
  });

  it("shows a member no process id", async () => {
    const { page } = await phoneContext("phone-member");
    await signIn(page, MEMBER);
    await assertFits(page, "member's dashboard");
    await screenshot(page, "phone-member-dashboard");
    const text = await page.locator("main").textContent();
    assert.doesNotMatch(text, /process \d+/, "a member sees no process id");
    assert.match(text, /Counted by this instance at \d\d:\d\d:\d\d UTC/);
    // Files, the tracker and Wiki are open to members (by name); Grafana is not.
    assert.deepEqual(await page.locator("#launcher a.tile").allTextContents(), ["Files", "Issue tracker for the operations team", "Wiki"]);
  });

  it("at 1440 px: the chart fills its card, the launcher is a grid of tiles", async () => {
    const page = adminPage;
    await page.setViewportSize(WIDE);
    await page.goto(`${app.url}/`);
    await assertFits(page, "/", WIDE);
    const chart = await page.locator("#sign-in-chart").evaluate((figure) => {
      const svg = figure.querySelector("svg").getBoundingClientRect();
      const style = getComputedStyle(figure);
      const inner = figure.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      return { svg: svg.width, inner, card: figure.getBoundingClientRect().width };
    });
    assert.ok(Math.abs(chart.svg - chart.inner) <= 2, `the chart is as wide as its card: ${JSON.stringify(chart)}`);
    const tiles = await page.locator("#launcher").evaluate((list) => ({
      display: getComputedStyle(list).display,
      columns: getComputedStyle(list).gridTemplateColumns.split(" ").length,
      tops: [...list.querySelectorAll("a.tile")].map((a) => Math.round(a.getBoundingClientRect().top)),
      heights: [...list.querySelectorAll("a.tile")].map((a) => Math.round(a.getBoundingClientRect().height)),
      initials: [...list.querySelectorAll("a.tile")].map((a) => getComputedStyle(a, "::before").content),
    }));
    assert.equal(tiles.display, "grid");
    assert.ok(tiles.columns >= 4, `several tiles a row: ${JSON.stringify(tiles)}`);
    assert.equal(new Set(tiles.tops).size, 1, `the four tiles side by side: ${JSON.stringify(tiles)}`);
    assert.equal(new Set(tiles.heights).size, 1, `tiles of one height: ${JSON.stringify(tiles)}`);
    assert.deepEqual(tiles.initials, ['"F"', '"G"', '"I"', '"W"']);
    await screenshot(page, "phone-1440-dashboard");
    await page.goto(`${app.url}/audit`);
    await assertFits(page, "/audit", WIDE);
    await screenshot(page, "phone-1440-audit");
  });

  it("serves a favicon; no page logged an error or broke the CSP", async () => {
    const res = await fetch(`${app.url}/static/favicon.svg`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/svg+xml");
    assert.match(res.headers.get("cache-control"), /max-age=/);
    assert.match(await res.text(), /^<svg /);
    assert.equal(
      await adminPage.locator('head link[rel="icon"]').getAttribute("href"),
      "/static/favicon.svg",
    );

    const ours = (entry) => String(entry.context).startsWith("phone-");
    assert.deepEqual(reports.cspViolations.filter(ours), [], "securitypolicyviolation events");
    assert.deepEqual(reports.cspConsole.filter(ours), [], "console messages about the CSP");
    assert.deepEqual(reports.pageErrors.filter(ours), [], "uncaught errors in pages");
    // The browser logs a 4xx answer to the page itself on the console; this test asks for a
    // 404 and a 400 page on purpose. Any other error (a missing favicon on every page) fails.
    const errorPages = ["/no-such-page", "/auth/verify"];
    const unexpected = reports.consoleErrors.filter(ours).filter(
      (entry) =>
        !(
          /^Failed to load resource: the server responded with a status of 4\d\d/.test(entry.text) &&
          errorPages.includes(new URL(entry.page).pathname)
        ),
    );
    assert.deepEqual(unexpected, [], "console errors");
  });
});
