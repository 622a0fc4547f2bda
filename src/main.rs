use clap::Parser as _;

use latchkey::cli::{self, Cli};
use latchkey::settings::Settings;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    latchkey::db::init_tls();
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("latchkey: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    latchkey::logging::init("info", settings.log_format);
    let outcome = cli::run(cli, settings).await;
    latchkey::logging::flush();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
