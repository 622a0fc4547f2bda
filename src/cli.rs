//! The `latchkey` command line: parse, then hand over to the library.
//!
//! Output is for scripts as much as for people: results go to stdout, one line each (a
//! break-glass link is printed there and nowhere else); notes and errors go to stderr, and
//! any failure exits non-zero.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use diesel::prelude::*;
use secrecy::ExposeSecret as _;

use crate::audit::anchor::Anchor;
use crate::audit::chain::{self, Verification};
use crate::audit::checkpoint::{self, Publisher, Signing};
use crate::db;
use crate::domain::app_origin::AppOrigin;
use crate::domain::break_glass_reason::BreakGlassReason;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::member_name::MemberName;
use crate::domain::oidc::RedirectUri;
use crate::domain::role::Role;
use crate::forward_auth::proxy_config::{self, AppUpstream, Proxy, Upstream};
use crate::keys::Keys;
use crate::models::app::{self, Access, AppError, Saved};
use crate::models::group::{self, Change, GroupError};
use crate::models::member::{self, Added, MemberError};
use crate::models::oidc as oidc_rows;
use crate::passkeys::{self, manage::Reset};
use crate::settings::Settings;
use crate::signin::{self, BreakGlass};
use crate::startup::{open_database, resolve_secret, Application, Database, StopSignals};

/// Who the audit says made a change from the command line.
pub const CLI_ACTOR: &str = "cli";

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Passwordless sign-in gateway for small teams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate {
        /// Undo the most recently applied migration instead.
        #[arg(long)]
        revert: bool,
    },
    /// Add, list and deactivate members.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Delete expired sessions and sign-in tokens, and audit rows past retention.
    Purge,
    /// Check the login audit.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The team's groups (which apps a member may open): add, remove, list, change members.
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Register, list and remove apps (protected through forward auth, or signing in
    /// through OpenID Connect).
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Members' passkeys: reset those of the last admin, who has nobody to ask on /team.
    Passkeys {
        #[command(subcommand)]
        command: PasskeysCommand,
    },
    /// The keys that sign OpenID Connect tokens.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the effective settings, one per line (NAME=value), secrets as set or unset.
    Settings,
    /// Check the mail backend.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Break-glass: print a one-time sign-in link for an active member (any browser may use
    /// it), audited with the reason. No mail is sent.
    Link {
        #[arg(value_parser = parse_email)]
        email: EmailAddress,
        /// Why the link was made by hand; written to the audit.
        #[arg(long, value_parser = parse_reason)]
        reason: BreakGlassReason,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send a test message through LATCHKEY_EMAIL and say what happened at each step
    /// (connected, TLS, authenticated, accepted); exits non-zero unless it was accepted.
    Test {
        #[arg(value_parser = parse_email)]
        email: EmailAddress,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Add a member, or re-activate one (and set the role).
    Add {
        #[arg(value_parser = parse_email)]
        email: EmailAddress,
        #[arg(long, value_enum, default_value_t = RoleArg::Member)]
        role: RoleArg,
        /// The display name shown on pages and handed to apps; "" removes it. Left out: the
        /// name stays as it is.
        #[arg(long, value_parser = parse_member_name)]
        name: Option<NameArg>,
        /// A group to add the member to (repeatable); the groups they are in already stay.
        #[arg(long = "group", value_parser = parse_group)]
        groups: Vec<GroupName>,
    },
    /// One line per member: address, role, active or inactive, name, groups (tab-separated;
    /// an empty column when there is no name or group).
    List,
    /// Deactivate a member (never deletes): their sessions and pending links end at once.
    Remove {
        #[arg(value_parser = parse_email)]
        email: EmailAddress,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Sign OpenID Connect tokens with a new key from now on; the old key stays published
    /// for 24 hours (longer than anything it signed lives).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Register an app by its URL's origin, or update the app of that name, and say who may
    /// open it: roles and/or listed members (at least one).
    Add {
        name: String,
        /// `https://…`; `http://` only on a loopback host.
        #[arg(value_parser = parse_origin)]
        url: AppOrigin,
        /// Comma-separated roles whose members may open the app.
        #[arg(long, value_delimiter = ',', value_enum)]
        roles: Vec<RoleArg>,
        /// Comma-separated groups whose members may open the app.
        #[arg(long, value_delimiter = ',', value_parser = parse_group)]
        groups: Vec<GroupName>,
        /// A member who may open the app whatever their role (repeatable).
        #[arg(long = "member", value_parser = parse_email)]
        members: Vec<EmailAddress>,
        /// The app signs its users in through OpenID Connect (prints its client id, and a
        /// confidential client's secret, once).
        #[arg(long)]
        oidc: bool,
        /// Where the app receives its authorization code (repeatable; exact URIs).
        #[arg(long = "redirect-uri", value_parser = parse_redirect_uri, requires = "oidc")]
        redirect_uris: Vec<RedirectUri>,
        /// A public client (a single-page or native app): no secret, PKCE required.
        #[arg(long, requires = "oidc")]
        public: bool,
        /// Where the app may send the browser after signing out (repeatable).
        #[arg(long = "post-logout-redirect-uri", value_parser = parse_redirect_uri, requires = "oidc")]
        post_logout_redirect_uris: Vec<RedirectUri>,
        /// Where Latchkey posts a logout token when a session that signed in to the app ends.
        #[arg(long = "backchannel-logout-uri", value_parser = parse_redirect_uri, requires = "oidc")]
        backchannel_logout_uri: Option<RedirectUri>,
    },
    /// A new client secret for an OpenID Connect app; the old one stops working at once.
    Secret { name: String },
    /// One line per app: name, origin, how it connects (proxy or oidc), who may open it
    /// (tab-separated).
    List,
    /// Print the reverse-proxy configuration that protects an app: its site with the check,
    /// the `/.latchkey/` route and the identity headers. Values marked CHANGE-ME are yours
    /// to fill in.
    ProxyConfig {
        name: String,
        #[arg(long, value_enum)]
        proxy: ProxyArg,
        /// Where the proxy reaches Latchkey (default: http:// + LATCHKEY_BIND).
        #[arg(long, value_name = "URL", value_parser = parse_latchkey_upstream)]
        upstream: Option<Upstream>,
        /// Where the proxy reaches the app's backend (default: a CHANGE-ME placeholder).
        #[arg(long, value_name = "URL", value_parser = parse_app_upstream)]
        app_upstream: Option<Upstream>,
    },
    /// Remove an app: checks for its origin are refused at once.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Add a group (lower-case letters, digits and `-`).
    Add {
        #[arg(value_parser = parse_group)]
        name: GroupName,
    },
    /// Remove a group: its members leave it, and apps stop letting it in, at once.
    Remove {
        #[arg(value_parser = parse_group)]
        name: GroupName,
    },
    /// One line per group: name, then its members' addresses, comma-separated (tab-separated).
    List,
    /// Change who is in a group.
    Members {
        #[arg(value_parser = parse_group)]
        name: GroupName,
        /// A member to add to the group (repeatable).
        #[arg(long = "add", value_parser = parse_email)]
        add: Vec<EmailAddress>,
        /// A member to take out of the group (repeatable).
        #[arg(long = "remove", value_parser = parse_email)]
        remove: Vec<EmailAddress>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PasskeysCommand {
    /// Remove every passkey of a member (they sign in by email until they add one), audited
    /// `passkeys_reset` with the reason. For a member who lost them all when no other admin
    /// can remove them on /team.
    Reset {
        #[arg(value_parser = parse_email)]
        email: EmailAddress,
        /// Why the passkeys were removed by hand; written to the audit.
        #[arg(long, value_parser = parse_reason)]
        reason: BreakGlassReason,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and its signed checkpoints; exit non-zero naming the first broken
    /// row's id, or the checkpoint, or an anchor the chain no longer covers, if any.
    Verify {
        /// A checkpoint line kept outside the database (as `audit checkpoint` prints it, or
        /// as the log holds it); the chain must still cover it. Repeatable.
        #[arg(long = "anchor", value_name = "LINE")]
        anchor: Vec<String>,
        /// A file of such lines (LATCHKEY_AUDIT_ANCHORS, or a copy of the log): every
        /// checkpoint line in it is an anchor.
        #[arg(long = "anchors", value_name = "FILE")]
        anchors: Option<std::path::PathBuf>,
    },
    /// Write a signed checkpoint of the chain now and print it (one line, for keeping
    /// outside the database).
    Checkpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyArg {
    Nginx,
    Caddy,
    Traefik,
}

impl From<ProxyArg> for Proxy {
    fn from(proxy: ProxyArg) -> Self {
        match proxy {
            ProxyArg::Nginx => Proxy::Nginx,
            ProxyArg::Caddy => Proxy::Caddy,
            ProxyArg::Traefik => Proxy::Traefik,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Auditor,
    Member,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Auditor => Role::Auditor,
            RoleArg::Member => Role::Member,
        }
    }
}

fn parse_email(text: &str) -> Result<EmailAddress, String> {
    EmailAddress::parse(text).map_err(|e| e.to_string())
}

fn parse_redirect_uri(text: &str) -> Result<RedirectUri, String> {
    RedirectUri::parse(text).map_err(|e| e.to_string())
}

fn parse_origin(text: &str) -> Result<AppOrigin, String> {
    AppOrigin::parse_registrable(text).map_err(|e| e.to_string())
}

fn parse_latchkey_upstream(text: &str) -> Result<Upstream, String> {
    Upstream::parse("--upstream", text).map_err(|e| e.to_string())
}

fn parse_app_upstream(text: &str) -> Result<Upstream, String> {
    Upstream::parse("--app-upstream", text).map_err(|e| e.to_string())
}

fn parse_group(text: &str) -> Result<GroupName, String> {
    GroupName::parse(text).map_err(|e| e.to_string())
}

/// `--name`: a display name, or none (`--name ""` removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameArg(pub Option<MemberName>);

fn parse_member_name(text: &str) -> Result<NameArg, String> {
    MemberName::parse(text)
        .map(NameArg)
        .map_err(|e| e.to_string())
}

fn parse_reason(text: &str) -> Result<BreakGlassReason, String> {
    BreakGlassReason::parse(text).map_err(|e| e.to_string())
}

pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let signals = StopSignals::watch().context("watching for stop signals")?;
            log::info!("{}", crate::startup::settings_line(&settings));
            let app = Application::build(settings).await?;
            log::info!("listening on port {}", app.port());
            app.run_until_signalled(signals).await?;
            Ok(())
        }
        Command::Settings => {
            for (name, value) in settings.effective() {
                println!("{name}={value}");
            }
            Ok(())
        }
        Command::Mail {
            command: MailCommand::Test { email },
        } => mail_test(&settings, &email).await,
        command => actix_web::web::block(move || run_offline(command, &settings))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    }
}

/// `latchkey mail test`: each step on its own line on stdout as it happens; a failure is the
/// error (the server's own words), so the exit is non-zero. Writes no audit row: it signs
/// nobody in, and needs no database.
async fn mail_test(settings: &Settings, to: &EmailAddress) -> anyhow::Result<()> {
    let mail = crate::mail::test_mail(to, &settings.org_name)?;
    crate::mail::probe(&settings.email, &settings.email_from, &mail, |step| {
        println!("{step}");
    })
    .await
    .map_err(|e| anyhow::anyhow!("mail test to {to} failed: {e}"))
}

/// Commands that only talk to the database; run on a blocking thread.
fn run_offline(command: Command, settings: &Settings) -> anyhow::Result<()> {
    // Kept until the end: dropping it stops a private cluster.
    let database: Database = open_database(settings)?;
    let mut conn = db::connect_once(&database.url)?;
    match command {
        Command::Serve | Command::Settings | Command::Mail { .. } => {
            unreachable!("handled by run")
        }
        Command::Migrate { revert: false } => {
            let applied = db::migrations::run_pending(&mut conn)?;
            if applied.is_empty() {
                println!("no pending migrations");
            }
            for name in applied {
                println!("applied {name}");
            }
        }
        Command::Migrate { revert: true } => match db::migrations::revert_last(&mut conn)? {
            Some(name) => println!("reverted {name}"),
            None => println!("no migration to revert"),
        },
        Command::Members { command } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let writes = !matches!(command, MembersCommand::List);
            let outcome = run_members(&mut conn, settings, command);
            if writes {
                sign_what_was_added(&mut conn, &keys, settings)?;
            }
            outcome?;
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let rotated = crate::oidc::keys::rotate(&mut conn, &keys.signing_key_seal);
            sign_what_was_added(&mut conn, &keys, settings)?;
            let kid = rotated?;
            println!(
                "signing with key {kid} from now on; the previous key stays published for 24 hours"
            );
        }
        Command::Groups { command } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let writes = !matches!(command, GroupsCommand::List);
            let outcome = run_groups(&mut conn, command);
            if writes {
                sign_what_was_added(&mut conn, &keys, settings)?;
            }
            outcome?;
        }
        Command::Apps { command } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            // Reading commands append nothing, so they have nothing to sign (and a broken
            // chain, which `audit verify` reports, does not stop them).
            let writes = !matches!(command, AppsCommand::List | AppsCommand::ProxyConfig { .. });
            let outcome = run_apps(&mut conn, settings, command);
            if writes {
                sign_what_was_added(&mut conn, &keys, settings)?;
            }
            outcome?;
        }
        Command::Passkeys {
            command: PasskeysCommand::Reset { email, reason },
        } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let reset = passkeys::manage::reset(&mut conn, &email, &reason, CLI_ACTOR.into());
            sign_what_was_added(&mut conn, &keys, settings)?;
            match reset.context("removing passkeys")? {
                Reset::Removed(member, removed) => {
                    let names: Vec<String> = removed
                        .iter()
                        .map(|row| format!("{:?}", row.name))
                        .collect();
                    println!(
                        "removed {} passkey{} of {} ({}); they sign in by email until they \
                         add a new one",
                        removed.len(),
                        if removed.len() == 1 { "" } else { "s" },
                        member.email,
                        names.join(", ")
                    );
                }
                Reset::NoPasskeys(member) => {
                    println!("{} has no passkeys; nothing to reset", member.email);
                }
                Reset::NotAMember => anyhow::bail!("{email} is not a member"),
            }
        }
        Command::Purge => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let counts = crate::purge::purge(&mut conn, settings, &keys.audit)?;
            if counts.audit_rows > 0 {
                // The purge signed the chain's new start.
                if let Some(signed) = checkpoint::newest(&mut conn)? {
                    Publisher::new(settings.audit_anchors.clone()).publish(&signed);
                }
            }
            println!("deleted {counts}");
        }
        // Read-only: verifying never changes the database, not even its schema.
        Command::Audit {
            command: AuditCommand::Verify { anchor, anchors },
        } => {
            let keys = Keys::derive(&resolve_secret(settings)?);
            let mut kept = anchor
                .iter()
                .map(|line| {
                    Anchor::parse(line, &keys.audit).map_err(|e| anyhow::anyhow!("--anchor: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(file) = anchors {
                kept.extend(Anchor::read_file(&file, &keys.audit)?);
            }
            let verification = chain::verify_with_anchors(&mut conn, &keys.audit, &kept)
                .context("reading the login audit")?;
            match verification {
                Verification::Intact { .. } => println!("{verification}"),
                broken => anyhow::bail!("{broken}"),
            }
        }
        Command::Audit {
            command: AuditCommand::Checkpoint,
        } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let checkpoint =
                checkpoint::write(&mut conn, &keys.audit).context("writing an audit checkpoint")?;
            Publisher::new(settings.audit_anchors.clone()).publish(&checkpoint);
            println!("{}", checkpoint.line());
        }
        Command::Link { email, reason } => {
            migrate_quietly(&mut conn)?;
            let keys = Keys::derive(&resolve_secret(settings)?);
            let made = signin::break_glass(
                &mut conn,
                settings,
                &keys.token,
                &email,
                &reason,
                CLI_ACTOR.into(),
                chrono::Utc::now(),
            );
            sign_what_was_added(&mut conn, &keys, settings)?;
            let made = match made.context("making a break-glass link")? {
                BreakGlass::Issued(made) => made,
                BreakGlass::NotAMember => anyhow::bail!(
                    "{email} is not a member; add them with `latchkey members add` first"
                ),
                BreakGlass::Inactive => anyhow::bail!(
                    "{email} is deactivated; re-activate them with `latchkey members add` first"
                ),
            };
            println!("{}", made.link.expose_secret());
            eprintln!(
                "one-time sign-in link for {}, usable in any browser until {} UTC; \
                 hand it over on a channel you trust",
                made.member.email,
                made.request.expires_at.format("%Y-%m-%d %H:%M")
            );
        }
    }
    Ok(())
}

/// A command that appended audit rows signs them before it exits, as the server does when it
/// stops: the rows must not wait for a server that may not be running.
fn sign_what_was_added(
    conn: &mut PgConnection,
    keys: &Keys,
    settings: &Settings,
) -> anyhow::Result<()> {
    let publisher = Publisher::new(settings.audit_anchors.clone());
    match checkpoint::sign_after_command(conn, &keys.audit, &publisher)
        .context("writing an audit checkpoint")?
    {
        Signing::Broken(head) => anyhow::bail!(
            "the login audit no longer extends the checkpoint of seq {} (rows were cut off or \
             rewritten); not signing it: check it with `latchkey audit verify --anchors FILE`",
            head.seq
        ),
        Signing::Signed(_) | Signing::UpToDate => Ok(()),
    }
}

fn migrate_quietly(conn: &mut PgConnection) -> anyhow::Result<()> {
    for name in db::migrations::run_pending(conn)? {
        eprintln!("applied migration {name}");
    }
    Ok(())
}

fn run_members(
    conn: &mut PgConnection,
    settings: &Settings,
    command: MembersCommand,
) -> anyhow::Result<()> {
    match command {
        MembersCommand::Add {
            email,
            role,
            name,
            groups,
        } => {
            let role = Role::from(role);
            // All or nothing: an unknown group must not leave a member added without it.
            let (member, added, joined) = conn.transaction(|conn| {
                let (member, added) = member::add_or_reactivate(conn, &email, role, CLI_ACTOR)
                    .map_err(|e| member_error(e, &email))?;
                let member = match &name {
                    Some(NameArg(name)) => {
                        member::rename(conn, member.id, name.as_ref(), CLI_ACTOR)
                            .map_err(|e| member_error(e, &email))?
                    }
                    None => member,
                };
                let joined =
                    group::join(conn, member.id, &groups, CLI_ACTOR).map_err(group_error)?;
                anyhow::Ok((member, added, joined))
            })?;
            match added {
                Added::Created => println!("added {} as {role}", member.email),
                Added::Reactivated => println!("re-activated {} as {role}", member.email),
                Added::RoleChanged => println!("changed {} to {role}", member.email),
                Added::Unchanged => println!("{} is already an active {role}", member.email),
            }
            if let Some(NameArg(name)) = &name {
                match name {
                    Some(name) => println!("{} is called {name}", member.email),
                    None => println!("{} has no name", member.email),
                }
            }
            for group in joined {
                println!("added {} to {group}", member.email);
            }
        }
        MembersCommand::List => {
            let members = member::list(conn)?;
            if members.is_empty() {
                eprintln!("no members yet; add one with `latchkey members add EMAIL`");
            }
            for member in members {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    member.email,
                    member.role,
                    if member.active { "active" } else { "inactive" },
                    member.name.as_deref().unwrap_or(""),
                    member.groups.join(",")
                );
            }
        }
        MembersCommand::Remove { email } => {
            let Some(found) = member::find_by_email(conn, &email)? else {
                anyhow::bail!("{email} is not a member");
            };
            if !found.active {
                println!("{} is already inactive", found.email);
                return Ok(());
            }
            let member = member::deactivate(conn, found.id, CLI_ACTOR)
                .map_err(|e| member_error(e, &email))?;
            println!(
                "deactivated {}: their sessions ended and pending links were cancelled",
                member.email
            );
            if settings.admins.contains(&email) {
                eprintln!(
                    "note: {email} is listed in LATCHKEY_ADMINS, so the next `latchkey serve` \
                     makes it an active admin again; remove it there too"
                );
            }
        }
    }
    Ok(())
}

fn run_apps(
    conn: &mut PgConnection,
    settings: &Settings,
    command: AppsCommand,
) -> anyhow::Result<()> {
    match command {
        AppsCommand::Add {
            name,
            url,
            roles,
            groups,
            members,
            oidc,
            redirect_uris,
            public,
            post_logout_redirect_uris,
            backchannel_logout_uri,
        } => {
            if oidc && redirect_uris.is_empty() {
                anyhow::bail!("an OpenID Connect app needs at least one --redirect-uri");
            }
            let access = Access {
                roles: roles.into_iter().map(Role::from).collect(),
                groups,
                members,
            };
            let (saved, how) =
                app::save(conn, &name, &url, &access, CLI_ACTOR).map_err(app_error)?;
            let verb = match how {
                Saved::Added => "added",
                Saved::Changed => "changed",
                Saved::Unchanged => "unchanged:",
            };
            println!(
                "{verb} {} {} ({})",
                saved.name,
                saved.origin(),
                access.describe()
            );
            if oidc {
                let registration = oidc_rows::Registration {
                    public,
                    redirect_uris,
                    post_logout_redirect_uris,
                    backchannel_logout_uri,
                };
                let registered = oidc_rows::register(conn, saved.id, &registration, CLI_ACTOR)?;
                println!("client_id: {}", registered.client_id);
                if let Some(secret) = registered.new_secret {
                    println!("client_secret: {secret}");
                    eprintln!("the client secret is shown this once; `latchkey apps secret {}` makes a new one", saved.name);
                }
            }
        }
        AppsCommand::Secret { name } => {
            let secret = oidc_rows::rotate_secret(conn, &name, CLI_ACTOR)?;
            println!("client_secret: {secret}");
            eprintln!("the old secret stopped working; the new one is shown this once");
        }
        AppsCommand::List => {
            let apps = app::list(conn)?;
            if apps.is_empty() {
                eprintln!("no apps yet; add one with `latchkey apps add NAME URL --roles member`");
            }
            for entry in apps {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.app.name,
                    entry.app.origin(),
                    if entry.app.oidc().is_some() {
                        "oidc"
                    } else {
                        "proxy"
                    },
                    entry.describe()
                );
            }
        }
        AppsCommand::ProxyConfig {
            name,
            proxy,
            upstream,
            app_upstream,
        } => {
            let Some(found) = app::find_by_name(conn, &name)? else {
                anyhow::bail!("no app is named {name:?} (see `latchkey apps list`)");
            };
            let latchkey = upstream.unwrap_or_else(|| Upstream::from_bind(settings.bind));
            let backend = app_upstream.map_or(AppUpstream::Placeholder, AppUpstream::Given);
            let text = proxy_config::render(
                proxy.into(),
                &found.name,
                &found.origin(),
                &latchkey,
                &backend,
            )
            .with_context(|| {
                format!("the {} configuration of {}", proxy_name(proxy), found.name)
            })?;
            print!("{text}");
        }
        AppsCommand::Remove { name } => {
            let Some(found) = app::find_by_name(conn, &name)? else {
                anyhow::bail!("no app is named {name:?} (see `latchkey apps list`)");
            };
            let removed = app::remove(conn, found.id, CLI_ACTOR).map_err(app_error)?;
            println!(
                "removed {} {}: its sign-ins are refused from now on",
                removed.name,
                removed.origin()
            );
        }
    }
    Ok(())
}

fn proxy_name(proxy: ProxyArg) -> &'static str {
    Proxy::from(proxy).as_str()
}

fn run_groups(conn: &mut PgConnection, command: GroupsCommand) -> anyhow::Result<()> {
    match command {
        GroupsCommand::Add { name } => {
            match group::add(conn, &name, CLI_ACTOR).map_err(group_error)? {
                (group, Change::Made) => println!("added group {}", group.name),
                (group, Change::AlreadySo) => println!("group {} exists already", group.name),
            }
        }
        GroupsCommand::Remove { name } => {
            let removed = group::remove(conn, &name, CLI_ACTOR).map_err(group_error)?;
            println!(
                "removed group {} ({} member{} left it)",
                removed.group.name,
                removed.members.len(),
                if removed.members.len() == 1 { "" } else { "s" }
            );
        }
        GroupsCommand::List => {
            let groups = group::list(conn)?;
            if groups.is_empty() {
                eprintln!("no groups yet; add one with `latchkey groups add NAME`");
            }
            for entry in groups {
                println!("{}\t{}", entry.group.name, entry.members.join(","));
            }
        }
        GroupsCommand::Members { name, add, remove } => {
            if add.is_empty() && remove.is_empty() {
                anyhow::bail!("say whom to change: --add EMAIL and/or --remove EMAIL");
            }
            let changed = group::change_members(conn, &name, &add, &remove, CLI_ACTOR)
                .map_err(group_error)?;
            for email in changed.added {
                println!("added {email} to {name}");
            }
            for email in changed.removed {
                println!("removed {email} from {name}");
            }
            for email in changed.unchanged {
                println!("{email}: unchanged");
            }
        }
    }
    Ok(())
}

fn group_error(err: GroupError) -> anyhow::Error {
    match err {
        GroupError::Query(e) => anyhow::Error::new(e).context("updating groups"),
        GroupError::NoSuchGroup(name) => {
            anyhow::anyhow!("there is no group {name}; add it with `latchkey groups add {name}`")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

fn app_error(err: AppError) -> anyhow::Error {
    match err {
        AppError::Query(e) => anyhow::Error::new(e).context("updating apps"),
        AppError::NobodyMayOpen => anyhow::anyhow!(
            "say who may open the app: --roles admin,member, --groups ops and/or --member EMAIL"
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

fn member_error(err: MemberError, email: &EmailAddress) -> anyhow::Error {
    match err {
        MemberError::LastAdmin => anyhow::anyhow!(
            "{email} is the last active admin: make another member admin first \
             (`latchkey members add OTHER --role admin`)"
        ),
        MemberError::NotFound => anyhow::anyhow!("{email} is not a member"),
        MemberError::Query(e) => anyhow::Error::new(e).context("updating members"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["latchkey", "members", "add", " Ann@Example.ORG "]).unwrap();
        match cli.command {
            Some(Command::Members {
                command:
                    MembersCommand::Add {
                        email,
                        role,
                        name,
                        groups,
                    },
            }) => {
                assert_eq!(email.as_str(), "Ann@example.org");
                assert_eq!(role, RoleArg::Member);
                assert_eq!(name, None, "no --name leaves the name alone");
                assert!(groups.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["latchkey", "members", "add", "nope"]).is_err());
        assert!(
            Cli::try_parse_from(["latchkey", "members", "add", "a@x.org", "--role", "root"])
                .is_err()
        );
    }

    #[test]
    fn apps_add_parses_roles_and_members() {
        let cli = Cli::try_parse_from([
            "latchkey",
            "apps",
            "add",
            "wiki",
            "https://Wiki.Example.org/",
            "--roles",
            "admin,member",
            "--member",
            "a@x.org",
            "--member",
            "b@x.org",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Apps {
                command:
                    AppsCommand::Add {
                        name,
                        url,
                        roles,
                        members,
                        ..
                    },
            }) => {
                assert_eq!(name, "wiki");
                assert_eq!(url.as_str(), "https://wiki.example.org");
                assert_eq!(roles, [RoleArg::Admin, RoleArg::Member]);
                assert_eq!(members.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["latchkey", "apps", "add", "w", "ftp://x.org"]).is_err());
        assert!(Cli::try_parse_from(["latchkey", "apps", "add", "w", "https://u@x.org"]).is_err());
    }

    #[test]
    fn groups_names_and_memberships_parse_once_at_the_edge() {
        let cli = Cli::try_parse_from([
            "latchkey",
            "members",
            "add",
            "a@x.org",
            "--name",
            " Ann Lee ",
            "--group",
            "ops",
            "--group",
            "on-call",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Members {
                command: MembersCommand::Add { name, groups, .. },
            }) => {
                assert_eq!(
                    name.and_then(|NameArg(name)| name).unwrap().as_str(),
                    "Ann Lee"
                );
                let groups: Vec<&str> = groups.iter().map(GroupName::as_str).collect();
                assert_eq!(groups, ["ops", "on-call"]);
            }
            other => panic!("{other:?}"),
        }
        let cleared =
            Cli::try_parse_from(["latchkey", "members", "add", "a@x.org", "--name", ""]).unwrap();
        assert!(matches!(
            cleared.command,
            Some(Command::Members {
                command: MembersCommand::Add {
                    name: Some(NameArg(None)),
                    ..
                }
            })
        ));
        for bad in [
            vec!["members", "add", "a@x.org", "--name", "Ann\nLee"],
            vec!["members", "add", "a@x.org", "--group", "Ops"],
            vec!["groups", "add", "ops team"],
            vec!["groups", "members", "ops", "--add", "nope"],
            vec!["apps", "add", "w", "https://w.x.org", "--groups", "ops,Bad"],
        ] {
            let args = std::iter::once("latchkey").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from([
            "latchkey",
            "apps",
            "add",
            "w",
            "https://w.x.org",
            "--groups",
            "ops,editors",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Apps { command: AppsCommand::Add { groups, .. } }) if groups.len() == 2
        ));
    }

    #[test]
    fn apps_add_refuses_plain_http_off_loopback_saying_why() {
        let err = Cli::try_parse_from(["latchkey", "apps", "add", "w", "http://wiki.example.org"])
            .unwrap_err();
        assert!(err.to_string().contains("loopback hosts only"), "{err}");
        assert!(
            Cli::try_parse_from(["latchkey", "apps", "add", "w", "http://wiki.localhost:81"])
                .is_ok()
        );
    }

    #[test]
    fn proxy_config_takes_a_proxy_and_origins() {
        let cli = Cli::try_parse_from([
            "latchkey",
            "apps",
            "proxy-config",
            "Wiki",
            "--proxy",
            "caddy",
            "--upstream",
            "https://login.example.org",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Apps {
                command: AppsCommand::ProxyConfig {
                    proxy: ProxyArg::Caddy,
                    upstream: Some(_),
                    app_upstream: None,
                    ..
                }
            })
        ));
        for bad in [
            ["--proxy", "apache", "--upstream", "http://127.0.0.1:8080"],
            [
                "--proxy",
                "nginx",
                "--upstream",
                "http://127.0.0.1:8080/auth",
            ],
            ["--proxy", "nginx", "--app-upstream", "wiki:3000"],
        ] {
            let mut args = vec!["latchkey", "apps", "proxy-config", "Wiki"];
            args.extend(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_passkeys_reset_needs_an_address_and_a_reason() {
        assert!(Cli::try_parse_from(["latchkey", "passkeys", "reset", "a@x.org"]).is_err());
        assert!(
            Cli::try_parse_from(["latchkey", "passkeys", "reset", "a@x.org", "--reason", " "])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["latchkey", "passkeys", "reset", "nope", "--reason", "lost"])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "latchkey",
            "passkeys",
            "reset",
            "a@x.org",
            "--reason",
            "lost every key",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Passkeys {
                command: PasskeysCommand::Reset { reason, .. }
            }) if reason.as_str() == "lost every key"
        ));
    }

    #[test]
    fn a_link_needs_a_reason() {
        assert!(Cli::try_parse_from(["latchkey", "link", "a@x.org"]).is_err());
        assert!(Cli::try_parse_from(["latchkey", "link", "a@x.org", "--reason", "  "]).is_err());
        let cli = Cli::try_parse_from(["latchkey", "link", "a@x.org", "--reason", " lost phone "])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Link { reason, .. }) if reason.as_str() == "lost phone"
        ));
    }
}
