//! `keygate`: operate keygate's keys and tenants from the command line, on SQLite or
//! PostgreSQL, without writing Rust.
//!
//! `keygate --help` lists the commands. Exit codes: 0 done, 1 database or runtime error,
//! 2 usage error or invalid input, 3 not found, 4 conflict. A secret is printed once, on
//! stdout, by the commands that make one (`key issue`, `key rotate`, `tenant create
//! --admin-key`); never in an error. A secret that cannot be printed is taken back with its
//! key (exit 1).

mod args;
mod commands;
mod error;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(json, &CliError::new(error::Kind::Runtime, e.to_string())),
    };
    let print = |out: &output::Output| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.render(json).as_bytes())
            .and_then(|()| stdout.flush())
    };
    match runtime.block_on(commands::run(cli, print)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(json, &e),
    }
}

/// Prints `error` as one line on stderr, and gives its exit code.
fn fail(json: bool, error: &CliError) -> ExitCode {
    // One line, whatever the message holds.
    let message = error.message.replace(['\n', '\r'], " ");
    let line = if json {
        serde_json::json!({"error": {"code": error.kind.code(), "message": message}}).to_string()
    } else {
        format!("error: {message}")
    };
    eprintln!("{line}");
    error.kind.exit_code()
}
