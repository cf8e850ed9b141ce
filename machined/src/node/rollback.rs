//! Rollback: the other slot chosen for the next boot, an event, then (unless staged) a
//! reboot into it.

use crate::logs::events::EventKind;
use crate::update::Chosen;

use super::power::PowerAction;
use super::{blocking, Node, NodeError};

impl Node {
    /// Makes the other slot the next boot's and, unless `stage`, reboots into it.
    pub async fn rollback(&self, stage: bool) -> Result<Chosen, NodeError> {
        let updater = self.parts.updater.clone();
        let chosen = blocking(move || updater.rollback()).await??;
        self.events().publish(
            EventKind::Power,
            format!("rollback to slot {} ({}) chosen", chosen.slot, chosen.version),
        );
        if !stage {
            self.power(PowerAction::Reboot);
        }
        Ok(chosen)
    }
}
