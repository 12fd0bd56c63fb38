//! cgroup sock_addr programs, attached to each agent's cgroup: TCP connects and UDP sends to
//! unconnected destinations, v4 and v6, against NET_RULES. They load on kernels without BPF LSM.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::bpf_sock_addr, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use claw_common::{
    counter, decision, op, record, NetRecord, NetRuleKey, Redirect, MAX_PORT_RANGES,
};

use crate::{
    decide::{count, current_agent, decision_of, emit, header, outcome, Report as _},
    grant, NET_RULES, REDIRECTS,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    decide::<false>(&ctx, op::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    decide::<true>(&ctx, op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decide::<false>(&ctx, op::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decide::<true>(&ctx, op::SENDMSG)
}

/// Points the connect at the proxy instead. An IPv4 socket can only be sent to an IPv4 proxy:
/// otherwise the connect is refused rather than let through to where it was going.
#[inline(always)]
fn redirect_to<const V6: bool>(ctx: &SockAddrContext, redirect: &Redirect) -> i32 {
    let sock = ctx.sock_addr;
    let proxy = redirect.proxy;
    let mapped = proxy[..10].iter().all(|b| *b == 0) && proxy[10] == 0xff && proxy[11] == 0xff;
    if !V6 && !mapped {
        count(counter::DENIED);
        return DENY;
    }
    // SAFETY: the context the kernel passed; connect programs may write the destination, each
    // field whole.
    unsafe {
        if V6 {
            for i in 0..4 {
                let word = u32::from_ne_bytes([
                    proxy[4 * i],
                    proxy[4 * i + 1],
                    proxy[4 * i + 2],
                    proxy[4 * i + 3],
                ]);
                write_volatile(&mut (*sock).user_ip6[i], word);
            }
        } else {
            let word = u32::from_ne_bytes([proxy[12], proxy[13], proxy[14], proxy[15]]);
            write_volatile(&mut (*sock).user_ip4, word);
        }
        write_volatile(
            &mut (*sock).user_port,
            u32::from(redirect.proxy_port.to_be()),
        );
    }
    count(counter::ALLOWED);
    ALLOW
}

#[inline(always)]
/// `V6` for the programs of IPv6 sockets: each kind may read only its own address field.
fn decide<const V6: bool>(ctx: &SockAddrContext, op: u32) -> i32 {
    let sock: *const bpf_sock_addr = ctx.sock_addr;
    // The verifier allows context fields to be read only at their own offsets from the context
    // pointer, and an IPv4 program may not read the IPv6 fields (nor the reverse): volatile
    // reads, one per field, keep LLVM from merging them into a computed address.
    // IPv4 is looked up as IPv4-mapped IPv6, as the compiler stores it; so an IPv4-mapped IPv6
    // destination meets the same rules.
    let mut address = [0u8; 16];
    // SAFETY: the context the kernel passed; each read is of one whole field.
    let (user_port, protocol) = unsafe {
        if V6 {
            for i in 0..4 {
                let word = read_volatile(&(*sock).user_ip6[i]);
                address[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
            }
        } else {
            address[10] = 0xff;
            address[11] = 0xff;
            address[12..].copy_from_slice(&read_volatile(&(*sock).user_ip4).to_ne_bytes());
        }
        (
            read_volatile(&(*sock).user_port),
            read_volatile(&(*sock).protocol),
        )
    };
    let port = u16::from_be(user_port as u16);
    let protocol = protocol as u8;

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
    if op == op::CONNECT {
        if let Some(redirect) = REDIRECTS.get(&key) {
            if redirect.first_port <= port && port <= redirect.last_port {
                return redirect_to::<V6>(ctx, redirect);
            }
        }
    }
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
    let mut record = NetRecord {
        header: header(record::NET, op, cgroup_id, agent, decision_of(agent), 0),
        address,
        port,
        protocol,
        family: if V6 { 6 } else { 4 },
        _pad: 0,
    };
    if record.header.decision == decision::DENY
        && grant::net(cgroup_id, op, record.object_hash(), &record)
    {
        count(counter::ALLOWED);
        record.header.decision = decision::GRANTED;
        emit(record);
        return ALLOW;
    }
    let (_, ret) = outcome(agent);
    emit(record);
    if ret == 0 {
        ALLOW
    } else {
        DENY
    }
}
