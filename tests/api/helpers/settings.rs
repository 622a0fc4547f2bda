//! What a test changes about Latchkey's settings, in typed values. They are written out in
//! the environment's syntax here and nowhere else, and read back by `Settings::from_lookup`,
//! so the real parser checks every test's settings as it would a deployment's.

use std::collections::BTreeMap;
use std::time::Duration;

use latchkey::domain::email_address::MailboxRule;
use latchkey::settings::{AdminPasskey, LinkBinding, Rate, Settings};

/// The settings a test is about; everything it leaves alone keeps Latchkey's default, apart
/// from the two rates (see [`TestSettings::new`]).
#[derive(Debug, Clone)]
pub struct TestSettings {
    /// `None`: Latchkey's own default.
    login_rate: Option<Rate>,
    email_rate: Option<Rate>,
    link_ttl: Option<Duration>,
    link_binding: Option<LinkBinding>,
    session_idle: Option<Duration>,
    session_max: Option<Duration>,
    admins: Vec<String>,
    allowed_domains: Vec<String>,
    mailbox_key: Option<MailboxRule>,
    trusted_proxies: Vec<String>,
    public_url: PublicUrl,
    admin_passkey: Option<AdminPasskey>,
    org_name: Option<String>,
    metrics_token: Option<String>,
}

#[derive(Debug, Clone)]
enum PublicUrl {
    /// `http://127.0.0.1:PORT`, where the instance listens.
    Listening,
    /// `http://HOST:PORT`: another name for where the instance listens.
    Host(String),
    /// A URL the instance does not itself serve (an https one, behind a proxy that is not there).
    Url(String),
}

impl Default for TestSettings {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSettings {
    /// Tests make many requests from one address and for one mailbox; the rates are generous
    /// so that only a test about them meets them.
    pub fn new() -> Self {
        let generous = Rate {
            count: 1000,
            per: Duration::from_secs(60),
        };
        Self {
            login_rate: Some(generous),
            email_rate: Some(generous),
            link_ttl: None,
            link_binding: None,
            session_idle: None,
            session_max: None,
            admins: Vec::new(),
            allowed_domains: Vec::new(),
            mailbox_key: None,
            trusted_proxies: Vec::new(),
            public_url: PublicUrl::Listening,
            admin_passkey: None,
            org_name: None,
            metrics_token: None,
        }
    }

    pub fn login_rate(mut self, count: u32, per: Duration) -> Self {
        self.login_rate = Some(Rate { count, per });
        self
    }

    pub fn email_rate(mut self, count: u32, per: Duration) -> Self {
        self.email_rate = Some(Rate { count, per });
        self
    }

    /// Latchkey's own default rates, for a test about what a deployment that sets none gets.
    pub fn default_rates(mut self) -> Self {
        self.login_rate = None;
        self.email_rate = None;
        self
    }

    pub fn link_ttl(mut self, ttl: Duration) -> Self {
        self.link_ttl = Some(ttl);
        self
    }

    pub fn link_binding(mut self, binding: LinkBinding) -> Self {
        self.link_binding = Some(binding);
        self
    }

    pub fn session_idle(mut self, idle: Duration) -> Self {
        self.session_idle = Some(idle);
        self
    }

    pub fn session_max(mut self, max: Duration) -> Self {
        self.session_max = Some(max);
        self
    }

    pub fn admins(mut self, addresses: &[&str]) -> Self {
        self.admins = addresses.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn allowed_domains(mut self, domains: &[&str]) -> Self {
        self.allowed_domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    pub fn mailbox_key(mut self, rule: MailboxRule) -> Self {
        self.mailbox_key = Some(rule);
        self
    }

    /// Addresses or CIDRs, as `10.0.0.0/8` or `192.0.2.1`.
    pub fn trusted_proxies(mut self, networks: &[&str]) -> Self {
        self.trusted_proxies = networks.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `http://HOST:PORT` on the port the harness chose; for a host name where the test's own
    /// address is an IP (passkeys need one).
    pub fn public_host(mut self, host: &str) -> Self {
        self.public_url = PublicUrl::Host(host.to_string());
        self
    }

    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = PublicUrl::Url(url.to_string());
        self
    }

    pub fn org_name(mut self, name: &str) -> Self {
        self.org_name = Some(name.to_string());
        self
    }

    pub fn metrics_token(mut self, token: &str) -> Self {
        self.metrics_token = Some(token.to_string());
        self
    }

    pub fn admin_passkey(mut self, admin_passkey: AdminPasskey) -> Self {
        self.admin_passkey = Some(admin_passkey);
        self
    }

    /// The environment of an instance the harness starts on `harness.port`.
    pub(super) fn environment(&self, harness: Harness) -> Environment {
        let port = harness.port;
        let mut vars = BTreeMap::from([
            ("DATABASE_URL", harness.database_url),
            ("LATCHKEY_BIND", format!("127.0.0.1:{port}")),
            ("LATCHKEY_SECRET_KEY", harness.secret_key),
            ("LATCHKEY_EMAIL", harness.email),
        ]);
        let public_url = match &self.public_url {
            PublicUrl::Listening => format!("http://127.0.0.1:{port}"),
            PublicUrl::Host(host) => format!("http://{host}:{port}"),
            PublicUrl::Url(url) => url.clone(),
        };
        if let PublicUrl::Url(_) = &self.public_url {
            // Off loopback the sender must be set (the default is for localhost only).
            vars.insert("LATCHKEY_EMAIL_FROM", "Latchkey <login@example.org>".into());
        }
        vars.insert("LATCHKEY_PUBLIC_URL", public_url);
        let mut set = |name, value: Option<String>| {
            if let Some(value) = value {
                vars.insert(name, value);
            }
        };
        set("LATCHKEY_LOGIN_RATE", self.login_rate.map(rate));
        set("LATCHKEY_EMAIL_RATE", self.email_rate.map(rate));
        set("LATCHKEY_LINK_TTL", self.link_ttl.map(duration));
        set(
            "LATCHKEY_LINK_BINDING",
            self.link_binding.map(|binding| {
                match binding {
                    LinkBinding::Browser => "browser",
                    LinkBinding::Any => "any",
                }
                .to_string()
            }),
        );
        set("LATCHKEY_SESSION_IDLE", self.session_idle.map(duration));
        set("LATCHKEY_SESSION_MAX", self.session_max.map(duration));
        set("LATCHKEY_ADMINS", list(&self.admins));
        set("LATCHKEY_ALLOWED_DOMAINS", list(&self.allowed_domains));
        set(
            "LATCHKEY_MAILBOX_KEY",
            self.mailbox_key.map(|rule| rule.to_string()),
        );
        set("LATCHKEY_TRUSTED_PROXIES", list(&self.trusted_proxies));
        set("LATCHKEY_ORG_NAME", self.org_name.clone());
        set("LATCHKEY_METRICS_TOKEN", self.metrics_token.clone());
        set(
            "LATCHKEY_ADMIN_PASSKEY",
            self.admin_passkey.map(|admin_passkey| {
                match admin_passkey {
                    AdminPasskey::Optional => "optional",
                    AdminPasskey::Required => "required",
                }
                .to_string()
            }),
        );
        Environment(vars)
    }
}

/// What the harness, not the test, decides about an instance.
pub(super) struct Harness {
    pub port: u16,
    pub database_url: String,
    pub secret_key: String,
    pub email: String,
}

fn duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn rate(rate: Rate) -> String {
    format!("{}/{}", rate.count, duration(rate.per))
}

/// A JSON list, which no address or domain can break out of (a comma-separated one is the
/// other syntax; the settings' unit tests read both).
fn list(items: &[String]) -> Option<String> {
    (!items.is_empty()).then(|| serde_json::to_string(items).unwrap())
}

/// The variables an instance was started with, as a deployment's environment would hold them:
/// what the command line needs to act on the same deployment.
#[derive(Debug, Clone)]
pub struct Environment(BTreeMap<&'static str, String>);

impl Environment {
    pub fn vars(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect()
    }

    pub(super) fn settings(&self) -> Settings {
        Settings::from_lookup(|name| self.0.get(name).cloned()).expect("valid settings")
    }
}
