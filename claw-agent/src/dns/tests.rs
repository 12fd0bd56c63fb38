//! The resolvers' judgement, answers and configuration.

use claw_common::PROTO_TCP;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{rdata, Name, RData, Record, RecordType},
};

use super::*;
use crate::policy::rules::ConnectRule;

fn names(rules: &[&str]) -> Names {
    let rules: Vec<ConnectRule> = rules
        .iter()
        .map(|r| ConnectRule::parse(r).unwrap())
        .collect();
    Names::of(&rules)
}

fn query(name: &str) -> Message {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message
}

#[test]
fn only_names_the_rules_name_are_forwarded() {
    let names = names(&["api.github.com:443/tcp", "10.0.0.0/8:80/tcp"]);
    assert_eq!(
        judge(&query("API.GitHub.com."), &names),
        Verdict::Forward("api.github.com".to_owned())
    );
    assert_eq!(
        judge(&query("evil.example."), &names),
        Verdict::Refuse(Some("evil.example".to_owned()))
    );
    assert_eq!(
        judge(&query("x.api.github.com."), &names),
        Verdict::Refuse(Some("x.api.github.com".to_owned()))
    );
    let mut two = query("api.github.com.");
    two.add_query(Query::query(
        Name::from_ascii("evil.example.").unwrap(),
        RecordType::A,
    ));
    assert!(matches!(judge(&two, &names), Verdict::Refuse(_)));
    let mut update = query("api.github.com.");
    update.metadata.op_code = OpCode::Update;
    assert_eq!(judge(&update, &names), Verdict::Refuse(None));
}

#[test]
fn a_pattern_answers_every_name_below_its_domain_with_the_ports_of_every_rule_covering_it() {
    let names = names(&["*.github.com:443/tcp", "api.github.com:22/tcp"]);
    for asked in ["api.github.com.", "codeload.github.com.", "a.b.github.com."] {
        assert!(
            matches!(judge(&query(asked), &names), Verdict::Forward(_)),
            "{asked}"
        );
    }
    let mut dotted = Message::query();
    let label_with_a_dot = Name::from_labels(vec![&b"x.github"[..], &b"com"[..]]).unwrap();
    dotted.add_query(Query::query(label_with_a_dot, RecordType::A));
    assert!(
        matches!(judge(&dotted, &names), Verdict::Refuse(_)),
        "a label holding a dot passed for a name below github.com"
    );
    for asked in ["github.com.", "evilgithub.com.", "github.com.evil.net."] {
        assert!(
            matches!(judge(&query(asked), &names), Verdict::Refuse(_)),
            "{asked}"
        );
    }
    let ports = |name: &str| -> Vec<(u16, u16)> {
        names.get(name).unwrap()[&PROTO_TCP]
            .iter()
            .map(|r| (r.first, r.last))
            .collect()
    };
    assert_eq!(ports("api.github.com"), [(22, 22), (443, 443)]);
    assert_eq!(ports("codeload.github.com"), [(443, 443)]);
}

#[test]
fn an_answer_opens_its_addresses_for_the_names_ports_until_its_ttl() {
    let names = names(&[
        "svc.test:443/tcp",
        "svc.test:8000-8001/tcp",
        "other.test:53/udp",
    ]);
    let mut answer = query("svc.test.");
    let name = Name::from_ascii("svc.test.").unwrap();
    answer.add_answer(Record::from_rdata(
        name.clone(),
        60,
        RData::CNAME(rdata::CNAME(Name::from_ascii("edge.cdn.").unwrap())),
    ));
    answer.add_answer(Record::from_rdata(
        Name::from_ascii("edge.cdn.").unwrap(),
        60,
        RData::A(rdata::A([10, 1, 2, 3].into())),
    ));
    answer.add_answer(Record::from_rdata(
        Name::from_ascii("edge.cdn.").unwrap(),
        0,
        RData::AAAA(rdata::AAAA("2001:db8::1".parse().unwrap())),
    ));
    let got = openings(
        &answer,
        "svc.test",
        &names,
        &[],
        7,
        1_000,
        Duration::from_secs(30),
    );
    assert_eq!(got.len(), 2, "one entry per address, TCP only");
    let (key, value) = &got[0];
    assert_eq!(key.cgroup_id, 7);
    assert_eq!(key.protocol, PROTO_TCP);
    assert_eq!(key.address[10..], [0xff, 0xff, 10, 1, 2, 3]);
    assert_eq!(
        value.expires_ns,
        1_000 + 30_000_000_000,
        "capped at max_ttl"
    );
    assert_eq!(value.ports.count, 2);
    assert_eq!(
        (value.ports.ranges[0].first, value.ports.ranges[0].last),
        (443, 443)
    );
    assert_eq!(
        (value.ports.ranges[1].first, value.ports.ranges[1].last),
        (8000, 8001)
    );
    assert_eq!(
        got[1].1.expires_ns,
        1_000 + MIN_TTL.as_nanos() as u64,
        "a TTL of 0 still opens for MIN_TTL"
    );
    assert!(
        openings(
            &answer,
            "nope.test",
            &names,
            &[],
            7,
            0,
            Duration::from_secs(30)
        )
        .is_empty(),
        "an answer for a name no rule names opens nothing"
    );
    let guarded = crate::policy::rules::guarded_networks();
    let mut rebound = query("svc.test.");
    for address in [[169, 254, 169, 254], [127, 0, 0, 1], [10, 1, 2, 3]] {
        rebound.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::A(rdata::A(address.into())),
        ));
    }
    let opened = openings(
        &rebound,
        "svc.test",
        &names,
        &guarded,
        7,
        0,
        Duration::from_secs(30),
    );
    assert!(
        opened
            .iter()
            .all(|(key, _)| key.address[12..] == [10, 1, 2, 3])
            && !opened.is_empty(),
        "answers in guarded networks open nothing"
    );
}

#[test]
fn an_answer_too_large_for_the_clients_datagram_asks_it_to_use_tcp() {
    let asked = query("big.test.");
    let mut full = asked.clone();
    full.metadata.message_type = MessageType::Response;
    for last in 0..60u8 {
        full.add_answer(Record::from_rdata(
            Name::from_ascii("big.test.").unwrap(),
            60,
            RData::A(rdata::A([10, 0, 0, last].into())),
        ));
    }
    let full = full.to_vec().unwrap();
    assert!(full.len() > 512);
    let sent = Message::from_vec(&for_udp(&asked.to_vec().unwrap(), full.clone())).unwrap();
    assert!(sent.metadata.truncation && sent.answers.is_empty());
    assert_eq!(sent.queries, asked.queries);
    assert_eq!(sent.metadata.id, asked.metadata.id);
    // A client that said (EDNS) it takes 4096 bytes gets the whole answer.
    let mut roomy = asked.clone();
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    roomy.edns = Some(edns);
    assert_eq!(for_udp(&roomy.to_vec().unwrap(), full.clone()), full);
}

#[test]
fn nameservers_are_read_from_resolv_conf() {
    let conf = "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n";
    assert_eq!(
        nameservers(conf),
        vec![
            "10.0.0.2:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap()
        ]
    );
}
