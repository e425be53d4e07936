#![forbid(unsafe_code)]

use clap::Parser;
use tracking_operator::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match tracking_operator::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tracking-operator: cannot render the CRD: {err}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
