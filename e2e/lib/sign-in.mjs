// Signing in on Latchkey's sign-in page as a person does: ask for a link, open it from the
// mail, confirm. Shared by the tests that reach the page from an app.

import { screenshot } from "./browser.mjs";
import { signInParts } from "./smtp-sink.mjs";

/**
 * On Latchkey's sign-in page: asks for a link for `email`, opens it and confirms; returns
 * the mail. With a `label`, the confirmation page is kept as a screenshot.
 */
export async function signInByMail(page, smtp, email, label) {
  const since = smtp.messages.length;
  await page.locator("#email").fill(email);
  await page.getByRole("button", { name: /email me a sign-in link/i }).click();
  await page.getByRole("heading", { name: /check your inbox/i }).waitFor();
  const mail = await smtp.waitFor(
    (m) => smtp.messages.indexOf(m) >= since && m.to.includes(email) && /\/auth\/verify\?token=/.test(m.text),
    { description: `sign-in mail to ${email}` },
  );
  await page.goto(signInParts(mail).link);
  await page.getByRole("heading", { name: `Sign in as ${email}?` }).waitFor();
  if (label) await screenshot(page, `${label}-confirm`);
  await page.getByRole("button", { name: /^sign in$/i }).click();
  return mail;
}
