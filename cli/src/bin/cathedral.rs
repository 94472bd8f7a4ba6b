//! `cathedral`: the client CLI. See `cathedral --help`; the commands are in
//! `cathedral_cli::cmd`.

use std::process::ExitCode;

use cathedral_cli::client::{exit, CliError};
use cathedral_cli::cmd::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    let result = if cli.needs_server() {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(cmd::run(cli)),
            Err(e) => Err(CliError::new(exit::FAILED, e.to_string())),
        }
    } else {
        cmd::run_local(cli)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cathedral: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A reader that stops early (`cathedral list | head`) ends this process quietly, with
/// the status a Unix filter killed by SIGPIPE has (141), instead of a panic message.
/// (Not by restoring SIGPIPE's default: a write to a closed socket would then kill the
/// process instead of failing the call.)
fn quiet_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}
