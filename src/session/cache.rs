//! What a signed-in request needs, kept in this process: live sessions (by the digest of their
//! key), their members, the registered apps, and the apps' own sessions (by the digest of the
//! app cookie's key), so that a signed-in page or a forward-auth check costs no database round
//! trip.
//!
//! The cache is only as good as its invalidation, so it is built around three rules:
//! - Every change that can end or narrow a sign-in notifies on [`CHANNEL`] from a trigger, in
//!   the same transaction as the change (migrations `live_invalidation` and `groups`): a
//!   session deleted or its sign-in state changed, a member or their groups changed, apps or
//!   who they let in changed, a group removed. Whoever makes the change (this instance,
//!   another one, the command line, psql), every instance hears it.
//! - Nothing is served from the cache unless the listener is connected. When its connection
//!   is lost, the cache is emptied and stays unused until LISTEN succeeds again, so a
//!   notification sent meanwhile cannot be missed.
//! - A value read from the database is cached only if no invalidation arrived while it was
//!   read (the [`Ticket`]), so a stale read cannot overwrite a newer invalidation.
//!
//! This instance also invalidates its own changes directly, so its next request never depends
//! on how fast its own notification comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

use super::keys;
use super::rows;
use crate::db::{Db, DbError};
use crate::domain::digests::{AppKeyDigest, OidcTokenDigest, SessionKeyDigest};
use crate::domain::ids::{MemberId, SessionId};
use crate::models::app::{self, AppRule};
use crate::models::app_session::{self, LiveAppSession};
use crate::models::member::{self, Member};
use crate::models::oidc::{self, LiveToken};
use secrecy::{ExposeSecret as _, SecretString};

/// The notification channel the triggers send on. Payloads: `s:<hex key digest>` (a session),
/// `m:<member id>` (a member), `a` (apps), `x:<hex key digest>` (an app session),
/// `t:<hex token digest>` (an OpenID Connect token), `k` (the signing keys changed), `o` (a
/// back-channel logout is owed), `all` (a table was truncated), `sync:<n>` (a barrier; see
/// [`LiveCache::next_sync`]).
pub const CHANNEL: &str = "latchkey_invalidate";
/// The listener's `application_name`, so an operator (or a test) can find its backend.
pub const LISTENER_APPLICATION_NAME: &str = "latchkey-listener";
/// Past this many sessions the cache is emptied rather than grown: a small team never gets
/// near it, and forgetting costs one query per session, never a wrong answer.
const MAX_SESSIONS: usize = 50_000;
/// How often the listener reads its socket. libpq (through diesel) offers no blocking wait,
/// so it polls: 100 cheap reads a second, and a change is seen by every instance within about
/// this long.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The listener proves its connection carries packets with a query this often...
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// ...and the cache is unused from this long after the last answered one. A connection that
/// stops carrying packets without closing (a silent network cut) leaves the heartbeat hanging:
/// requests then read the database, and a late answer counts as a lost connection (the cache
/// is emptied and the listener reconnects), since a notification may have been lost with it.
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(3);
/// How long the kernel may keep unacknowledged data before it drops the listener's TCP
/// connection (libpq's `tcp_user_timeout`), so a hung heartbeat fails in seconds, not the
/// default quarter of an hour.
const TCP_USER_TIMEOUT_MS: u32 = 4000;
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A live session as its row says, without its member.
#[derive(Debug, Clone)]
pub struct CachedSession {
    pub id: SessionId,
    pub member_id: Option<MemberId>,
    /// actix-session's state: JSON-encoded values by key.
    pub state: HashMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// Taken before a database read; the read's result may be cached only if no invalidation
/// happened since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

#[derive(Default)]
struct Entries {
    /// False while the listener is not connected: nothing is read from or written to the cache.
    listening: bool,
    /// Until when the last answered heartbeat vouches for the listener's connection; past it,
    /// the cache is unused as if the listener were gone.
    alive_until: Option<Instant>,
    /// Bumped by every invalidation.
    generation: u64,
    sessions: HashMap<SessionKeyDigest, CachedSession>,
    members: HashMap<MemberId, Member>,
    apps: Option<Arc<Vec<AppRule>>>,
    app_sessions: HashMap<AppKeyDigest, LiveAppSession>,
    oidc_tokens: HashMap<OidcTokenDigest, LiveToken>,
}

impl Entries {
    /// Whether the cache may be read and written: the listener is connected, and its last
    /// heartbeat was answered recently.
    fn usable(&self) -> bool {
        self.listening && self.alive_until.is_some_and(|until| Instant::now() < until)
    }

    fn accepts(&self, ticket: Ticket) -> bool {
        self.usable() && self.generation == ticket.0
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.sessions.clear();
        self.members.clear();
        self.apps = None;
        self.app_sessions.clear();
        self.oidc_tokens.clear();
    }
}

#[derive(Default)]
pub struct LiveCache {
    entries: Mutex<Entries>,
    /// The highest `sync:<n>` barrier the listener has seen.
    synced: AtomicU64,
    /// How often the listener's connection was lost (and the cache emptied with it).
    losses: AtomicU64,
    next_sync: AtomicU64,
    /// Lookups through [`Live`] answered from the cache, and those that went to the database.
    hits: AtomicU64,
    misses: AtomicU64,
    /// Set when the server stops: the listener then ends quietly, before the database does.
    closing: AtomicBool,
    /// How many times the signing keys changed (or might have: the listener reconnected), so
    /// that each instance reads its key ring again.
    key_changes: AtomicU64,
    /// Woken when a back-channel logout is owed (the outbox's sender waits on it).
    logouts_owed: tokio::sync::Notify,
}

impl LiveCache {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each update is one insert or remove), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.entries().generation)
    }

    /// Whether the listener is connected and answering (and so the cache in use).
    pub fn is_listening(&self) -> bool {
        self.entries().usable()
    }

    /// The live session with this key digest, if cached and not past its idle expiry. The
    /// cached expiry is never later than the row's (only writes move it forward, and this
    /// instance's own writes update the cache), so "expired" here means "ask the database".
    pub fn session(&self, digest: &SessionKeyDigest) -> Option<CachedSession> {
        let entries = self.entries();
        if !entries.usable() {
            return None;
        }
        entries
            .sessions
            .get(digest)
            .filter(|session| session.expires_at > Utc::now())
            .cloned()
    }

    pub fn member(&self, id: MemberId) -> Option<Member> {
        let entries = self.entries();
        entries
            .usable()
            .then(|| entries.members.get(&id).cloned())
            .flatten()
    }

    pub fn app_session(&self, key: &AppKeyDigest) -> Option<LiveAppSession> {
        let entries = self.entries();
        entries
            .usable()
            .then(|| entries.app_sessions.get(key).cloned())
            .flatten()
    }

    pub fn put_app_session(&self, ticket: Ticket, key: AppKeyDigest, app_session: LiveAppSession) {
        let mut entries = self.entries();
        if !entries.accepts(ticket) {
            return;
        }
        if entries.app_sessions.len() >= MAX_SESSIONS {
            entries.app_sessions.clear();
        }
        entries.app_sessions.insert(key, app_session);
    }

    pub fn forget_app_session(&self, key: &AppKeyDigest) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.app_sessions.remove(key);
    }

    pub fn oidc_token(&self, digest: &OidcTokenDigest) -> Option<LiveToken> {
        let entries = self.entries();
        entries
            .usable()
            .then(|| entries.oidc_tokens.get(digest).cloned())
            .flatten()
            .filter(|token| token.expires_at > Utc::now())
    }

    pub fn put_oidc_token(&self, ticket: Ticket, digest: OidcTokenDigest, token: LiveToken) {
        let mut entries = self.entries();
        if !entries.accepts(ticket) {
            return;
        }
        if entries.oidc_tokens.len() >= MAX_SESSIONS {
            entries.oidc_tokens.clear();
        }
        entries.oidc_tokens.insert(digest, token);
    }

    pub fn forget_oidc_token(&self, digest: &OidcTokenDigest) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.oidc_tokens.remove(digest);
    }

    /// Forgets every token of one family (a replay or a revocation ended them all; their
    /// notifications follow).
    pub fn forget_oidc_family(&self, code_id: i64) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries
            .oidc_tokens
            .retain(|_, token| token.code_id != code_id);
    }

    /// How many times the signing keys changed (or may have) as heard so far.
    pub fn key_changes(&self) -> u64 {
        self.key_changes.load(Ordering::SeqCst)
    }

    /// Woken when a session's end owes an app a back-channel logout.
    pub fn logouts_owed(&self) -> &tokio::sync::Notify {
        &self.logouts_owed
    }

    pub fn apps(&self) -> Option<Arc<Vec<AppRule>>> {
        let entries = self.entries();
        entries.usable().then(|| entries.apps.clone()).flatten()
    }

    pub fn put_session(
        &self,
        ticket: Ticket,
        digest: SessionKeyDigest,
        session: CachedSession,
        member: Option<Member>,
    ) {
        let mut entries = self.entries();
        if !entries.accepts(ticket) {
            return;
        }
        if entries.sessions.len() >= MAX_SESSIONS {
            entries.sessions.clear();
            entries.members.clear();
        }
        entries.sessions.insert(digest, session);
        if let Some(member) = member {
            entries.members.insert(member.id, member);
        }
    }

    pub fn put_member(&self, ticket: Ticket, member: Member) {
        let mut entries = self.entries();
        if entries.accepts(ticket) {
            entries.members.insert(member.id, member);
        }
    }

    pub fn put_apps(&self, ticket: Ticket, apps: Arc<Vec<AppRule>>) {
        let mut entries = self.entries();
        if entries.accepts(ticket) {
            entries.apps = Some(apps);
        }
    }

    /// Changes a cached session in place (this instance wrote the same change); false when it
    /// is not cached, for instance because it was invalidated meanwhile, which must win.
    pub fn refresh_session(
        &self,
        digest: &SessionKeyDigest,
        change: impl FnOnce(&mut CachedSession),
    ) -> bool {
        let mut entries = self.entries();
        if !entries.usable() {
            return false;
        }
        match entries.sessions.get_mut(digest) {
            // An entry past its expiry stays in the map until overwritten, but it must not be
            // moved back to life: the row may be gone by now.
            Some(session) if session.expires_at > Utc::now() => {
                change(session);
                true
            }
            _ => false,
        }
    }

    /// Forgets a session and the app sessions that live on it (their rows went with it).
    pub fn forget_session(&self, digest: &SessionKeyDigest) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.sessions.remove(digest);
        entries
            .app_sessions
            .retain(|_, app_session| app_session.session_key != *digest);
        entries
            .oidc_tokens
            .retain(|_, token| token.session_key != *digest);
    }

    /// Forgets a member and every cached session of theirs (a revocation names the session by
    /// id; forgetting all of that member's sessions costs one query each, and is rare).
    pub fn forget_member(&self, member_id: MemberId) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.members.remove(&member_id);
        entries
            .sessions
            .retain(|_, session| session.member_id != Some(member_id));
    }

    pub fn forget_apps(&self) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.apps = None;
    }

    /// Applies one notification payload from [`CHANNEL`].
    pub fn apply(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("s", digest)) => match SessionKeyDigest::from_hex(digest) {
                Some(digest) => self.forget_session(&digest),
                None => self.entries().clear(),
            },
            Some(("x", digest)) => match AppKeyDigest::from_hex(digest) {
                Some(digest) => self.forget_app_session(&digest),
                None => self.entries().clear(),
            },
            Some(("t", digest)) => match OidcTokenDigest::from_hex(digest) {
                Some(digest) => self.forget_oidc_token(&digest),
                None => self.entries().clear(),
            },
            Some(("m", id)) => match MemberId::parse(id) {
                Some(id) => self.forget_member(id),
                None => self.entries().clear(),
            },
            Some(("sync", n)) => {
                if let Ok(n) = n.parse::<u64>() {
                    self.synced.fetch_max(n, Ordering::SeqCst);
                }
            }
            _ if payload == "a" => self.forget_apps(),
            _ if payload == "k" => {
                self.key_changes.fetch_add(1, Ordering::SeqCst);
            }
            _ if payload == "o" => self.logouts_owed.notify_one(),
            // `all`, or something this version does not know: be safe.
            _ => self.entries().clear(),
        }
    }

    fn listening(&self, listening: bool) {
        if !listening {
            self.losses.fetch_add(1, Ordering::SeqCst);
        }
        // Whatever changed while nobody listened: read the keys again, look at the outbox.
        self.key_changes.fetch_add(1, Ordering::SeqCst);
        self.logouts_owed.notify_one();
        let mut entries = self.entries();
        entries.clear();
        entries.listening = listening;
        entries.alive_until = listening.then(|| Instant::now() + HEARTBEAT_DEADLINE);
    }

    /// The listener's connection answered a heartbeat just now. If the cache had lapsed
    /// meanwhile, it starts again empty: what it held was not vouched for while it lapsed.
    fn heard(&self) {
        let mut entries = self.entries();
        let now = Instant::now();
        if entries.alive_until.is_some_and(|until| until <= now) {
            entries.clear();
        }
        entries.alive_until = Some(now + HEARTBEAT_DEADLINE);
    }

    /// A fresh barrier number: send `NOTIFY latchkey_invalidate, 'sync:<n>'` after a change,
    /// and once [`LiveCache::synced_up_to`] reaches `n`, every notification committed before
    /// it has been applied (PostgreSQL delivers them in commit order).
    pub fn next_sync(&self) -> u64 {
        self.next_sync.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn synced_up_to(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// How many times the listener's connection was lost so far (each emptied the cache).
    pub fn connection_losses(&self) -> u64 {
        self.losses.load(Ordering::SeqCst)
    }

    /// Lookups answered from the cache, and lookups that read the database, so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Ends the listener before a stop takes the database away, so that losing its
    /// connection then is not reported as a fault.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // The outbox's sender waits on this; it ends too.
        self.logouts_owed.notify_one();
    }

    /// Whether the server is stopping (background work then ends quietly).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    fn counted<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }
}

/// Reads that go through the cache: a hit costs nothing, a miss one query whose answer is
/// cached for the next request.
#[derive(Clone)]
pub struct Live {
    db: Db,
    cache: Arc<LiveCache>,
}

impl Live {
    /// A cache kept current by its own listener connection to `url` (the pool's database).
    pub fn start(db: Db, url: SecretString) -> std::io::Result<Self> {
        let cache = Arc::new(LiveCache::default());
        spawn_listener(url, &cache)?;
        Ok(Self { db, cache })
    }

    pub fn cache(&self) -> &LiveCache {
        &self.cache
    }

    /// The pool behind the cache (the instance's own).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The live session whose key has this digest; on a miss, read with its member in one
    /// query.
    pub async fn session(
        &self,
        digest: &SessionKeyDigest,
    ) -> Result<Option<CachedSession>, DbError> {
        if let Some(session) = self.cache.counted(self.cache.session(digest)) {
            return Ok(Some(session));
        }
        let ticket = self.cache.ticket();
        let looked_up = *digest;
        let row = self
            .db
            .query(move |conn| rows::find_live(conn, &looked_up))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state = serde_json::from_value(row.state).map_err(|err| {
            DbError::Query(diesel::result::Error::DeserializationError(Box::new(err)))
        })?;
        let session = CachedSession {
            id: row.id,
            member_id: row.member_id,
            state,
            expires_at: row.expires_at,
        };
        self.cache
            .put_session(ticket, *digest, session.clone(), row.member);
        Ok(Some(session))
    }

    pub async fn member(&self, id: MemberId) -> Result<Option<Member>, DbError> {
        if let Some(member) = self.cache.counted(self.cache.member(id)) {
            return Ok(Some(member));
        }
        let ticket = self.cache.ticket();
        let member = self.db.query(move |conn| member::find(conn, id)).await?;
        if let Some(member) = &member {
            self.cache.put_member(ticket, member.clone());
        }
        Ok(member)
    }

    /// The live app session whose cookie key has this digest; on a miss, one query.
    pub async fn app_session(&self, key: &AppKeyDigest) -> Result<Option<LiveAppSession>, DbError> {
        if let Some(app_session) = self.cache.counted(self.cache.app_session(key)) {
            return Ok(Some(app_session));
        }
        let ticket = self.cache.ticket();
        let looked_up = *key;
        let found = self
            .db
            .query(move |conn| app_session::find_live(conn, &looked_up))
            .await?;
        if let Some(app_session) = &found {
            self.cache
                .put_app_session(ticket, *key, app_session.clone());
        }
        Ok(found)
    }

    /// The live OpenID Connect token with this digest; on a miss, one query.
    pub async fn oidc_token(&self, digest: &OidcTokenDigest) -> Result<Option<LiveToken>, DbError> {
        if let Some(token) = self.cache.counted(self.cache.oidc_token(digest)) {
            return Ok(Some(token));
        }
        let ticket = self.cache.ticket();
        let looked_up = *digest;
        let found = self
            .db
            .query(move |conn| oidc::find_live_token(conn, &looked_up))
            .await?;
        if let Some(token) = &found {
            self.cache.put_oidc_token(ticket, *digest, token.clone());
        }
        Ok(found)
    }

    pub async fn apps(&self) -> Result<Arc<Vec<AppRule>>, DbError> {
        if let Some(apps) = self.cache.counted(self.cache.apps()) {
            return Ok(apps);
        }
        let ticket = self.cache.ticket();
        let apps = Arc::new(self.db.query(app::rules).await?);
        self.cache.put_apps(ticket, apps.clone());
        Ok(apps)
    }

    /// Moves a session's idle expiry and "last seen" (Unix seconds `seen_at`): at once in the
    /// cache, and in the database off the request's path. The write only sets those two, so it
    /// commutes with any other write of the session, and it never revives an ended session.
    pub fn touch(&self, digest: &SessionKeyDigest, seen_at: i64, idle: Duration) {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX);
        let seen = seen_at.to_string();
        self.cache.refresh_session(digest, |session| {
            session
                .state
                .insert(keys::SEEN_AT.to_string(), seen.clone());
            session.expires_at = expires_at;
        });
        let db = self.db.clone();
        let digest = *digest;
        actix_web::rt::spawn(async move {
            let written = db
                .query(move |conn| rows::touch(conn, &digest, &seen, expires_at))
                .await;
            if let Err(err) = written {
                log::warn!("writing a session's last-seen time: {err}");
            }
        });
    }
}

/// Starts the listener on its own thread (it blocks on its connection, never on the async
/// executor). It stops once the cache is dropped.
pub fn spawn_listener(url: SecretString, cache: &Arc<LiveCache>) -> std::io::Result<()> {
    let cache = Arc::downgrade(cache);
    std::thread::Builder::new()
        .name(LISTENER_APPLICATION_NAME.into())
        .spawn(move || listen(&url, &cache))
        .map(drop)
}

fn listen(url: &SecretString, cache: &Weak<LiveCache>) {
    let mut backoff = RECONNECT_MIN;
    let mut logged_down = false;
    loop {
        match connect(url) {
            Ok(mut conn) => {
                let Some(live) = cache.upgrade() else { return };
                live.listening(true);
                drop(live);
                if logged_down {
                    log::info!("session cache: listening again on {CHANNEL}");
                    logged_down = false;
                }
                backoff = RECONNECT_MIN;
                let err = relay(&mut conn, cache);
                let Some(live) = cache.upgrade() else { return };
                live.listening(false);
                if live.closing.load(Ordering::SeqCst) {
                    return;
                }
                drop(live);
                if let Some(err) = err {
                    log::warn!("session cache: listener connection lost ({err}); cache emptied and unused until it is back");
                    logged_down = true;
                }
            }
            Err(err) => {
                if cache
                    .upgrade()
                    .is_none_or(|live| live.closing.load(Ordering::SeqCst))
                {
                    return;
                }
                if !logged_down {
                    log::warn!(
                        "session cache: cannot listen ({err}); serving from the database meanwhile"
                    );
                    logged_down = true;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

fn connect(url: &SecretString) -> diesel::ConnectionResult<PgConnection> {
    let mut conn = PgConnection::establish(&with_tcp_user_timeout(url.expose_secret()))?;
    let setup = format!("SET application_name = '{LISTENER_APPLICATION_NAME}'; LISTEN {CHANNEL}");
    conn.batch_execute(&setup)
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// The database URL with libpq's `tcp_user_timeout` added (a URL libpq reads as key=value
/// pairs, or one the `url` crate cannot parse, is left as it is: the heartbeat deadline still
/// keeps the cache honest, only the reconnect is slower).
fn with_tcp_user_timeout(database_url: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
            if !parsed
                .query_pairs()
                .any(|(key, _)| key == "tcp_user_timeout")
            {
                parsed
                    .query_pairs_mut()
                    .append_pair("tcp_user_timeout", &TCP_USER_TIMEOUT_MS.to_string());
            }
            parsed.into()
        }
        _ => database_url.to_string(),
    }
}

/// A heartbeat that came back, but later than the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the heartbeat took {0:?}")]
struct LateHeartbeat(Duration);

/// Applies notifications until the connection fails (`Some(error)`) or the cache is dropped.
fn relay(conn: &mut PgConnection, cache: &Weak<LiveCache>) -> Option<diesel::result::Error> {
    let mut since_heartbeat = Duration::ZERO;
    loop {
        let live = cache.upgrade()?;
        if live.closing.load(Ordering::SeqCst) {
            return None;
        }
        for notification in conn.notifications_iter() {
            match notification {
                Ok(notification) => live.apply(&notification.payload),
                Err(err) => return Some(err),
            }
        }
        drop(live);
        std::thread::sleep(POLL_INTERVAL);
        since_heartbeat += POLL_INTERVAL;
        if since_heartbeat >= HEARTBEAT_INTERVAL {
            since_heartbeat = Duration::ZERO;
            let started = Instant::now();
            if let Err(err) = diesel::sql_query("SELECT 1").execute(conn) {
                return Some(err);
            }
            let took = started.elapsed();
            if took >= HEARTBEAT_DEADLINE {
                return Some(diesel::result::Error::QueryBuilderError(Box::new(
                    LateHeartbeat(took),
                )));
            }
            cache.upgrade()?.heard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SessionKeyDigest {
        SessionKeyDigest::new([n; 32])
    }

    fn session(id: i64, member_id: i64) -> CachedSession {
        CachedSession {
            id: SessionId::new(id),
            member_id: Some(MemberId::new(member_id)),
            state: HashMap::new(),
            expires_at: Utc::now() + chrono::Duration::minutes(5),
        }
    }

    fn listening_cache() -> LiveCache {
        let cache = LiveCache::default();
        cache.listening(true);
        cache
    }

    #[test]
    fn the_cache_is_unused_once_the_heartbeat_is_overdue() {
        let cache = listening_cache();
        cache.put_session(cache.ticket(), key(1), session(1, 7), None);
        assert!(cache.session(&key(1)).is_some());
        cache.entries().alive_until = Some(Instant::now());
        assert!(
            cache.session(&key(1)).is_none(),
            "no answer in time: not served"
        );
        assert!(!cache.is_listening());
        let ticket = cache.ticket();
        cache.put_session(ticket, key(2), session(2, 7), None);
        cache.heard();
        assert!(
            cache.session(&key(2)).is_none(),
            "nothing was stored meanwhile"
        );
        assert!(
            cache.session(&key(1)).is_none(),
            "a lapsed cache starts again empty"
        );
        assert!(cache.is_listening());
    }

    #[test]
    fn the_listener_asks_the_kernel_to_drop_a_silent_connection() {
        assert_eq!(
            with_tcp_user_timeout("postgres://u@db.example:5432/latchkey"),
            "postgres://u@db.example:5432/latchkey?tcp_user_timeout=4000"
        );
        assert_eq!(
            with_tcp_user_timeout("postgres://u@db/x?sslmode=require"),
            "postgres://u@db/x?sslmode=require&tcp_user_timeout=4000"
        );
        assert_eq!(
            with_tcp_user_timeout("postgres://u@db/x?tcp_user_timeout=100"),
            "postgres://u@db/x?tcp_user_timeout=100"
        );
        assert_eq!(
            with_tcp_user_timeout("host=/run/x dbname=y"),
            "host=/run/x dbname=y"
        );
    }

    #[test]
    fn nothing_is_cached_or_served_while_not_listening() {
        let cache = LiveCache::default();
        cache.put_session(cache.ticket(), key(1), session(1, 7), None);
        assert!(cache.session(&key(1)).is_none());
        let cache = listening_cache();
        cache.put_session(cache.ticket(), key(1), session(1, 7), None);
        assert!(cache.session(&key(1)).is_some());
        cache.listening(false);
        assert!(cache.session(&key(1)).is_none());
        cache.listening(true);
        assert!(cache.session(&key(1)).is_none(), "a reconnect starts empty");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = listening_cache();
        let ticket = cache.ticket();
        cache.apply(&format!("s:{}", hex::encode(key(9).as_bytes())));
        cache.put_session(ticket, key(1), session(1, 7), None);
        assert!(cache.session(&key(1)).is_none());
    }

    #[test]
    fn notifications_forget_what_they_name() {
        let cache = listening_cache();
        cache.put_session(cache.ticket(), key(1), session(1, 7), None);
        cache.put_session(cache.ticket(), key(2), session(2, 8), None);
        cache.apply(&format!("s:{}", hex::encode(key(1).as_bytes())));
        assert!(cache.session(&key(1)).is_none());
        assert!(cache.session(&key(2)).is_some());
        cache.apply("m:8");
        assert!(
            cache.session(&key(2)).is_none(),
            "a member's sessions go with them"
        );
        cache.put_apps(cache.ticket(), Arc::new(Vec::new()));
        assert!(cache.apps().is_some());
        cache.apply("a");
        assert!(cache.apps().is_none());
        cache.put_session(cache.ticket(), key(3), session(3, 9), None);
        cache.apply("something new");
        assert!(
            cache.session(&key(3)).is_none(),
            "an unknown payload empties the cache"
        );
    }

    #[test]
    fn app_sessions_are_forgotten_by_name_and_with_their_session() {
        let cache = listening_cache();
        let app_key = |n: u8| AppKeyDigest::new([n; 32]);
        let on = |session: u8| LiveAppSession {
            id: crate::domain::ids::AppSessionId::new(i64::from(session)),
            app_id: crate::domain::ids::AppId::new(1),
            session_key: key(session),
        };
        cache.put_app_session(cache.ticket(), app_key(1), on(1));
        cache.put_app_session(cache.ticket(), app_key(2), on(2));
        cache.put_app_session(cache.ticket(), app_key(3), on(3));
        cache.apply(&format!("x:{}", hex::encode(app_key(1).as_bytes())));
        assert!(cache.app_session(&app_key(1)).is_none());
        assert!(cache.app_session(&app_key(2)).is_some());
        cache.apply(&format!("s:{}", hex::encode(key(2).as_bytes())));
        assert!(
            cache.app_session(&app_key(2)).is_none(),
            "its session ended"
        );
        assert!(cache.app_session(&app_key(3)).is_some());
        cache.apply("all");
        assert!(cache.app_session(&app_key(3)).is_none());
    }

    #[test]
    fn an_expired_entry_is_not_served() {
        let cache = listening_cache();
        let mut expired = session(1, 7);
        expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
        cache.put_session(cache.ticket(), key(1), expired, None);
        assert!(cache.session(&key(1)).is_none());
    }

    #[test]
    fn an_expired_session_is_not_refreshed_back_to_life() {
        let cache = listening_cache();
        let mut expired = session(1, 7);
        expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
        cache.put_session(cache.ticket(), key(1), expired, None);
        assert!(!cache.refresh_session(&key(1), |s| {
            s.expires_at = Utc::now() + chrono::Duration::minutes(5)
        }));
        assert!(cache.session(&key(1)).is_none());
    }

    #[test]
    fn an_invalidated_session_is_not_refreshed_back() {
        let cache = listening_cache();
        cache.put_session(cache.ticket(), key(1), session(1, 7), None);
        cache.forget_session(&key(1));
        assert!(!cache.refresh_session(&key(1), |_| {}));
        assert!(cache.session(&key(1)).is_none());
    }

    #[test]
    fn barriers_are_recorded() {
        let cache = LiveCache::default();
        let n = cache.next_sync();
        assert!(cache.synced_up_to() < n);
        cache.apply(&format!("sync:{n}"));
        assert_eq!(cache.synced_up_to(), n);
    }
}
