//! The bootstrap token: a secret baked into a node's image (or given on its kernel command
//! line) that closes maintenance mode's trust-on-first-use window.
//!
//! Client and node each prove that they know the token with an HMAC over a value exported
//! from their TLS session (RFC 5705/8446 keying material). A relay in the middle holds two
//! sessions with two different values, so it can pass on neither proof; and the token itself
//! never crosses the wire. The node answers with its proof only after checking the client's
//! (so strangers get nothing to guess against), and applies a config only with a valid
//! client proof; `ctl` checks the node's proof before it sends the config.

use std::fmt;

use ring::hmac;

/// The label of the keying material exported from the TLS session.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-cairn-bootstrap";
/// Bytes of keying material the proofs are bound to.
pub const BINDING_LEN: usize = 32;
/// The kernel command-line parameter that gives a node its token.
pub const KERNEL_PARAMETER: &str = "cairn.bootstrap_token";
/// The shortest token accepted: 32 hex digits are 128 bits. A proof seen by a relay can be
/// tried against guesses offline, so the token must be beyond guessing.
pub const MIN_LEN: usize = 32;
/// The longest token accepted.
pub const MAX_LEN: usize = 256;

/// Which side a proof comes from; each side's proof differs, so neither can be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `ctl`.
    Client,
    /// The node.
    Node,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Client => b"cairn bootstrap client proof",
            Side::Node => b"cairn bootstrap node proof",
        }
    }
}

/// A bootstrap token.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

/// Why a text is not a usable token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Too short to resist guessing.
    #[error("a bootstrap token needs at least {MIN_LEN} random characters; this one has {0}. Make one with `openssl rand -hex 32`")]
    TooShort(usize),
    /// Too long.
    #[error("a bootstrap token has at most {MAX_LEN} characters; this one has {0}")]
    TooLong(usize),
    /// It would not survive a kernel command line.
    #[error("a bootstrap token is printable ASCII without spaces or quotes (it may travel on a kernel command line)")]
    Characters,
}

impl BootstrapToken {
    /// A token from text; surrounding white space (a file's final newline) is ignored.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        let len = token.chars().count();
        if !token.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\'') {
            return Err(TokenError::Characters);
        }
        if len < MIN_LEN {
            return Err(TokenError::TooShort(len));
        }
        if len > MAX_LEN {
            return Err(TokenError::TooLong(len));
        }
        Ok(BootstrapToken(token.to_string()))
    }

    /// The token as text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `side`'s proof for the TLS session whose exported keying material is `binding`.
    pub fn proof(&self, side: Side, binding: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes());
        let mut context = hmac::Context::with_key(&key);
        context.update(side.label());
        context.update(binding);
        context.sign().as_ref().to_vec()
    }

    /// Whether `proof` is `side`'s proof for `binding` (compared in constant time).
    pub fn verify(&self, side: Side, binding: &[u8], proof: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes());
        let message = [side.label(), binding].concat();
        hmac::verify(&key, &message, proof).is_ok()
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapToken(******)")
    }
}

/// The token on a kernel command line, if there is one.
pub fn from_kernel_command_line(cmdline: &str) -> Option<Result<BootstrapToken, TokenError>> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .find(|(name, _)| *name == KERNEL_PARAMETER)
        .map(|(_, value)| BootstrapToken::parse(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn proofs_bind_the_token_the_side_and_the_session() {
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let session = [7u8; BINDING_LEN];
        let proof = token.proof(Side::Client, &session);
        assert!(token.verify(Side::Client, &session, &proof));
        // Reflected to the other side, moved to another session, or from another token: no.
        assert!(!token.verify(Side::Node, &session, &proof));
        assert!(!token.verify(Side::Client, &[8u8; BINDING_LEN], &proof));
        let other = BootstrapToken::parse(&TOKEN.replace('0', "1")).unwrap();
        assert!(!other.verify(Side::Client, &session, &proof));
        assert!(!token.verify(Side::Client, &session, &proof[..31]));
        assert_eq!(format!("{token:?}"), "BootstrapToken(******)");
    }

    #[test]
    fn tokens_must_resist_guessing_and_fit_a_command_line() {
        assert_eq!(BootstrapToken::parse(&format!("{TOKEN}\n")).unwrap().expose(), TOKEN);
        assert_eq!(BootstrapToken::parse("short"), Err(TokenError::TooShort(5)));
        assert_eq!(BootstrapToken::parse(&"a".repeat(300)), Err(TokenError::TooLong(300)));
        assert_eq!(
            BootstrapToken::parse("0123456789 abcdef0123456789abcdef"),
            Err(TokenError::Characters)
        );
        let cmdline = format!("console=ttyS0 {KERNEL_PARAMETER}={TOKEN} quiet");
        assert_eq!(from_kernel_command_line(&cmdline).unwrap().unwrap().expose(), TOKEN);
        assert!(from_kernel_command_line("console=ttyS0").is_none());
        assert!(from_kernel_command_line("cairn.bootstrap_token=x").unwrap().is_err());
    }
}
