//! Limits on a config's YAML (or a pod manifest's), checked before serde_yaml reads it. A
//! config can come from anyone in maintenance mode and is parsed by PID 1, so its cost must be
//! bounded: aliases multiply memory (a 1 MB "billion laughs" reached 1.5 GB), and deep nesting
//! makes serde_yaml's parser quadratic (96 KB of brackets: 13 s). One linear pass over the YAML
//! events, which stops at the first excess, rules both out.

use yaml_rust2::parser::{Event, Parser};

/// The largest config accepted, in bytes. Real configs, pods and certificates included, are a
/// few tens of KiB.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted (a Pod spec needs about a dozen).
pub const MAX_DEPTH: usize = 64;

/// Checks size, nesting and the absence of anchors and aliases; the error says which limit
/// and where.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the document is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!("the document is not UTF-8: invalid byte at offset {}", e.valid_up_to())
    })?;
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| e.to_string())?;
        let at = || format!("line {} column {}", mark.line(), mark.col() + 1);
        let anchored = match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => true,
            Event::Scalar(_, _, anchor, _) => anchor != 0,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("{}: nested deeper than {MAX_DEPTH} levels", at()));
                }
                anchor != 0
            }
            Event::SequenceEnd | Event::MappingEnd => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => false,
        };
        if anchored {
            return Err(format!(
                "{}: anchors and aliases are not accepted; write values out",
                at()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_yaml_and_refuses_each_excess() {
        assert_eq!(
            check(b"version: v1alpha1\nmachine:\n  hostname: a # &x not an anchor\n  x: '*y'\n"),
            Ok(())
        );
        let laughs = b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        assert!(check(laughs).unwrap_err().contains("line 1 column 7: anchors and aliases"));
        let alias = check(b"a: *a\n").unwrap_err();
        assert!(
            alias.contains("anchors and aliases") || alias.contains("unknown anchor"),
            "{alias}"
        );
        // Brackets trip the scanner's own limit, indented mappings ours: both stop early.
        let brackets = "[".repeat(100_000);
        let error = check(brackets.as_bytes()).unwrap_err();
        assert!(error.contains("recursion limit exceeded"), "{error}");
        let indented: String = (0..100).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let error = check(indented.as_bytes()).unwrap_err();
        assert!(
            error.starts_with("line 65 ") && error.contains("nested deeper than 64 levels"),
            "{error}"
        );
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(check(&big).unwrap_err().contains("at most 1048576"));
        assert!(check(b"a: \xff\n").unwrap_err().contains("not UTF-8"));
    }
}
