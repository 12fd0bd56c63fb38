//! cgroup sock_addr programs, attached to each agent's cgroup: TCP connects and UDP sends to
//! unconnected destinations, v4 and v6, against NET_RULES. They load on kernels without BPF LSM.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    macros::cgroup_sock_addr,
    maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use claw_common::{counter, op, record, NetRecord, NetRuleKey, MAX_PORT_RANGES};

use crate::{
    decide::{count, current_agent, header, outcome},
    EVENTS, NET_RULES,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const AF_INET: u32 = 2;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, op::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, op::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, op::SENDMSG)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, op: u32) -> i32 {
    // SAFETY: the context the kernel passed.
    let sock: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let family = sock.user_family;
    // IPv4 is looked up as IPv4-mapped IPv6, as the compiler stores it; so an IPv4-mapped IPv6
    // destination meets the same rules.
    let mut address = [0u8; 16];
    if family == AF_INET {
        address[10] = 0xff;
        address[11] = 0xff;
        address[12..].copy_from_slice(&sock.user_ip4.to_ne_bytes());
    } else {
        for (i, word) in sock.user_ip6.iter().enumerate() {
            address[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    let port = u16::from_be(sock.user_port as u16);
    let protocol = sock.protocol as u8;

    // Attached to agents' cgroups only; a task there whose own cgroup is not an agent's (a child
    // cgroup) is held to no rules, so denied.
    let Some((cgroup_id, agent)) = current_agent() else {
        count(counter::DENIED);
        return DENY;
    };
    let key = Key::new(
        40 + 128,
        NetRuleKey {
            ruleset: agent.ruleset.to_be_bytes(),
            protocol,
            address,
        },
    );
    let allowed = NET_RULES.get(&key).is_some_and(|rule| {
        let count = rule.count as usize;
        (0..MAX_PORT_RANGES)
            .take_while(|&i| i < count)
            .any(|i| rule.ranges[i].first <= port && port <= rule.ranges[i].last)
    });
    if allowed {
        count(counter::ALLOWED);
        return ALLOW;
    }
    let (decision, ret) = outcome(agent);
    if let Some(mut entry) = EVENTS.reserve::<NetRecord>(0) {
        entry.write(NetRecord {
            header: header(record::NET, op, cgroup_id, agent, decision, 0),
            address,
            port,
            protocol,
            family: if family == AF_INET { 4 } else { 6 },
            _pad: 0,
        });
        entry.submit(0);
    } else {
        count(counter::EVENTS_LOST);
    }
    if ret == 0 {
        ALLOW
    } else {
        DENY
    }
}
