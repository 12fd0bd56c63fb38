//! The VM harness: static binaries in a busybox initramfs, booted with each kernel of the matrix
//! under qemu (TCG: nested KVM hangs on these machines), results read from the serial console.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{
    kernels::{self, Kernel},
    run,
};

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Binaries that go into the initramfs, from `cargo build --target TARGET`.
const BINARIES: &[&str] = &["claw-agent", "clawctl", "claw-vmtest"];
const BUSYBOX: &str = "/bin/busybox";
/// A dynamically linked program, with its loader and libraries, for the exec cases (the ld.so
/// trick, libraries mapped executable).
const DYNAMIC_PROGRAM: &str = "/usr/bin/true";
const LIBRARY_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// A whole test run in TCG takes well under a minute; this only stops a hung guest.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The guest's /init: mounts what claw needs, runs claw-vmtest in the mode named on the kernel
/// command line, powers off.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
ip link set lo up
mode=test
for arg in $(cat /proc/cmdline); do
  case "$arg" in claw.mode=*) mode="${arg#claw.mode=}" ;; esac
done
echo "CLAW-KERNEL $(uname -r) $(uname -v)"
/usr/bin/claw-vmtest "$mode"
echo "CLAW-DONE rc=$?"
poweroff -f
"#;

pub fn test(kernel_filter: Option<&str>) -> anyhow::Result<()> {
    let kernels: Vec<Kernel> = kernels::ensure_all()?
        .into_iter()
        .filter(|k| kernel_filter.is_none_or(|f| k.package.contains(f)))
        .collect();
    if kernels.is_empty() {
        bail!("no kernel of the matrix matches {kernel_filter:?}");
    }
    let initramfs = build_initramfs()?;
    let mut tally = Tally::default();
    for kernel in &kernels {
        let log = log_path(kernel, "test");
        let outcome = boot(kernel, &initramfs, "test", &log, &BootOptions::default())?;
        tally.add(kernel, &outcome, log);
    }
    tally.finish("vm-test")
}

/// Results of a suite's boots, printed as they come.
#[derive(Default)]
pub(crate) struct Tally {
    passed: usize,
    failed: usize,
    failed_logs: Vec<PathBuf>,
}

impl Tally {
    pub(crate) fn add(&mut self, kernel: &Kernel, outcome: &Outcome, log: PathBuf) {
        for result in &outcome.results {
            let mark = if result.passed { "PASS" } else { "FAIL" };
            println!("{mark}  {:<60}  {}", result.name, outcome.kernel);
            if !result.passed {
                println!("      {}", result.detail);
            }
        }
        self.passed += outcome.results.iter().filter(|r| r.passed).count();
        self.failed += outcome.results.iter().filter(|r| !r.passed).count();
        let any_failed = outcome.results.iter().any(|r| !r.passed);
        // A non-zero exit is explained by the failures it reported; anything else is a failure
        // of the run itself.
        let complete = outcome.finished
            && !outcome.results.is_empty()
            && (outcome.exit_code == Some(0) || (any_failed && outcome.exit_code == Some(1)));
        if !complete || any_failed {
            if !complete {
                self.failed += 1;
                println!(
                    "FAIL  {:<60}  {}",
                    "vm run completed",
                    if outcome.kernel.is_empty() {
                        &kernel.package
                    } else {
                        &outcome.kernel
                    }
                );
                println!("      {}", outcome.problem());
            }
            self.failed_logs.push(log);
        }
    }

    pub(crate) fn finish(self, suite: &str) -> anyhow::Result<()> {
        for log in &self.failed_logs {
            println!("console log of a failed run: {}", log.display());
        }
        println!("{suite}: {} passed, {} failed", self.passed, self.failed);
        if self.failed > 0 {
            bail!("{} {suite} case(s) failed", self.failed);
        }
        Ok(())
    }
}

/// The benchmark table of each kernel, measured in the VM; returns the tables printed.
pub fn bench() -> anyhow::Result<Vec<String>> {
    let kernels = kernels::ensure_all()?;
    let initramfs = build_initramfs()?;
    let mut tables = Vec::new();
    for kernel in &kernels {
        let log = log_path(kernel, "bench");
        let outcome = boot(kernel, &initramfs, "bench", &log, &BootOptions::default())?;
        println!();
        if !tables.is_empty() {
            tables.push(String::new());
        }
        for line in &outcome.bench {
            println!("{line}");
            tables.push(line.clone());
        }
        if !outcome.finished || outcome.exit_code != Some(0) || outcome.bench.is_empty() {
            bail!(
                "the benchmark failed on {}: {}; console log: {}",
                kernel.package,
                outcome.problem(),
                log.display()
            );
        }
    }
    Ok(tables)
}

pub fn demo() -> anyhow::Result<()> {
    let kernel = kernels::ensure_all()?
        .pop()
        .context("the kernel matrix is empty")?;
    let initramfs = build_initramfs()?;
    eprintln!(
        "demo: booting {} in qemu (this host's kernel refuses BPF LSM programs) ...",
        kernel.package
    );
    let log = log_path(&kernel, "demo");
    let options = BootOptions {
        echo: true,
        ..BootOptions::default()
    };
    let outcome = boot(&kernel, &initramfs, "demo", &log, &options)?;
    if !outcome.finished || outcome.exit_code != Some(0) {
        bail!(
            "the demo failed: {}; console log: {}",
            outcome.problem(),
            log.display()
        );
    }
    Ok(())
}

pub(crate) fn log_path(kernel: &Kernel, mode: &str) -> PathBuf {
    run::workspace_root()
        .join("target/vm/logs")
        .join(format!("{}-{mode}.log", kernel.package))
}

/// Builds claw's binaries and the VM tests' statically, as the VM runs them and the package
/// ships them (one build for both: the same packages, so the same features); returns where
/// they are.
pub fn build_static() -> anyhow::Result<PathBuf> {
    let root = run::workspace_root();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--release", "--target", TARGET])
        .args(["-p", "claw-agent", "-p", "claw-tests"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&root);
    run::status(&mut build)?;
    Ok(root.join("target").join(TARGET).join("release"))
}

/// Builds the static binaries and packs them, busybox and /init into a newc cpio archive.
fn build_initramfs() -> anyhow::Result<PathBuf> {
    let root = run::workspace_root();
    let bin_dir = build_static()?;

    let staging = root.join("target/vm/initramfs");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let usr_bin = staging.join("usr/bin");
    for dir in [
        "usr/bin",
        "usr/lib",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc/claw",
        "workspace",
    ] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(target, staging.join(link))?;
    }
    add_dynamic_program(&staging, DYNAMIC_PROGRAM)?;
    std::fs::copy(BUSYBOX, usr_bin.join("busybox"))
        .with_context(|| format!("copying {BUSYBOX} (package busybox-static)"))?;
    for applet in run::output(Command::new(BUSYBOX).arg("--list"))?.lines() {
        let link = usr_bin.join(applet);
        if !link.exists() {
            symlink("busybox", link)?;
        }
    }
    for binary in BINARIES {
        std::fs::copy(bin_dir.join(binary), usr_bin.join(binary))
            .with_context(|| format!("copying {binary}"))?;
    }
    copy_policies(&root.join("policies"), &staging.join("etc/claw"))?;
    let init = staging.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let archive = root.join("target/vm/initramfs.cpio");
    pack_cpio(&staging, &archive)?;
    Ok(archive)
}

/// Packs the tree at `staging` into the newc cpio archive `archive` (an initramfs).
pub(crate) fn pack_cpio(staging: &Path, archive: &Path) -> anyhow::Result<()> {
    let out = std::fs::File::create(archive)?;
    run::status(
        Command::new("sh")
            .args(["-c", "find . | cpio -o -H newc --quiet"])
            .current_dir(staging)
            .stdout(out),
    )
}

/// The YAML files of `from` (policies and their fragments), keeping the layout.
fn copy_policies(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let name = path.file_name().context("file name")?;
        if path.is_dir() {
            copy_policies(&path, &to.join(name))?;
        } else if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}

/// Copies `program` and what `ldd` says it loads: libraries into LIBRARY_DIR, the loader there too
/// with /usr/lib64/ld-linux-x86-64.so.2 pointing at it, as on Debian.
fn add_dynamic_program(staging: &Path, program: &str) -> anyhow::Result<()> {
    let libraries = staging.join(LIBRARY_DIR);
    std::fs::create_dir_all(&libraries)?;
    std::fs::create_dir_all(staging.join("usr/lib64"))?;
    std::fs::copy(program, staging.join(program.trim_start_matches('/')))
        .with_context(|| format!("copying {program}"))?;
    for line in run::output(Command::new("ldd").arg(program))?.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let name = Path::new(path).file_name().context("library name")?;
        let real = std::fs::canonicalize(path)?;
        std::fs::copy(&real, libraries.join(name))
            .with_context(|| format!("copying {}", real.display()))?;
        if name.to_string_lossy().starts_with("ld-linux") {
            symlink(
                Path::new("../lib/x86_64-linux-gnu").join(name),
                staging.join("usr/lib64").join(name),
            )?;
        }
    }
    Ok(())
}

pub(crate) struct TestResult {
    name: String,
    passed: bool,
    detail: String,
}

#[derive(Default)]
pub(crate) struct Outcome {
    /// `uname -r` and `uname -v` of the guest.
    kernel: String,
    results: Vec<TestResult>,
    finished: bool,
    exit_code: Option<i32>,
    timed_out: bool,
    /// The benchmark's table lines.
    bench: Vec<String>,
}

impl Outcome {
    fn problem(&self) -> String {
        if self.timed_out {
            format!("the guest did not finish within {BOOT_TIMEOUT:?}")
        } else if !self.finished {
            "the guest stopped before claw-vmtest finished (crash or panic?)".to_owned()
        } else if self.results.is_empty() {
            "claw-vmtest reported no results".to_owned()
        } else {
            format!("claw-vmtest exited with {:?}", self.exit_code)
        }
    }
}

/// How a guest is booted besides its kernel and initramfs.
pub(crate) struct BootOptions {
    pub memory_mib: u32,
    /// Kernel parameters after the harness's own (`lsm=...`, systemd's).
    pub append: String,
    /// Show the guest's output (the demo).
    pub echo: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            append: String::new(),
            echo: false,
        }
    }
}

pub(crate) fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    mode: &str,
    log_path: &Path,
    options: &BootOptions,
) -> anyhow::Result<Outcome> {
    let echo = options.echo;
    std::fs::create_dir_all(log_path.parent().context("log directory")?)?;
    let mut log = std::fs::File::create(log_path)?;
    let mut qemu = Command::new("qemu-system-x86_64")
        // One TCG thread for both vCPUs: with a thread per vCPU (MTTCG), the kernel's live
        // patching of BPF trampolines (text_poke with int3) raced the other vCPU and oopsed on
        // 6.12 ("Oops: int3" in bpf_lsm_file_open) while claw-agent attached or detached links.
        .args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2"])
        .args(["-m", &options.memory_mib.to_string()])
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 claw.mode={mode} {}",
            options.append
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    let (lines_tx, lines) = mpsc::channel();
    for stream in [
        Box::new(qemu.stdout.take().context("qemu stdout")?) as Box<dyn std::io::Read + Send>,
        Box::new(qemu.stderr.take().context("qemu stderr")?),
    ] {
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    drop(lines_tx);

    let mut outcome = Outcome::default();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    // Firmware and kernel chatter precede the guest's /init; a person watching sees only claw.
    let mut guest_started = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                outcome.timed_out = true;
                qemu.kill().context("stopping the timed-out qemu")?;
                break;
            }
        };
        writeln!(log, "{line}")?;
        guest_started |= line.contains("CLAW-KERNEL ");
        if echo && guest_started && !line.contains("CLAW-") && !is_kernel_message(&line) {
            println!("{line}");
        }
        parse_line(&line, &mut outcome);
    }
    qemu.wait()?;
    Ok(outcome)
}

/// `[    2.551103] reboot: Power down` and the like.
fn is_kernel_message(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('[')
        && line
            .split_once(']')
            .is_some_and(|(stamp, _)| stamp[1..].trim().parse::<f64>().is_ok())
}

fn parse_line(line: &str, outcome: &mut Outcome) {
    // The console may prefix a line with kernel output; the markers are searched, not anchored.
    if let Some(at) = line.find("CLAW-KERNEL ") {
        outcome.kernel = line[at + "CLAW-KERNEL ".len()..].to_owned();
    } else if let Some(at) = line.find("CLAW-RESULT ") {
        let mut fields = line[at + "CLAW-RESULT ".len()..].splitn(3, ' ');
        let verdict = fields.next().unwrap_or_default();
        let name = fields.next().unwrap_or_default().to_owned();
        let detail = fields.next().unwrap_or_default().to_owned();
        outcome.results.push(TestResult {
            name,
            passed: verdict == "PASS",
            detail,
        });
    } else if let Some(at) = line.find("CLAW-BENCH ") {
        outcome
            .bench
            .push(line[at + "CLAW-BENCH ".len()..].to_owned());
    } else if let Some(at) = line.find("CLAW-BENCH-ERROR ") {
        outcome.bench.push(format!(
            "ERROR: {}",
            &line[at + "CLAW-BENCH-ERROR ".len()..]
        ));
    } else if let Some(at) = line.find("CLAW-DONE rc=") {
        outcome.finished = true;
        outcome.exit_code = line[at + "CLAW-DONE rc=".len()..].trim().parse().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_console_markers() {
        let mut outcome = Outcome::default();
        for line in [
            "CLAW-KERNEL 6.1.0-56-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2",
            "[    3.1] random: crng init done CLAW-RESULT PASS open_denied took 3 ms",
            "CLAW-RESULT FAIL deny_log no line within 1 s",
            "CLAW-DONE rc=1",
        ] {
            parse_line(line, &mut outcome);
        }
        assert_eq!(
            outcome.kernel,
            "6.1.0-56-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2"
        );
        assert_eq!(outcome.results.len(), 2);
        assert!(outcome.results[0].passed);
        assert_eq!(outcome.results[0].name, "open_denied");
        assert!(!outcome.results[1].passed);
        assert_eq!(outcome.results[1].detail, "no line within 1 s");
        assert!(outcome.finished);
        assert_eq!(outcome.exit_code, Some(1));
    }
}
