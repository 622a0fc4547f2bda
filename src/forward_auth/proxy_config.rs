//! What `latchkey apps proxy-config` prints and the `/apps` page shows: the reverse-proxy
//! configuration that protects one app, for nginx, Caddy and Traefik. Pure text from the
//! app's name and origin and two addresses; nothing here reads a file or the network.
//!
//! Every configuration does the same things, in each proxy's own words (see SPEC, "Protecting
//! other apps"):
//! - names the app with a fixed `X-Latchkey-App` and a fixed origin for the original URL, so
//!   neither the client's `Host`, nor its request line, nor a header it sends can make Latchkey
//!   judge another app than the one the proxy serves;
//! - routes `/.latchkey/` on the app's host to Latchkey (the callback that sets the app's
//!   cookie, the logout, the 403 page's stylesheet), with the same naming;
//! - removes every client-sent look-alike of Latchkey's headers before the app, then copies in
//!   Latchkey's answer;
//! - keeps the app's own `Host` for the app and sends Latchkey's host on the hop to Latchkey
//!   (a TLS proxy in front of Latchkey routes by it), over kept-alive connections, and where
//!   that hop is https, with the server name sent and the certificate checked.
//!
//! What the operator must fill in is marked [`PLACEHOLDER`]; everything else runs as printed
//! (the tests run the output of this module, substituting only those marks).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

use crate::domain::app_origin::AppOrigin;
use crate::domain::loopback::is_loopback_host;

/// The mark on every value the operator has to replace before the configuration is used.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// Where the app's backend is, when `--app-upstream` is not given.
pub const APP_UPSTREAM_PLACEHOLDER: &str = "http://CHANGE-ME-app-backend:8080";

/// The trusted certificates nginx checks Latchkey's certificate against on an https hop:
/// Debian's bundle of public CAs (nginx, unlike Go's proxies, has no default). A deployment
/// whose Latchkey certificate comes from a private CA replaces this path.
pub const DEBIAN_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Latchkey's headers, which the app may trust because the proxy sets them.
pub const IDENTITY_HEADERS: [&str; 5] = [
    "Remote-User",
    "Remote-Email",
    "Remote-Name",
    "Remote-Groups",
    "Latchkey-Assertion",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Nginx,
    Caddy,
    Traefik,
}

impl Proxy {
    pub const ALL: [Proxy; 3] = [Proxy::Nginx, Proxy::Caddy, Proxy::Traefik];

    pub fn as_str(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Caddy => "caddy",
            Proxy::Traefik => "traefik",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{which}: not an absolute http:// or https:// URL ({url:?})")]
    NotAUrl { which: &'static str, url: String },
    #[error("{which}: give an origin only (scheme, host and port), without {what} ({url:?})")]
    NotAnOrigin {
        which: &'static str,
        what: &'static str,
        url: String,
    },
    #[error(
        "{0} is http off loopback: browsers never send its secure app cookie, so nobody could \
         sign in; register the app with an https:// URL"
    )]
    PlainHttpOffLoopback(String),
    #[error(
        "the app's name contains {character:?}, which {proxy} would read as part of its own \
         syntax ({why}); rename the app (`latchkey apps add` or the /apps page)"
    )]
    UnsafeName {
        proxy: &'static str,
        character: char,
        why: &'static str,
    },
    #[error(
        "the app's name contains {0:?}: X-Latchkey-App, which names the app to Latchkey, \
         carries printable ASCII only; rename the app (`latchkey apps add` or the /apps page)"
    )]
    NotAsciiName(char),
}

/// An http(s) origin the proxy connects to: Latchkey (`--upstream`) or the app's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    tls: bool,
    /// ASCII, an IPv6 address in brackets.
    host: String,
    port: u16,
}

impl Upstream {
    /// `http(s)://host[:port]`, optionally with a trailing `/`.
    pub fn parse(which: &'static str, text: &str) -> Result<Self, ConfigError> {
        let not_a_url = || ConfigError::NotAUrl {
            which,
            url: text.to_string(),
        };
        let url = Url::parse(text.trim()).map_err(|_| not_a_url())?;
        let not_an_origin = |what| ConfigError::NotAnOrigin {
            which,
            what,
            url: text.to_string(),
        };
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(not_a_url()),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(not_a_url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(not_an_origin("a user name or password"));
        }
        if url.path() != "/" {
            return Err(not_an_origin("a path"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(not_an_origin("a query or fragment"));
        }
        let port = url.port_or_known_default().ok_or_else(not_a_url)?;
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `http://` + `LATCHKEY_BIND`, the default `--upstream`; an unspecified address
    /// (`0.0.0.0`, `[::]`) is reached on loopback.
    pub fn from_bind(bind: SocketAddr) -> Self {
        let ip = match bind.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Self {
            tls: false,
            host,
            port: bind.port(),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    fn default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }

    /// What goes in `Host`: the port only when it is not the scheme's.
    fn host_header(&self) -> String {
        if self.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `scheme://host:port`, the port always written.
    fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.host_port())
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

/// Where the app's backend is: given, or the placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppUpstream {
    Given(Upstream),
    Placeholder,
}

impl AppUpstream {
    fn url(&self) -> String {
        match self {
            AppUpstream::Given(upstream) => upstream.url(),
            AppUpstream::Placeholder => APP_UPSTREAM_PLACEHOLDER.to_string(),
        }
    }

    fn tls(&self) -> Option<&Upstream> {
        match self {
            AppUpstream::Given(upstream) if upstream.tls => Some(upstream),
            _ => None,
        }
    }
}

/// The app as the proxy serves it: its registered origin, split once.
struct Site {
    tls: bool,
    /// ASCII (the origin is stored in punycode), an IPv6 address in brackets.
    host: String,
    port: u16,
    /// `https://wiki.example.org`, as registered.
    origin: String,
    /// What the app's `Host` is: `wiki.example.org`, `wiki.localhost:8081`.
    host_header: String,
}

impl Site {
    fn of(origin: &AppOrigin) -> Result<Self, ConfigError> {
        let upstream = Upstream::parse("the app's origin", origin.as_str())?;
        if !upstream.tls && !is_loopback_host(&upstream.host) {
            return Err(ConfigError::PlainHttpOffLoopback(origin.to_string()));
        }
        Ok(Self {
            tls: upstream.tls,
            host_header: upstream.host_header(),
            host: upstream.host,
            port: upstream.port,
            origin: origin.as_str().to_string(),
        })
    }

    /// For names in the proxies' configurations: `wiki-example-org-443`.
    fn slug(&self) -> String {
        let host: String = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{host}-{}", self.port)
    }

    /// Where a loopback http site listens: its own address, or 127.0.0.1 for a name.
    fn loopback_ip(&self) -> &str {
        match self.host.parse::<IpAddr>() {
            Ok(_) => &self.host,
            Err(_) if self.host.starts_with('[') => &self.host,
            Err(_) => "127.0.0.1",
        }
    }

    fn certificate(&self) -> String {
        format!("/etc/ssl/{PLACEHOLDER}/{}/fullchain.pem", self.host)
    }

    fn certificate_key(&self) -> String {
        format!("/etc/ssl/{PLACEHOLDER}/{}/privkey.pem", self.host)
    }
}

/// One app's configuration for `proxy`. `latchkey` is where the proxy reaches Latchkey;
/// `backend` where it reaches the app.
pub fn render(
    proxy: Proxy,
    name: &str,
    origin: &AppOrigin,
    latchkey: &Upstream,
    backend: &AppUpstream,
) -> Result<String, ConfigError> {
    let site = Site::of(origin)?;
    if let Some(character) = name.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(ConfigError::NotAsciiName(character));
    }
    let text = match proxy {
        Proxy::Nginx => nginx(name, &site, latchkey, backend)?,
        Proxy::Caddy => caddy(name, &site, latchkey, backend)?,
        Proxy::Traefik => traefik(name, &site, latchkey, backend),
    };
    // The intro asks for filling in only when something is left to fill in, so that a
    // configuration that runs as printed carries no mark at all.
    let printed_by = if text.contains(PLACEHOLDER) {
        format!("{PRINTED_BY}; fill in the values marked {PLACEHOLDER}.")
    } else {
        format!("{PRINTED_BY}.")
    };
    Ok(text.replacen(PRINTED_BY, &printed_by, 1))
}

/// Stands for the intro line in each configuration until it is known whether anything is
/// left to fill in.
const PRINTED_BY: &str = "# Printed by `latchkey apps proxy-config`";

/// Every proxy's configuration for one app, as the `/apps` page shows them side by side.
pub fn render_each(
    name: &str,
    origin: &AppOrigin,
    latchkey: &Upstream,
    backend: &AppUpstream,
) -> Vec<(Proxy, Result<String, ConfigError>)> {
    Proxy::ALL
        .iter()
        .map(|&proxy| (proxy, render(proxy, name, origin, latchkey, backend)))
        .collect()
}

/// A double-quoted nginx string. nginx unescapes `\"` and `\\` in quotes, but reads `$` as a
/// variable everywhere, with no escape for it.
fn nginx_quote(text: &str) -> Result<String, ConfigError> {
    if text.contains('$') {
        return Err(ConfigError::UnsafeName {
            proxy: "nginx",
            character: '$',
            why: "a variable",
        });
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

fn nginx(
    name: &str,
    site: &Site,
    latchkey: &Upstream,
    backend: &AppUpstream,
) -> Result<String, ConfigError> {
    let app = nginx_quote(name)?;
    let upstream = format!("latchkey_for_{}", site.slug().replace('-', "_"));
    let original = format!("\"{}$request_uri\"", site.origin);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Latchkey in front of {origin}, for nginx.\n\
         # Goes inside `http {{ }}` (auth_request is built into Debian's nginx).\n\
         {PRINTED_BY}\n\
         \n\
         # Kept-alive connections to Latchkey: a check per request must not pay for a new\n\
         # connection{tls_note}.\n\
         upstream {upstream} {{\n    server {server};\n    keepalive 16;\n}}\n",
        origin = site.origin,
        tls_note = if latchkey.tls {
            " and TLS handshake"
        } else {
            ""
        },
        server = latchkey.host_port(),
    );
    let _ = writeln!(w, "server {{");
    if site.tls {
        let _ = writeln!(
            w,
            "    listen {port} ssl;\n    server_name {host};\n    \
             # {PLACEHOLDER}: the certificate and key for {host}.\n    \
             ssl_certificate {cert};\n    ssl_certificate_key {key};",
            port = site.port,
            host = site.host,
            cert = site.certificate(),
            key = site.certificate_key(),
        );
    } else {
        let _ = writeln!(
            w,
            "    # A loopback origin: plain http, reachable from this machine only.\n    \
             listen {ip}:{port};\n    server_name {host};",
            ip = site.loopback_ip(),
            port = site.port,
            host = site.host,
        );
    }
    let _ = writeln!(
        w,
        "\n    # Client headers that spell Latchkey's with `_` or `.` (Remote_User, Remote.Email)\n    \
         # are dropped, never passed on: nginx's defaults, written out so that nobody turns\n    \
         # them off for this server.\n    \
         underscores_in_headers off;\n    ignore_invalid_headers on;\n"
    );

    // The app.
    let _ = writeln!(
        w,
        "    location / {{\n        \
         auth_request /.latchkey/check;\n        \
         auth_request_set $latchkey_user $upstream_http_remote_user;\n        \
         auth_request_set $latchkey_email $upstream_http_remote_email;\n        \
         auth_request_set $latchkey_name $upstream_http_remote_name;\n        \
         auth_request_set $latchkey_groups $upstream_http_remote_groups;\n        \
         auth_request_set $latchkey_assertion $upstream_http_latchkey_assertion;\n        \
         auth_request_set $latchkey_location $upstream_http_location;\n        \
         # Not signed in to this app: to Latchkey, and back to this page afterwards.\n        \
         error_page 401 =302 $latchkey_location;\n        \
         # Not allowed: Latchkey's page saying so (auth_request keeps no body); that page's\n        \
         # own answer may be handled in turn (see @latchkey_denied).\n        \
         error_page 403 = @latchkey_denied;\n        \
         recursive_error_pages on;\n\n        \
         # Always set, so that whatever the client sent under these names is replaced (an\n        \
         # empty value sends no header at all).\n        \
         proxy_set_header Remote-User $latchkey_user;\n        \
         proxy_set_header Remote-Email $latchkey_email;\n        \
         proxy_set_header Remote-Name $latchkey_name;\n        \
         proxy_set_header Remote-Groups $latchkey_groups;\n        \
         proxy_set_header Latchkey-Assertion $latchkey_assertion;\n        \
         proxy_set_header X-Latchkey-App \"\";\n        \
         proxy_set_header X-Original-URL \"\";\n        \
         # The app's own host, whatever Host or request line the client sent.\n        \
         proxy_set_header Host \"{host}\";\n        \
         proxy_set_header X-Forwarded-For $remote_addr;\n        \
         proxy_set_header X-Forwarded-Proto {scheme};\n        \
         proxy_set_header X-Forwarded-Host \"{host}\";",
        host = site.host_header,
        scheme = if site.tls { "https" } else { "http" },
    );
    if let AppUpstream::Placeholder = backend {
        let _ = writeln!(
            w,
            "        # {PLACEHOLDER}: where the app's backend listens."
        );
    }
    let _ = writeln!(w, "        proxy_pass {};", backend.url());
    if let Some(tls) = backend.tls() {
        nginx_tls(w, tls);
    }
    let _ = writeln!(w, "    }}\n");

    // The check, the 403 page and Latchkey's routes on the app's host, all named alike.
    let to_latchkey = |w: &mut String| {
        let _ = writeln!(
            w,
            "        proxy_http_version 1.1;\n        \
             proxy_set_header Connection \"\";\n        \
             proxy_set_header Host \"{host}\";\n        \
             proxy_set_header X-Latchkey-App {app};\n        \
             proxy_set_header X-Original-URL {original};\n        \
             proxy_set_header X-Forwarded-For $remote_addr;\n        \
             proxy_set_header X-Forwarded-Proto \"\";\n        \
             proxy_set_header X-Forwarded-Host \"\";\n        \
             proxy_set_header X-Forwarded-Uri \"\";",
            host = latchkey.host_header(),
        );
        if latchkey.tls {
            nginx_tls(w, latchkey);
        }
    };
    let scheme = latchkey.scheme();
    let _ = writeln!(
        w,
        "    location = /.latchkey/check {{\n        internal;\n        \
         proxy_pass {scheme}://{upstream}/auth/check;\n        \
         proxy_pass_request_body off;\n        \
         proxy_set_header Content-Length \"\";"
    );
    to_latchkey(w);
    let _ = writeln!(
        w,
        "    }}\n\n    \
         # The refusal's page: auth_request keeps no body, so Latchkey is asked again.\n    \
         location @latchkey_denied {{\n        \
         rewrite ^ /auth/check? break;\n        \
         proxy_pass {scheme}://{upstream};\n        \
         proxy_pass_request_body off;\n        \
         proxy_set_header Content-Length \"\";\n        \
         # The refusal may have ended the app's session: asked again, Latchkey then says\n        \
         # \"sign in\". The browser is sent back to the page, whose check now sends it on to\n        \
         # Latchkey, where the refusal is shown.\n        \
         proxy_intercept_errors on;\n        \
         error_page 401 =302 {original};"
    );
    to_latchkey(w);
    let _ = writeln!(
        w,
        "    }}\n\n    # Latchkey's own pages on this host: the callback that sets this app's cookie, the\n    \
         # logout, the 403 page's stylesheet.\n    \
         location /.latchkey/ {{\n        proxy_pass {scheme}://{upstream};"
    );
    to_latchkey(w);
    let _ = writeln!(w, "    }}\n}}");
    Ok(out)
}

fn nginx_tls(w: &mut String, upstream: &Upstream) {
    let _ = writeln!(
        w,
        "        proxy_ssl_server_name on;\n        \
         proxy_ssl_name {host};\n        \
         proxy_ssl_verify on;\n        \
         proxy_ssl_verify_depth 3;\n        \
         # Replace with your CA's certificate if {host}'s comes from a private CA.\n        \
         proxy_ssl_trusted_certificate {DEBIAN_CA_BUNDLE};\n        \
         proxy_ssl_session_reuse on;",
        host = upstream.host.trim_start_matches('[').trim_end_matches(']'),
    );
}

/// A Caddyfile token. A backtick string is raw (no escapes at all), a double-quoted one knows
/// only `\"`; braces are never safe, because Caddy substitutes `{$ENV}` while reading the file
/// and `{placeholders}` at run time, in quotes or not.
fn caddy_quote(text: &str) -> Result<String, ConfigError> {
    if let Some(character) = text.chars().find(|c| matches!(c, '{' | '}')) {
        return Err(ConfigError::UnsafeName {
            proxy: "caddy",
            character,
            why: "a placeholder or an environment variable",
        });
    }
    if !text.contains('`') {
        return Ok(format!("`{text}`"));
    }
    if text.contains('\\') {
        return Err(ConfigError::UnsafeName {
            proxy: "caddy",
            character: '`',
            why: "a quote, with a backslash that Caddyfile quotes cannot carry",
        });
    }
    Ok(format!("\"{}\"", text.replace('"', "\\\"")))
}

fn caddy(
    name: &str,
    site: &Site,
    latchkey: &Upstream,
    backend: &AppUpstream,
) -> Result<String, ConfigError> {
    let app = caddy_quote(name)?;
    let scheme = if site.tls { "https" } else { "http" };
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Latchkey in front of {origin}, for Caddy.\n\
         # A site block for the Caddyfile.\n\
         {PRINTED_BY}\n\
         {origin} {{",
        origin = site.origin,
    );
    if site.tls {
        let _ = writeln!(
            w,
            "\t# {PLACEHOLDER}: the certificate and key for {host} (or remove this line and let\n\t\
             # Caddy obtain them).\n\t\
             tls {cert} {key}\n",
            host = site.host,
            cert = site.certificate(),
            key = site.certificate_key(),
        );
    } else {
        let _ = writeln!(
            w,
            "\t# A loopback origin: plain http, reachable from this machine only.\n\t\
             bind {}\n",
            site.loopback_ip()
                .trim_start_matches('[')
                .trim_end_matches(']'),
        );
    }
    let transport = |w: &mut String, indent: &str| {
        let _ = writeln!(w, "{indent}transport http {{");
        if latchkey.tls {
            let _ = writeln!(
                w,
                "{indent}\ttls_server_name {}",
                latchkey.host.trim_start_matches('[').trim_end_matches(']')
            );
        }
        let _ = writeln!(w, "{indent}\tkeepalive 2m\n{indent}}}");
    };
    // Fixed, so that the check judges this app whatever the client sent as Host or
    // X-Original-URL (forward_auth copies every client header to the check).
    let naming = |w: &mut String, indent: &str| {
        let _ = writeln!(
            w,
            "{indent}header_up Host {host}\n\
             {indent}header_up X-Latchkey-App {app}\n\
             {indent}header_up X-Forwarded-Proto {scheme}\n\
             {indent}header_up X-Forwarded-Host {site_host}\n\
             {indent}header_up X-Forwarded-Uri {{http.request.uri}}",
            host = latchkey.host_header(),
            site_host = site.host_header,
        );
    };
    let _ = writeln!(
        w,
        "\troute {{\n\t\t\
         # First, whatever the client sent under Latchkey's names, in any spelling\n\t\t\
         # (Remote_User, Remote.Email), and the URL forms a check could read.\n\t\t\
         request_header -Remote*\n\t\t\
         request_header -Latchkey*\n\t\t\
         request_header -X-Latchkey*\n\t\t\
         request_header -X-Original-URL\n\n\t\t\
         # Latchkey's own pages on this host: the callback that sets this app's cookie, the\n\t\t\
         # logout, the 403 page's stylesheet.\n\t\t\
         handle /.latchkey/* {{\n\t\t\t\
         reverse_proxy {url} {{",
        url = latchkey.url(),
    );
    naming(w, "\t\t\t\t");
    transport(w, "\t\t\t\t");
    let _ = writeln!(
        w,
        "\t\t\t}}\n\t\t}}\n\n\t\t\
         # Not signed in to this app: 302 to Latchkey; not allowed: Latchkey's 403 page.\n\t\t\
         forward_auth {url} {{\n\t\t\t\
         uri /auth/forward",
        url = latchkey.url(),
    );
    naming(w, "\t\t\t");
    let _ = writeln!(w, "\t\t\tcopy_headers {}", IDENTITY_HEADERS.join(" "));
    transport(w, "\t\t\t");
    let _ = writeln!(
        w,
        "\t\t}}\n\t\t\
         # Caddy 2.6 copies a header that Latchkey did not send (Remote-Name without a display\n\t\t\
         # name) as its literal placeholder: such a header is removed."
    );
    for header in IDENTITY_HEADERS {
        let matcher = format!(
            "@latchkey_unset_{}",
            header.to_ascii_lowercase().replace('-', "_")
        );
        let _ = writeln!(
            w,
            "\t\t{matcher} header_regexp {header} ^\\{{http\\.reverse_proxy\\.header\\.\n\t\t\
             request_header {matcher} -{header}"
        );
    }
    if let AppUpstream::Placeholder = backend {
        let _ = writeln!(w, "\n\t\t# {PLACEHOLDER}: where the app's backend listens.");
    } else {
        let _ = writeln!(w);
    }
    // The app's own Host is kept: Caddy passes the request's (this site's host) by default.
    match backend.tls() {
        Some(tls) => {
            let _ = writeln!(
                w,
                "\t\treverse_proxy {url} {{\n\t\t\ttransport http {{\n\t\t\t\t\
                 tls_server_name {host}\n\t\t\t}}\n\t\t}}",
                url = backend.url(),
                host = tls.host.trim_start_matches('[').trim_end_matches(']'),
            );
        }
        None => {
            let _ = writeln!(w, "\t\treverse_proxy {}", backend.url());
        }
    }
    let _ = writeln!(w, "\t}}\n}}");
    Ok(out)
}

/// A double-quoted YAML string that survives Traefik's Go templating of the file: braces are
/// written as `\x7B` and `\x7D`, which YAML reads back and the template engine never sees, and
/// anything but printable ASCII (never in a name, but the quoting does not rely on it) as an
/// escape.
fn yaml_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '{' => out.push_str("\\x7B"),
            '}' => out.push_str("\\x7D"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// The client-sent look-alikes Traefik removes by name (it has no wildcard): each of
/// Latchkey's headers with `-`, `_` or `.`, and the URL form a check could read.
fn traefik_lookalikes() -> Vec<String> {
    let mut names = Vec::new();
    for header in IDENTITY_HEADERS {
        for separator in ["-", "_", "."] {
            names.push(header.replace('-', separator));
        }
    }
    names.push("X-Original-URL".into());
    names
}

fn traefik(name: &str, site: &Site, latchkey: &Upstream, backend: &AppUpstream) -> String {
    let slug = format!("latchkey-{}", site.slug());
    let scheme = if site.tls { "https" } else { "http" };
    let entry_point = match (site.tls, site.port) {
        (true, 443) => "websecure".to_string(),
        (false, 80) => "web".to_string(),
        (_, port) => format!("{scheme}-{port}"),
    };
    let address = if site.tls {
        format!(":{}", site.port)
    } else {
        format!("{}:{}", site.loopback_ip(), site.port)
    };
    let host_rule = format!("Host(`{}`)", site.host);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Latchkey in front of {origin}, for Traefik.\n\
         # Dynamic configuration for the file provider.\n\
         {PRINTED_BY}\n\
         # It expects this entryPoint in the static configuration:\n\
         #   entryPoints:\n\
         #     {entry_point}:\n\
         #       address: \"{address}\"\n\
         #       http:\n\
         #         aliasHeadersStrategy: delete   # Traefik 3.6+: drops Remote_User, Remote.Email, …\n\
         # (the middlewares below remove Latchkey's look-alikes by name either way).",
        origin = site.origin,
    );
    let tls_line = if site.tls { "\n      tls: {}" } else { "" };
    let _ = writeln!(
        w,
        "http:\n  routers:\n    {slug}:\n      \
         entryPoints: [{ep}]\n      \
         rule: {rule}\n      \
         middlewares: [{lookalikes}, {naming}, {check}]\n      \
         service: {app_service}{tls_line}\n    \
         # Latchkey's own pages on this host: the callback that sets this app's cookie, the\n    \
         # logout, the 403 page's stylesheet.\n    \
         {slug}-latchkey:\n      \
         entryPoints: [{ep}]\n      \
         rule: {latchkey_rule}\n      \
         middlewares: [{lookalikes}, {naming}]\n      \
         service: {latchkey_service}{tls_line}\n",
        ep = yaml_quote(&entry_point),
        rule = yaml_quote(&host_rule),
        latchkey_rule = yaml_quote(&format!("{host_rule} && PathPrefix(`/.latchkey/`)")),
        lookalikes = yaml_quote(&format!("{slug}-lookalikes")),
        naming = yaml_quote(&format!("{slug}-name")),
        check = yaml_quote(&format!("{slug}-check")),
        app_service = yaml_quote(&format!("{slug}-app")),
        latchkey_service = yaml_quote(&format!("{slug}-latchkey")),
    );
    let _ = writeln!(
        w,
        "  middlewares:\n    \
         # Whatever the client sent under Latchkey's names, in any spelling (an empty value\n    \
         # removes the header).\n    \
         {slug}-lookalikes:\n      headers:\n        customRequestHeaders:"
    );
    for header in traefik_lookalikes() {
        let _ = writeln!(w, "          {}: \"\"", yaml_quote(&header));
    }
    let _ = writeln!(
        w,
        "    # Fixed, so that Latchkey judges this app whatever the client sent.\n    \
         {slug}-name:\n      headers:\n        customRequestHeaders:\n          \
         \"X-Latchkey-App\": {app}\n    \
         # Not signed in to this app: 302 to Latchkey; not allowed: Latchkey's 403 page.\n    \
         {slug}-check:\n      forwardAuth:\n        \
         address: {address}\n        \
         trustForwardHeader: false\n        \
         # Only these reach the check; the URL is Traefik's own X-Forwarded-* trio.\n        \
         authRequestHeaders: [\"Accept\", \"Cookie\", \"User-Agent\", \"X-Latchkey-App\"]\n        \
         authResponseHeaders: [{identity}]\n        \
         maxResponseBodySize: 1048576\n",
        app = yaml_quote(name),
        address = yaml_quote(&format!("{}/auth/forward", latchkey.url())),
        identity = IDENTITY_HEADERS
            .iter()
            .map(|h| yaml_quote(h))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let _ = writeln!(w, "  services:\n    {slug}-app:\n      loadBalancer:");
    if let AppUpstream::Placeholder = backend {
        let _ = writeln!(
            w,
            "        # {PLACEHOLDER}: where the app's backend listens."
        );
    }
    let _ = writeln!(
        w,
        "        passHostHeader: true\n        servers:\n          - url: {}",
        yaml_quote(&backend.url())
    );
    let _ = writeln!(
        w,
        "    {slug}-latchkey:\n      loadBalancer:\n        \
         # Latchkey's host, not the app's: a TLS proxy in front of Latchkey routes by it.\n        \
         passHostHeader: false\n        \
         serversTransport: {transport}\n        \
         servers:\n          - url: {url}",
        transport = yaml_quote(&format!("{slug}-to-latchkey")),
        url = yaml_quote(&latchkey.url()),
    );
    let _ = writeln!(
        w,
        "  serversTransports:\n    {slug}-to-latchkey:\n      \
         maxIdleConnsPerHost: 32"
    );
    if latchkey.tls {
        let _ = writeln!(
            w,
            "      serverName: {}",
            yaml_quote(latchkey.host.trim_start_matches('[').trim_end_matches(']'))
        );
    }
    if site.tls {
        let _ = writeln!(
            w,
            "\ntls:\n  certificates:\n    # {PLACEHOLDER}: the certificate and key for {host}.\n    \
             - certFile: {cert}\n      keyFile: {key}",
            host = site.host,
            cert = yaml_quote(&site.certificate()),
            key = yaml_quote(&site.certificate_key()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> AppOrigin {
        AppOrigin::parse(text).unwrap()
    }

    fn latchkey() -> Upstream {
        Upstream::parse("--upstream", "https://login.example.org").unwrap()
    }

    fn all(name: &str, at: &str, backend: &AppUpstream) -> Vec<(Proxy, String)> {
        Proxy::ALL
            .iter()
            .map(|&proxy| {
                let text = render(proxy, name, &origin(at), &latchkey(), backend).unwrap();
                (proxy, text)
            })
            .collect()
    }

    #[test]
    fn every_placeholder_is_marked_and_a_given_backend_leaves_none_but_certificates() {
        for (proxy, text) in all(
            "Wiki",
            "https://wiki.example.org",
            &AppUpstream::Placeholder,
        ) {
            assert!(text.contains(APP_UPSTREAM_PLACEHOLDER), "{proxy:?}");
            assert!(
                text.contains("/etc/ssl/CHANGE-ME/wiki.example.org/"),
                "{proxy:?}"
            );
        }
        let backend =
            AppUpstream::Given(Upstream::parse("--app-upstream", "http://10.0.0.7:3000").unwrap());
        for (proxy, text) in all("Wiki", "http://wiki.localhost:8081", &backend) {
            // Runs as printed: not even the intro mentions the mark.
            assert!(!text.contains(PLACEHOLDER), "{proxy:?}:\n{text}");
            assert!(text.contains("10.0.0.7:3000"), "{proxy:?}");
        }
    }

    #[test]
    fn every_configuration_names_the_app_and_its_origin_and_reaches_latchkey_by_name() {
        for (proxy, text) in all(
            "Wiki",
            "https://wiki.example.org",
            &AppUpstream::Placeholder,
        ) {
            assert!(text.contains("X-Latchkey-App"), "{proxy:?}");
            assert!(text.contains("/.latchkey/"), "{proxy:?}");
            assert!(text.contains("login.example.org"), "{proxy:?}");
            for header in IDENTITY_HEADERS {
                assert!(text.contains(header), "{proxy:?} {header}");
            }
        }
        let nginx = render(
            Proxy::Nginx,
            "Wiki",
            &origin("https://wiki.example.org"),
            &latchkey(),
            &AppUpstream::Placeholder,
        )
        .unwrap();
        for line in [
            "proxy_set_header X-Latchkey-App \"Wiki\";",
            "proxy_set_header X-Original-URL \"https://wiki.example.org$request_uri\";",
            "proxy_set_header Host \"login.example.org\";",
            "proxy_set_header Host \"wiki.example.org\";",
            "proxy_ssl_name login.example.org;",
            "proxy_ssl_verify on;",
            "keepalive 16;",
            "listen 443 ssl;",
        ] {
            assert!(nginx.contains(line), "{line}\n{nginx}");
        }
    }

    #[test]
    fn a_loopback_origin_is_served_plainly_on_its_own_port() {
        let backend = AppUpstream::Placeholder;
        let plain = Upstream::parse("--upstream", "http://127.0.0.1:8080").unwrap();
        let at = origin("http://wiki.localhost:8081");
        let nginx = render(Proxy::Nginx, "w", &at, &plain, &backend).unwrap();
        assert!(nginx.contains("listen 127.0.0.1:8081;"), "{nginx}");
        assert!(!nginx.contains("ssl"), "{nginx}");
        let caddy = render(Proxy::Caddy, "w", &at, &plain, &backend).unwrap();
        assert!(caddy.contains("\nhttp://wiki.localhost:8081 {"), "{caddy}");
        assert!(!caddy.contains("tls"), "{caddy}");
        let traefik = render(Proxy::Traefik, "w", &at, &plain, &backend).unwrap();
        assert!(traefik.contains("address: \"127.0.0.1:8081\""), "{traefik}");
        assert!(!traefik.contains("tls"), "{traefik}");
    }

    #[test]
    fn plain_http_off_loopback_is_refused() {
        let err = render(
            Proxy::Nginx,
            "w",
            &AppOrigin::from_stored("http://wiki.example.org".into()),
            &latchkey(),
            &AppUpstream::Placeholder,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::PlainHttpOffLoopback(_)), "{err}");
    }

    #[test]
    fn upstreams_are_origins() {
        for bad in [
            "login.example.org",
            "ftp://login.example.org",
            "https://login.example.org/latchkey",
            "https://u:p@login.example.org",
            "https://login.example.org/?x",
        ] {
            assert!(Upstream::parse("--upstream", bad).is_err(), "{bad}");
        }
        let up = Upstream::parse("--upstream", "https://Login.Example.org:8443/").unwrap();
        assert_eq!(up.url(), "https://login.example.org:8443");
        assert_eq!(up.host_header(), "login.example.org:8443");
        let bound = Upstream::from_bind("0.0.0.0:8080".parse().unwrap());
        assert_eq!(bound.url(), "http://127.0.0.1:8080");
        let bound = Upstream::from_bind("[::]:8080".parse().unwrap());
        assert_eq!(bound.url(), "http://[::1]:8080");
    }

    /// The name is free text: each proxy gets it quoted in its own syntax, or refuses it
    /// where no quoting is safe. Nothing in it may end a string or open a block.
    #[test]
    fn names_are_quoted_or_refused_never_injected() {
        let at = origin("https://wiki.example.org");
        let backend = AppUpstream::Placeholder;
        let tricky = "Bob's \"wiki\" \\ ; # 1";
        let nginx = render(Proxy::Nginx, tricky, &at, &latchkey(), &backend).unwrap();
        assert!(
            nginx.contains(r#"X-Latchkey-App "Bob's \"wiki\" \\ ; # 1";"#),
            "{nginx}"
        );
        let caddy = render(Proxy::Caddy, tricky, &at, &latchkey(), &backend).unwrap();
        assert!(
            caddy.contains("X-Latchkey-App `Bob's \"wiki\" \\ ; # 1`\n"),
            "{caddy}"
        );
        let traefik = render(Proxy::Traefik, tricky, &at, &latchkey(), &backend).unwrap();
        assert!(
            traefik.contains(r#""X-Latchkey-App": "Bob's \"wiki\" \\ ; # 1""#),
            "{traefik}"
        );

        let braces = "{{ .Env }} ${HOME} {$HOME}";
        assert!(matches!(
            render(Proxy::Nginx, braces, &at, &latchkey(), &backend),
            Err(ConfigError::UnsafeName { character: '$', .. })
        ));
        assert!(matches!(
            render(Proxy::Caddy, braces, &at, &latchkey(), &backend),
            Err(ConfigError::UnsafeName { character: '{', .. })
        ));
        let traefik = render(Proxy::Traefik, braces, &at, &latchkey(), &backend).unwrap();
        assert!(!traefik.contains("{{"), "{traefik}");
        assert!(
            traefik.contains(r"\x7B\x7B .Env \x7D\x7D $\x7BHOME\x7D"),
            "{traefik}"
        );

        for proxy in Proxy::ALL {
            assert_eq!(
                render(proxy, "Bücher", &at, &latchkey(), &backend),
                Err(ConfigError::NotAsciiName('ü'))
            );
        }
        assert_eq!(yaml_quote("ü\u{1F600}"), r#""\u00FC\U0001F600""#);

        let ticks = "a `b` \"c\"";
        let caddy = render(Proxy::Caddy, ticks, &at, &latchkey(), &backend).unwrap();
        assert!(caddy.contains(r#"X-Latchkey-App "a `b` \"c\"""#), "{caddy}");
        assert!(render(Proxy::Caddy, "a`\\", &at, &latchkey(), &backend).is_err());
    }

    /// docs/forward-auth.md shows the three configurations as printed; they must stay so.
    #[test]
    fn the_documented_configurations_are_the_printed_ones() {
        let doc = include_str!("../../docs/forward-auth.md");
        let marker = "<!-- printed: latchkey apps proxy-config wiki --proxy ";
        let mut seen = Vec::new();
        for (at, _) in doc.match_indices(marker) {
            let rest = &doc[at + marker.len()..];
            let (args, rest) = rest.split_once(" -->\n").unwrap();
            let (proxy, upstream) = args.split_once(" --upstream ").unwrap();
            let proxy = *Proxy::ALL.iter().find(|p| p.as_str() == proxy).unwrap();
            let (_fence, block) = rest.split_once('\n').unwrap();
            let (block, _) = block.split_once("\n```\n").unwrap();
            let printed = render(
                proxy,
                "wiki",
                &origin("https://wiki.example.org"),
                &Upstream::parse("--upstream", upstream).unwrap(),
                &AppUpstream::Placeholder,
            )
            .unwrap();
            assert_eq!(block, printed.trim_end(), "{proxy:?}");
            seen.push(proxy);
        }
        assert_eq!(seen, Proxy::ALL);
    }

    #[test]
    fn every_lookalike_spelling_is_removed_in_traefik() {
        let names = traefik_lookalikes();
        for name in [
            "Remote-User",
            "Remote_User",
            "Remote.Email",
            "Latchkey_Assertion",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
    }
}
