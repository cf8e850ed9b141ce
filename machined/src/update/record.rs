//! The last update's record on STATE: what was installed into which slot, and how it ended.
//! It outlives the boot into the new slot, and the boot back when that one fails, so the
//! node can say why it rolled back.

use std::io;
use std::path::{Path, PathBuf};

use cairn_api::image::Slot;
use serde::{Deserialize, Serialize};

use crate::files::durable::write_atomically;

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpdateState {
    /// The slot is the next boot's, on trial.
    Pending,
    /// It came up healthy and was blessed.
    Succeeded,
    /// The node came back on the slot it left.
    RolledBack,
}

/// The last update (or rollback on request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRecord {
    /// Where it stands.
    pub state: UpdateState,
    /// The slot made the next boot's.
    pub slot: Slot,
    /// The version running when it was made.
    pub from_version: String,
    /// The version in `slot`.
    pub to_version: String,
    /// Why the slot was given up, when it was.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it was made, RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339 (empty while pending).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_at: String,
}

/// The record's file.
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    /// The record in `state_dir`.
    pub fn new(state_dir: &Path) -> RecordFile {
        RecordFile { path: state_dir.join("update.json") }
    }

    /// The record, if an update was ever made; one that cannot be read is reported and
    /// treated as absent (it only informs).
    pub fn load(&self) -> Option<UpdateRecord> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("{}: {e}", self.path.display());
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("{}: {e}", self.path.display()))
            .ok()
    }

    /// Replaces the record, durably.
    pub fn save(&self, record: &UpdateRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomically(&self.path, &bytes, 0o600)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Now, RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = RecordFile::new(dir.path());
        assert_eq!(file.load(), None);
        let record = UpdateRecord {
            state: UpdateState::RolledBack,
            slot: Slot::B,
            from_version: "0.1.0".into(),
            to_version: "0.2.0".into(),
            reason: "its tries ran out".into(),
            started_at: now(),
            finished_at: now(),
        };
        file.save(&record).unwrap();
        assert_eq!(file.load(), Some(record));
        let saved = std::fs::read_to_string(dir.path().join("update.json")).unwrap();
        assert!(saved.contains(r#""slot": "B""#), "{saved}");
        std::fs::write(dir.path().join("update.json"), "{").unwrap();
        assert_eq!(file.load(), None);
    }
}
