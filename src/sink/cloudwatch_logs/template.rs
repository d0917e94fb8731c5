//! Log group and stream name templates, in both syntaxes Fluent Bit users write:
//!
//! - the Go `cloudwatch` plugin's: `$(tag)`, `$(tag[n])` (the n-th dot-separated part of the
//!   tag, from 0), `$(field)`, `$(kubernetes['pod_name'])`, `$(ecs_task_id)`;
//! - the C `cloudwatch_logs` plugin's record accessor: `$TAG`, `$TAG[n]`, `$field`,
//!   `$kubernetes['namespace_name']`.
//!
//! A record that lacks a named field (or a tag without the n-th part) gets the fallback name
//! (`log_group_name` / `log_stream_name`), as both plugins document. `ecs_task_id`, when the
//! record has no such field, is the last part of its `ecs_task_arn` (which FireLens adds).

use crate::event::{Event, Value};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// The whole tag.
    Tag,
    /// The n-th dot-separated part of the tag.
    TagIndex(usize),
    /// A record field, with the keys of nested maps.
    Field(Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Piece>,
}

impl Template {
    /// Parses `text`; the message names what is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (part, after) = if let Some(inner) = rest.strip_prefix('(') {
                let end = inner
                    .find(')')
                    .ok_or_else(|| format!("`{text}`: `$(` is not closed with `)`"))?;
                (accessor(&inner[..end], text, false)?, &inner[end + 1..])
            } else {
                let end = accessor_end(rest);
                if end == 0 {
                    literal.push('$');
                    continue;
                }
                (accessor(&rest[..end], text, true)?, &rest[end..])
            };
            if !literal.is_empty() {
                parts.push(Piece::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Piece::Text(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Piece::Text(_))) {
            return Err(format!(
                "`{text}` has no variable ($(tag), $(tag[0]), $(field), $(map['key'])): \
                 use the plain name option instead"
            ));
        }
        Ok(Template { parts })
    }

    /// The name for `event`, or the variable it lacks.
    pub fn render(&self, event: &Event) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Piece::Text(text) => out.push_str(text),
                Piece::Tag => out.push_str(&event.tag),
                Piece::TagIndex(n) => match event.tag.split('.').nth(*n) {
                    Some(piece) => out.push_str(piece),
                    None => return Err(format!("tag[{n}] (the tag is `{}`)", &*event.tag)),
                },
                Piece::Field(keys) => match field(event, keys) {
                    Some(text) => out.push_str(&text),
                    None => return Err(describe(keys)),
                },
            }
        }
        Ok(out)
    }
}

/// How long the record accessor after a bare `$` is: a name, then `['key']` or `[n]` subscripts.
fn accessor_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"_-.".contains(&bytes[i])) {
        i += 1;
    }
    if i == 0 {
        return 0;
    }
    while i < bytes.len() && bytes[i] == b'[' {
        match text[i..].find(']') {
            Some(close) => i += close + 1,
            None => break,
        }
    }
    i
}

/// `tag`, `tag[n]`, `field`, `map['key']['key']`.
fn accessor(inner: &str, text: &str, bare: bool) -> Result<Piece, String> {
    let inner = inner.trim();
    let (name, mut subscripts) = match inner.find('[') {
        Some(at) => (&inner[..at], &inner[at..]),
        None => (inner, ""),
    };
    if name.is_empty() {
        return Err(format!("`{text}`: an empty variable name"));
    }
    let is_tag = if bare { name == "TAG" } else { name == "tag" };
    let mut keys = vec![name.to_string()];
    let mut indexes = Vec::new();
    while !subscripts.is_empty() {
        let close = subscripts
            .find(']')
            .ok_or_else(|| format!("`{text}`: `[` is not closed with `]`"))?;
        let inside = subscripts[1..close].trim();
        let quoted = inside
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
        match quoted {
            Some(key) => keys.push(key.to_string()),
            None => match inside.parse::<usize>() {
                Ok(n) => indexes.push(n),
                Err(_) => {
                    return Err(format!(
                        "`{text}`: `[{inside}]` is neither a quoted key ('name') nor a number"
                    ))
                }
            },
        }
        subscripts = &subscripts[close + 1..];
    }
    if is_tag {
        return match (keys.len(), indexes.as_slice()) {
            (1, []) => Ok(Piece::Tag),
            (1, [n]) => Ok(Piece::TagIndex(*n)),
            _ => Err(format!("`{text}`: the tag takes one index, as in tag[0]")),
        };
    }
    if !indexes.is_empty() {
        return Err(format!(
            "`{text}`: only the tag takes a number index; name map keys as ['key']"
        ));
    }
    Ok(Piece::Field(keys))
}

fn describe(keys: &[String]) -> String {
    let mut text = keys[0].clone();
    for key in &keys[1..] {
        text.push_str(&format!("['{key}']"));
    }
    text
}

fn field(event: &Event, keys: &[String]) -> Option<String> {
    let mut value = event.record.get(keys[0].as_bytes());
    if value.is_none() && keys.len() == 1 && keys[0] == "ecs_task_id" {
        let arn = event.record.get(b"ecs_task_arn")?.to_text();
        return arn
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
    }
    for key in &keys[1..] {
        value = value?.as_map()?.get(key.as_bytes());
    }
    match value? {
        Value::Map(_) | Value::Array(_) | Value::Nil => None,
        other => Some(other.to_text()).filter(|t| !t.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Map};

    fn event(tag: &str) -> Event {
        let mut pod = Map::new();
        pod.insert("pod_name", Value::string("web-1"));
        let mut record = Map::new();
        record.insert("kubernetes", Value::Map(pod));
        record.insert("ecs_cluster", Value::string("prod"));
        record.insert(
            "ecs_task_arn",
            Value::string("arn:aws:ecs:us-east-1:123456789012:task/prod/0123abcd"),
        );
        Event::new(tag.into(), EventTime::default(), record)
    }

    #[test]
    fn both_syntaxes_render_the_same() {
        let e = event("app-firelens-abc.web");
        for (text, expected) in [
            ("/ecs/$(tag)", "/ecs/app-firelens-abc.web"),
            ("$(tag[1])-$(kubernetes['pod_name'])", "web-web-1"),
            ("$TAG[0]/$kubernetes['pod_name']", "app-firelens-abc/web-1"),
            ("/aws/$(ecs_cluster)/$(ecs_task_id)", "/aws/prod/0123abcd"),
            ("g-$ecs_cluster", "g-prod"),
            ("$TAG", "app-firelens-abc.web"),
        ] {
            let t = Template::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.render(&e).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn missing_values_name_what_is_missing() {
        let e = event("single");
        let t = Template::parse("$(tag[2])").unwrap();
        assert!(t.render(&e).unwrap_err().contains("tag[2]"));
        let t = Template::parse("$(kubernetes['namespace_name'])").unwrap();
        assert_eq!(t.render(&e).unwrap_err(), "kubernetes['namespace_name']");
        let t = Template::parse("$(kubernetes)").unwrap();
        assert!(t.render(&e).is_err(), "a map is not a name");
    }

    #[test]
    fn bad_templates_are_refused() {
        for text in ["$(tag", "plain", "$(tag[x])", "$(a[0])", "$(k['a')"] {
            assert!(Template::parse(text).is_err(), "{text}");
        }
    }
}
