//! `pod`: see the library crate for the command line and the Pod process.

fn main() -> std::process::ExitCode {
    pod::main()
}
