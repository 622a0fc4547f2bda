//! The `latchkey` command line: parse, then hand over to the library.

use clap::{Parser, Subcommand};

use crate::db;
use crate::settings::Settings;
use crate::startup::{open_database, Application, Database};

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
    /// Delete expired sessions and sign-in tokens, and audit rows past retention.
    Purge,
}

pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            log::info!("listening on port {}", app.port());
            app.run_until_stopped().await?;
            Ok(())
        }
        command => actix_web::web::block(move || run_offline(command, &settings))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    }
}

/// Commands that only talk to the database; run on a blocking thread.
fn run_offline(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let database: Database = open_database(settings)?;
    let mut conn = db::connect_once(&database.url)?;
    match command {
        Command::Serve => unreachable!("serve is handled by run"),
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
        Command::Purge => {
            db::migrations::run_pending(&mut conn)?;
            let counts = crate::purge::purge(&mut conn, settings)?;
            println!("deleted {counts}");
        }
    }
    Ok(())
}
