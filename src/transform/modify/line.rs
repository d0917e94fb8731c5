//! Fluent Bit `modify` lines (`Set key "a value"`, `Condition Key_exists kubernetes`) split
//! into words: blanks separate words, and a word in double quotes may hold blanks (`\"` and
//! `\\` escape inside quotes), as Fluent Bit 5 reads them.

/// The words of `line`; an unterminated quote is an error.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' if matches!(chars.peek(), Some('"' | '\\')) => {
                        word.extend(chars.next());
                    }
                    c => word.push(c),
                }
            }
            if !closed {
                return Err(format!("`{line}` has an unterminated quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_blanks_and_keeps_quoted_words_whole() {
        assert_eq!(words("Set  a b").unwrap(), ["Set", "a", "b"]);
        assert_eq!(
            words(r#"Set q "two words" "say \"hi\"""#).unwrap(),
            ["Set", "q", "two words", "say \"hi\""]
        );
        assert!(words("Set q \"open").is_err());
        assert!(words("   ").unwrap().is_empty());
    }
}
