// The allocator is chosen here, not in the library, so tests and other binaries linking it
// choose their own.
rollcall::global_allocator!();

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
