// A small relying party built on panva's `openid-client` (an OpenID Certified library), for the
// OpenID Connect browser test: Latchkey must work with a client we did not write. Everything
// protocol-shaped (discovery, PKCE, state, nonce, the `iss` response parameter, the code
// exchange, the ID token's checks and its RS256 signature, userinfo, refresh, the end-session
// URL) is the library's; this file only routes a browser through it over node:http.
//
// As a library:  const rp = await startRelyingParty({ issuer, clientId, clientSecret, port });
//                … rp.url … rp.lastSession() … await rp.close();
// As a process:  node e2e/oidc/rp.mjs --issuer URL --client-id ID [--client-secret S] --port N
//                (prints "listening http://127.0.0.1:PORT" once ready; SIGTERM stops it)
//
// Routes (one browser session each, kept in memory under the `rp_session` cookie):
//   GET /          signed in: 303 to /me; else 303 to the provider's authorize endpoint
//   GET /cb        the redirect URI: exchanges the code, fetches userinfo, 303 to /me
//   GET /me        the ID token's claims and the userinfo answer, as JSON in <pre id="claims">
//   GET /refresh   a refresh token grant; the new tokens replace the old, then as /me
//   GET /logout    303 to the provider's end-session URL (id_token_hint, state)
//   GET /bye       the post-logout redirect URI: whether `state` came back unchanged, as JSON

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";
import * as client from "openid-client";

export const SCOPE = "openid email profile groups offline_access";

/**
 * Discovers `issuer` and listens on 127.0.0.1:`port`. Without `clientSecret` the app is a
 * public client (PKCE alone); with it, client_secret_basic. The returned handle has `url`,
 * `config` (openid-client's, for the test's own calls), `lastSession()` and `close()`.
 */
export async function startRelyingParty({ issuer, clientId, clientSecret, port, scope = SCOPE }) {
  // The port is part of the redirect URIs registered beforehand, so it is chosen by the caller.
  if (!Number.isInteger(port) || port <= 0) throw new Error(`rp: a port is needed, not ${port}`);
  const url = `http://127.0.0.1:${port}`;
  const redirectUri = `${url}/cb`;
  const postLogoutRedirectUri = `${url}/bye`;
  // The test's Latchkey is plain http on loopback; the library refuses http unless told.
  const config = await client.discovery(
    new URL(issuer),
    clientId,
    undefined,
    clientSecret ? client.ClientSecretBasic(clientSecret) : client.None(),
    { execute: [client.allowInsecureRequests] },
  );
  // Off by default (the token endpoint is trusted through TLS); on here, so that the ID token's
  // RS256 signature is checked against Latchkey's published keys as well.
  client.enableNonRepudiationChecks(config);

  /** Browser sessions by the random id in the `rp_session` cookie. */
  const sessions = new Map();
  let lastSessionId = null;

  const sessionOf = (req, res) => {
    const id = /(?:^|;\s*)rp_session=([A-Za-z0-9_-]+)/.exec(req.headers.cookie ?? "")?.[1];
    if (id && sessions.has(id)) return sessions.get(id);
    const fresh = { id: randomBytes(16).toString("base64url"), tokens: [], events: [] };
    sessions.set(fresh.id, fresh);
    res.setHeader("Set-Cookie", `rp_session=${fresh.id}; Path=/; HttpOnly; SameSite=Lax`);
    return fresh;
  };

  const routes = {
    async "/"(req, res, session) {
      if (session.claims) return redirect(res, "/me");
      // New PKCE verifier, state and nonce for every attempt, kept with the browser's session.
      session.pkceCodeVerifier = client.randomPKCECodeVerifier();
      session.state = client.randomState();
      session.nonce = client.randomNonce();
      const authorize = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope,
        code_challenge: await client.calculatePKCECodeChallenge(session.pkceCodeVerifier),
        code_challenge_method: "S256",
        state: session.state,
        nonce: session.nonce,
      });
      session.events.push("authorize");
      redirect(res, authorize.href);
    },

    async "/cb"(req, res, session) {
      const current = new URL(req.url, url);
      // What came back besides the code, for the test: `iss` (RFC 9207) and `state`.
      session.callback = { iss: current.searchParams.get("iss"), state: current.searchParams.get("state") };
      const tokens = await client.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: session.pkceCodeVerifier,
        expectedState: session.state,
        expectedNonce: session.nonce,
        idTokenExpected: true,
      });
      // Each only once: a second callback with the same values must fail.
      delete session.pkceCodeVerifier;
      delete session.nonce;
      session.claims = tokens.claims();
      session.idToken = tokens.id_token;
      session.tokens.push(tokenSummary(tokens));
      session.userinfo = await client.fetchUserInfo(config, tokens.access_token, session.claims.sub);
      session.events.push("signed_in");
      redirect(res, "/me");
    },

    async "/me"(req, res, session) {
      if (!session.claims) return redirect(res, "/");
      page(res, 200, "Signed in", {
        claims: session.claims,
        userinfo: session.userinfo,
        refreshed: session.tokens.length - 1,
      });
    },

    async "/refresh"(req, res, session) {
      const current = session.tokens.at(-1);
      if (!current?.refresh_token) return page(res, 400, "No refresh token", { error: "no refresh token" });
      const tokens = await client.refreshTokenGrant(config, current.refresh_token);
      session.tokens.push(tokenSummary(tokens));
      // A refresh may bring a new ID token; its claims are then the current ones.
      if (tokens.id_token) {
        session.claims = tokens.claims();
        session.idToken = tokens.id_token;
      }
      session.userinfo = await client.fetchUserInfo(config, tokens.access_token, session.claims.sub);
      session.events.push("refreshed");
      redirect(res, "/me");
    },

    async "/logout"(req, res, session) {
      if (!session.idToken) return redirect(res, "/");
      session.logoutState = client.randomState();
      const endSession = client.buildEndSessionUrl(config, {
        id_token_hint: session.idToken,
        post_logout_redirect_uri: postLogoutRedirectUri,
        state: session.logoutState,
      });
      session.events.push("logout");
      redirect(res, endSession.href);
    },

    async "/bye"(req, res, session) {
      const state = new URL(req.url, url).searchParams.get("state");
      const result = { state, stateMatches: Boolean(state) && state === session.logoutState };
      // Signed out here as well: the app's own session ends with the provider's.
      delete session.claims;
      delete session.userinfo;
      delete session.idToken;
      session.events.push("signed_out");
      page(res, 200, "Signed out", result);
    },
  };

  const server = createServer(async (req, res) => {
    const { pathname } = new URL(req.url, url);
    const route = req.method === "GET" ? routes[pathname] : undefined;
    if (!route) return page(res, 404, "Not found", { error: `no route ${req.method} ${pathname}` });
    const session = sessionOf(req, res);
    lastSessionId = session.id;
    try {
      await route(req, res, session);
    } catch (err) {
      // What the library refused, and the provider's own words when it answered an error.
      session.events.push(`error: ${err.message}`);
      // The provider said no at the authorize step (`error=access_denied`, say): the app refuses.
      const refused = err instanceof client.AuthorizationResponseError;
      page(res, refused ? 403 : 500, refused ? "Not signed in" : "Relying party error", {
        error: err.message,
        code: err.code,
        oauthError: err.error,
        oauthErrorDescription: err.error_description,
        status: err.status,
        cause: err.cause instanceof Error ? err.cause.message : err.cause,
      });
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });

  return {
    url,
    redirectUri,
    postLogoutRedirectUri,
    config,
    /** The browser session that made the latest request: claims, tokens (oldest first), events. */
    lastSession: () => sessions.get(lastSessionId),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** What the test needs of a token endpoint answer (the ID token's claims are kept apart). */
function tokenSummary(tokens) {
  return {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    scope: tokens.scope,
    id_token: tokens.id_token,
  };
}

function redirect(res, location) {
  res.writeHead(303, { Location: location, "Cache-Control": "no-store" });
  res.end();
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A plain page with a heading and `data` as JSON in <pre id="claims">, which the test parses. */
function page(res, status, title, data) {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
  res.end(
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
      `<body><h1>${escapeHtml(title)}</h1><pre id="claims">${escapeHtml(JSON.stringify(data, null, 2))}</pre>` +
      `<p><a href="/refresh">Refresh</a> · <a href="/logout">Sign out</a></p></body></html>`,
  );
}

// Run as a process, to try an app by hand against a running Latchkey.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const arg = (name, fallback) => {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : fallback;
  };
  const rp = await startRelyingParty({
    issuer: arg("--issuer"),
    clientId: arg("--client-id"),
    clientSecret: arg("--client-secret"),
    port: Number(arg("--port")),
  });
  console.log(`listening ${rp.url}`);
  const stop = async () => {
    await rp.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
