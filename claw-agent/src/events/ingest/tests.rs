//! The reader's accounting and delivery, against scripted kernel counts and a real audit log.

use std::cell::RefCell;

use claw_common::COMM_BYTES;

use super::{accounting::IDLE_KEY_NS, *};
use crate::events::event::tests::{identities, sample};

const LIMITS: ReportLimits = ReportLimits {
    identical_per_second: 10,
    agent_per_second: 100,
};

fn header(object_hash: u64) -> RecordHeader {
    RecordHeader {
        kind: 1,
        op: 1,
        boot_time_ns: 0,
        cgroup_id: 77,
        task_cgroup_id: 77,
        object_hash,
        repeats_before: 0,
        record: 0,
        pid: 1,
        ruleset: 5,
        decision: 1,
        access: 1,
        comm: [0; COMM_BYTES],
    }
}

fn suppressed(events: &[Event]) -> u64 {
    events
        .iter()
        .filter_map(|e| e.details.as_ref()?.get("suppressed")?.as_u64())
        .sum()
}

#[test]
fn repeats_are_summarised_once_with_their_object() {
    let mut accounting = Accounting::new(LIMITS, Coverage::Full);
    let first = Event {
        record: Some(3),
        ..sample("deny")
    };
    accounting.learn(&header(9), &Arc::new(first));
    let state = RefCell::new(RateState {
        window_start_ns: 1_000,
        sent: 10,
        suppressed: 12_345,
    });
    let read = |_: &ThrottleKey| Some(*state.borrow());
    let (summaries, _) = accounting.key_summaries(2_000, read);
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].kind, Kind::Throttled);
    assert_eq!(summaries[0].path.as_deref(), Some("/etc/shadow"));
    assert_eq!(
        summaries[0].record, None,
        "a summary is not the record it names"
    );
    assert_eq!(suppressed(&summaries), 12_345);
    assert!(accounting.key_summaries(2_000, read).0.is_empty());
    state.borrow_mut().suppressed += 5;
    assert_eq!(suppressed(&accounting.key_summaries(2_000, read).0), 5);
}

#[test]
fn agent_counts_cover_what_keys_do_not_and_nothing_twice() {
    let mut accounting = Accounting::new(LIMITS, Coverage::Full);
    accounting.learn(&header(9), &Arc::new(sample("deny")));
    // When the agent was read it had 30 repeats: 20 of the followed key, 10 of a key the
    // kernel evicted. By the time the key is read it has 25 (5 more since).
    let agent = AgentEvents {
        throttled_identical: 30,
        throttled_budget: 7,
        lost: 3,
        ..Default::default()
    };
    let read = |_: &ThrottleKey| {
        Some(RateState {
            window_start_ns: 0,
            sent: 10,
            suppressed: 25,
        })
    };
    let (keys, _) = accounting.key_summaries(0, read);
    assert_eq!(suppressed(&keys), 25);
    let agents = accounting.agent_summaries(77, agent, &identities());
    assert_eq!(Accounting::lost_in(&agents), 3);
    // 7 over budget; 5 identical repeats without a key so far.
    assert_eq!(suppressed(&agents), 12);
    assert!(agents.iter().all(|e| e.agent == "tools"));
    // Next second the agent's count includes the 5 the key had already: the other 5 of the
    // evicted key appear now; in all, every one of the 35 repeats was reported once.
    let later = AgentEvents {
        throttled_identical: 35,
        ..agent
    };
    assert!(accounting.key_summaries(0, read).0.is_empty());
    assert_eq!(
        suppressed(&accounting.agent_summaries(77, later, &identities())),
        5
    );
    assert!(accounting
        .agent_summaries(77, later, &identities())
        .is_empty());
}

#[test]
fn a_key_counts_from_the_repeats_its_first_report_carried() {
    let mut accounting = Accounting::new(LIMITS, Coverage::Full);
    let mut first = header(9);
    first.repeats_before = 95;
    accounting.learn(&first, &Arc::new(sample("deny")));
    let read = |_: &ThrottleKey| {
        Some(RateState {
            window_start_ns: 0,
            sent: 1,
            suppressed: 100,
        })
    };
    assert_eq!(suppressed(&accounting.key_summaries(0, read).0), 5);
}

#[test]
fn evicted_and_idle_keys_are_no_longer_followed() {
    let mut accounting = Accounting::new(LIMITS, Coverage::Full);
    accounting.learn(&header(1), &Arc::new(sample("deny")));
    accounting.learn(&header(2), &Arc::new(sample("deny")));
    let read = |key: &ThrottleKey| {
        (key.object_hash == 2).then_some(RateState {
            window_start_ns: 0,
            sent: 1,
            suppressed: 0,
        })
    };
    let (_, idle) = accounting.key_summaries(IDLE_KEY_NS - 1, read);
    assert!(idle.is_empty(), "an evicted key needs no removal");
    assert!(!accounting.is_tracked(&header(1)));
    assert!(accounting.is_tracked(&header(2)));
    let (_, idle) = accounting.key_summaries(IDLE_KEY_NS, read);
    assert_eq!(idle, [key_of(&header(2))]);
    assert!(!accounting.is_tracked(&header(2)));
}

#[test]
fn counts_from_before_the_daemon_are_not_reported() {
    let mut accounting = Accounting::new(LIMITS, Coverage::Full);
    let before = AgentEvents {
        lost: 4,
        ..Default::default()
    };
    accounting.baseline(77, before);
    assert!(accounting
        .agent_summaries(77, before, &identities())
        .is_empty());
}

fn numbered(cgroup_id: u64, record: u64) -> RecordHeader {
    RecordHeader {
        cgroup_id,
        record,
        ..header(1)
    }
}

#[test]
fn records_a_killed_claw_agent_read_are_counted_exactly_once() {
    let mut delivery = Delivery::default();
    // Agent 77's kernel count at start: 100. Earlier claw-agents accounted for 90 (of them,
    // records 0..=89 say); records 95..=99 waited in the ring buffer; 90..=94 are gone.
    delivery.start(77, 100, 90, AgentEvents::default());
    for (seq, record) in (95..100).enumerate() {
        assert!(delivery.published(&numbered(77, record), seq as u64));
    }
    // Records placed after the start did not wait.
    assert!(!delivery.published(&numbered(77, 100), 5));
    assert_eq!(delivery.settle_restart(), [(77, 5)]);
    assert!(delivery.settle_restart().is_empty(), "settled once");
    delivery.lost(6, 77, 5);
    let accounted = |delivery: &Delivery| delivery.record(77, 0).accounted;
    assert_eq!(
        accounted(&delivery),
        90,
        "nothing handled by the audit log yet"
    );
    delivery.handled(6);
    assert_eq!(accounted(&delivery), 96);
    delivery.handled(7);
    assert_eq!(
        accounted(&delivery),
        101,
        "every record accounted for, the lost ones too"
    );
    assert_eq!(delivery.record(77, 7).accounted_through, 7);
}

#[test]
fn a_storm_waits_for_the_audit_log_as_one_entry_per_run_and_is_accounted_record_by_record() {
    let mut delivery = Delivery::default();
    delivery.start(77, 0, 0, AgentEvents::default());
    delivery.start(88, 0, 0, AgentEvents::default());
    // 100,000 records of agent 77 at bus positions 0..100_000, then one of 88, then 77 again.
    for seq in 0..100_000u64 {
        delivery.published(&numbered(77, seq), seq);
    }
    delivery.published(&numbered(88, 0), 100_000);
    delivery.published(&numbered(77, 100_000), 100_001);
    delivery.published(&numbered(77, 100_001), 100_002);
    assert_eq!(delivery.pending_entries(), 3, "runs, not records");
    let accounted = |delivery: &Delivery, id| delivery.record(id, 0).accounted;
    // The writer has handled positions below 40,000: exactly those records.
    delivery.handled(40_000);
    assert_eq!(accounted(&delivery, 77), 40_000);
    delivery.handled(40_001);
    assert_eq!(accounted(&delivery, 77), 40_001);
    delivery.handled(100_001);
    assert_eq!(
        (accounted(&delivery, 77), accounted(&delivery, 88)),
        (100_000, 1)
    );
    delivery.handled(100_002);
    assert_eq!(accounted(&delivery, 77), 100_001);
    assert_eq!(delivery.pending_entries(), 1);
}

#[test]
fn reported_counts_are_kept_once_their_summaries_are_logged() {
    let mut delivery = Delivery::default();
    let before = AgentEvents {
        lost: 10,
        ..Default::default()
    };
    delivery.start(77, 0, 0, before);
    let after = AgentEvents {
        lost: 25,
        ..Default::default()
    };
    delivery.summarised((2, 3), 77, after);
    delivery.handled(3);
    let kept = delivery.record(77, 3);
    assert_eq!(kept.counts, before);
    assert_eq!(
        kept.reported_through, 2,
        "summary 2 is logged but not in the counts"
    );
    delivery.handled(4);
    let kept = delivery.record(77, 4);
    assert_eq!((kept.counts, kept.reported_through), (after, 4));
}

#[test]
fn agents_first_seen_after_the_start_and_unnumbered_records_claim_no_loss() {
    let mut delivery = Delivery::default();
    delivery.start(77, 10, 10, AgentEvents::default());
    delivery.published(&numbered(88, 0), 0);
    delivery.published(&numbered(88, claw_common::UNNUMBERED), 1);
    assert!(delivery.settle_restart().is_empty());
    delivery.handled(2);
    let accounted = |id| delivery.record(id, 2).accounted;
    assert_eq!((accounted(77), accounted(88)), (10, 1));
}

#[test]
fn the_log_after_a_position_gives_records_and_reported_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut writer = crate::events::audit::Writer::open(&path, 1 << 20).unwrap();
    let event = |seq: u64, kind: &str, record: Option<u64>, details: serde_json::Value| {
        let mut event = sample(kind);
        event.seq = seq;
        event.cgroup = "/claw/a".to_owned();
        event.record = record;
        event.details = (!details.is_null()).then_some(details);
        crate::events::audit::Entry::Event(Arc::new(event))
    };
    for entry in [
        event(1, "deny", Some(0), json!(null)),
        event(2, "deny", Some(1), json!(null)),
        event(3, "lost", None, json!({ "lost": 7, "stage": "kernel" })),
        event(4, "lost", None, json!({ "lost": 2, "stage": "restart" })),
        event(
            5,
            "throttled",
            None,
            json!({ "suppressed": 4, "reason": "agent-budget" }),
        ),
        event(
            6,
            "throttled",
            None,
            json!({ "suppressed": 3, "reason": "identical" }),
        ),
        event(7, "policy", None, json!(null)),
    ] {
        writer.append(entry).unwrap();
    }
    let from = HashMap::from([("/claw/a".to_owned(), (2, 4))]);
    let logged = logged_after(&path, &from);
    assert_eq!(
        logged["/claw/a"],
        Logged {
            records: 3,
            counts: AgentEvents {
                throttled_budget: 4,
                throttled_identical: 3,
                ..Default::default()
            },
        }
    );
}
