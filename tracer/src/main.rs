//! The `ktrace` binary: parses arguments and runs a subcommand. Library code
//! returns typed errors; here they become messages and an exit status.

#![allow(
    unused_crate_dependencies,
    reason = "the package's dependencies are the library's; `main` only calls into it (its own, mimalloc and env_logger, are named in lib.rs)"
)]

use std::process::ExitCode;

use ktrace::cli::{Cli, Command, agent, dns, doctor, drops, kubectl, programs, record, replay, shell};

// Per-event allocations dominate userspace cost; mimalloc's thread-local
// free lists make them several times cheaper than glibc's (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Also `kubectl ktrace …`, by argv[0] (cli::kubectl).
    let cli = Cli::parse_env();
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Some(w) = cli.global.apply_bpf_log() {
        eprintln!("{}: {w}", kubectl::program());
    }
    if let Some(n) = cli.global.retired_sched_flags() {
        eprintln!("{}: {n}", kubectl::program());
    }
    if let Err(e) = cli.global.apply_sched() {
        eprintln!("{}: --sched-idle: {e}", kubectl::program());
        return ExitCode::FAILURE;
    }
    let r = match &cli.cmd {
        Command::Dns(a) => dns::run(&cli.global, a),
        Command::Drops(a) => drops::run(&cli.global, a),
        Command::Record(a) => record::run(&cli.global, a),
        Command::Replay(a) => replay::run(&cli.global, a),
        Command::Doctor => doctor::run(&cli.global),
        Command::Programs => programs::run(&cli.global),
        Command::Agent(a) => agent::run(&cli.global, a),
        Command::Completions(a) => {
            shell::completions(a, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Man(a) => shell::man(a, &mut std::io::stdout().lock()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", kubectl::program());
            ExitCode::FAILURE
        }
    }
}
