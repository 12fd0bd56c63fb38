//! Builds claw-ebpf for the BPF target with nightly, so that plain `cargo build` yields a daemon
//! with its kernel programs embedded (from OUT_DIR).
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let metadata_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("claw-agent has a parent directory")?
        .join("claw-ebpf");
    let root_dir = metadata_root.to_str().context("workspace path is UTF-8")?;
    // BPF CPU v3 (kernel 5.12+; claw needs 6.1): the programs number their records with an
    // atomic fetch-and-add, which rustc's default `generic` (v1) cannot use the result of.
    // aya-build sets the rustflags itself, so the flag goes in through the release profile of
    // the cargo it runs, which inherits this environment.
    // SAFETY: the build script is single-threaded.
    unsafe {
        std::env::set_var("CARGO_UNSTABLE_PROFILE_RUSTFLAGS", "true");
        std::env::set_var("CARGO_PROFILE_RELEASE_RUSTFLAGS", "-C target-cpu=v3");
        // Not for the host's build scripts and macros.
        std::env::set_var("CARGO_PROFILE_RELEASE_BUILD_OVERRIDE_RUSTFLAGS", "");
    }
    // aya-build watches claw-ebpf only; the programs also compile claw-common's layouts.
    println!(
        "cargo:rerun-if-changed={}",
        metadata_root.with_file_name("claw-common").display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "claw-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
