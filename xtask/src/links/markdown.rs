//! Just enough Markdown for the link check: the links a text makes outside code, and the anchors
//! its headings get on GitHub.

use std::collections::BTreeSet;

/// A link target and the line (from 1) it is written on.
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// Inline links and images (`[text](target "title")`, the text perhaps over several lines) and
/// reference definitions (`[label]: target`), outside fenced code blocks and code spans.
pub fn links(text: &str) -> Vec<Link> {
    let mut links = Vec::new();
    // A paragraph's lines, code spans blanked, and the number of its first line.
    let mut block = String::new();
    let mut first = 0;
    let mut last = 0;
    for (line, raw) in prose(text) {
        let masked = mask_code(raw);
        if line != last + 1 || masked.trim().is_empty() {
            block_links(&block, first, &mut links);
            block.clear();
        }
        if block.is_empty() {
            first = line;
        }
        last = line;
        links.extend(definition(&masked).map(|target| Link { line, target }));
        block += &masked;
        block.push('\n');
    }
    block_links(&block, first, &mut links);
    links.sort_by_key(|link| link.line);
    links
}

/// The inline links of a block of lines starting at line `first`.
fn block_links(block: &str, first: usize, links: &mut Vec<Link>) {
    for (at, target) in inline_links(block) {
        let line = first + block[..at].matches('\n').count();
        links.push(Link { line, target });
    }
}

/// The anchors GitHub gives the text: each heading's slug (numbered from `-1` on repeats), and
/// the `id` or `name` of `<a>` tags.
pub fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut previous: Option<&str> = None;
    for (_, line) in prose(text) {
        let heading = atx_heading(line)
            .or_else(|| previous.filter(|p| setext_underline(line) && is_paragraph(p)));
        if let Some(heading) = heading {
            let base = slug(heading);
            let mut anchor = base.clone();
            let mut n = 0;
            while anchors.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            anchors.insert(anchor);
        }
        anchors.extend(html_anchors(line));
        previous = Some(line).filter(|l| heading.is_none() && !l.trim().is_empty());
    }
    anchors
}

/// GitHub's slug of a heading: its text as rendered (links become their text), lowercase, spaces
/// to `-`, punctuation other than `-` and `_` dropped.
pub fn slug(heading: &str) -> String {
    let mut rendered = String::new();
    let mut rest = heading;
    // `[text](target)` renders as text; tags as nothing.
    while let Some(i) = rest.find(['[', '<']) {
        rendered += &rest[..i];
        rest = &rest[i..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => break,
            }
        } else {
            let closed = rest.find("](").and_then(|mid| {
                let end = mid + rest[mid..].find(')')?;
                Some((mid, end))
            });
            match closed {
                Some((mid, end)) => {
                    rendered += &rest[1..mid];
                    rest = &rest[end + 1..];
                }
                None => {
                    rendered.push('[');
                    rest = &rest[1..];
                }
            }
        }
    }
    rendered += rest;
    rendered
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut open: Option<(char, usize)> = None;
    text.lines().enumerate().filter_map(move |(i, line)| {
        let fence = fence(line);
        match (open, fence) {
            (None, Some(f)) => open = Some(f),
            (Some((c, n)), Some((d, m))) if c == d && m >= n && line.trim().len() == m => {
                open = None;
            }
            (None, None) => return Some((i + 1, line)),
            _ => {}
        }
        None
    })
}

/// A fence line's character and length (```` ``` ```` or `~~~`, three or more); indented fences
/// (in list items) count too.
fn fence(line: &str) -> Option<(char, usize)> {
    let rest = line.trim_start();
    let c = rest.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let n = rest.chars().take_while(|&x| x == c).count();
    // A backtick fence's info string has no backtick (else it is a code span).
    (n >= 3 && !(c == '`' && rest[n..].contains('`'))).then_some((c, n))
}

/// The line with each code span blanked out (unmatched backticks stay: they are literal).
fn mask_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let run = rest[start..].chars().take_while(|&c| c == '`').count();
        let ticks = &rest[start..start + run];
        let after = &rest[start + run..];
        // The closing run has exactly as many backticks.
        let close = after
            .match_indices(ticks)
            .find(|&(i, _)| !after[i + run..].starts_with('`') && !after[..i].ends_with('`'));
        out += &rest[..start];
        match close {
            Some((i, _)) => {
                out.extend(std::iter::repeat_n(
                    ' ',
                    2 * run + after[..i].chars().count(),
                ));
                rest = &after[i + run..];
            }
            None => {
                out += ticks;
                rest = after;
            }
        }
    }
    out + rest
}

/// `[label]: target` (not a footnote `[^1]:`), up to three spaces in.
fn definition(line: &str) -> Option<String> {
    let rest = indented_up_to_3(line)?.strip_prefix('[')?;
    let (label, target) = rest.split_once("]:")?;
    if label.starts_with('^') || label.contains(']') {
        return None;
    }
    let target = target.split_whitespace().next()?;
    let target = target
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(target);
    Some(target.to_owned())
}

/// `[text](target)` and `![alt](target)`, with where each destination starts.
fn inline_links(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut opens = 0;
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' => opens += 1,
            b']' if opens > 0 => {
                opens -= 1;
                if bytes.get(i + 1) == Some(&b'(') {
                    if let Some((target, end)) = destination(text, i + 2) {
                        found.push((i + 2, target));
                        opens = 0;
                        i = end;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The destination starting at `start` (after `](`) and where the link ends (after its `)`).
fn destination(line: &str, start: usize) -> Option<(String, usize)> {
    let from = start + (line[start..].len() - line[start..].trim_start().len());
    let (target, after) = if line[from..].starts_with('<') {
        let close = line[from..].find('>')?;
        (&line[from + 1..from + close], from + close + 1)
    } else {
        let mut depth = 0;
        let mut end = from;
        let bytes = line.as_bytes();
        while end < bytes.len() {
            match bytes[end] {
                b'\\' => end += 1,
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                b' ' | b'\t' | b'\n' => break,
                _ => {}
            }
            end += 1;
        }
        (&line[from..end.min(line.len())], end.min(line.len()))
    };
    // A title may follow; the link ends at the next `)`.
    let close = line[after..].find(')')?;
    Some((target.to_owned(), after + close + 1))
}

/// `# Heading` to `###### Heading`, its text without a closing `#` run.
fn atx_heading(line: &str) -> Option<&str> {
    let rest = indented_up_to_3(line)?;
    let level = rest.chars().take_while(|&c| c == '#').count();
    let text = rest.get(level..)?;
    if !(1..=6).contains(&level) || !(text.is_empty() || text.starts_with([' ', '\t'])) {
        return None;
    }
    let text = text.trim();
    let unclosed = text.trim_end_matches('#');
    Some(if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
        unclosed.trim_end()
    } else {
        text
    })
}

/// `===` or `---` under a paragraph line makes it a heading.
fn setext_underline(line: &str) -> bool {
    let Some(rest) = indented_up_to_3(line) else {
        return false;
    };
    let rest = rest.trim_end();
    !rest.is_empty() && (rest.chars().all(|c| c == '=') || rest.chars().all(|c| c == '-'))
}

/// A line that can be the text of a setext heading: not a list item, quote, table row or tag.
fn is_paragraph(line: &str) -> bool {
    let Some(rest) = indented_up_to_3(line) else {
        return false;
    };
    let numbered = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let list_item = ["- ", "* ", "+ "].iter().any(|m| rest.starts_with(m))
        || (numbered.len() < rest.len()
            && (numbered.starts_with(". ") || numbered.starts_with(") ")));
    !rest.trim().is_empty() && !list_item && !rest.starts_with(['>', '|', '<'])
}

fn indented_up_to_3(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ');
    (line.len() - rest.len() <= 3).then_some(rest)
}

/// `id="x"` and `name="x"` of `<a ...>` tags.
fn html_anchors(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in line.match_indices("<a ") {
        let tag = &line[i..line[i..].find('>').map_or(line.len(), |end| i + end)];
        for attr in ["id=\"", "name=\""] {
            if let Some(start) = tag.find(attr) {
                let value = &tag[start + attr.len()..];
                found.extend(value.split('"').next().map(str::to_owned));
            }
        }
    }
    found
}
