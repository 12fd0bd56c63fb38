//! Device access through the cgroup device program: the base set for every agent, GPU nodes only
//! where `devices.gpu` grants them, every other device denied. No GPU here: fake nodes made with
//! mknod outside the agents. An allowed open of a node with no driver fails with ENXIO, after the
//! device check; a refused one with EPERM.

use std::ffi::CString;

use anyhow::ensure;
use claw_tests::harness::expect;

use super::{named, Runner, EPERM};

const ENXIO: i32 = 6;

fn make_node(path: &str, kind: libc::mode_t, major: u32, minor: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let c_path = CString::new(path)?;
    // SAFETY: mknod(2) with a valid path, outside any agent.
    let ret = unsafe { libc::mknod(c_path.as_ptr(), kind | 0o666, libc::makedev(major, minor)) };
    ensure!(
        ret == 0,
        "mknod {path}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

pub fn run(runner: &mut Runner) {
    runner.check(
        "fake_gpu_and_disk_nodes",
        (|| {
            make_node("/dev/nvidia0", libc::S_IFCHR, 195, 0)?;
            make_node("/dev/nvidiactl", libc::S_IFCHR, 195, 255)?;
            make_node("/dev/dri/renderD128", libc::S_IFCHR, 226, 128)?;
            make_node("/dev/fake-disk", libc::S_IFBLK, 8, 0)
        })(),
    );
    let gpu = named("gpu");
    let devuser = named("devuser");
    runner.check(
        "gpu_nodes_open_only_where_granted",
        (|| {
            for node in ["/dev/nvidia0", "/dev/nvidiactl", "/dev/dri/renderD128"] {
                expect(&["open", node, "rw"], Some(&gpu), ENXIO)?;
                expect(&["open", node, "rw"], Some(&devuser), EPERM)?;
                expect(&["open", node, "rw"], None, ENXIO)?;
            }
            Ok(())
        })(),
    );
    runner.check(
        "base_devices_open_for_every_agent_and_others_are_denied",
        (|| {
            expect(&["open", "/dev/null", "rw"], Some(&devuser), 0)?;
            expect(&["open", "/dev/urandom"], Some(&devuser), 0)?;
            expect(&["open", "/dev/fake-disk"], Some(&devuser), EPERM)?;
            expect(&["open", "/dev/fake-disk"], Some(&gpu), EPERM)?;
            expect(&["open", "/dev/kmsg"], Some(&devuser), EPERM)
        })(),
    );
}
