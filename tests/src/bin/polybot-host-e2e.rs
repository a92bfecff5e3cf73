//! The `polybot-host` command line, built inside this package so the
//! end-to-end tests can run it as a process (`CARGO_BIN_EXE_polybot-host-e2e`).

fn main() -> std::process::ExitCode {
    polybot_host::cli::main()
}
