//! `polybot-host`: a thin binary over the library; see `cli`.

fn main() -> std::process::ExitCode {
    polybot_host::cli::main()
}
