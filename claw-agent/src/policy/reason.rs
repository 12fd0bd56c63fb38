//! Reasons a model can read: a denial explained by the rule it ran into ("tools may write only
//! under /workspace/"), so that an orchestrator can hand the model more than a bare EPERM. Pure.

use crate::policy::{rules, Agent};

/// How many paths or destinations a reason lists before saying how many more there are.
const LISTED: usize = 4;

/// What an agent's rules allow, per kind, as reasons quote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub agent: String,
    read: Vec<String>,
    write: Vec<String>,
    exec: Vec<String>,
    map: Vec<String>,
    connect: Vec<String>,
    listen: Vec<String>,
    jit: bool,
}

impl Summary {
    pub fn of(agent: &Agent) -> Self {
        let paths = |list: &[&Vec<rules::RulePath>]| -> Vec<String> {
            let mut all: Vec<String> = list
                .iter()
                .flat_map(|l| l.iter().map(|p| p.0.clone()))
                .collect();
            all.sort();
            all.dedup();
            all
        };
        let r = &agent.rules;
        Self {
            agent: agent.name.0.clone(),
            read: paths(&[&r.files.read, &r.exec, &r.libraries]),
            write: paths(&[&r.files.write]),
            exec: paths(&[&r.exec]),
            map: paths(&[&r.exec, &r.libraries]),
            connect: r.connect.iter().map(|c| c.text.clone()).collect(),
            listen: r.listen.iter().map(ToString::to_string).collect(),
            jit: agent.jit,
        }
    }
}

fn list(items: &[String]) -> String {
    let mut shown: Vec<&str> = items.iter().take(LISTED).map(String::as_str).collect();
    let more = items.len().saturating_sub(LISTED);
    let more_text = format!("and {more} more");
    if more > 0 {
        shown.push(&more_text);
    }
    shown.join(", ")
}

/// "tools may write only under /workspace/".
fn only(agent: &str, verb: &str, preposition: &str, items: &[String]) -> String {
    if items.is_empty() {
        format!("{agent} may not {verb} anything")
    } else {
        format!("{agent} may {verb} only {preposition}{}", list(items))
    }
}

/// Why `op` (needing `access`, on `object`) was denied to an agent whose rules are `summary`.
pub fn explain(summary: &Summary, op: &str, access: &str, object: &str) -> String {
    let agent = summary.agent.as_str();
    let needs = |name: &str| access.split('+').any(|a| a == name);
    match op {
        "connect" | "sendmsg" => {
            let verb = if op == "connect" { "connect" } else { "send" };
            return format!(
                "{}; {object} is not among them",
                only(agent, verb, "to ", &summary.connect)
            );
        }
        "bind" | "listen" => {
            return format!(
                "{}; {object} is not among them",
                only(agent, op, "on ", &summary.listen)
            );
        }
        "mount" | "chroot" => return format!("no agent may {op}: it would give files other names"),
        "bpf" => return "no agent may use bpf(): claw's own enforcement is made of it".to_owned(),
        "capability" => return format!("no agent may use {object}: it steps around the rules"),
        "socket" => {
            return "agents may open TCP, UDP, Unix and kernel netlink sockets only: raw, packet and ping sockets, other protocols (SCTP, MPTCP) and other families (vsock, AF_ALG...) carry data where no connect or listen rule looks"
                .to_owned()
        }
        "device" => {
            return format!(
            "{agent} may not use device {object}: only the base devices, and GPUs with devices.gpu"
        )
        }
        "signal" | "ptrace" => {
            return format!(
                "a process of {agent} may {op} only processes of its own agent or tool call"
            )
        }
        "task-change" => {
            return format!(
                "a process of {agent} may change the priority, scheduling or limits only of processes of its own agent or tool call"
            )
        }
        "sysv-ipc" => {
            return "no agent may use System V IPC (shared memory, message queues, semaphores): its objects are shared node-wide".to_owned()
        }
        "terminal" => {
            return "no agent may push input into a terminal: it would be typed for whoever reads it next".to_owned()
        }
        "key" => {
            return "no agent may use kernel keys or keyrings: they are shared by uid with the rest of the node".to_owned()
        }
        "module-request" => {
            return format!("no agent may have the kernel load a module ({object}): new kernel code within its reach")
        }
        "clone-into-cgroup" => return "no agent may start a process in another cgroup".to_owned(),
        "xattr" => {
            return "agents may set only user.* extended attributes, and no POSIX ACLs".to_owned()
        }
        "preload" => {
            let name = object.split('=').next().unwrap_or(object);
            return format!(
                "{agent} may not start a program with {name} set: it loads code of the caller's choosing into the program (allow_env lifts it)"
            );
        }
        _ => {}
    }
    if object == "<anonymous memory>" && !summary.jit {
        return format!("{agent} may not create executable memory without a file (jit: false)");
    }
    if let Some(tree) = rules::protected_tree(object).filter(|_| needs("write")) {
        return format!(
            "no agent may write inside {tree}: {}",
            rules::why_protected(tree)
        );
    }
    let store = rules::HOME_CREDENTIALS
        .iter()
        .find(|c| object.contains(&format!("/{}", c.trim_end_matches('/'))))
        .copied()
        .or_else(|| {
            rules::MACHINE_CREDENTIALS
                .iter()
                .find(|c| object.starts_with(c.trim_end_matches('/')))
                .copied()
        });
    let credential = store.map(|s| {
        format!("; {object} is in a credential store ({s}), closed unless a rule names it")
    });
    let base = if needs("exec") {
        only(agent, "execute", "", &summary.exec)
    } else if needs("map") {
        only(agent, "map as code", "", &summary.map)
    } else if needs("write") {
        only(agent, "write", "under ", &summary.write)
    } else if needs("connect") {
        // files.write names the Unix sockets an agent may connect to.
        only(agent, "connect to Unix sockets", "under ", &summary.write)
    } else {
        only(agent, "read", "under ", &summary.read)
    };
    format!("{base}{}", credential.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    fn summary() -> Summary {
        let policy = policy::parse(
            "p.yaml",
            "agents:
  - name: tools
    cgroup: claw/tools
    files:
      read: [/usr/, /workspace/, /etc/hosts, /etc/passwd, /etc/group]
      write: [/workspace/]
    exec: [/usr/bin/git]
    connect: [10.0.0.1:443/tcp]
",
        )
        .unwrap();
        Summary::of(&policy.agents[0])
    }

    #[test]
    fn a_reason_names_the_rule_the_operation_ran_into() {
        let s = summary();
        assert_eq!(
            explain(&s, "open", "write", "/etc/x"),
            "tools may write only under /workspace/"
        );
        assert_eq!(
            explain(&s, "exec", "exec", "/usr/bin/curl"),
            "tools may execute only /usr/bin/git"
        );
        assert_eq!(
            explain(&s, "open", "read", "/srv/x"),
            "tools may read only under /etc/group, /etc/hosts, /etc/passwd, /usr/, and 2 more"
        );
        assert_eq!(
            explain(&s, "unix-connect", "connect", "/run/docker.sock"),
            "tools may connect to Unix sockets only under /workspace/"
        );
        assert_eq!(
            explain(&s, "connect", "", "10.0.0.2:443/tcp"),
            "tools may connect only to 10.0.0.1:443/tcp; 10.0.0.2:443/tcp is not among them"
        );
    }

    #[test]
    fn built_in_refusals_say_so() {
        let s = summary();
        assert!(
            explain(&s, "open", "read", "/root/.ssh/id_rsa").contains("credential store (.ssh/)")
        );
        assert!(explain(&s, "open", "write", "/sys/fs/cgroup/x").contains("claw's own enforcement"));
        assert!(explain(&s, "mount", "admin", "").starts_with("no agent may mount"));
        assert!(explain(&s, "mmap", "map", "<anonymous memory>").contains("jit: false"));
    }
}
