//! Builds claw-ebpf for the BPF target with nightly, so that plain `cargo build` yields a daemon
//! with its kernel programs embedded (from OUT_DIR).
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let metadata_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("claw-agent has a parent directory")?
        .join("claw-ebpf");
    let root_dir = metadata_root.to_str().context("workspace path is UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "claw-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
