//! `chatguard check`.

/// Runs the command; returns the process exit code.
pub fn run(_args: &[String]) -> u8 {
    crate::usage_error("`check` is not implemented yet")
}
