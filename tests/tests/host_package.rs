//! The Debian package as `cargo xtask package` builds it (`cargo xtask test` builds it before the
//! tests run): its files and modes, its control data and conffiles, the systemd unit as
//! `systemd-analyze verify` sees it, man pages and completions, the maintainer scripts, and that
//! the starter policy, the daemon configuration and the shipped policies it carries are valid.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// The package, or a loud failure saying how to build it.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let version = env!("CARGO_PKG_VERSION");
    let deb = dir.join(format!("claw_{version}_amd64.deb"));
    assert!(
        deb.exists(),
        "{} is missing: run `cargo xtask package` (cargo xtask test does)",
        deb.display()
    );
    deb
}

/// The package unpacked (data and DEBIAN) into a temporary directory.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb")
        .arg("-R")
        .arg(package())
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "dpkg-deb -R failed");
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn package_holds_the_binaries_unit_config_docs_and_completions_with_their_modes() {
    let root = unpacked();
    let at = |path: &str| root.path().join(path);
    for (path, expected) in [
        ("usr/sbin/claw-agent", 0o755),
        ("usr/bin/clawctl", 0o755),
        ("usr/lib/systemd/system/claw-agent.service", 0o644),
        ("etc/claw/policy.yaml", 0o644),
        ("etc/claw/claw-agent.yaml", 0o644),
        ("usr/share/man/man8/claw-agent.8.gz", 0o644),
        ("usr/share/man/man1/clawctl.1.gz", 0o644),
        ("usr/share/man/man1/clawctl-deny-log.1.gz", 0o644),
        ("usr/share/bash-completion/completions/clawctl", 0o644),
        ("usr/share/bash-completion/completions/claw-agent", 0o644),
        ("usr/share/zsh/vendor-completions/_clawctl", 0o644),
        ("usr/share/fish/vendor_completions.d/clawctl.fish", 0o644),
        ("usr/share/claw/policies/openclaw.yaml", 0o644),
        ("usr/share/doc/claw/copyright", 0o644),
        ("DEBIAN/postinst", 0o755),
        ("DEBIAN/prerm", 0o755),
        ("DEBIAN/postrm", 0o755),
    ] {
        assert_eq!(mode(&at(path)), expected, "{path}");
    }
    let bash =
        std::fs::read_to_string(at("usr/share/bash-completion/completions/clawctl")).unwrap();
    assert!(
        bash.contains("deny-log") && bash.contains("complete"),
        "bash completion without clawctl's subcommands"
    );
    let conffiles = std::fs::read_to_string(at("DEBIAN/conffiles")).unwrap();
    assert_eq!(
        conffiles,
        "/etc/claw/policy.yaml\n/etc/claw/claw-agent.yaml\n"
    );
    let control = std::fs::read_to_string(at("DEBIAN/control")).unwrap();
    for field in [
        "Package: claw\n",
        "Architecture: amd64\n",
        "Installed-Size: ",
    ] {
        assert!(
            control.contains(field),
            "control lacks {field:?}:\n{control}"
        );
    }
    // Owned by root in the archive, whoever built it.
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(package())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().all(|line| line.contains(" root/root ")),
        "{listing}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let syntax = Command::new("sh")
            .arg("-n")
            .arg(at(&format!("DEBIAN/{script}")))
            .status()
            .unwrap();
        assert!(syntax.success(), "{script} is not valid sh");
    }
}

/// The packaged binaries are the static ones: they run on a node without this machine's
/// libraries, and claw-agent's man page is its own command line.
/// Whether a 64-bit little-endian ELF file names a program interpreter (PT_INTERP): dynamically
/// linked executables do, static ones (static-pie included) do not.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    (0..entries).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn packaged_binaries_are_static_and_document_themselves() {
    let root = unpacked();
    for binary in ["usr/sbin/claw-agent", "usr/bin/clawctl"] {
        let elf = std::fs::read(root.path().join(binary)).unwrap();
        assert!(
            !has_interpreter(&elf),
            "{binary} is dynamically linked (it has a program interpreter)"
        );
    }
    let page = Command::new("zcat")
        .arg(root.path().join("usr/share/man/man8/claw-agent.8.gz"))
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains(".TH claw-agent 8"), "{page}");
    assert!(page.contains("\\-\\-check"), "the man page lacks --check");
}

/// `systemd-analyze verify` on the unit, its commands pointed at the unpacked binaries (this
/// machine has no claw installed; `--root=` would also hide the system's own units), its
/// man-page references left to the page test above; and the settings the service depends on.
#[test]
fn systemd_unit_verifies_and_is_a_notify_service_that_restarts() {
    let root = unpacked();
    let unit = root
        .path()
        .join("usr/lib/systemd/system/claw-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let here = tempfile::tempdir().unwrap();
    let copy = here.path().join("claw-agent.service");
    let packaged = |path: &str| {
        root.path()
            .join(path.trim_start_matches('/'))
            .display()
            .to_string()
    };
    std::fs::write(
        &copy,
        text.replace("/usr/sbin/claw-agent", &packaged("/usr/sbin/claw-agent"))
            .replace("/usr/bin/clawctl", &packaged("/usr/bin/clawctl")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {report}");
    assert!(
        !report.contains("claw-agent.service"),
        "the unit draws warnings: {report}"
    );
    for setting in [
        "Type=notify\n",
        "Restart=always\n",
        "ExecReload=/usr/bin/clawctl policy apply /etc/claw/policy.yaml\n",
        "WatchdogSec=",
        "ExecStart=/usr/sbin/claw-agent --policy /etc/claw/policy.yaml --config /etc/claw/claw-agent.yaml\n",
    ] {
        assert!(text.contains(setting), "the unit lacks {setting:?}");
    }
}

/// What the package puts in /etc/claw is valid as shipped, and so is every shipped policy: a
/// fresh install starts.
#[test]
fn starter_policy_config_and_shipped_policies_are_valid() {
    let root = unpacked();
    let clawctl = root.path().join("usr/bin/clawctl");
    let mut policies = vec![root.path().join("etc/claw/policy.yaml")];
    for name in ["openclaw.yaml", "tools.yaml"] {
        policies.push(root.path().join("usr/share/claw/policies").join(name));
    }
    for policy in policies {
        let out = Command::new(&clawctl)
            .args(["policy", "check"])
            .arg(&policy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            policy.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config = root.path().join("etc/claw/claw-agent.yaml");
    claw_agent::export::config::load(&config)
        .unwrap_or_else(|err| panic!("{}: {err}", config.display()));
}

/// Every YAML file under `dir`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
    found
}

fn as_json(yaml: &str) -> serde_json::Value {
    serde_saphyr::from_str(yaml).unwrap()
}

/// The packaged JSON Schemas (what an editor validates with) accept every policy and the
/// configuration the package ships, and reject a misspelt key, a wrong type and a missing field.
#[test]
fn packaged_schemas_accept_the_shipped_files_and_reject_broken_ones() {
    let root = unpacked();
    let schema = |name: &str| {
        let path = root.path().join("usr/share/claw/schema").join(name);
        assert_eq!(mode(&path), 0o644, "{}", path.display());
        let text = std::fs::read_to_string(&path).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    };
    let policy = schema("policy.schema.json");
    let mut files = yaml_files(&root.path().join("usr/share/claw/policies"));
    files.push(root.path().join("etc/claw/policy.yaml"));
    assert!(files.len() > 3, "{files:?}");
    for file in &files {
        let document = as_json(&std::fs::read_to_string(file).unwrap());
        let errors: Vec<String> = policy
            .iter_errors(&document)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
    for broken in [
        "agents:\n- name: t\n  cgroup: claw/t\n  filez: {read: [/w/]}\n",
        "agents:\n- name: t\n  cgroup: claw/t\n  files: {read: /w/}\n",
        "agents:\n- name: t\n  files: {read: [/w/]}\n",
        "agents:\n- name: t\n  cgroup: claw/t\n  mode: permissive\n",
    ] {
        assert!(!policy.is_valid(&as_json(broken)), "accepted: {broken}");
    }
    let config = schema("claw-agent.schema.json");
    let shipped =
        as_json(&std::fs::read_to_string(root.path().join("etc/claw/claw-agent.yaml")).unwrap());
    assert!(config.is_valid(&shipped), "{shipped}");
    assert!(
        !config.is_valid(&as_json("forward:\n- name: siem\n")),
        "a forwarder without an address"
    );
}
