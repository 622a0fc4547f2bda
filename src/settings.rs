//! Settings from the environment (and `.env`), validated once at start-up.
//!
//! Every setting here is listed with its default in `.env.example`; a bad value is reported
//! as one line naming the setting, and Latchkey does not start.

// Here rather than in `mail/`, which reads the settings: parsing `LATCHKEY_EMAIL` must not
// need the mail room.
pub mod smtp_url;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::domain::email_address::{canonical_domain, EmailAddress, MailboxRule};
use crate::domain::loopback::is_loopback_host;
use crate::logging::LogFormat;
use secrecy::{SecretSlice, SecretString};
use smtp_url::{SmtpServer, TlsMode};

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub public_url: PublicUrl,
    /// Raw key material; `None` means "generate one in the data dir" (development only).
    pub secret_key: Option<SecretSlice<u8>>,
    pub admins: Vec<EmailAddress>,
    pub allowed_domains: Vec<String>,
    /// `LATCHKEY_MAILBOX_KEY`: which spellings at an allowed domain reach one mailbox, so that
    /// none of them joins beside (or instead of) a member who has that mailbox.
    pub mailbox_key: MailboxRule,
    pub email: EmailBackend,
    pub email_from: lettre::message::Mailbox,
    pub link_ttl: Duration,
    pub link_binding: LinkBinding,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub login_rate: Rate,
    pub email_rate: Rate,
    pub trusted_proxies: Vec<IpNet>,
    pub audit_retention: Duration,
    /// `LATCHKEY_AUDIT_ANCHORS`: a file every signed audit checkpoint line is appended to
    /// (kept off the database host, it shows what was cut off the end of the audit).
    pub audit_anchors: Option<PathBuf>,
    pub admin_passkey: AdminPasskey,
    /// `LATCHKEY_ORG_NAME`: the name people see on pages and in mail.
    pub org_name: OrgName,
    /// `RUST_LOG` as written (default `info`); env_logger reads it, this is for display.
    pub rust_log: String,
    /// Who passkeys are made for, from the public URL; `None` when its host is an IP
    /// address, which WebAuthn does not accept (passkeys are then unavailable).
    pub passkey_rp: Option<RelyingParty>,
    /// `LATCHKEY_LOG_FORMAT`: `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// `LATCHKEY_METRICS_TOKEN`: the bearer token `/metrics` asks for; `None`: no `/metrics`.
    pub metrics_token: Option<SecretString>,
}

impl Settings {
    /// Every setting in the order of [`SETTING_NAMES`] with its effective value, as
    /// `latchkey settings` and the start-up line show it: a secret only as `set` or `unset`,
    /// the mail backend without its credentials, an unset optional setting as empty.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        SETTING_NAMES
            .iter()
            .map(|name| (*name, self.effective_value(name)))
            .collect()
    }

    fn effective_value(&self, name: &str) -> String {
        let set = |is_set: bool| if is_set { "set" } else { "unset" }.to_string();
        let list = |items: Vec<String>| items.join(",");
        let duration = |d: Duration| format_duration(d);
        let rate = |r: Rate| format!("{}/{}", r.count, format_duration(r.per));
        let path = |p: &PathBuf| p.display().to_string();
        match name {
            "DATABASE_URL" => match self.database_url {
                Some(_) => "set".into(),
                None => "unset (private cluster)".into(),
            },
            "LATCHKEY_DATA_DIR" => path(&self.data_dir),
            "LATCHKEY_BIND" => self.bind.to_string(),
            "LATCHKEY_PUBLIC_URL" => self.public_url.base().to_string(),
            "LATCHKEY_SECRET_KEY" => set(self.secret_key.is_some()),
            "LATCHKEY_ADMINS" => list(self.admins.iter().map(|a| a.as_str().into()).collect()),
            "LATCHKEY_ALLOWED_DOMAINS" => list(self.allowed_domains.clone()),
            "LATCHKEY_MAILBOX_KEY" => self.mailbox_key.to_string(),
            "LATCHKEY_EMAIL" => match &self.email {
                EmailBackend::Console => "console".into(),
                EmailBackend::File(dir) => format!("file:{}", dir.display()),
                EmailBackend::Smtp(server) => server.describe(),
            },
            "LATCHKEY_EMAIL_FROM" => self.email_from.to_string(),
            "LATCHKEY_ORG_NAME" => self.org_name.to_string(),
            "LATCHKEY_LINK_TTL" => duration(self.link_ttl),
            "LATCHKEY_LINK_BINDING" => match self.link_binding {
                LinkBinding::Browser => "browser".into(),
                LinkBinding::Any => "any".into(),
            },
            "LATCHKEY_SESSION_IDLE" => duration(self.session_idle),
            "LATCHKEY_SESSION_MAX" => duration(self.session_max),
            "LATCHKEY_LOGIN_RATE" => rate(self.login_rate),
            "LATCHKEY_EMAIL_RATE" => rate(self.email_rate),
            "LATCHKEY_TRUSTED_PROXIES" => {
                list(self.trusted_proxies.iter().map(IpNet::to_string).collect())
            }
            "LATCHKEY_AUDIT_RETENTION" => duration(self.audit_retention),
            "LATCHKEY_AUDIT_ANCHORS" => self.audit_anchors.as_ref().map(path).unwrap_or_default(),
            "LATCHKEY_ADMIN_PASSKEY" => match self.admin_passkey {
                AdminPasskey::Optional => "optional".into(),
                AdminPasskey::Required => "required".into(),
            },
            "LATCHKEY_LOG_FORMAT" => self.log_format.as_str().into(),
            "LATCHKEY_METRICS_TOKEN" => set(self.metrics_token.is_some()),
            "RUST_LOG" => self.rust_log.clone(),
            // Unreachable while SETTING_NAMES and this match agree; a unit test holds them so.
            _ => "?".into(),
        }
    }

    /// The link lifetime as people read it, rounded up to whole minutes (pages and mail).
    pub fn link_ttl_minutes(&self) -> u64 {
        self.link_ttl.as_secs().div_ceil(60)
    }
}

/// The base for every link Latchkey writes; never taken from a request's `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(Url);

impl PublicUrl {
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    pub fn is_loopback(&self) -> bool {
        self.0.host_str().is_some_and(is_loopback_host)
    }

    /// `path` must start with `/`; the result is the public base followed by it.
    pub fn join(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.0.as_str().trim_end_matches('/'),
            path_and_query
        )
    }

    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }

    /// The base without a trailing slash, as `iss` in assertions.
    pub fn base(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// `LATCHKEY_ADMIN_PASSKEY`: whether admin work needs a session that proved a passkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminPasskey {
    Optional,
    Required,
}

/// The WebAuthn relying party: its id (a domain) and the one origin ceremonies may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origin: Url,
}

impl RelyingParty {
    /// The public URL's host is the id, and its origin the only origin: Latchkey's pages are
    /// served there and nowhere else. An IP address cannot be a relying party id.
    fn from_public_url(public_url: &PublicUrl) -> Result<Option<Self>, String> {
        let url = public_url.url();
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(None);
        };
        let id = host.trim_end_matches('.').to_ascii_lowercase();
        let origin = Url::parse(&public_url.origin())
            .map_err(|e| format!("its origin is not a URL ({e})"))?;
        let rp = Self { id, origin };
        // The library's own check (the id must be the origin's host or a parent of it).
        webauthn_rs::WebauthnBuilder::new(&rp.id, &rp.origin)
            .map_err(|e| format!("cannot serve as the passkey relying party ({e})"))?;
        Ok(Some(rp))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailBackend {
    Console,
    File(PathBuf),
    Smtp(SmtpServer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkBinding {
    Browser,
    Any,
}

/// `count` requests per `per`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time it takes for one request's allowance to come back.
    pub fn replenish_interval(&self) -> Duration {
        self.per / self.count
    }
}

/// Every setting, in the order of `.env.example`: the parser reads only these, a
/// `LATCHKEY_` variable that is none of them stops start-up, and `latchkey settings` and the
/// start-up line print them in this order.
pub const SETTING_NAMES: [&str; 24] = [
    "DATABASE_URL",
    "LATCHKEY_DATA_DIR",
    "LATCHKEY_BIND",
    "LATCHKEY_PUBLIC_URL",
    "LATCHKEY_SECRET_KEY",
    "LATCHKEY_ADMINS",
    "LATCHKEY_ALLOWED_DOMAINS",
    "LATCHKEY_MAILBOX_KEY",
    "LATCHKEY_EMAIL",
    "LATCHKEY_EMAIL_FROM",
    "LATCHKEY_ORG_NAME",
    "LATCHKEY_LINK_TTL",
    "LATCHKEY_LINK_BINDING",
    "LATCHKEY_SESSION_IDLE",
    "LATCHKEY_SESSION_MAX",
    "LATCHKEY_LOGIN_RATE",
    "LATCHKEY_EMAIL_RATE",
    "LATCHKEY_TRUSTED_PROXIES",
    "LATCHKEY_AUDIT_RETENTION",
    "LATCHKEY_AUDIT_ANCHORS",
    "LATCHKEY_ADMIN_PASSKEY",
    "LATCHKEY_LOG_FORMAT",
    "LATCHKEY_METRICS_TOKEN",
    "RUST_LOG",
];

/// Variables of the repository's own scripts (`scripts/test`, `e2e/`, the API tests), not
/// settings: the binary ignores exactly these, so a developer who exported one can still run
/// it (the scripts also take every `LATCHKEY_` variable off the binary's environment).
pub const TOOLING_NAMES: [&str; 5] = [
    "LATCHKEY_BIN",
    "LATCHKEY_E2E",
    "LATCHKEY_E2E_CHROMIUM",
    "LATCHKEY_E2E_PRIVATE_CLUSTER",
    "LATCHKEY_TEST_POSTGRES",
];

/// One line naming the setting and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub name: String,
    pub problem: String,
    /// The problem reads as the rest of a sentence that starts with the name.
    sentence: bool,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if self.sentence { " " } else { ": " };
        write!(f, "{}{separator}{}", self.name, self.problem)
    }
}

impl std::error::Error for SettingsError {}

fn invalid(name: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        name: name.into(),
        problem: problem.into(),
        sentence: false,
    }
}

/// Refuses a `LATCHKEY_` variable that is not a setting (a typo would otherwise be silently
/// ignored), naming the closest setting.
pub fn refuse_unknown<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), SettingsError> {
    let names: Vec<&str> = names.into_iter().collect();
    if names.contains(&COOKIE_DOMAIN) {
        return Err(cookie_domain_retired());
    }
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|name| name.starts_with("LATCHKEY_"))
        .filter(|name| !SETTING_NAMES.contains(name) && !TOOLING_NAMES.contains(name))
        .collect();
    unknown.sort_unstable();
    let Some(name) = unknown.first() else {
        return Ok(());
    };
    let closest = SETTING_NAMES
        .iter()
        .min_by_key(|setting| strsim::levenshtein(name, setting))
        .copied()
        .unwrap_or("LATCHKEY_PUBLIC_URL");
    Err(SettingsError {
        name: (*name).to_string(),
        problem: format!("is not a setting; did you mean {closest}?"),
        sentence: true,
    })
}

/// Read by versions before per-app sessions; set now, it would leave the operator believing
/// apps share Latchkey's cookie.
const COOKIE_DOMAIN: &str = "LATCHKEY_COOKIE_DOMAIN";

fn cookie_domain_retired() -> SettingsError {
    SettingsError {
        name: COOKIE_DOMAIN.to_string(),
        problem: "is no longer read: per-app sessions replaced it (each app gets a cookie of its own through its proxy's /.latchkey/ route). Unset it, and print each app's proxy configuration with `latchkey apps proxy-config NAME --proxy nginx|caddy|traefik` (docs/forward-auth.md, \"Migrating from LATCHKEY_COOKIE_DOMAIN\")".to_string(),
        sentence: true,
    }
}

/// `LATCHKEY_ORG_NAME`: one line of at most 64 characters, shown (escaped) on pages and in
/// mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().any(char::is_control) {
            return Err("must be one line (no line breaks or control characters)".into());
        }
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(format!(
                "must be at most {} characters, not {chars}",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for OrgName {
    fn default() -> Self {
        Self(DEFAULT_ORG_NAME.to_string())
    }
}

impl std::fmt::Display for OrgName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub const DEFAULT_ORG_NAME: &str = "Latchkey";
const DEFAULT_EMAIL_FROM: &str = "Latchkey <no-reply@localhost>";

const MAX_LINK_TTL: Duration = Duration::from_secs(60 * 60);

impl Settings {
    /// Reads `.env` (if present) into the environment, then the environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one is worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(err) if err.not_found() => {}
            Err(err) => return Err(invalid(".env", err.to_string())),
        }
        // `.env` entries are in the environment by now, so they are checked too.
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        refuse_unknown(names.iter().map(String::as_str))?;
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any source of variables, so tests need not touch the process env.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| {
            debug_assert!(
                SETTING_NAMES.contains(&name),
                "{name} is not in SETTING_NAMES"
            );
            lookup(name)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };

        let database_url = get("DATABASE_URL").map(SecretString::from);
        let data_dir =
            PathBuf::from(get("LATCHKEY_DATA_DIR").unwrap_or_else(|| "./.latchkey".to_string()));
        let bind_text = get("LATCHKEY_BIND").unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let bind = parse_bind(&bind_text).map_err(|p| invalid("LATCHKEY_BIND", p))?;
        let public_url = match get("LATCHKEY_PUBLIC_URL") {
            Some(text) => parse_public_url(&text).map_err(|p| invalid("LATCHKEY_PUBLIC_URL", p))?,
            None => parse_public_url(&format!("http://{bind_text}"))
                .map_err(|p| invalid("LATCHKEY_BIND", p))?,
        };
        let secret_key = match get("LATCHKEY_SECRET_KEY") {
            Some(text) => Some(SecretSlice::from(
                parse_secret_key(&text).map_err(|p| invalid("LATCHKEY_SECRET_KEY", p))?,
            )),
            None if public_url.is_loopback() => None,
            None => {
                return Err(invalid(
                    "LATCHKEY_SECRET_KEY",
                    "required when LATCHKEY_PUBLIC_URL is not localhost (at least 32 bytes, hex or base64; `openssl rand -hex 32` makes one)",
                ))
            }
        };
        let admins = match get("LATCHKEY_ADMINS") {
            Some(text) => parse_list(&text)
                .map_err(|p| invalid("LATCHKEY_ADMINS", p))?
                .iter()
                .map(|item| {
                    EmailAddress::parse(item)
                        .map_err(|e| invalid("LATCHKEY_ADMINS", format!("{item:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let allowed_domains = match get("LATCHKEY_ALLOWED_DOMAINS") {
            Some(text) => parse_list(&text)
                .map_err(|p| invalid("LATCHKEY_ALLOWED_DOMAINS", p))?
                .iter()
                .map(|item| {
                    canonical_domain(item.trim_start_matches('@')).ok_or_else(|| {
                        invalid(
                            "LATCHKEY_ALLOWED_DOMAINS",
                            format!("{item:?} is not a domain name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let mailbox_key = match get("LATCHKEY_MAILBOX_KEY") {
            Some(text) => {
                MailboxRule::parse(&text).map_err(|p| invalid("LATCHKEY_MAILBOX_KEY", p))?
            }
            None => MailboxRule::default(),
        };
        let email = parse_email_backend(&get("LATCHKEY_EMAIL").unwrap_or_else(|| "console".into()))
            .map_err(|p| invalid("LATCHKEY_EMAIL", p))?;
        refuse_unsafe_outside_loopback(&public_url, &email)?;
        let email_from = match get("LATCHKEY_EMAIL_FROM") {
            Some(text) => text,
            None if public_url.is_loopback() => DEFAULT_EMAIL_FROM.into(),
            None => {
                return Err(invalid(
                    "LATCHKEY_EMAIL_FROM",
                    "required when LATCHKEY_PUBLIC_URL is not localhost (the sender people see, as in Acme <login@acme.example>)",
                ))
            }
        }
        .parse::<lettre::message::Mailbox>()
        .map_err(|e| invalid("LATCHKEY_EMAIL_FROM", format!("not a mailbox: {e}")))?;
        let org_name = match get("LATCHKEY_ORG_NAME") {
            Some(text) => OrgName::parse(&text).map_err(|p| invalid("LATCHKEY_ORG_NAME", p))?,
            None => OrgName::default(),
        };

        let duration = |name: &'static str, default: &str| {
            parse_duration(&get(name).unwrap_or_else(|| default.to_string()))
                .map_err(|p| invalid(name, p))
        };
        let link_ttl = duration("LATCHKEY_LINK_TTL", "10m")?;
        if link_ttl > MAX_LINK_TTL {
            return Err(invalid("LATCHKEY_LINK_TTL", "must be at most 60m"));
        }
        let link_binding = match get("LATCHKEY_LINK_BINDING").as_deref() {
            None | Some("browser") => LinkBinding::Browser,
            Some("any") => LinkBinding::Any,
            Some(other) => {
                return Err(invalid(
                    "LATCHKEY_LINK_BINDING",
                    format!("must be `browser` or `any`, not {other:?}"),
                ))
            }
        };
        let session_idle = duration("LATCHKEY_SESSION_IDLE", "30m")?;
        let session_max = duration("LATCHKEY_SESSION_MAX", "12h")?;
        if session_idle > session_max {
            return Err(invalid(
                "LATCHKEY_SESSION_IDLE",
                "must not be longer than LATCHKEY_SESSION_MAX",
            ));
        }
        let rate = |name: &'static str, default: &str| {
            parse_rate(&get(name).unwrap_or_else(|| default.to_string()))
                .map_err(|p| invalid(name, p))
        };
        let login_rate = rate("LATCHKEY_LOGIN_RATE", "30/min")?;
        let email_rate = rate("LATCHKEY_EMAIL_RATE", "3/15m")?;
        let trusted_proxies = match get("LATCHKEY_TRUSTED_PROXIES") {
            Some(text) => parse_list(&text)
                .map_err(|p| invalid("LATCHKEY_TRUSTED_PROXIES", p))?
                .iter()
                .map(|item| parse_cidr(item).map_err(|p| invalid("LATCHKEY_TRUSTED_PROXIES", p)))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let audit_retention = duration("LATCHKEY_AUDIT_RETENTION", "400d")?;
        let audit_anchors = match get("LATCHKEY_AUDIT_ANCHORS") {
            Some(text) if text.trim().is_empty() => {
                return Err(invalid("LATCHKEY_AUDIT_ANCHORS", "a file path, not empty"))
            }
            Some(text) => Some(PathBuf::from(text)),
            None => None,
        };
        if lookup(COOKIE_DOMAIN).is_some() {
            return Err(cookie_domain_retired());
        }
        let admin_passkey = match get("LATCHKEY_ADMIN_PASSKEY").as_deref() {
            None | Some("optional") => AdminPasskey::Optional,
            Some("required") => AdminPasskey::Required,
            Some(other) => {
                return Err(invalid(
                    "LATCHKEY_ADMIN_PASSKEY",
                    format!("must be `optional` or `required`, not {other:?}"),
                ))
            }
        };
        let rust_log = get("RUST_LOG").unwrap_or_else(|| "info".into());
        let passkey_rp = RelyingParty::from_public_url(&public_url)
            .map_err(|p| invalid("LATCHKEY_PUBLIC_URL", p))?;
        if passkey_rp.is_none() && admin_passkey == AdminPasskey::Required {
            return Err(invalid(
                "LATCHKEY_ADMIN_PASSKEY",
                "`required` needs passkeys, and passkeys need a LATCHKEY_PUBLIC_URL with a host name, not an IP address (http://localhost:8080, https://login.example.org)",
            ));
        }
        let log_format = match get("LATCHKEY_LOG_FORMAT") {
            Some(text) => LogFormat::parse(&text).map_err(|p| invalid("LATCHKEY_LOG_FORMAT", p))?,
            None => LogFormat::Text,
        };
        let metrics_token = get("LATCHKEY_METRICS_TOKEN")
            .map(|text| {
                parse_metrics_token(&text).map_err(|p| invalid("LATCHKEY_METRICS_TOKEN", p))
            })
            .transpose()?;

        Ok(Self {
            database_url,
            data_dir,
            bind,
            public_url,
            secret_key,
            admins,
            allowed_domains,
            mailbox_key,
            email,
            email_from,
            link_ttl,
            link_binding,
            session_idle,
            session_max,
            login_rate,
            email_rate,
            trusted_proxies,
            audit_retention,
            audit_anchors,
            admin_passkey,
            org_name,
            rust_log,
            passkey_rp,
            log_format,
            metrics_token,
        })
    }
}

/// The shortest `LATCHKEY_METRICS_TOKEN` accepted: whoever reaches `/metrics` may try tokens
/// as fast as the network lets them, so one must be too long to guess.
const MIN_METRICS_TOKEN_LEN: usize = 32;

fn parse_metrics_token(text: &str) -> Result<SecretString, String> {
    if text.len() < MIN_METRICS_TOKEN_LEN {
        return Err(format!(
            "must be at least {MIN_METRICS_TOKEN_LEN} characters (`openssl rand -hex 32` makes one)"
        ));
    }
    // It travels in an `Authorization` header: visible ASCII only, no spaces.
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters without spaces".into());
    }
    Ok(SecretString::from(text.to_string()))
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} does not resolve to an address"))
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{text:?} must be a plain base URL (no user, query or fragment)"
        ));
    }
    Ok(PublicUrl(url))
}

fn parse_secret_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .or_else(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .ok()
        })
        .ok_or("must be hex or base64")?;
    if bytes.len() < 32 {
        return Err(format!("must be at least 32 bytes, got {}", bytes.len()));
    }
    Ok(bytes)
}

/// What is fine on a developer's machine and unsafe anywhere else: links over plain http,
/// sign-in mail printed to a terminal, and SMTP in clear text across a network.
fn refuse_unsafe_outside_loopback(
    public_url: &PublicUrl,
    email: &EmailBackend,
) -> Result<(), SettingsError> {
    if !public_url.is_loopback() {
        if !public_url.is_https() {
            return Err(invalid(
                "LATCHKEY_PUBLIC_URL",
                "must be https:// unless it is localhost or 127.0.0.1 (put a TLS proxy in front)",
            ));
        }
        if *email == EmailBackend::Console {
            return Err(invalid(
                "LATCHKEY_EMAIL",
                "`console` is for localhost only; set an SMTP URL (smtp://host:587 or smtps://host:465)",
            ));
        }
    }
    if let EmailBackend::Smtp(server) = email {
        if server.tls == TlsMode::None && !server.is_loopback() {
            return Err(invalid(
                "LATCHKEY_EMAIL",
                "?tls=none is allowed only for an SMTP server on localhost or 127.0.0.1",
            ));
        }
    }
    Ok(())
}

/// A JSON list (`["a","b"]`) or a comma-separated list.
fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| format!("not a JSON list of strings ({e})"))?
    } else {
        text.split(',').map(str::to_string).collect()
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect())
}

fn parse_email_backend(text: &str) -> Result<EmailBackend, String> {
    if text == "console" {
        return Ok(EmailBackend::Console);
    }
    if let Some(dir) = text.strip_prefix("file:") {
        if dir.is_empty() {
            return Err("`file:` needs a directory, as in file:./mail".into());
        }
        return Ok(EmailBackend::File(PathBuf::from(dir)));
    }
    SmtpServer::parse(text).map(EmailBackend::Smtp)
}

/// A duration as the settings are written: in the largest of `d`, `h`, `m`, `s` that divides it
/// (`400d`, not humantime's `1year 1month 4days 7h 26m 24s`); humantime's form for the rest.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(duration).to_string();
    }
    [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")]
        .iter()
        .find(|(unit, _)| secs % unit == 0)
        .map_or_else(
            || format!("{secs}s"),
            |(unit, suffix)| format!("{}{suffix}", secs / unit),
        )
}

/// `90s`, `10m`, `12h`, `7d` (and anything else humantime reads, such as `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration (write 90s, 10m, 12h or 7d)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// `N/DURATION`, where a bare unit means one of it (`5/min` is `5/1m`).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("{text:?} is not a rate (write N/DURATION, as in 5/min or 3/15m)");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(per)
    } else {
        parse_duration(&format!("1{per}"))
    }
    .map_err(|_| bad())?;
    Ok(Rate { count, per })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR (write 10.0.0.0/8 or 192.0.2.1)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;
    use std::collections::HashMap;

    const FROM: &str = "Acme <login@example.org>";

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_settings() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.public_url.join("/x"), "http://127.0.0.1:8080/x");
        assert!(s.secret_key.is_none());
        assert_eq!(s.link_ttl, Duration::from_secs(600));
        assert_eq!(
            s.login_rate,
            Rate {
                count: 30,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(
            s.email_rate,
            Rate {
                count: 3,
                per: Duration::from_secs(900)
            }
        );
        assert_eq!(s.audit_retention, Duration::from_secs(400 * 86400));
        assert_eq!(s.email, EmailBackend::Console);
        assert_eq!(s.link_binding, LinkBinding::Browser);
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(settings(&[]).unwrap().log_format, LogFormat::Text);
        let s = settings(&[("LATCHKEY_LOG_FORMAT", "json")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        let err = settings(&[("LATCHKEY_LOG_FORMAT", "yaml")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_LOG_FORMAT");
    }

    #[test]
    fn a_metrics_token_is_long_and_printable_and_shown_only_as_set() {
        let s = settings(&[]).unwrap();
        assert!(s.metrics_token.is_none());
        assert!(s
            .effective()
            .contains(&("LATCHKEY_METRICS_TOKEN", "unset".into())));
        let token = "0123456789abcdef".repeat(2);
        let s = settings(&[("LATCHKEY_METRICS_TOKEN", &token)]).unwrap();
        assert!(s.metrics_token.is_some());
        assert!(s
            .effective()
            .contains(&("LATCHKEY_METRICS_TOKEN", "set".into())));
        for bad in ["short", &format!("{token} with spaces")] {
            let err = settings(&[("LATCHKEY_METRICS_TOKEN", bad)]).unwrap_err();
            assert_eq!(err.name, "LATCHKEY_METRICS_TOKEN", "{bad}");
        }
    }

    #[test]
    fn a_public_host_requires_a_secret_key() {
        let err = settings(&[("LATCHKEY_PUBLIC_URL", "https://login.example.org")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_SECRET_KEY");
        let key = "ab".repeat(32);
        let s = settings(&[
            ("LATCHKEY_PUBLIC_URL", "https://login.example.org"),
            ("LATCHKEY_SECRET_KEY", &key),
            ("LATCHKEY_EMAIL", "smtps://mail.example.org:465"),
            ("LATCHKEY_EMAIL_FROM", FROM),
        ])
        .unwrap();
        assert!(s.public_url.is_https());
        assert_eq!(s.secret_key.unwrap().expose_secret().len(), 32);
    }

    #[test]
    fn short_secret_keys_are_refused() {
        let err = settings(&[("LATCHKEY_SECRET_KEY", "abcd")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_SECRET_KEY");
        assert!(err.to_string().starts_with("LATCHKEY_SECRET_KEY: "));
    }

    #[test]
    fn admins_accept_json_and_commas_in_canonical_form() {
        let s = settings(&[("LATCHKEY_ADMINS", r#"["a@X.org", " b@y.org"]"#)]).unwrap();
        let admins: Vec<_> = s.admins.iter().map(EmailAddress::as_str).collect();
        assert_eq!(admins, ["a@x.org", "b@y.org"]);
        let s = settings(&[("LATCHKEY_ADMINS", "a@x.org, b@Y.org")]).unwrap();
        assert_eq!(s.admins[1].as_str(), "b@y.org");
        let err = settings(&[("LATCHKEY_ADMINS", "not-an-address")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_ADMINS");
    }

    #[test]
    fn link_ttl_is_capped_at_an_hour() {
        assert!(settings(&[("LATCHKEY_LINK_TTL", "60m")]).is_ok());
        let err = settings(&[("LATCHKEY_LINK_TTL", "61m")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_LINK_TTL");
        let err = settings(&[("LATCHKEY_LINK_TTL", "soon")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_LINK_TTL");
    }

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate("5/min").unwrap().per, Duration::from_secs(60));
        assert_eq!(parse_rate("3/15m").unwrap().per, Duration::from_secs(900));
        assert_eq!(parse_rate("100/1s").unwrap().count, 100);
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("five/min").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn email_backends() {
        let s = settings(&[("LATCHKEY_EMAIL", "file:/tmp/mail")]).unwrap();
        assert_eq!(s.email, EmailBackend::File("/tmp/mail".into()));
        assert!(matches!(
            settings(&[("LATCHKEY_EMAIL", "smtp://127.0.0.1:2525?tls=none")])
                .unwrap()
                .email,
            EmailBackend::Smtp(_)
        ));
        assert!(settings(&[("LATCHKEY_EMAIL", "smtps://u:p@mail.example.org:465")]).is_ok());
        assert!(settings(&[("LATCHKEY_EMAIL", "smtps://mail.example.org?tls=none")]).is_err());
        let err = settings(&[("LATCHKEY_EMAIL", "http://u:hunter2@x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn temp_file(contents: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "latchkey-ca-{}.pem",
            hex::encode(crate::crypto::random_bytes::<6>())
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A real CA certificate (a throwaway one; its key was never kept).
    const PEM: &[u8] = include_bytes!("../tests/fixtures/test-ca.pem");

    #[test]
    fn smtp_ca_file_is_read_at_start_up() {
        let path = temp_file(PEM);
        for scheme in ["smtp", "smtps"] {
            let url = format!("{scheme}://u:p@relay.corp:587?ca={}", path.display());
            let EmailBackend::Smtp(SmtpServer { ca, .. }) =
                settings(&[("LATCHKEY_EMAIL", &url)]).unwrap().email
            else {
                panic!("an SMTP backend");
            };
            let ca = ca.unwrap();
            assert_eq!(
                (ca.path.as_path(), ca.pem.as_slice()),
                (path.as_path(), PEM)
            );
            assert!(!format!("{ca:?}").contains("BEGIN"), "{ca:?}");
        }
        let EmailBackend::Smtp(SmtpServer { ca, .. }) =
            settings(&[("LATCHKEY_EMAIL", "smtp://relay.corp")])
                .unwrap()
                .email
        else {
            panic!("an SMTP backend");
        };
        assert_eq!(ca, None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_bad_ca_file_stops_start_up_with_one_line_and_no_password() {
        let key = temp_file(b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n");
        let garbled = temp_file(b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n");
        let not_der = temp_file(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let pem = temp_file(PEM);
        let cases = [
            ("/nonexistent/latchkey-ca.pem".to_string(), "cannot read"),
            (std::env::temp_dir().display().to_string(), "cannot read"),
            (key.display().to_string(), "no usable PEM certificate"),
            (garbled.display().to_string(), "no usable PEM certificate"),
            (not_der.display().to_string(), "no usable PEM certificate"),
            (String::new(), "needs the path"),
        ];
        for (path, problem) in cases {
            let url = format!("smtps://u:hunter2@relay.corp?ca={path}");
            let err = settings(&[("LATCHKEY_EMAIL", &url)]).unwrap_err();
            assert_eq!(err.name, "LATCHKEY_EMAIL");
            let line = err.to_string();
            assert!(line.starts_with("LATCHKEY_EMAIL: "), "{line}");
            assert!(line.contains(problem), "{line}");
            assert!(!line.contains("hunter2") && !line.contains('\n'), "{line}");
        }
        let pem = pem.display().to_string();
        for url in [
            format!("smtp://127.0.0.1:2525?tls=none&ca={pem}"),
            format!("smtp://relay.corp?ca={pem}&ca={pem}"),
        ] {
            let err = settings(&[("LATCHKEY_EMAIL", &url)]).unwrap_err();
            assert_eq!(err.name, "LATCHKEY_EMAIL", "{url}");
        }
        for path in [key, garbled, not_der, PathBuf::from(pem)] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn unsafe_settings_outside_loopback_are_refused_naming_the_setting() {
        let key = "ab".repeat(32);
        let public = |url: &'static str, email: &'static str| {
            settings(&[
                ("LATCHKEY_PUBLIC_URL", url),
                ("LATCHKEY_SECRET_KEY", &key),
                ("LATCHKEY_EMAIL", email),
                ("LATCHKEY_EMAIL_FROM", FROM),
            ])
        };
        let smtps = "smtps://mail.example.org:465";
        let err = public("http://login.example.org", smtps).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_PUBLIC_URL", "{err}");
        let err = public("http://10.0.0.5:8080", smtps).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_PUBLIC_URL", "{err}");
        let err = public("https://login.example.org", "console").unwrap_err();
        assert_eq!(err.name, "LATCHKEY_EMAIL", "{err}");
        let err = public(
            "https://login.example.org",
            "smtp://mail.example.org:25?tls=none",
        )
        .unwrap_err();
        assert_eq!(err.name, "LATCHKEY_EMAIL", "{err}");
        let err = public("http://localhost:8080", "smtp://10.1.2.3:25?tls=none").unwrap_err();
        assert_eq!(err.name, "LATCHKEY_EMAIL", "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
        // A bind on every interface makes the default public URL non-loopback too.
        let err = settings(&[
            ("LATCHKEY_BIND", "0.0.0.0:8080"),
            ("LATCHKEY_SECRET_KEY", &key),
        ])
        .unwrap_err();
        assert_eq!(err.name, "LATCHKEY_PUBLIC_URL", "{err}");

        for loopback in [
            "http://localhost:8080",
            "http://app.localhost",
            "http://127.0.0.2",
            "http://[::1]:8080",
        ] {
            assert!(public(loopback, "console").is_ok(), "{loopback}");
            assert!(
                public(loopback, "smtp://127.0.0.1:2525?tls=none").is_ok(),
                "{loopback}"
            );
            assert!(
                public(loopback, "smtp://localhost:2525?tls=none").is_ok(),
                "{loopback}"
            );
        }
        assert!(public("https://login.example.org", "smtp://mail.example.org:587").is_ok());
        assert!(public(
            "https://login.example.org",
            "smtp://127.0.0.1:2525?tls=none"
        )
        .is_ok());
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let s = settings(&[("LATCHKEY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")]).unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
        assert!(settings(&[("LATCHKEY_TRUSTED_PROXIES", "10.0.0.0/33")]).is_err());
    }

    #[test]
    fn the_cookie_domain_is_refused_saying_what_replaced_it() {
        let err = settings(&[("LATCHKEY_COOKIE_DOMAIN", "example.org")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_COOKIE_DOMAIN");
        let line = err.to_string();
        assert!(line.contains("per-app sessions replaced it"), "{line}");
        assert!(line.contains("latchkey apps proxy-config"), "{line}");
        assert!(!line.contains('\n'));
        let err = refuse_unknown(["LATCHKEY_LOG_FORMAT", "LATCHKEY_COOKIE_DOMAIN"]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_COOKIE_DOMAIN");
    }

    #[test]
    fn admin_passkey_is_optional_unless_required() {
        assert_eq!(settings(&[]).unwrap().admin_passkey, AdminPasskey::Optional);
        let local = [("LATCHKEY_PUBLIC_URL", "http://localhost:8080")];
        assert_eq!(
            settings(&local).unwrap().admin_passkey,
            AdminPasskey::Optional
        );
        let s = settings(&[local[0], ("LATCHKEY_ADMIN_PASSKEY", "required")]).unwrap();
        assert_eq!(s.admin_passkey, AdminPasskey::Required);
        let s = settings(&[local[0], ("LATCHKEY_ADMIN_PASSKEY", "optional")]).unwrap();
        assert_eq!(s.admin_passkey, AdminPasskey::Optional);
        let err = settings(&[local[0], ("LATCHKEY_ADMIN_PASSKEY", "always")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_ADMIN_PASSKEY");
        assert!(err.to_string().contains("always"), "{err}");
    }

    #[test]
    fn the_relying_party_is_the_public_host() {
        let s = settings(&[("LATCHKEY_PUBLIC_URL", "http://localhost:8080")]).unwrap();
        let rp = s.passkey_rp.unwrap();
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origin.as_str(), "http://localhost:8080/");
        let key = "ab".repeat(32);
        let s = settings(&[
            ("LATCHKEY_PUBLIC_URL", "https://Login.Example.org/"),
            ("LATCHKEY_SECRET_KEY", &key),
            ("LATCHKEY_EMAIL", "smtps://mail.example.org:465"),
            ("LATCHKEY_EMAIL_FROM", FROM),
        ])
        .unwrap();
        let rp = s.passkey_rp.unwrap();
        assert_eq!(rp.id, "login.example.org");
        assert_eq!(rp.origin.as_str(), "https://login.example.org/");
    }

    #[test]
    fn an_ip_public_url_has_no_passkeys_and_cannot_require_them() {
        // The default public URL (http://127.0.0.1:8080) still starts, without passkeys.
        assert!(settings(&[]).unwrap().passkey_rp.is_none());
        assert!(settings(&[("LATCHKEY_PUBLIC_URL", "http://[::1]:8080")])
            .unwrap()
            .passkey_rp
            .is_none());
        let err = settings(&[("LATCHKEY_ADMIN_PASSKEY", "required")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_ADMIN_PASSKEY");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn the_mailbox_key_is_plus_unless_set_and_a_bad_one_is_named() {
        use crate::domain::email_address::MailboxReduction::{Dots, Plus};
        assert_eq!(settings(&[]).unwrap().mailbox_key, MailboxRule::default());
        let s = settings(&[("LATCHKEY_MAILBOX_KEY", "plus,dots")]).unwrap();
        assert_eq!(s.mailbox_key, MailboxRule::of(&[Plus, Dots]));
        for bad in ["gmail", "plus,dot", ","] {
            let err = settings(&[("LATCHKEY_MAILBOX_KEY", bad)]).unwrap_err();
            assert_eq!(err.name, "LATCHKEY_MAILBOX_KEY", "{bad}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn idle_cannot_exceed_max() {
        let err = settings(&[("LATCHKEY_SESSION_IDLE", "13h")]).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_SESSION_IDLE");
    }

    #[test]
    fn a_misspelled_setting_is_refused_naming_the_closest() {
        let err = refuse_unknown(["PATH", "LATCHKEY_EMAL_FROM", "LATCHKEY_BIND"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LATCHKEY_EMAL_FROM is not a setting; did you mean LATCHKEY_EMAIL_FROM?"
        );
        let err = refuse_unknown(["LATCHKEY_SECRET"]).unwrap_err();
        assert!(err.to_string().ends_with("LATCHKEY_SECRET_KEY?"), "{err}");
        assert!(refuse_unknown(SETTING_NAMES).is_ok());
        assert!(refuse_unknown(TOOLING_NAMES).is_ok());
        assert!(refuse_unknown(["HOME", "latchkey_x", "DATABASE"]).is_ok());
    }

    #[test]
    fn email_from_is_required_off_loopback() {
        let key = "ab".repeat(32);
        let vars = [
            ("LATCHKEY_PUBLIC_URL", "https://login.example.org"),
            ("LATCHKEY_SECRET_KEY", key.as_str()),
            ("LATCHKEY_EMAIL", "smtps://mail.example.org:465"),
        ];
        let err = settings(&vars).unwrap_err();
        assert_eq!(err.name, "LATCHKEY_EMAIL_FROM");
        assert!(!err.to_string().contains('\n'), "{err}");
        let mut with_from = vars.to_vec();
        with_from.push(("LATCHKEY_EMAIL_FROM", FROM));
        assert_eq!(settings(&with_from).unwrap().email_from.to_string(), FROM);
        let local = settings(&[]).unwrap();
        assert_eq!(local.email_from.to_string(), DEFAULT_EMAIL_FROM);
    }

    #[test]
    fn the_org_name_is_one_short_line() {
        assert_eq!(settings(&[]).unwrap().org_name.as_str(), "Latchkey");
        let s = settings(&[("LATCHKEY_ORG_NAME", " Acme & Co ")]).unwrap();
        assert_eq!(s.org_name.as_str(), "Acme & Co");
        let long = "x".repeat(65);
        for bad in ["two\nlines", long.as_str(), "tab\there"] {
            let err = settings(&[("LATCHKEY_ORG_NAME", bad)]).unwrap_err();
            assert_eq!(err.name, "LATCHKEY_ORG_NAME", "{bad}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        assert!(settings(&[("LATCHKEY_ORG_NAME", &"é".repeat(64))]).is_ok());
    }

    #[test]
    fn effective_settings_are_every_setting_in_order_and_no_secret() {
        let key = "cd".repeat(32);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u:dbpass@db/x"),
            ("LATCHKEY_SECRET_KEY", &key),
            ("LATCHKEY_EMAIL", "smtp://ann:hunter2@mail.example.org:587"),
        ])
        .unwrap();
        let effective = s.effective();
        let names: Vec<_> = effective.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, SETTING_NAMES);
        let text = format!("{effective:?}");
        for secret in [key.as_str(), "dbpass", "hunter2", "ann"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        let value = |name| {
            effective
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(value("DATABASE_URL"), "set");
        assert_eq!(value("LATCHKEY_SECRET_KEY"), "set");
        assert_eq!(
            value("LATCHKEY_EMAIL"),
            "smtp://mail.example.org:587 (STARTTLS, credentials set)"
        );
        assert!(effective.iter().all(|(_, v)| v != "?"), "{effective:?}");
        let local = settings(&[]).unwrap().effective();
        assert!(local.contains(&("DATABASE_URL", "unset (private cluster)".into())));
        assert!(local.contains(&("LATCHKEY_SECRET_KEY", "unset".into())));
        assert!(local.contains(&("LATCHKEY_LOGIN_RATE", "30/1m".into())));
        assert!(local.contains(&("LATCHKEY_AUDIT_RETENTION", "400d".into())));
        assert!(local.contains(&("LATCHKEY_SESSION_MAX", "12h".into())));
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    }

    #[test]
    fn env_example_lists_every_setting_in_order() {
        let example = include_str!("../.env.example");
        let listed: Vec<&str> = example
            .lines()
            .filter_map(|line| line.trim_start_matches("# ").split_once('='))
            .map(|(name, _)| name)
            .filter(|name| SETTING_NAMES.contains(name))
            .fold(Vec::new(), |mut seen, name| {
                if !seen.contains(&name) {
                    seen.push(name);
                }
                seen
            });
        assert_eq!(listed, SETTING_NAMES);
    }
}
