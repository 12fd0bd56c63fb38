//! `cargo xtask bench … --record`: a bench's table goes into docs/benchmarks.md as printed, with
//! the date, so that documented figures are a run's output and never typed by hand. The
//! document keeps the last RUNS_KEPT runs of each suite between its markers.

use std::path::Path;

use anyhow::{bail, Context as _};

use crate::run;

const DOCUMENT: &str = "docs/benchmarks.md";
const RUNS_KEPT: usize = 3;
/// Each recorded run begins with this line.
const RUN_HEADING: &str = "Recorded ";

fn markers(suite: &str) -> (String, String) {
    (
        format!("<!-- recorded runs: {suite} -->"),
        format!("<!-- end of recorded runs: {suite} -->"),
    )
}

/// Puts `table` into the document as the newest run of `suite`.
pub fn record(suite: &str, table: &[String]) -> anyhow::Result<()> {
    let path = run::workspace_root().join(DOCUMENT);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {DOCUMENT}"))?;
    let date = run::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let updated = with_run(&text, suite, date.trim(), table)?;
    std::fs::write(&path, updated).with_context(|| format!("writing {DOCUMENT}"))?;
    eprintln!("recorded in {}", Path::new(DOCUMENT).display());
    Ok(())
}

/// `text` with the run added first between the suite's markers, older runs beyond RUNS_KEPT
/// dropped.
fn with_run(text: &str, suite: &str, date: &str, table: &[String]) -> anyhow::Result<String> {
    let (begin, end) = markers(suite);
    let (Some(start), Some(stop)) = (text.find(&begin), text.find(&end)) else {
        bail!("{DOCUMENT} has no `{begin}` … `{end}` section for the runs of `{suite}`");
    };
    let inside = &text[start + begin.len()..stop];
    let mut runs: Vec<String> = inside
        .split(&format!("\n{RUN_HEADING}"))
        .skip(1)
        .map(|run| format!("{RUN_HEADING}{}", run.trim_end()))
        .collect();
    let mut run =
        format!("{RUN_HEADING}{date} by `cargo xtask bench {suite} --record`:\n\n```text\n");
    for line in table {
        run.push_str(line.trim_end());
        run.push('\n');
    }
    run.push_str("```");
    runs.insert(0, run);
    runs.truncate(RUNS_KEPT);
    Ok(format!(
        "{}{begin}\n\n{}\n\n{}",
        &text[..start],
        runs.join("\n\n"),
        &text[stop..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_added_newest_first_and_the_oldest_dropped() {
        let mut text =
            "intro\n<!-- recorded runs: events -->\n<!-- end of recorded runs: events -->\nafter\n"
                .to_owned();
        for n in 1..=4 {
            text = with_run(
                &text,
                "events",
                &format!("day {n}"),
                &[format!("figure {n}")],
            )
            .unwrap();
        }
        assert!(text.starts_with("intro\n"));
        assert!(text.ends_with("<!-- end of recorded runs: events -->\nafter\n"));
        let days: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(RUN_HEADING))
            .collect();
        assert_eq!(days.len(), RUNS_KEPT);
        assert!(
            days[0].contains("day 4") && days[2].contains("day 2"),
            "{days:?}"
        );
        assert!(text.contains("```text\nfigure 4\n```"));
        assert!(!text.contains("figure 1"));
    }

    #[test]
    fn a_document_without_the_section_is_an_error_that_names_it() {
        let err = with_run("no markers", "kernel", "day", &[]).unwrap_err();
        assert!(
            err.to_string().contains("<!-- recorded runs: kernel -->"),
            "{err}"
        );
    }
}
