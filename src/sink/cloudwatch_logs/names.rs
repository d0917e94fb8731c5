//! Log group and stream names per record: fixed, the tag after a prefix, or a template with
//! its fallback; and CloudWatch's rules for names, checked before any call.

use super::config::Naming;
use crate::event::Event;

/// A group or stream name for `event` by `naming`.
pub fn name_for(
    naming: &Naming,
    event: &Event,
    template_key: &str,
    fallback_key: &str,
) -> Result<String, String> {
    match naming {
        Naming::Fixed(name) => Ok(name.clone()),
        Naming::TagPrefix(prefix) => Ok(format!("{prefix}{}", &*event.tag)),
        Naming::Template { template, fallback } => match template.render(event) {
            Ok(name) => Ok(name),
            Err(missing) => fallback.clone().ok_or_else(|| {
                format!(
                    "{template_key}: the record has no {missing}, and there is no \
                     {fallback_key} to fall back to"
                )
            }),
        },
    }
}

/// CloudWatch's rule for log group names: 1 to 512 of `[.-_/#A-Za-z0-9]`.
pub fn check_group_name(name: &str) -> Result<(), String> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid log group name (1 to 512 letters, digits and ._-/#)"
        ))
    }
}

/// CloudWatch's rule for log stream names: 1 to 512 characters, no `:` or `*`.
pub fn check_stream_name(name: &str) -> Result<(), String> {
    if (1..=512).contains(&name.len()) && !name.contains([':', '*']) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid log stream name (1 to 512 characters, no : or *)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_cloudwatch_rules() {
        for ok in ["/ecs/app-logs", "a", "A.b_c-d/e#f", &"g".repeat(512)] {
            assert!(check_group_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "colon:x", "star*", &"g".repeat(513)] {
            assert!(
                check_group_name(bad)
                    .unwrap_err()
                    .contains("log group name"),
                "{bad}"
            );
        }
        for ok in ["app-firelens-0123", "2024/05/14/[$LATEST]abc", "é"] {
            assert!(check_stream_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a*b", &"s".repeat(513)] {
            assert!(check_stream_name(bad).is_err(), "{bad}");
        }
    }
}
