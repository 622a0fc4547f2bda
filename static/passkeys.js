// Passkeys (WebAuthn) for Latchkey's pages: signing in (a button, and the browser's autofill
// of passkeys on the email field), adding one on /passkeys, and confirming one on
// /passkeys/confirm. Loaded with <script src> on every page (the CSP allows no inline script);
// it only acts on elements marked data-passkey-*, which stay hidden without it, so every page
// still works without JavaScript (email sign-in).
//
// The server speaks webauthn-rs's JSON: binary fields are base64url strings, turned into
// ArrayBuffers here for navigator.credentials, and back again for the answer.
(function () {
  "use strict";

  if (window.__latchkeyPasskeys) return; // loaded once, even if a swap brings the tag again
  window.__latchkeyPasskeys = true;

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 1) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  /** POSTs form fields (an object) or, with `json`, a JSON body; resolves to the JSON answer. */
  async function post(path, body, json) {
    const headers = { "X-CSRF-Token": csrfToken(), Accept: "application/json" };
    let payload;
    if (json) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    } else {
      payload = new URLSearchParams(body || {});
    }
    const response = await fetch(path, {
      method: "POST",
      headers,
      body: payload,
      credentials: "same-origin",
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (!response.ok) {
      if (response.status === 429) throw new Error("Too many attempts. Wait a minute and try again.");
      throw new Error((answer && answer.error) || `The server answered ${response.status}.`);
    }
    return answer || {};
  }

  function creationOptions(answer) {
    const options = answer.publicKey;
    options.challenge = fromBase64url(options.challenge);
    options.user.id = fromBase64url(options.user.id);
    for (const credential of options.excludeCredentials || []) {
      credential.id = fromBase64url(credential.id);
    }
    return options;
  }

  function requestOptions(answer) {
    const options = answer.publicKey;
    options.challenge = fromBase64url(options.challenge);
    for (const credential of options.allowCredentials || []) {
      credential.id = fromBase64url(credential.id);
    }
    return options;
  }

  function registrationJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toBase64url(response.attestationObject),
        clientDataJSON: toBase64url(response.clientDataJSON),
        transports: typeof response.getTransports === "function" ? response.getTransports() : undefined,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  function assertionJSON(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toBase64url(response.authenticatorData),
        clientDataJSON: toBase64url(response.clientDataJSON),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  function showError(scope, error) {
    const box = (scope && scope.querySelector("#passkey-error")) || document.getElementById("passkey-error");
    if (!box) return;
    let message = error && error.message ? error.message : String(error);
    if (error && error.name === "NotAllowedError") {
      message = "The passkey request was cancelled or timed out.";
    } else if (error && error.name === "InvalidStateError") {
      message = "This device already holds a passkey for your account.";
    }
    box.textContent = message;
    box.hidden = false;
  }

  function clearError(scope) {
    const box = (scope && scope.querySelector("#passkey-error")) || document.getElementById("passkey-error");
    if (box) box.hidden = true;
  }

  const supported = typeof window.PublicKeyCredential === "function" && !!navigator.credentials;

  // Signing in. The autofill request (conditional mediation) waits in the background while
  // the page is open; the button aborts it and asks in the foreground instead.
  // The session holds one sign-in ceremony at a time: the button's start must come after the
  // autofill's, or the autofill's challenge would replace the button's.
  let autofill = null;
  let autofillStarted = Promise.resolve();

  async function signIn(container, conditional) {
    const next = container.getAttribute("data-next") || "/";
    const controller = new AbortController();
    let started;
    if (conditional) {
      autofill = controller;
      started = post("/auth/passkey/start", { next });
      autofillStarted = started.catch(() => null);
    } else {
      await autofillStarted;
      if (autofill) {
        autofill.abort();
        autofill = null;
      }
      started = post("/auth/passkey/start", { next });
    }
    const options = await started;
    if (controller.signal.aborted) return;
    const publicKey = requestOptions(options);
    const request = { publicKey, signal: controller.signal };
    if (conditional) request.mediation = "conditional";
    const credential = await navigator.credentials.get(request);
    if (!credential) throw new Error("No passkey was chosen.");
    const answer = await post("/auth/passkey/finish", assertionJSON(credential), true);
    window.location.assign(answer.redirect || "/");
  }

  async function startAutofill(container) {
    if (typeof PublicKeyCredential.isConditionalMediationAvailable !== "function") return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    try {
      await signIn(container, true);
    } catch (error) {
      if (error && error.name === "AbortError") return; // the button took over
      showError(container, error);
    }
  }

  async function register(form) {
    const name = form.querySelector('input[name="name"]').value;
    const options = await post("/passkeys/register/start", { name });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
    if (!credential) throw new Error("No passkey was made.");
    const answer = await post("/passkeys/register/finish", registrationJSON(credential), true);
    window.location.assign(answer.redirect || "/passkeys");
  }

  async function confirm(button) {
    const next = button.getAttribute("data-next") || "/";
    const options = await post("/passkeys/confirm/start", { next });
    const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
    if (!credential) throw new Error("No passkey was chosen.");
    const answer = await post("/passkeys/confirm/finish", assertionJSON(credential), true);
    window.location.assign(answer.redirect || "/");
  }

  /** Shows what this browser can use; runs on load and after every HTMX swap. */
  function reveal(root) {
    if (!supported) return;
    for (const element of root.querySelectorAll("[data-passkey-sign-in], [data-passkey-register], [data-passkey-confirm]")) {
      element.hidden = false;
    }
    const signInBox = root.querySelector("[data-passkey-sign-in]");
    if (signInBox && !signInBox.hasAttribute("data-autofill-started")) {
      signInBox.setAttribute("data-autofill-started", "");
      startAutofill(signInBox);
    }
  }

  // Delegated, so that parts swapped in by HTMX work without binding again.
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target || !supported) return;
    const signInButton = target.closest("#passkey-sign-in-button");
    if (signInButton) {
      const container = signInButton.closest("[data-passkey-sign-in]");
      clearError(container);
      signIn(container, false).catch((error) => showError(container, error));
      return;
    }
    const confirmButton = target.closest("[data-passkey-confirm]");
    if (confirmButton) {
      clearError(confirmButton.parentElement);
      confirm(confirmButton).catch((error) => showError(confirmButton.parentElement, error));
    }
  });

  document.addEventListener("submit", (event) => {
    const form = event.target instanceof Element ? event.target.closest("[data-passkey-register]") : null;
    if (!form) return;
    event.preventDefault();
    if (!supported) return;
    clearError(form.parentElement);
    register(form).catch((error) => showError(form.parentElement, error));
  });

  document.addEventListener("htmx:afterSettle", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    reveal(target && target.parentElement ? target.parentElement : document);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => reveal(document));
  } else {
    reveal(document);
  }
})();
