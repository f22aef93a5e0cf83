//! The chatguard CLI: the same engine, for operators and tests.
fn main() {}
