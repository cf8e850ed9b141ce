//! Text sent back to clients that may quote what they sent.

/// `text` cut after `max_chars` characters, saying how much was left out: error messages
/// quote refused values, and one quoting a megabyte-long value makes a reply that gRPC
/// clients refuse (they accept 16 KiB of headers, where the message travels).
pub fn shortened(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}… ({} more bytes left out)", &text[..cut], text.len() - cut),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_and_says_how_much() {
        assert_eq!(shortened("héllo", 10), "héllo");
        assert_eq!(shortened("héllo", 2), "hé… (3 more bytes left out)");
    }
}
