//! cgroup sock_addr programs, attached to each agent's cgroup: TCP connects and UDP sends to
//! unconnected destinations, v4 and v6, against NET_RULES and the addresses the agent's resolver
//! answered (DNS_ALLOW); DNS goes to that resolver; binds to a port against the listen rules.
//! They load on kernels without BPF LSM. And the LSM hook on listen(), which the listen rules
//! decide too (a socket bound to port 0 would otherwise listen on whatever port it was given).

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    macros::{cgroup_sock_addr, lsm},
    maps::lpm_trie::Key,
    programs::{LsmContext, SockAddrContext},
};
use claw_common::{
    agent_flags, counter, decision, op, record, AgentEntry, NetRecord, NetRuleKey, NetRuleValue,
    OriginalDestination, Redirect, ResolvedKey, DNS_PORT, LISTEN_RULE, MAX_PORT_RANGES, PROTO_TCP,
    PROTO_UDP,
};

use crate::{
    decide::{count, current_agent, decision_of, emit, header, outcome, Report as _},
    grant,
    kernel::{offset, read, read_ptr},
    DNS_ALLOW, NET_RULES, ORIGINAL_DESTINATIONS, REDIRECTS,
};

/// 127.0.0.1, IPv4-mapped: where the daemon's resolvers listen.
const LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

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

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    bind::<false>(&ctx)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    bind::<true>(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_source::<false>(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_source::<true>(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore_source::<false>(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    restore_source::<true>(&ctx)
}

/// The destination and port a sock_addr program was called with (IPv4 as IPv4-mapped IPv6).
#[inline(always)]
fn read_address<const V6: bool>(sock: *const bpf_sock_addr) -> ([u8; 16], u32) {
    // The verifier allows context fields to be read only at their own offsets from the context
    // pointer, and an IPv4 program may not read the IPv6 fields (nor the reverse): volatile
    // reads, one per field, keep LLVM from merging them into a computed address.
    let mut address = [0u8; 16];
    // SAFETY: the context the kernel passed; each read is of one whole field.
    unsafe {
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
        (address, read_volatile(&(*sock).user_port))
    }
}

/// A socket whose DNS went to the agent's resolver sees the server it addressed: as the source
/// of UDP answers (recvmsg), as the peer of a connected socket (getpeername).
#[inline(always)]
fn restore_source<const V6: bool>(ctx: &SockAddrContext) -> i32 {
    // Every datagram an agent receives passes here: the cheap test first.
    let (source, _) = read_address::<V6>(ctx.sock_addr);
    if source != LOOPBACK {
        return ALLOW;
    }
    // SAFETY: helper taking the context the kernel passed.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out at once.
    let Some(original) = (unsafe { ORIGINAL_DESTINATIONS.get(cookie) }).copied() else {
        return ALLOW;
    };
    write_address::<V6>(ctx, &original.address, original.port.into());
    ALLOW
}

/// Rewrites the socket address (`port` in network byte order). An IPv4 socket can take an
/// IPv4(-mapped) address only: false, and nothing written, for any other.
#[inline(always)]
fn write_address<const V6: bool>(ctx: &SockAddrContext, address: &[u8; 16], port: u32) -> bool {
    let sock = ctx.sock_addr;
    let mapped =
        address[..10].iter().all(|b| *b == 0) && address[10] == 0xff && address[11] == 0xff;
    if !V6 && !mapped {
        return false;
    }
    // SAFETY: the context the kernel passed; these programs may write the address, each field
    // whole.
    unsafe {
        if V6 {
            for i in 0..4 {
                let word = u32::from_ne_bytes([
                    address[4 * i],
                    address[4 * i + 1],
                    address[4 * i + 2],
                    address[4 * i + 3],
                ]);
                write_volatile(&mut (*sock).user_ip6[i], word);
            }
        } else {
            let word = u32::from_ne_bytes([address[12], address[13], address[14], address[15]]);
            write_volatile(&mut (*sock).user_ip4, word);
        }
        write_volatile(&mut (*sock).user_port, port);
    }
    true
}

/// Sends the agent's DNS to its resolver, remembering where it was going.
#[inline(always)]
fn to_resolver<const V6: bool>(
    ctx: &SockAddrContext,
    original: &[u8; 16],
    user_port: u32,
    resolver_port: u16,
) -> i32 {
    // SAFETY: helper taking the context the kernel passed.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let destination = OriginalDestination {
        address: *original,
        port: user_port as u16,
        _pad: [0; 6],
    };
    // A full map evicts the oldest socket's: its answers then show the resolver's address.
    let _ = ORIGINAL_DESTINATIONS.insert(cookie, destination, 0);
    if write_address::<V6>(ctx, &LOOPBACK, u32::from(resolver_port.to_be())) {
        count(counter::ALLOWED);
        ALLOW
    } else {
        count(counter::DENIED);
        DENY
    }
}

/// Whether one of `ports` holds `port`.
#[inline(always)]
fn holds(ports: &NetRuleValue, port: u16) -> bool {
    let count = ports.count as usize;
    (0..MAX_PORT_RANGES)
        .take_while(|&i| i < count)
        .any(|i| ports.ranges[i].first <= port && port <= ports.ranges[i].last)
}

/// Whether the agent's resolver answered `address` for a name whose rules allow `port`, and the
/// answer has not expired.
#[inline(always)]
fn resolved(cgroup_id: u64, protocol: u8, address: &[u8; 16], port: u16) -> bool {
    let key = ResolvedKey {
        cgroup_id,
        protocol,
        _pad: [0; 7],
        address: *address,
    };
    // SAFETY: the value is read at once; helper without preconditions.
    unsafe {
        DNS_ALLOW.get(key).is_some_and(|entry| {
            bpf_ktime_get_boot_ns() < entry.expires_ns && holds(&entry.ports, port)
        })
    }
}

/// Points the connect at the proxy instead. An IPv4 socket can only be sent to an IPv4 proxy:
/// otherwise the connect is refused rather than let through to where it was going.
#[inline(always)]
fn redirect_to<const V6: bool>(ctx: &SockAddrContext, redirect: &Redirect) -> i32 {
    if write_address::<V6>(ctx, &redirect.proxy, u32::from(redirect.proxy_port.to_be())) {
        count(counter::ALLOWED);
        ALLOW
    } else {
        count(counter::DENIED);
        DENY
    }
}

#[inline(always)]
/// `V6` for the programs of IPv6 sockets: each kind may read only its own address field.
fn decide<const V6: bool>(ctx: &SockAddrContext, op: u32) -> i32 {
    let sock: *const bpf_sock_addr = ctx.sock_addr;
    // IPv4 is looked up as IPv4-mapped IPv6, as the compiler stores it; so an IPv4-mapped IPv6
    // destination meets the same rules.
    let (address, user_port) = read_address::<V6>(sock);
    // SAFETY: the context the kernel passed; one whole field.
    let protocol = unsafe { read_volatile(&(*sock).protocol) } as u8;
    let port = u16::from_be(user_port as u16);

    // Attached to agents' cgroups only, so every task here has an agent (its cgroup's or an
    // ancestor's); a miss (its entry just removed) is held to no rules, so denied.
    let Some((cgroup_id, agent)) = current_agent() else {
        count(counter::DENIED);
        return DENY;
    };
    if port == DNS_PORT
        && agent.resolver_port != 0
        && (protocol == PROTO_UDP || protocol == PROTO_TCP)
    {
        return to_resolver::<V6>(ctx, &address, user_port, agent.resolver_port);
    }
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
    // A rule without ports closes a network (link-local, the node's own addresses) under wider
    // rules: answers of the agent's resolver cannot open it either.
    let allowed = match NET_RULES.get(&key) {
        Some(rule) if rule.count == 0 => false,
        Some(rule) if holds(rule, port) => true,
        _ => {
            agent.flags & agent_flags::RESOLVED_NAMES != 0
                && resolved(cgroup_id, protocol, &address, port)
        }
    };
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

/// Set by claw-agent where BPF LSM runs: lsm/socket_bind decides binds then (also of sockets
/// made outside the agent and passed in, which the agent cgroup's programs never see), and these
/// programs let them through rather than take a grant's use a second time.
#[no_mangle]
static BIND_DECIDED_BY_LSM: u64 = 0;

/// bind(2) to a port: a listen rule must hold the address and port. Port 0 (the kernel picks an
/// ephemeral port, as clients do) is allowed; listening on it is decided at listen.
#[inline(always)]
fn bind<const V6: bool>(ctx: &SockAddrContext) -> i32 {
    // SAFETY: reading a plain static (a frozen global).
    if unsafe { read_volatile(&BIND_DECIDED_BY_LSM) } != 0 {
        return ALLOW;
    }
    let sock: *const bpf_sock_addr = ctx.sock_addr;
    let (address, user_port) = read_address::<V6>(sock);
    let port = u16::from_be(user_port as u16);
    if port == 0 {
        return ALLOW;
    }
    // SAFETY: the context the kernel passed; one whole field.
    let protocol = unsafe { read_volatile(&(*sock).protocol) } as u8;
    let Some((cgroup_id, agent)) = current_agent() else {
        count(counter::DENIED);
        return DENY;
    };
    let family = if V6 { 6 } else { 4 };
    if inbound(cgroup_id, agent, op::BIND, protocol, family, address, port) {
        ALLOW
    } else {
        DENY
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EPERM: i32 = 1;

/// listen(2) on an IPv4 or IPv6 socket: its bound address and port (0 if it was never bound: the
/// kernel would pick one) must be held by a listen rule.
#[lsm(hook = "socket_listen")]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    // (struct socket *sock, int backlog)
    let socket: *const u8 = ctx.arg(0);
    // SAFETY: checked kernel reads of the hook's socket and its sock (which begins with its
    // sock_common); the offsets are the kernel's own (from BTF).
    let local = unsafe {
        read_ptr(socket, offset!(SOCKET_SK)).and_then(|sk| {
            let family = read::<u16>(sk, offset!(SOCK_FAMILY))?;
            let protocol = read::<u16>(sk, offset!(SOCK_PROTOCOL))?;
            let port = read::<u16>(sk, offset!(SOCK_NUM))?;
            let mut address = [0u8; 16];
            match family {
                AF_INET => {
                    address[10] = 0xff;
                    address[11] = 0xff;
                    address[12..].copy_from_slice(&read::<[u8; 4]>(sk, offset!(SOCK_RCV_SADDR))?);
                }
                AF_INET6 => address = read::<[u8; 16]>(sk, offset!(SOCK_V6_RCV_SADDR))?,
                _ => return Some(None),
            }
            Some(Some((family, protocol as u8, address, port)))
        })
    };
    let local = match local {
        // A Unix socket: its file was decided when it was bound (files.write).
        Some(None) => return 0,
        Some(Some(local)) => Some(local),
        None => None,
    };
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // A socket whose address cannot be read is refused: nothing could be matched.
    let (family, protocol, address, port) = local.unwrap_or((0, 0, [0; 16], 0));
    let family = if family == AF_INET6 { 6 } else { 4 };
    if inbound(
        cgroup_id,
        agent,
        op::LISTEN,
        protocol,
        family,
        address,
        port,
    ) {
        0
    } else {
        -EPERM
    }
}

/// bind(2) of an IPv4 or IPv6 socket, wherever it was made: as cgroup/bind4 and bind6 decide.
#[lsm(hook = "socket_bind")]
pub fn socket_bind(ctx: LsmContext) -> i32 {
    // (struct socket *sock, struct sockaddr *address, int addrlen)
    let socket: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    // SAFETY: checked kernel reads of the hook's socket, its sock, and the kernel's copy of the
    // address (sockaddr_in: family, port, address at 4; sockaddr_in6: address at 8).
    let local = unsafe {
        read_ptr(socket, offset!(SOCKET_SK)).and_then(|sk| {
            let family = read::<u16>(sk, offset!(SOCK_FAMILY))?;
            if family != AF_INET && family != AF_INET6 {
                return Some(None);
            }
            let protocol = read::<u16>(sk, offset!(SOCK_PROTOCOL))?;
            let port = u16::from_be(read::<u16>(address, 2)?);
            let mut bound = [0u8; 16];
            if read::<u16>(address, 0)? == AF_INET6 {
                bound = read::<[u8; 16]>(address, 8)?;
            } else {
                // AF_INET, or AF_UNSPEC, which an IPv4 socket takes as INADDR_ANY.
                bound[10] = 0xff;
                bound[11] = 0xff;
                bound[12..].copy_from_slice(&read::<[u8; 4]>(address, 4)?);
            }
            Some(Some((family, protocol as u8, bound, port)))
        })
    };
    let (family, protocol, bound, port) = match local {
        Some(None) => return 0,
        Some(Some(local)) => local,
        // Unreadable: decided as a bind to port 1 of nowhere, which no rule holds.
        None => (AF_INET, 0, [0; 16], 1),
    };
    if port == 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let family = if family == AF_INET6 { 6 } else { 4 };
    if inbound(cgroup_id, agent, op::BIND, protocol, family, bound, port) {
        0
    } else {
        -EPERM
    }
}

/// Whether the agent may bind or listen at `address`:`port`: a listen rule holds it, or else a
/// grant does (taking a use); otherwise reported, and allowed only in audit mode.
#[inline(always)]
fn inbound(
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    protocol: u8,
    family: u8,
    address: [u8; 16],
    port: u16,
) -> bool {
    let key = Key::new(
        40 + 128,
        NetRuleKey {
            ruleset: agent.ruleset.to_be_bytes(),
            protocol: protocol | LISTEN_RULE,
            address,
        },
    );
    if port != 0 && NET_RULES.get(&key).is_some_and(|rule| holds(rule, port)) {
        count(counter::ALLOWED);
        return true;
    }
    let mut record = NetRecord {
        header: header(record::NET, op, cgroup_id, agent, decision_of(agent), 0),
        address,
        port,
        protocol,
        family,
        _pad: 0,
    };
    if record.header.decision == decision::DENY
        && grant::net(cgroup_id, op, record.object_hash(), &record)
    {
        count(counter::ALLOWED);
        record.header.decision = decision::GRANTED;
        emit(record);
        return true;
    }
    let (_, ret) = outcome(agent);
    emit(record);
    ret == 0
}
