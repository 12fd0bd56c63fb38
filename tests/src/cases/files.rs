//! File rules in the kernel: read and write opens, every mutation, and the ways around path
//! rules people try — symlinks, hard links, `..`, /proc/self/fd, O_PATH, renames.

use std::os::unix::process::CommandExt as _;

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, in_cgroup, VMTEST};

use super::{tools, Runner, ALLOWED_FILE, DENIED_FILE, EPERM};

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "watching_a_path_needs_a_read_rule",
        (|| {
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "tools", "--op", "notify",
            ])?;
            expect(&["inotify", "/workspace"], inside, 0)?;
            expect(&["inotify", ALLOWED_FILE], inside, 0)?;
            expect(&["inotify", "/etc"], inside, EPERM)?;
            expect(&["inotify", DENIED_FILE], inside, EPERM)?;
            expect(&["inotify", "/etc"], None, 0)?;
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"") && line.contains("\"path\":\"/etc")
                })
                .context("no notify deny event for tools")?;
            Ok(())
        })(),
    );
    runner.check(
        "timestamps_and_user_xattrs_need_a_write_rule",
        (|| {
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "tools", "--op", "times",
            ])?;
            expect(&["touch", ALLOWED_FILE], inside, 0)?;
            expect(&["futimens", ALLOWED_FILE], inside, 0)?;
            expect(&["touch", DENIED_FILE], inside, EPERM)?;
            // Readable, not writable: the descriptor's mount is the one recorded.
            expect(&["futimens", "/usr/bin/true"], inside, EPERM)?;
            expect(&["setxattr", "/usr/bin/true", "user.note"], inside, EPERM)?;
            // Inode flags: only through a descriptor open for writing.
            expect(&["set-flags", "/usr/bin/true"], inside, EPERM)?;
            let (_, code) = claw_tests::harness::probe(&["set-flags-rw", ALLOWED_FILE], inside)?;
            ensure!(code != EPERM, "flags of a writable file: EPERM");
            let (_, code) = claw_tests::harness::probe(&["set-flags", "/usr/bin/true"], None)?;
            ensure!(code != EPERM, "flags outside agents: EPERM");
            expect(&["touch", DENIED_FILE], None, 0)?;
            expect(&["futimens", "/usr/bin/true"], None, 0)?;
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"")
                        && line.contains(&format!("\"path\":\"{DENIED_FILE}\""))
                })
                .context("no times deny event for tools")?;
            Ok(())
        })(),
    );
    runner.check(
        "write_open_needs_write_rule",
        (|| {
            expect(&["open", "/usr/bin/true", "w"], inside, EPERM)?;
            expect(&["open", "/usr/bin/true", "rw"], inside, EPERM)?;
            expect(&["open", ALLOWED_FILE, "rw"], inside, 0)?;
            expect(&["open", "/usr/bin/true", "w"], None, 0)
        })(),
    );
    runner.check(
        "create_needs_write_rule",
        (|| {
            expect(&["create", "/workspace/new.txt"], inside, 0)?;
            expect(&["create", "/etc/new.txt"], inside, EPERM)?;
            ensure!(
                !std::path::Path::new("/etc/new.txt").exists(),
                "/etc/new.txt was created"
            );
            expect(&["create", "/etc/new.txt"], None, 0)
        })(),
    );
    runner.check(
        "mkdir_rmdir_unlink_need_write_rule",
        (|| {
            expect(&["mkdir", "/workspace/d"], inside, 0)?;
            expect(&["rmdir", "/workspace/d"], inside, 0)?;
            expect(&["mkdir", "/etc/d"], inside, EPERM)?;
            std::fs::create_dir_all("/etc/keep.d")?;
            expect(&["rmdir", "/etc/keep.d"], inside, EPERM)?;
            expect(&["unlink", "/workspace/new.txt"], inside, 0)?;
            expect(&["unlink", DENIED_FILE], inside, EPERM)?;
            ensure!(
                std::path::Path::new(DENIED_FILE).exists(),
                "{DENIED_FILE} was removed"
            );
            Ok(())
        })(),
    );
    runner.check(
        "truncate_chmod_chown_need_write_rule",
        (|| {
            for op in ["truncate", "chmod", "chown"] {
                expect(&[op, DENIED_FILE], inside, EPERM)?;
                expect(&[op, ALLOWED_FILE], inside, 0)?;
            }
            ensure!(
                std::fs::read(DENIED_FILE)? == b"s3cr3t\n",
                "{DENIED_FILE} was truncated"
            );
            std::fs::write(ALLOWED_FILE, "hello\n")?;
            Ok(())
        })(),
    );
    runner.check(
        "symlink_to_forbidden_file_does_not_open_it",
        (|| {
            expect(&["symlink", DENIED_FILE, "/workspace/link"], inside, 0)?;
            expect(&["open", "/workspace/link"], inside, EPERM)?;
            expect(&["unlink", "/workspace/link"], inside, 0)
        })(),
    );
    runner.check(
        "hard_link_to_forbidden_file_is_refused",
        (|| {
            expect(&["link", DENIED_FILE, "/workspace/hard"], inside, EPERM)?;
            ensure!(
                !std::path::Path::new("/workspace/hard").exists(),
                "the link exists"
            );
            expect(&["link", ALLOWED_FILE, "/workspace/hard"], inside, 0)?;
            expect(&["unlink", "/workspace/hard"], inside, 0)
        })(),
    );
    runner.check(
        "rename_forbidden_file_into_allowed_dir_is_refused",
        (|| {
            expect(&["rename", DENIED_FILE, "/workspace/stolen"], inside, EPERM)?;
            ensure!(
                std::path::Path::new(DENIED_FILE).exists(),
                "{DENIED_FILE} moved"
            );
            expect(&["rename", ALLOWED_FILE, "/workspace/moved.txt"], inside, 0)?;
            expect(&["rename", "/workspace/moved.txt", ALLOWED_FILE], inside, 0)?;
            expect(&["rename", ALLOWED_FILE, "/etc/moved.txt"], inside, EPERM)
        })(),
    );
    runner.check(
        "dotdot_and_relative_paths_resolve_to_the_real_file",
        (|| {
            expect(&["open", "/workspace/../etc/secret"], inside, EPERM)?;
            expect(&["open", "/workspace/bin/../hello.txt"], inside, 0)?;
            // From /workspace as the working directory.
            let mut command = std::process::Command::new(VMTEST);
            command
                .args(["probe", "open", "../etc/secret"])
                .current_dir("/workspace")
                .stderr(std::process::Stdio::null());
            let (mut command, _procs) = in_cgroup(command, &agent)?;
            let code = command.status()?.code().context("probe killed")?;
            ensure!(
                code == EPERM,
                "relative ../etc/secret from /workspace: exit {code}, want EPERM"
            );
            Ok(())
        })(),
    );
    runner.check(
        "o_path_descriptor_reopened_through_proc_is_refused",
        (|| {
            expect(&["reopen", DENIED_FILE], inside, EPERM)?;
            expect(&["reopen", ALLOWED_FILE], inside, 0)
        })(),
    );
    runner.check(
        "inherited_descriptor_reopened_through_proc_is_refused",
        (|| {
            let secret = std::fs::File::open(DENIED_FILE)?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&secret);
            let mut command = std::process::Command::new(VMTEST);
            command
                .args(["probe", "reopen-fd", "10"])
                .stderr(std::process::Stdio::null());
            // SAFETY: dup2 is async-signal-safe; fd 10 is free in the child before exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::dup2(fd, 10) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let (mut command, _procs) = in_cgroup(command, &agent)?;
            let code = command.status()?.code().context("probe killed")?;
            ensure!(
                code == EPERM,
                "reopening an inherited fd of {DENIED_FILE}: exit {code}"
            );
            Ok(())
        })(),
    );
}
