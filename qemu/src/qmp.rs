//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over a Unix socket, enough to
//! send commands such as `system_powerdown` and read their replies.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// How long a reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A QMP session, past the capabilities negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket.
    pub fn connect(socket: &Path) -> io::Result<Qmp> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(protocol(format!("expected the QMP greeting, got {greeting}")));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Runs a command without arguments; returns its `return` value.
    pub fn execute(&mut self, command: &str) -> io::Result<Value> {
        let mut line = json!({ "execute": command }).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let mut message = self.read_message()?;
            // Asynchronous events (e.g. POWERDOWN) may come before the reply.
            if message.get("event").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(protocol(format!("{command}: {error}")));
            }
            return message
                .get_mut("return")
                .map(Value::take)
                .ok_or_else(|| protocol(format!("{command}: unexpected reply {message}")));
        }
    }

    fn read_message(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP connection closed"));
        }
        serde_json::from_str(&line).map_err(|e| protocol(format!("QMP message {line:?}: {e}")))
    }
}

fn protocol(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn negotiates_and_skips_events_before_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").unwrap();
            let mut commands = Vec::new();
            for reply in [
                "{\"return\": {}}\n",
                "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\n{\"return\": {}}\n",
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n",
            ] {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                commands.push(serde_json::from_str::<Value>(&line).unwrap()["execute"].clone());
                writer.write_all(reply.as_bytes()).unwrap();
            }
            commands
        });
        let mut qmp = Qmp::connect(&socket).unwrap();
        assert_eq!(qmp.execute("system_powerdown").unwrap(), json!({}));
        let error = qmp.execute("nonsense").unwrap_err().to_string();
        assert!(error.contains("nonsense") && error.contains("CommandNotFound"), "{error}");
        assert_eq!(server.join().unwrap(), ["qmp_capabilities", "system_powerdown", "nonsense"]);
    }
}
