//! Reading logferry's `/metrics` (Prometheus text): the value of the lines a test names.
//!
//! A line is `name{labels} value`; tests name lines by a prefix (name and the first labels) or
//! by parts the line must contain. Comment lines (`# HELP`, `# TYPE`) never match.

/// The lines of `text` that are samples (not comments), with their values.
fn samples(text: &str) -> impl Iterator<Item = (&str, Option<f64>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| (l, l.rsplit(' ').next().and_then(|v| v.parse().ok())))
}

/// The value of the first line starting with `prefix`.
pub fn first(text: &str, prefix: &str) -> Option<f64> {
    samples(text)
        .find(|(l, _)| l.starts_with(prefix))
        .and_then(|(_, v)| v)
}

/// The values of every line starting with `prefix`, added up (0 when there is none).
pub fn sum(text: &str, prefix: &str) -> f64 {
    samples(text)
        .filter(|(l, _)| l.starts_with(prefix))
        .filter_map(|(_, v)| v)
        .sum()
}

/// The value of the first line containing every one of `parts`.
pub fn first_containing(text: &str, parts: &[&str]) -> Option<f64> {
    samples(text)
        .find(|(l, _)| parts.iter().all(|p| l.contains(p)))
        .and_then(|(_, v)| v)
}

/// The values of every line containing every one of `parts`, added up.
pub fn sum_containing(text: &str, parts: &[&str]) -> f64 {
    samples(text)
        .filter(|(l, _)| parts.iter().all(|p| l.contains(p)))
        .filter_map(|(_, v)| v)
        .sum()
}
