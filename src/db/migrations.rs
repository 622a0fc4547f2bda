//! The schema's history, embedded in the binary so `latchkey migrate` needs no diesel CLI.

use diesel::pg::Pg;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Applies every pending migration; returns the names of those applied.
pub fn run_pending(conn: &mut impl MigrationHarness<Pg>) -> anyhow::Result<Vec<String>> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e: BoxError| anyhow::anyhow!("applying migrations: {e}"))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Undoes the most recently applied migration; `None` when there was none.
pub fn revert_last(conn: &mut impl MigrationHarness<Pg>) -> anyhow::Result<Option<String>> {
    let applied = conn
        .applied_migrations()
        .map_err(|e: BoxError| anyhow::anyhow!("reading applied migrations: {e}"))?;
    if applied.is_empty() {
        return Ok(None);
    }
    let reverted = conn
        .revert_last_migration(MIGRATIONS)
        .map_err(|e: BoxError| anyhow::anyhow!("reverting the last migration: {e}"))?;
    Ok(Some(reverted.to_string()))
}

/// Undoes every applied migration, newest first.
pub fn revert_all(conn: &mut impl MigrationHarness<Pg>) -> anyhow::Result<usize> {
    let reverted = conn
        .revert_all_migrations(MIGRATIONS)
        .map_err(|e: BoxError| anyhow::anyhow!("reverting migrations: {e}"))?;
    Ok(reverted.len())
}
