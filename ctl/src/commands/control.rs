//! Actions: services, reboot, shutdown.

use std::process::ExitCode;

use cairn_api::machine as pb;

use super::{report_results, Session};
use crate::cli::ServiceAction;

pub(super) async fn service(
    session: &Session,
    id: &str,
    action: ServiceAction,
) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            let request = pb::ServiceRequest { id: id.to_string() };
            let response = match action {
                ServiceAction::Start => c.service_start(request).await?,
                ServiceAction::Stop => c.service_stop(request).await?,
                ServiceAction::Restart => c.service_restart(request).await?,
            };
            Ok(response.into_inner().message)
        })
        .await;
    report_results(session.format, results)
}

pub(super) async fn reboot(session: &Session) -> anyhow::Result<ExitCode> {
    let results =
        session
            .targets
            .each(|_, mut c| async move {
                Ok(c.reboot(pb::RebootRequest {}).await?.into_inner().message)
            })
            .await;
    report_results(session.format, results)
}

pub(super) async fn shutdown(session: &Session) -> anyhow::Result<ExitCode> {
    let results = session
        .targets
        .each(|_, mut c| async move {
            Ok(c.shutdown(pb::ShutdownRequest {}).await?.into_inner().message)
        })
        .await;
    report_results(session.format, results)
}
