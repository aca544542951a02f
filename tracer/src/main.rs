//! The `ktrace` binary.
fn main() {}
