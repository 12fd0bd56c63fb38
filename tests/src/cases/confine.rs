//! What would step around the rules, denied to agents: raw and packet sockets, mounts, chroot,
//! and Unix sockets but those whose file the agent may write.

use std::os::{
    linux::net::SocketAddrExt as _,
    unix::net::{SocketAddr, UnixDatagram, UnixListener},
};

use anyhow::ensure;

use super::{tools, Runner, EPERM};
use claw_tests::harness::expect;

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "raw_and_packet_sockets_are_eperm",
        (|| {
            expect(&["raw-socket"], inside, EPERM)?;
            expect(&["packet-socket"], inside, EPERM)?;
            expect(&["raw-socket"], None, 0)
        })(),
    );
    runner.check(
        "bind_mount_and_chroot_are_eperm",
        (|| {
            std::fs::create_dir_all("/workspace/mnt")?;
            expect(&["bind-mount", "/etc", "/workspace/mnt"], inside, EPERM)?;
            ensure!(
                !std::path::Path::new("/workspace/mnt/secret").exists(),
                "/etc got bound"
            );
            expect(&["chroot", "/workspace"], inside, EPERM)
        })(),
    );
    runner.check(
        "unix_sockets_need_write_on_their_file",
        (|| {
            let _allowed = UnixListener::bind("/workspace/ok.sock")?;
            let _other = UnixListener::bind("/tmp/other.sock")?;
            let _abstract = UnixListener::bind_addr(&SocketAddr::from_abstract_name("claw-test")?)?;
            let _datagram = UnixDatagram::bind("/tmp/other-dgram.sock")?;
            expect(&["unix-connect", "/workspace/ok.sock"], inside, 0)?;
            expect(&["unix-connect", "/tmp/other.sock"], inside, EPERM)?;
            expect(&["unix-connect", "/run/claw/claw.sock"], inside, EPERM)?;
            expect(&["unix-connect", "@claw-test"], inside, EPERM)?;
            expect(&["unix-sendto", "/tmp/other-dgram.sock"], inside, EPERM)?;
            expect(&["unix-connect", "/tmp/other.sock"], None, 0)?;
            expect(&["unix-connect", "@claw-test"], None, 0)?;
            for path in [
                "/workspace/ok.sock",
                "/tmp/other.sock",
                "/tmp/other-dgram.sock",
            ] {
                std::fs::remove_file(path)?;
            }
            Ok(())
        })(),
    );
}
