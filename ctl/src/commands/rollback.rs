//! `ctl rollback`: the other slot becomes the next boot's again, on trial.

use std::process::ExitCode;

use cairn_api::machine as pb;
use futures_util::future::join_all;

use super::follow::{follow, print_step, BootTarget};
use super::{report_errors, Session};

pub(super) async fn rollback(
    session: &Session,
    stage: bool,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            Ok(c.rollback(pb::RollbackRequest { stage }).await?.into_inner())
        })
        .await;
    // `each` answers in the nodes' order: pair each answer with its node to follow it.
    let nodes = session.targets.nodes.iter();
    let followed = join_all(nodes.zip(results).map(|(node, (label, result))| async move {
        let done = async {
            let r = result.map_err(anyhow::Error::msg)?;
            let target = BootTarget { slot: r.slot, version: r.version };
            let (event, line) = if stage {
                ("staged", format!("next boot: {target}"))
            } else {
                ("rebooting", format!("rebooting into {target}"))
            };
            print_step(session, &label, false, event, &target, &line)?;
            if wait {
                follow(session, node, &target).await?;
            }
            anyhow::Ok(())
        };
        let result = done.await.map_err(|e| format!("{e:#}"));
        (label, result)
    }))
    .await;
    Ok(report_errors(followed))
}
