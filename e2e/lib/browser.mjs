// Debian's Chromium, headless, driven by playwright-core. Nothing is downloaded: the browser
// is /usr/bin/chromium from the `chromium` package.
//
// Every context records what the browser reports about the Content Security Policy: the
// `securitypolicyviolation` DOM event (through a binding, which the page's CSP cannot block)
// and console messages that mention the policy. Uncaught page errors are recorded too.

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

import { OUT_DIR } from "./latchkey.mjs";

export const CHROMIUM = process.env.LATCHKEY_E2E_CHROMIUM ?? "/usr/bin/chromium";

// Without the background-networking flags Chromium tries to reach Google's services at
// every start, which this machine's closed network refuses.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchBrowser({ extraArgs = [] } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium chromium-driver`);
  }
  // `launch` gives the browser a fresh, empty user-data directory of its own, and deletes it
  // on close; every context opened on it has its own cookies and storage.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    timeout: 60_000,
  });
}

/** Everything the pages of all contexts reported; checked by the CSP test. */
export const reports = { cspViolations: [], cspConsole: [], pageErrors: [], consoleErrors: [], httpErrors: [] };

/**
 * A new, isolated browser (its own cookie jar), wired to `reports`. `device` overrides the
 * viewport and may make it a phone's (`isMobile`, `hasTouch`: the page's meta viewport counts).
 */
export async function newContext(browser, { name, userAgent, device = {} } = {}) {
  const context = await browser.newContext({
    userAgent: userAgent ?? `LatchkeyE2E/1.0 (Chromium; ${name ?? "browser"})`,
    viewport: { width: 1100, height: 800 },
    locale: "en-GB",
    timezoneId: "UTC",
    ...device,
  });
  await context.exposeBinding("__latchkeyReportCsp", ({ page }, violation) => {
    reports.cspViolations.push({ context: name, page: page.url(), ...violation });
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__latchkeyReportCsp({
        directive: event.violatedDirective,
        blocked: event.blockedURI,
        source: event.sourceFile,
        line: event.lineNumber,
        sample: event.sample,
        // What carries an inline style right now, to find the culprit of a style-src-attr report.
        styled: [...document.querySelectorAll("[style]")].map((el) => el.outerHTML.slice(0, 200)),
        stack: new Error().stack,
      });
    });
  });
  context.on("page", (page) => watchPage(page, name));
  return context;
}

function watchPage(page, name) {
  page.on("console", (message) => {
    const text = message.text();
    const entry = { context: name, page: page.url(), type: message.type(), text };
    if (/content.security.policy|refused to (load|execute|apply|connect|frame)/i.test(text)) {
      reports.cspConsole.push(entry);
    } else if (message.type() === "error") {
      reports.consoleErrors.push(entry);
    }
  });
  // Pages and HTMX requests answered 4xx/5xx, printed as they happen: when a step times out,
  // the line above it usually says why (a 403 from the CSRF check, say). Some are expected.
  page.on("response", (response) => {
    const type = response.request().resourceType();
    if (response.status() >= 400 && ["document", "fetch", "xhr"].includes(type)) {
      const { pathname } = new URL(response.url());
      const entry = { context: name, status: response.status(), method: response.request().method(), path: pathname };
      reports.httpErrors.push(entry);
      console.log(`    [http] ${entry.status} ${entry.method} ${entry.path} (${name}, ${type})`);
    }
  });
  page.on("pageerror", (error) => {
    reports.pageErrors.push({ context: name, page: page.url(), text: String(error) });
  });
}

let shotNumber = 0;

/** A full-page screenshot under target/e2e/, numbered in the order taken. */
export async function screenshot(page, label) {
  mkdirSync(OUT_DIR, { recursive: true });
  shotNumber += 1;
  const file = join(OUT_DIR, `${String(shotNumber).padStart(2, "0")}-${label}.png`);
  // caret "initial": hiding the caret would leave a style attribute on the focused input,
  // which HTMX then copies while settling a swap (a style-src-attr report of our making).
  await page.screenshot({ path: file, fullPage: true, caret: "initial" });
  return file;
}
