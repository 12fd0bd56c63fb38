//! The Prometheus endpoint (off unless the configuration file turns it on; loopback by
//! default): denials by agent, operation and decision, counted from the bus (sent events plus
//! throttled repeats); the kernel's decision counters and program run counts; events lost by
//! stage; forwarders' spools; the ring buffer's backlog when the daemon reads it.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::{
    control::{protocol::Status, server::Control},
    events::bus::{Bus, Delivery, Stage, Subscription},
    export::forward::Forwarder,
};

type Labels = Vec<(String, String)>;

/// What the endpoint reads besides the owner's status.
pub struct Sources {
    pub bus: Arc<Bus>,
    pub forwarders: Vec<Forwarder>,
    pub backlog: Histogram,
    pub control: mpsc::Sender<Control>,
}

/// Bytes waiting in the ring buffer each time the daemon woke to read it.
pub fn backlog_histogram() -> Histogram {
    Histogram::new([
        4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 2097152.0, 4194304.0,
    ])
}

/// Counts denials (and audit-mode would-be denials) by agent, operation and decision: each
/// deny or audit event counts one, each throttled summary the repeats it stands for.
async fn count_denials(mut events: Subscription, denials: Family<Labels, Counter>) {
    while let Some(delivery) = events.next().await {
        let Delivery::Event(event) = delivery else {
            continue;
        };
        let count = match event.kind.as_str() {
            "deny" | "audit" => 1,
            "throttled" => event
                .details
                .as_ref()
                .and_then(|d| d.get("suppressed")?.as_u64())
                .unwrap_or(0),
            _ => continue,
        };
        denials
            .get_or_create(&vec![
                ("agent".to_owned(), event.agent.clone()),
                ("op".to_owned(), event.op.clone()),
                ("decision".to_owned(), event.decision.to_string()),
            ])
            .inc_by(count);
    }
}

/// The page for one scrape.
fn render(sources: &Sources, denials: &Family<Labels, Counter>, status: Option<Status>) -> String {
    let mut registry = Registry::with_prefix("claw");
    registry.register(
        "denials",
        "Denials (decision deny) and audit-mode would-be denials (decision allow) by agent and operation, throttled repeats included",
        denials.clone(),
    );
    let lost: Family<Labels, Counter> = Family::default();
    for stage in Stage::ALL {
        lost.get_or_create(&vec![("stage".to_owned(), stage.name().to_owned())])
            .inc_by(sources.bus.lost(stage));
    }
    registry.register(
        "events_lost",
        "Events lost, by stage (each is also reported where it happened)",
        lost,
    );
    registry.register(
        "ring_buffer_backlog_bytes",
        "Bytes waiting in the kernel's ring buffer each time claw-agent woke to read it",
        sources.backlog.clone(),
    );
    let spooled: Family<Labels, Gauge> = Family::default();
    let sent: Family<Labels, Counter> = Family::default();
    let connected: Family<Labels, Gauge> = Family::default();
    for forwarder in &sources.forwarders {
        let labels = vec![
            ("forwarder".to_owned(), forwarder.name.clone()),
            ("target".to_owned(), forwarder.target.clone()),
        ];
        let stats = &forwarder.stats;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        spooled
            .get_or_create(&labels)
            .set(load(&stats.spooled_records) as i64);
        sent.get_or_create(&labels).inc_by(load(&stats.sent));
        connected.get_or_create(&labels).set(i64::from(
            stats.connected.load(std::sync::atomic::Ordering::Relaxed),
        ));
    }
    registry.register(
        "forward_spool_records",
        "Records waiting in a forwarder's spool for its collector",
        spooled,
    );
    registry.register("forward_sent", "Records a forwarder's collector took", sent);
    registry.register(
        "forward_connected",
        "1 while a forwarder is connected to its collector",
        connected,
    );
    if let Some(status) = status {
        let enforcing: Gauge = Gauge::default();
        enforcing.set(i64::from(status.enforcing));
        registry.register(
            "enforcing",
            "1 while every program is attached with the policy's rules",
            enforcing,
        );
        let decisions: Family<Labels, Counter> = Family::default();
        let counters = &status.counters;
        for (decision, count) in [
            ("allowed", counters.allowed),
            ("denied", counters.denied),
            ("audited", counters.audited),
        ] {
            decisions
                .get_or_create(&vec![("decision".to_owned(), decision.to_owned())])
                .inc_by(count);
        }
        registry.register(
            "kernel_decisions",
            "Decisions the programs took about agents' operations, from their counters",
            decisions,
        );
        let runs: Family<Labels, Counter> = Family::default();
        for program in &status.programs {
            runs.get_or_create(&vec![
                ("program".to_owned(), program.program.clone()),
                ("hook".to_owned(), program.hook.clone()),
            ])
            .inc_by(program.run_count);
        }
        registry.register(
            "program_runs",
            "Times the kernel ran each program (BPF run statistics)",
            runs,
        );
    }
    let mut page = String::new();
    let _ = encode(&mut page, &registry);
    page
}

/// Serves GET /metrics on `listen` until the daemon stops.
pub async fn serve(listen: SocketAddr, sources: Sources) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.map_err(|err| {
        anyhow::anyhow!("metrics endpoint: binding {listen}: {err} — change metrics.listen in the configuration")
    })?;
    tracing::info!(%listen, "metrics endpoint listening");
    let denials: Family<Labels, Counter> = Family::default();
    let events = sources.bus.subscribe(Stage::Metrics);
    tokio::spawn(count_denials(events, denials.clone()));
    let sources = Arc::new(sources);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (sources, denials) = (sources.clone(), denials.clone());
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &sources, &denials).await {
                    tracing::debug!("metrics request: {err}");
                }
            });
        }
    });
    Ok(())
}

/// One request, one answer, then the connection closes. Hand-written: one GET endpoint does not
/// warrant an HTTP server crate.
async fn answer(
    mut stream: tokio::net::TcpStream,
    sources: &Sources,
    denials: &Family<Labels, Counter>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let line = String::from_utf8_lossy(&request);
    let (status_line, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
        let (reply, answer) = oneshot::channel();
        let status = match sources.control.send(Control::Status(reply)).await {
            Ok(()) => answer.await.ok(),
            Err(_) => None,
        };
        ("200 OK", render(sources, denials, status))
    } else {
        (
            "404 Not Found",
            "claw-agent serves /metrics only\n".to_owned(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::tests::sample;

    #[tokio::test]
    async fn the_page_counts_denials_throttled_repeats_and_losses() {
        let bus = Arc::new(Bus::new(0));
        let (control, _requests) = mpsc::channel(1);
        let sources = Sources {
            bus: bus.clone(),
            forwarders: Vec::new(),
            backlog: backlog_histogram(),
            control,
        };
        let denials: Family<Labels, Counter> = Family::default();
        let events = bus.subscribe(Stage::Metrics);
        let counting = tokio::spawn(count_denials(events, denials.clone()));
        bus.publish(sample("deny"));
        let mut summary = sample("throttled");
        summary.details = Some(serde_json::json!({ "suppressed": 41 }));
        bus.publish(summary);
        bus.count_lost(Stage::Kernel, 3);
        let want = "claw_denials_total{agent=\"tools\",op=\"open\",decision=\"deny\"} 42";
        let mut page = String::new();
        for _ in 0..100 {
            page = render(&sources, &denials, None);
            if page.contains(want) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(page.contains(want), "{page}");
        assert!(
            page.contains("claw_events_lost_total{stage=\"kernel\"} 3"),
            "{page}"
        );
        counting.abort();
    }
}
