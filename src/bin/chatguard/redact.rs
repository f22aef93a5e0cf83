//! `chatguard redact`.

/// Runs the command; returns the process exit code.
pub fn run(_args: &[String]) -> u8 {
    crate::usage_error("`redact` is not implemented yet")
}
