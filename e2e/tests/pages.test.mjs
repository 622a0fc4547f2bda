// What each page and the sign-in mail look like to a person, in Chromium (issue 15): a
// screenshot of every page and of the rendered HTML mail, and checks of the dashboard's chart
// and "access not used" list against rows this test writes into the database itself.
//
// Screenshots land in target/e2e/ as NN-pages-*.png.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, reports, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, startLatchkey } from "../lib/latchkey.mjs";
import { signInParts, startSmtpSink } from "../lib/smtp-sink.mjs";

const ADMIN = "admin@example.org";
const AUDITOR = "audra@example.org";
const MEMBER = "mia@example.org";
const STEP_TIMEOUT = 15_000;

let smtp;
let app;
let browser;
/** The User-Agent a person's Chrome on Linux sends, with this Chromium's major version. */
let chromeAgent;
let chromeName;
/** The admin's browser, signed in once (by the mail test) and kept, as a person keeps it. */
let adminPage;

before(async () => {
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "mail-pages") });
  app = await startLatchkey({
    logName: "latchkey-pages.log",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ADMINS: ADMIN,
      LATCHKEY_LOGIN_RATE: "1000/1m",
      LATCHKEY_EMAIL_RATE: "1000/1m",
    },
  });
  browser = await launchBrowser();
  const major = browser.version().split(".")[0];
  chromeAgent = `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${major}.0.0.0 Safari/537.36`;
  chromeName = `Chrome ${major} on Linux`;
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await smtp?.close();
});

/** `YYYY-MM-DD` of the UTC day `n` days before today. */
function day(n) {
  const at = new Date();
  at.setUTCDate(at.getUTCDate() - n);
  return at.toISOString().slice(0, 10);
}

function sql(query) {
  return app.sql(query);
}

/** Audit rows written as Latchkey would (the chain trigger keeps an explicit time). */
function seedEvents(event, email, count, at) {
  sql(
    `INSERT INTO login_audit (occurred_at, event, email, detail)
     SELECT ${at}, '${event}', '${email}', 'seeded by the e2e test' FROM generate_series(1, ${count})`,
  );
}

function addMember(email, role, daysAgo) {
  sql(
    `INSERT INTO members (email, role, mailbox_key, created_at)
     VALUES ('${email}', '${role}', '${email}', now() - interval '${daysAgo} days')`,
  );
  return Number(sql(`SELECT id FROM members WHERE email = '${email}'`));
}

async function openPage(context) {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT);
  return page;
}

function mailTo(email, since) {
  return smtp.waitFor(
    (mail) => smtp.messages.indexOf(mail) >= since && mail.to.includes(email) && /\/auth\/verify\?token=/.test(mail.text),
    { description: `sign-in mail to ${email}` },
  );
}

/** Signs in by link in `context`, taking a screenshot of each page on the way when `label`. */
async function signIn(context, email, label) {
  const page = await openPage(context);
  const since = smtp.messages.length;
  await page.goto(`${app.url}/login`);
  if (label) await screenshot(page, `pages-${label}-login`);
  await page.locator("#email").fill(email);
  await page.getByRole("button", { name: /email me a sign-in link/i }).click();
  await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
  const mail = await mailTo(email, since);
  if (label) {
    await page.locator("#wait .number").waitFor({ timeout: 10_000 });
    await screenshot(page, `pages-${label}-check-inbox-waiting`);
  }
  const { link } = signInParts(mail);
  await page.goto(link);
  await page.getByRole("heading", { name: `Sign in as ${email}?` }).waitFor();
  if (label) await screenshot(page, `pages-${label}-confirm`);
  await page.getByRole("button", { name: /^sign in$/i }).click();
  await page.waitForURL(`${app.url}/`);
  return { page, mail };
}

/** What the chart shows for one day, read from the rendered SVG. */
function chartDay(page, date) {
  return page.locator(`#sign-in-chart g.chart-day[data-day="${date}"]`).evaluate((group) => {
    const bar = (kind) => group.querySelector(`rect.chart-bar.${kind}`);
    const height = (kind) => (bar(kind) ? bar(kind).getBBox().height : 0);
    return {
      signIns: Number(group.dataset.signIns),
      failed: Number(group.dataset.failed),
      labels: [...group.querySelectorAll("text.chart-value")].map((t) => t.textContent.trim()),
      signInsHeight: height("sign-ins"),
      failedHeight: height("failed"),
      // What the hatched bar is painted with, as the browser computed it.
      failedFill: bar("failed") ? getComputedStyle(bar("failed")).fill : null,
      tooltip: group.querySelector("title").textContent,
    };
  });
}

async function unusedEmails(page) {
  return page.locator("#unused-access tbody tr").evaluateAll((rows) => rows.map((row) => row.dataset.email));
}

describe("What the pages show, in Chromium", { concurrency: 1 }, () => {
  const ids = {};

  it("seeds members and audit rows the dashboard will summarise", () => {
    ids.stale = addMember("stale@example.org", "member", 200);
    ids.never = addMember("never@example.org", "auditor", 120);
    ids.recent = addMember("recent@example.org", "member", 200);
    ids.newcomer = addMember("newcomer@example.org", "member", 3);
    ids.gone = addMember("gone@example.org", "member", 200);
    sql(`UPDATE members SET active = false WHERE id = ${ids.gone}`);
    seedEvents("signed_in", "stale@example.org", 1, "now() - interval '150 days'");
    seedEvents("signed_in", "recent@example.org", 1, "now() - interval '20 days'");
    seedEvents("signed_in", "gone@example.org", 1, "now() - interval '300 days'");
    // The chart: 6 sign-ins and 2 failed attempts three days ago, 3 failures a week ago,
    // and rows outside the window or of other events that must not be counted.
    seedEvents("signed_in", "recent@example.org", 6, `'${day(3)} 09:00:00+00'`);
    seedEvents("code_failed", "stranger@example.org", 1, `'${day(3)} 10:00:00+00'`);
    seedEvents("link_expired", "stranger@example.org", 1, `'${day(3)} 11:00:00+00'`);
    seedEvents("login_denied", "stranger@example.org", 3, `'${day(7)} 12:00:00+00'`);
    seedEvents("signed_in", "recent@example.org", 9, `'${day(31)} 12:00:00+00'`);
    seedEvents("link_sent", "recent@example.org", 4, `'${day(3)} 12:00:00+00'`);
  });

  it("renders the sign-in mail: one button with the plain link, a large code, the browser named", async () => {
    const context = await newContext(browser, { name: "pages-admin", userAgent: chromeAgent });
    const { page, mail } = await signIn(context, ADMIN, "admin");
    const { link, code } = signInParts(mail);
    assert.ok(!mail.raw.includes("&#x2F;"), "no entity-escaped slashes in the mail's HTML");

    const mailPage = await context.newPage();
    await mailPage.setContent(mail.html, { waitUntil: "load" });
    await screenshot(mailPage, "pages-mail-sign-in");
    const verifyLinks = mailPage.locator('a[href*="/auth/verify?"]');
    assert.equal(await verifyLinks.count(), 1, "one button for the link");
    assert.equal(await verifyLinks.getAttribute("href"), link);
    const button = await verifyLinks.evaluate((a) => {
      const cell = a.closest("td");
      const box = a.getBoundingClientRect();
      return { text: a.textContent.trim(), cellColour: getComputedStyle(cell).backgroundColor, height: box.height, width: box.width };
    });
    assert.equal(button.text, "Sign in to Latchkey");
    assert.equal(button.cellColour, "rgb(36, 87, 197)");
    assert.ok(button.height >= 40 && button.width >= 150, `a button big enough to press: ${JSON.stringify(button)}`);
    const shownCode = await mailPage.locator("code.sign-in-code").evaluate((el) => ({
      text: el.textContent,
      size: parseFloat(getComputedStyle(el).fontSize),
    }));
    assert.equal(shownCode.text, code, "the code alone, so copying it takes nothing else");
    assert.ok(shownCode.size >= 28, `a large code: ${shownCode.size}px`);
    assert.equal((await mailPage.locator("td.browser").textContent()).trim(), chromeName);
    // The text part is as it was: the browser's own string.
    assert.ok(mail.text.includes(`Browser: ${chromeAgent}`), mail.text);
    await mailPage.close();
    await screenshot(page, "pages-admin-dashboard");
    adminPage = page;
  });

  it("draws the 30-day chart from the audit, readable without colour", async () => {
    const page = adminPage;
    await page.goto(`${app.url}/`);
    await page.locator("#sign-in-chart svg").waitFor();
    await screenshot(page, "pages-dashboard-chart");
    assert.equal(await page.locator("#sign-in-chart g.chart-day").count(), 30);

    const busy = await chartDay(page, day(3));
    assert.equal(busy.signIns, 6);
    assert.equal(busy.failed, 2);
    assert.deepEqual(busy.labels, ["6", "2"], "each bar carries its number");
    assert.ok(Math.abs(busy.signInsHeight / busy.failedHeight - 3) < 0.1, `6:2 bars, ${busy.signInsHeight}:${busy.failedHeight}`);
    assert.match(busy.failedFill, /url\(.*#chart-hatch.*\)/, "failed bars are hatched, not only coloured");
    assert.match(busy.tooltip, /6 sign-ins, 2 failed attempts/);

    const week = await chartDay(page, day(7));
    assert.deepEqual([week.signIns, week.failed, week.signInsHeight, week.labels], [0, 3, 0, ["3"]]);
    const today = await chartDay(page, day(0));
    // The admin's sign-in today, and nothing else.
    assert.deepEqual([today.signIns, today.failed], [1, 0]);
    assert.equal(await page.locator(`#sign-in-chart g.chart-day[data-day="${day(31)}"]`).count(), 0);

    // The same numbers as a table, for screen readers and for anyone without the picture.
    await page.locator(".chart-table summary").click();
    const cells = await page.locator(`.chart-table tr[data-day="${day(3)}"] td`).allTextContents();
    assert.deepEqual(cells, ["6", "2"]);
    await screenshot(page, "pages-dashboard-chart-table");
  });

  it("lists exactly the members whose access goes unused, and a deactivation clears them at once", async () => {
    const page = adminPage;
    await page.goto(`${app.url}/`);
    await page.locator("#unused-access").waitFor();
    assert.deepEqual(await unusedEmails(page), ["never@example.org", "stale@example.org"]);
    const stale = page.locator(`#unused-${ids.stale}`);
    assert.equal((await stale.locator("td").nth(2).textContent()).trim(), "5 months ago");
    assert.match(await stale.locator("time").first().getAttribute("title"), / UTC$/);
    assert.equal((await page.locator(`#unused-${ids.never} td`).nth(2).textContent()).trim(), "never");
    await page.locator("#unused-heading").scrollIntoViewIfNeeded();
    await screenshot(page, "pages-dashboard-access-not-used");

    // The link opens the Team page at that member's row, where the Deactivate button is.
    await stale.getByRole("link", { name: /deactivate/i }).click();
    await page.waitForURL(`${app.url}/team#member-${ids.stale}`);
    const row = page.locator(`#member-${ids.stale}`);
    assert.equal(await row.evaluate((el) => el.matches(":target")), true);
    await screenshot(page, "pages-team-at-member");
    page.once("dialog", (dialog) => dialog.accept());
    await row.getByRole("button", { name: /^deactivate$/i }).click();
    await page.locator("#team-rows .notice", { hasText: "Deactivated stale@example.org" }).waitFor();
    await screenshot(page, "pages-team-deactivated");

    // Straight back to the dashboard, well inside its few-seconds cache: the list is fresh.
    await page.goto(`${app.url}/`);
    assert.deepEqual(await unusedEmails(page), ["never@example.org"]);
    await screenshot(page, "pages-dashboard-after-deactivation");
  });

  it("shows audit events as labels, browsers by name and times in words, with the raw values kept", async () => {
    const page = adminPage;
    await page.goto(`${app.url}/audit?event=signed_in&email=${encodeURIComponent(ADMIN)}`);
    const row = page.locator("#audit-rows tbody tr").first();
    assert.equal(await row.getAttribute("data-event"), "signed_in");
    assert.equal((await row.locator(".event").textContent()).trim(), "Signed in");
    assert.equal((await row.locator("td.agent summary").textContent()).trim(), chromeName);
    assert.match(await row.locator("time").textContent(), /^(just now|\d+ minutes? ago)$/);
    assert.match(await row.locator("time").getAttribute("datetime"), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    await row.locator("td.agent summary").click();
    assert.equal((await row.locator("td.agent code").textContent()).trim(), chromeAgent);
    await screenshot(page, "pages-audit");
    await page.goto(`${app.url}/audit?event=link_prefetched`);
    await screenshot(page, "pages-audit-empty-filter");

    for (const path of ["team", "sessions", "apps", "passkeys"]) {
      await page.goto(`${app.url}/${path}`);
      await page.locator("main h1").waitFor();
      await screenshot(page, `pages-${path}`);
    }
    await page.goto(`${app.url}/sessions`);
    const agent = page.locator("table.sessions td.agent").first();
    assert.equal((await agent.textContent()).trim(), chromeName);
    assert.equal(await agent.getAttribute("title"), chromeAgent);
  });

  it("takes the auditor's and the member's views, the code flow and the error pages", async () => {
    sql(`INSERT INTO members (email, role, mailbox_key) VALUES ('${AUDITOR}', 'auditor', '${AUDITOR}'), ('${MEMBER}', 'member', '${MEMBER}')`);
    const auditor = await newContext(browser, { name: "pages-auditor" });
    const { page: auditorPage } = await signIn(auditor, AUDITOR);
    assert.deepEqual(await unusedEmails(auditorPage), ["never@example.org"]);
    assert.equal(await auditorPage.locator("#unused-access a").count(), 0, "auditors read, they do not deactivate");
    await screenshot(auditorPage, "pages-auditor-dashboard");

    // The member signs in with the code instead of the link.
    const member = await newContext(browser, { name: "pages-member" });
    const page = await openPage(member);
    await page.goto(`${app.url}/login`);
    const since = smtp.messages.length;
    await page.locator("#email").fill(MEMBER);
    await page.getByRole("button", { name: /email me a sign-in link/i }).click();
    await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
    const { code } = signInParts(await mailTo(MEMBER, since));
    await page.locator("#code").fill("000000");
    await page.getByRole("button", { name: /sign in with the code/i }).click();
    await page.locator("#code-error").waitFor();
    await screenshot(page, "pages-code-wrong");
    await page.locator("#code").fill(code);
    await page.getByRole("button", { name: /sign in with the code/i }).click();
    await page.waitForURL(`${app.url}/`);
    assert.equal(await page.locator("#unused-access, #unused-heading").count(), 0, "members do not see who else has access");
    await screenshot(page, "pages-member-dashboard");
    await page.goto(`${app.url}/sessions`);
    await screenshot(page, "pages-member-sessions");
    await page.goto(`${app.url}/audit`);
    await screenshot(page, "pages-forbidden");

    const visitor = await openPage(await newContext(browser, { name: "pages-visitor" }));
    await visitor.goto(`${app.url}/no-such-page`);
    await screenshot(visitor, "pages-not-found");
    await visitor.goto(`${app.url}/auth/verify?token=not-a-token`);
    await screenshot(visitor, "pages-invalid-link");
    await visitor.goto(`${app.url}/auth/cancel?token=not-a-token`);
    await screenshot(visitor, "pages-cancel-invalid");

    const { cspViolations, cspConsole, pageErrors } = reports;
    assert.deepEqual(cspViolations, [], "the chart and the new markup keep to the CSP");
    assert.deepEqual(cspConsole, []);
    assert.deepEqual(pageErrors, []);
  });
});
