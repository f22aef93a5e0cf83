//! The chatguard CLI: the same engine as the filter, for operators and tests.
//!
//! Exit codes: 0 success / allow / valid, 1 a negative answer (deny, invalid
//! token), 2 a usage or policy error.

mod check;
mod explain;
mod redact;
pub mod token;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  chatguard check POLICY
  chatguard explain --policy P --method M --path PATH [--claims JSON | --token JWT] [--now RFC3339]
  chatguard redact [--policy P] [--content-type T] [--stream CHUNK_BYTES] < in > out
  chatguard token verify --policy P TOKEN";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("check") => check::run(&args[1..]),
        Some("explain") => explain::run(&args[1..]),
        Some("redact") => redact::run(&args[1..]),
        Some("token") => token::run(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            0
        }
        _ => usage_error("expected a command"),
    };
    ExitCode::from(code)
}

/// Prints a usage error and returns exit code 2.
pub fn usage_error(message: &str) -> u8 {
    eprintln!("chatguard: {message}\n{USAGE}");
    2
}

/// Reads and validates a policy file, printing the error (exit 2) on failure.
pub fn load_policy(path: &str) -> Result<chatguard::config::Policy, u8> {
    let bytes = std::fs::read(path).map_err(|e| {
        eprintln!("chatguard: cannot read policy {path}: {e}");
        2u8
    })?;
    chatguard::config::Policy::from_json(&bytes).map_err(|e| {
        eprintln!("chatguard: {e}");
        2u8
    })
}

/// Returns the value following `flag` in `args`, if any.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}
