fn main() -> std::process::ExitCode {
    eaglerank::cli::main()
}
