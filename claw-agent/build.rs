//! Builds claw-ebpf for the BPF target with nightly, so that plain `cargo build` yields a daemon
//! with its kernel programs embedded (from OUT_DIR).
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let metadata_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("claw-agent has a parent directory")?
        .join("claw-ebpf");
    let root_dir = metadata_root.to_str().context("workspace path is UTF-8")?;
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
