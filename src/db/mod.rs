//! PostgreSQL access: the pool, migrations, and the bridge from async handlers to diesel.

pub mod availability;
pub mod embedded;
pub mod migrations;

use std::time::Duration;

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::PgConnection;

use secrecy::{ExposeSecret as _, SecretString};

use crate::logging::request_id::RequestId;
use availability::note_database_unavailable;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// How long a request waits for a pooled connection before it is answered 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// Initialises the system's OpenSSL, which libpq uses for TLS to PostgreSQL, before the first
/// connection. By default OpenSSL frees its state in an `atexit` handler, and a thread still
/// inside a TLS read when the process exits (the session cache's listener, a blocking-pool
/// worker) then crashes it: a clean exit would end in SIGSEGV. `openssl_sys::init` asks for
/// `OPENSSL_INIT_NO_ATEXIT`, and only the first initialisation decides, so this must run
/// before anything opens a connection.
pub fn init_tls() {
    openssl_sys::init();
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (database down, pool exhausted): the client should retry.
    #[error("the database is unavailable")]
    Unavailable(#[source] r2d2::Error),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The blocking task was cancelled or panicked.
    #[error("the database task did not complete")]
    Task,
}

impl DbError {
    /// True for failures where the database, not the request, is at fault.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) | DbError::Task => true,
            DbError::Query(diesel::result::Error::DatabaseError(kind, _)) => matches!(
                kind,
                diesel::result::DatabaseErrorKind::UnableToSendCommand
                    | diesel::result::DatabaseErrorKind::ClosedConnection
            ),
            DbError::Query(_) => false,
        }
    }
}

/// How many connections the pool holds: open ones (idle or lent out), and at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// The shared pool; every query from the async world goes through [`Db::run`].
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// Round trips made through [`Db::run`]: what the session cache saves is counted here.
    round_trips: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Db {
    /// Builds the pool without connecting, so a database that is down at start-up (or later)
    /// turns into quick 503s rather than a crash.
    pub fn connect_lazy(url: &SecretString, max_size: u32) -> Self {
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // No validation query per checkout (it would add a round trip to every query);
            // instead a connection whose query failed is pinged, and dropped if it is dead.
            .test_on_check_out(false)
            .build_unchecked(ConnectionManager::new(url.expose_secret()));
        Self {
            pool,
            round_trips: Default::default(),
        }
    }

    /// The pool's connections now, for `/metrics`.
    pub fn pool_use(&self) -> PoolUse {
        let state = self.pool.state();
        PoolUse {
            open: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// How many times this pool (and its clones) went to the database.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs blocking diesel work on actix's blocking thread pool, never on the executor.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: DbFailure + Send + 'static,
    {
        let pool = self.pool.clone();
        self.round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = RequestId::current();
        let outcome = actix_web::web::block(move || {
            RequestId::carry(request, || {
                pool.get_timeout(CHECKOUT_TIMEOUT).map(|mut conn| {
                    let result = work(&mut conn);
                    let dead = result.as_ref().is_err_and(DbFailure::is_database_failure)
                        && discard_if_dead(&mut conn);
                    (result, dead)
                })
            })
        })
        .await;
        match outcome {
            Ok(Ok((result, dead))) => {
                if dead {
                    // The query failed because the server went away (a restart, a cut
                    // connection): the answer is 503, not 500.
                    note_database_unavailable();
                }
                result
            }
            Ok(Err(pool_error)) => {
                note_database_unavailable();
                Err(E::from(DbError::Unavailable(pool_error)))
            }
            Err(_) => {
                note_database_unavailable();
                Err(E::from(DbError::Task))
            }
        }
    }

    /// [`Db::run`] for work that only queries: diesel's `QueryResult` in, `DbError` out.
    pub async fn query<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.run(move |conn| work(conn).map_err(DbError::from))
            .await
    }

    /// One trivial round trip: whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        use diesel::RunQueryDsl as _;
        self.query(|conn| diesel::sql_query("SELECT 1").execute(conn).map(drop))
            .await
    }
}

/// An error [`Db::run`] can hand back: the database's own failures, and whether this one is
/// such a failure (then the connection is checked) or a refusal of the request (a name
/// taken, the last admin), which needs no round trip to the server.
pub trait DbFailure: From<DbError> {
    fn is_database_failure(&self) -> bool;
}

impl DbFailure for DbError {
    fn is_database_failure(&self) -> bool {
        true
    }
}

/// After a failed query: if the server no longer answers, marks the connection broken so
/// that r2d2 drops it instead of handing it out again (diesel only notices a broken
/// connection by itself inside a transaction). Without this, every pooled connection would
/// keep failing after a PostgreSQL restart. Returns whether it was dead.
fn discard_if_dead(conn: &mut PgConn) -> bool {
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    use diesel::r2d2::R2D2Connection as _;
    if conn.ping().is_ok() {
        return false;
    }
    AnsiTransactionManager::transaction_manager_status_mut(&mut **conn).set_in_error();
    true
}

/// Establishes a single connection, for the command line.
pub fn connect_once(url: &SecretString) -> anyhow::Result<PgConnection> {
    use anyhow::Context as _;
    use diesel::Connection as _;
    PgConnection::establish(url.expose_secret()).context("connecting to PostgreSQL (DATABASE_URL)")
}
