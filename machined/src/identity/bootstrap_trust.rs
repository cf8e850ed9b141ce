//! How a node in maintenance mode decides whom to take its first config from: anyone (trust
//! on first use; the operator checks the certificate fingerprint printed on the console), or
//! only a client that proves it knows the bootstrap token (see `cairn_api::bootstrap`). In
//! recovery mode (a configured node whose config no longer loads) a client without a
//! certificate needs the token in any case: the node never falls back to anyone.

use std::io;
use std::path::Path;

use cairn_api::bootstrap::{self, BootstrapToken, Side};

/// Whom the node takes its first config from.
#[derive(Debug)]
pub enum BootstrapTrust {
    /// Anyone: the node has no token.
    FirstComer,
    /// Clients that prove they know this token.
    Token(BootstrapToken),
    /// The node was given a token it cannot use: it takes a config from nobody, rather than
    /// from anybody (fail closed). The text says why.
    Unusable(String),
}

impl BootstrapTrust {
    /// The token from the image (`token_file`), else from the kernel command line.
    pub fn load(token_file: &Path, kernel_cmdline: &Path) -> BootstrapTrust {
        match std::fs::read_to_string(token_file) {
            Ok(text) => {
                return match BootstrapToken::parse(&text) {
                    Ok(token) => BootstrapTrust::Token(token),
                    Err(e) => BootstrapTrust::Unusable(format!("{}: {e}", token_file.display())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return BootstrapTrust::Unusable(format!("reading {}: {e}", token_file.display()))
            }
        }
        let cmdline = std::fs::read_to_string(kernel_cmdline).unwrap_or_default();
        match bootstrap::from_kernel_command_line(&cmdline) {
            None => BootstrapTrust::FirstComer,
            Some(Ok(token)) => BootstrapTrust::Token(token),
            Some(Err(e)) => BootstrapTrust::Unusable(format!(
                "the kernel command line's {}: {e}",
                bootstrap::KERNEL_PARAMETER
            )),
        }
    }

    /// Whether a first config may come from the client with this proof on a session bound to
    /// `binding`; the error says what the client must do.
    pub fn admits(&self, binding: Option<&[u8]>, proof: &[u8]) -> Result<(), String> {
        self.proven(binding, proof).map(drop)
    }

    /// Whether a config may come from a client without a certificate in recovery mode: only
    /// with a valid proof of the token, never from anyone.
    pub fn admits_in_recovery(&self, binding: Option<&[u8]>, proof: &[u8]) -> Result<(), String> {
        match self {
            BootstrapTrust::FirstComer => Err("the node is in recovery mode (its stored config does not load) and has no bootstrap token: only an admin of the last known client CA can give it a config".into()),
            _ => self.admits(binding, proof),
        }
    }

    /// The node's proof for the session bound to `binding`, given the client's proof.
    pub fn answer(&self, binding: Option<&[u8]>, client_proof: &[u8]) -> Result<Vec<u8>, String> {
        match self.proven(binding, client_proof)? {
            Some((token, binding)) => Ok(token.proof(Side::Node, binding)),
            None => Err("this node has no bootstrap token; check its certificate fingerprint instead (printed on its console) with --fingerprint".into()),
        }
    }

    /// The token and session binding a valid client proof was checked against (none for a
    /// node without a token, which admits anyone), or why the client is refused.
    fn proven<'a>(
        &'a self,
        binding: Option<&'a [u8]>,
        proof: &[u8],
    ) -> Result<Option<(&'a BootstrapToken, &'a [u8])>, String> {
        match self {
            BootstrapTrust::FirstComer => Ok(None),
            BootstrapTrust::Unusable(why) => Err(format!(
                "this node's bootstrap token is unusable ({why}), so it accepts no config; rebuild the image or fix the kernel command line"
            )),
            BootstrapTrust::Token(_) if proof.is_empty() => Err(
                "this node has a bootstrap token: it takes a config only from a client that proves it knows it (ctl apply-config --insecure --bootstrap-token-file FILE)".into(),
            ),
            BootstrapTrust::Token(token) => match binding {
                Some(binding) if token.verify(Side::Client, binding, proof) => {
                    Ok(Some((token, binding)))
                }
                _ => Err("the bootstrap proof does not match: a wrong token, or something between client and node relays the connection".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn the_image_file_wins_over_the_command_line_and_bad_tokens_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (file, cmdline) = (dir.path().join("token"), dir.path().join("cmdline"));
        assert!(matches!(BootstrapTrust::load(&file, &cmdline), BootstrapTrust::FirstComer));
        std::fs::write(&cmdline, format!("quiet cairn.bootstrap_token={TOKEN}\n")).unwrap();
        assert!(matches!(BootstrapTrust::load(&file, &cmdline), BootstrapTrust::Token(_)));
        std::fs::write(&file, "short\n").unwrap();
        let trust = BootstrapTrust::load(&file, &cmdline);
        assert!(matches!(trust, BootstrapTrust::Unusable(_)), "{trust:?}");
        assert!(trust.admits(Some(&[0; 32]), b"anything").unwrap_err().contains("unusable"));
    }

    #[test]
    fn only_a_proof_for_this_session_is_admitted() {
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let trust = BootstrapTrust::Token(token.clone());
        let session = [1u8; 32];
        let proof = token.proof(Side::Client, &session);
        assert!(trust.admits(Some(&session), b"").unwrap_err().contains("--bootstrap-token-file"));
        assert!(trust.admits(Some(&[2u8; 32]), &proof).unwrap_err().contains("does not match"));
        assert!(trust.admits(None, &proof).is_err());
        let answer = trust.answer(Some(&session), &proof).unwrap();
        assert!(token.verify(Side::Node, &session, &answer));
        assert!(BootstrapTrust::FirstComer.answer(Some(&session), &proof).is_err());
        assert!(BootstrapTrust::FirstComer.admits(None, b"").is_ok());
    }

    #[test]
    fn in_recovery_only_a_token_proof_is_admitted() {
        let refused = BootstrapTrust::FirstComer.admits_in_recovery(None, b"").unwrap_err();
        assert!(refused.contains("recovery mode") && refused.contains("no bootstrap token"));
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let trust = BootstrapTrust::Token(token.clone());
        let session = [1u8; 32];
        assert!(trust.admits_in_recovery(Some(&session), b"").is_err());
        let proof = token.proof(Side::Client, &session);
        assert!(trust.admits_in_recovery(Some(&session), &proof).is_ok());
    }
}
