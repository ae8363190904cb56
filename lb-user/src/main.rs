//! `xdplb`: the agent and its command line (`cli`).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use lb_user::agent::Refused;

fn main() -> ExitCode {
    lb_user::logging::init();
    let cli = cli::Cli::parse();
    match cli::dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("xdplb: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("xdplb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
