//! Objects applied with `ctl apply -f`, deleted with `ctl delete -f` and listed with
//! `ctl get`, each apply or delete an event.

use cairn_api::config::documents;
use cairn_api::config::objects::LocalObject;

use crate::files::layout::under;
use crate::logs::events::EventKind;
use crate::workloads::applied::{self, AppliedError, Change};
use crate::workloads::kubelet::claims::{self, CLAIM_ROOT};

use super::{Node, NodeError};

/// An object the node keeps, with where it comes from (`config` or `applied`).
pub struct KeptObject {
    /// `config` (machine.objects) or `applied`.
    pub source: &'static str,
    /// The object.
    pub object: LocalObject,
}

impl Node {
    /// Stores the objects of the documents `bytes` (the file `source`); returns what changed
    /// and the documents skipped.
    pub fn apply_objects(
        &self,
        bytes: &[u8],
        source: &str,
    ) -> Result<(Vec<Change>, Vec<String>), NodeError> {
        let decoded = documents::decode(bytes, source).map_err(AppliedError::Invalid)?;
        let config = self.configuration().config(false)?;
        let path = self.layout().applied_objects_path();
        let changes = applied::apply(&path, &decoded, config.as_deref())?;
        self.publish(&changes);
        Ok((changes, decoded.skipped))
    }

    /// Removes the stored objects the documents `bytes` name; returns what changed and the
    /// documents skipped.
    pub fn delete_objects(
        &self,
        bytes: &[u8],
        source: &str,
    ) -> Result<(Vec<Change>, Vec<String>), NodeError> {
        let decoded = documents::decode(bytes, source).map_err(AppliedError::Invalid)?;
        let config = self.configuration().config(false)?;
        let path = self.layout().applied_objects_path();
        let mut changes = applied::delete(&path, &decoded, config.as_deref())?;
        // A deleted claim's data is retired now (the kubelet removes it once its pods are
        // gone); a StatefulSet's claims, never stored, are deleted this way too.
        let claims = under(self.layout().root(), CLAIM_ROOT);
        for change in changes.iter_mut().filter(|c| c.kind == "PersistentVolumeClaim") {
            let retired = claims::retire(&claims, &change.namespace, &change.name)
                .map_err(|e| AppliedError::Io { path: claims.clone(), reason: e.to_string() })?;
            if retired {
                change.action = "deleted";
            }
        }
        self.publish(&changes);
        Ok((changes, decoded.skipped))
    }

    /// The objects the node keeps, the config's first, of kind `kind` (as kubectl names
    /// kinds; all when empty) and name `name` (all when empty).
    pub fn objects(&self, kind: &str, name: &str) -> Result<Vec<KeptObject>, NodeError> {
        let kind = match kind {
            "" => None,
            named => Some(applied::kind_named(named)?),
        };
        let config = self.configuration().config(false)?;
        let configured = config.iter().flat_map(|c| c.machine.objects.clone());
        let configured = configured.map(|object| KeptObject { source: "config", object });
        let stored = applied::read(&self.layout().applied_objects_path())?;
        let stored = stored.into_iter().map(|object| KeptObject { source: "applied", object });
        Ok(configured
            .chain(stored)
            .filter(|kept| kind.is_none_or(|kind| kept.object.kind() == kind))
            .filter(|kept| name.is_empty() || kept.object.name() == name)
            .collect())
    }

    fn publish(&self, changes: &[Change]) {
        for change in changes.iter().filter(|c| c.action != "unchanged" && c.action != "not found")
        {
            let Change { kind, namespace, name, action } = change;
            let object = match namespace.as_str() {
                "" => format!("{kind} {name}"),
                namespace => format!("{kind} {namespace}/{name}"),
            };
            self.events().publish(EventKind::Config, format!("{object} {action}"));
        }
    }
}
