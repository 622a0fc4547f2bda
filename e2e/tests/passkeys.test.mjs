// Passkeys in a real browser: headless Chromium with a virtual authenticator (the DevTools
// protocol's WebAuthn domain, through playwright-core's CDP session), against the release
// binary with LATCHKEY_ADMIN_PASSKEY=required. The public URL is http://localhost:<port>:
// WebAuthn needs a secure context and a host name (an IP address cannot be a relying party).
//
// A member adds a passkey, signs out, and signs in with it without any mail; an admin signed
// in by email is kept from /team until confirming with a passkey; a removed passkey no longer
// signs in.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchBrowser, newContext, screenshot } from "../lib/browser.mjs";
import { OUT_DIR, startLatchkey } from "../lib/latchkey.mjs";
import { signInParts, startSmtpSink } from "../lib/smtp-sink.mjs";

const ADMIN = "pk-admin@example.org";
const MEMBER = "pk-member@example.org";
const STEP_TIMEOUT = 15_000;

let smtp;
let app;
let browser;

before(async () => {
  smtp = await startSmtpSink({ dir: join(OUT_DIR, "passkey-mail") });
  app = await startLatchkey({
    host: "localhost",
    logName: "latchkey-passkeys.log",
    env: {
      LATCHKEY_EMAIL: smtp.url,
      LATCHKEY_ADMINS: ADMIN,
      LATCHKEY_ALLOWED_DOMAINS: "example.org",
      LATCHKEY_ADMIN_PASSKEY: "required",
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
});

/** A browser context with a virtual platform authenticator (resident keys, user verification). */
async function personWithAuthenticator(name) {
  const context = await newContext(browser, { name });
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
  return { context, page, cdp, authenticatorId };
}

function signInMailTo(email, since) {
  return smtp.waitFor(
    (mail) => smtp.messages.indexOf(mail) >= since && mail.to.includes(email) && /\/auth\/verify\?token=/.test(mail.text),
    { description: `sign-in mail to ${email}` },
  );
}

/** Sign-in link mails to `email` (other mails, such as "a passkey was added", may come too). */
function mailsTo(email) {
  return smtp.messages.filter((mail) => mail.to.includes(email) && /\/auth\/verify\?token=/.test(mail.text));
}

async function signInByLink(page, email, label) {
  const since = smtp.messages.length;
  await page.goto(`${app.url}/login`);
  await page.locator("#email").fill(email);
  await page.getByRole("button", { name: /email me a sign-in link/i }).click();
  await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
  const { link } = signInParts(await signInMailTo(email, since));
  await page.goto(link.replace(/^http:\/\/[^/]+/, app.url));
  await page.getByRole("button", { name: /^sign in$/i }).click();
  await page.waitForURL(`${app.url}/`);
  await page.locator("header .who", { hasText: email }).waitFor();
  await screenshot(page, `${label}-signed-in-by-email`);
}

async function addPasskey(page, name, label) {
  await page.goto(`${app.url}/passkeys`);
  await page.locator("#passkey-name").fill(name);
  await page.getByRole("button", { name: /add a passkey/i }).click();
  await page.locator("td.passkey-name", { hasText: name }).waitFor();
  await screenshot(page, `${label}-passkey-added`);
}

async function signOut(page) {
  await page.getByRole("button", { name: /sign out/i }).first().click();
  await page.waitForURL(/\/login$/);
}

async function signInWithPasskey(page, label) {
  // Right after signing out the page is the sign-in page already, and its autofill request
  // may be under way: loading it again would race that request (it can sign in while the
  // new page, whose CSRF token belongs to the signed-out browser, waits for nothing).
  if (!/\/login$/.test(page.url())) {
    await page.goto(`${app.url}/login`);
  }
  const button = page.getByRole("button", { name: /sign in with a passkey/i });
  // The virtual authenticator answers the page's autofill request (conditional mediation) by
  // itself, which may sign in before the button is pressed: either way is a passkey sign-in.
  try {
    await button.click({ timeout: 3000 });
  } catch {
    console.log(`    (${label}: the passkey autofill answered before the button)`);
  }
}

describe("passkeys", () => {
  let member;
  let admin;

  it("a member adds a passkey, signs out, and signs in with it without any mail", async () => {
    member = await personWithAuthenticator("pk-member");
    const { page, cdp, authenticatorId } = member;
    await signInByLink(page, MEMBER, "pk-member");
    // The sign-in page offers the passkey autofill on the email field.
    await addPasskey(page, "Virtual laptop", "pk-member");
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    assert.equal(credentials.length, 1);
    assert.equal(credentials[0].isResidentCredential, true, "a discoverable credential");
    await smtp.waitFor((mail) => mail.to.includes(MEMBER) && /passkey was added/i.test(mail.subject ?? mail.text), {
      description: "the passkey-added mail",
    });

    await signOut(page);
    const mailsBefore = mailsTo(MEMBER).length;
    await signInWithPasskey(page, "pk-member");
    await page.waitForURL(`${app.url}/`);
    await page.locator("header .who", { hasText: MEMBER }).waitFor();
    await screenshot(page, "pk-member-signed-in-with-passkey");
    assert.equal(mailsTo(MEMBER).length, mailsBefore, "no sign-in mail for a passkey sign-in");
    const detail = app.sql(
      `SELECT detail FROM login_audit WHERE email = '${MEMBER}' AND event = 'signed_in' ORDER BY id DESC LIMIT 1`,
    );
    assert.match(detail, /^via passkey/);
    const used = app.sql(`SELECT count(*) FROM passkeys WHERE last_used_at IS NOT NULL`);
    assert.equal(used, "1");
  });

  it("an admin signed in by email cannot open /team until confirming a passkey", async () => {
    admin = await personWithAuthenticator("pk-admin");
    const { page } = admin;
    await signInByLink(page, ADMIN, "pk-admin");
    await page.goto(`${app.url}/team`);
    await page.waitForURL(/\/passkeys\/confirm\?next=%2Fteam$/);
    await page.getByRole("heading", { name: /confirm with a passkey/i }).waitFor();
    await screenshot(page, "pk-admin-asked-to-add-a-passkey");
    await page.getByRole("link", { name: /add a passkey/i }).click();
    await page.waitForURL(`${app.url}/passkeys`);
    await addPasskey(page, "Admin key", "pk-admin");

    // Adding is not proving: /team still waits.
    await page.goto(`${app.url}/team`);
    await page.waitForURL(/\/passkeys\/confirm/);
    const confirm = page.getByRole("button", { name: /confirm with a passkey/i });
    await confirm.waitFor();
    await screenshot(page, "pk-admin-confirm");
    await confirm.click();
    await page.waitForURL(`${app.url}/team`);
    await page.locator("#team").waitFor();
    await screenshot(page, "pk-admin-team-after-confirming");

    await page.goto(`${app.url}/sessions`);
    await page.locator("td.passkey-proof", { hasText: "proved a passkey" }).first().waitFor();
    await screenshot(page, "pk-admin-sessions");
  });

  it("a removed passkey no longer signs in", async (t) => {
    if (!member) return t.skip("the member test did not run");
    const { page } = member;
    await page.goto(`${app.url}/passkeys`);
    await page.getByRole("button", { name: /^remove$/i }).click();
    await page.getByText(/no passkeys yet/i).waitFor();
    assert.equal(app.sql(`SELECT count(*) FROM passkeys p JOIN members m ON m.id = p.member_id WHERE m.email = '${MEMBER}'`), "0");
    await signOut(page);
    // The authenticator still holds the credential; the server no longer knows it.
    await signInWithPasskey(page, "pk-member-removed");
    await page.locator("#passkey-error").waitFor({ state: "visible" });
    await screenshot(page, "pk-member-removed-passkey-refused");
    assert.match(page.url(), /\/login/);
    const failed = app.sql(`SELECT count(*) FROM login_audit WHERE event = 'passkey_failed'`);
    assert.ok(Number(failed) >= 1);
  });
});
