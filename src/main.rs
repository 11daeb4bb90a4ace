//! `probity`: keeps Kubernetes workloads on pinned images and honest probes.

mod cmd;

fn main() -> std::process::ExitCode {
    cmd::main()
}
