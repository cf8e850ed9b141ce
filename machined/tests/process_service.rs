//! The child-process runner, in a process of its own (its reaper takes every child's exit):
//! a program's output goes to its log, a failed program's status is its last exit and it is
//! restarted, a stop is SIGTERM and, for a program that ignores it, SIGKILL after the grace.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use machined::facts::Facts;
use machined::logs::LogBook;
use machined::service::{ProcessService, Service, ServiceState, ServiceStatus, Supervisor};
use machined::system::reaper::Reaper;

fn shell(script: &'static str) -> machined::service::CommandFactory {
    Box::new(move || {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        Ok(command)
    })
}

async fn until(
    what: &str,
    supervisor: &Supervisor,
    id: &str,
    done: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = supervisor.list().into_iter().find(|s| s.id == id).unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{id}: never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_of(logs: &LogBook, id: &str) -> Vec<String> {
    logs.ring(id).snapshot(None).into_iter().map(|line| line.item.message).collect()
}

#[tokio::test]
async fn programs_are_run_logged_restarted_and_stopped() {
    let reaper = Reaper::new();
    tokio::spawn(reaper.clone().run());
    let logs = Arc::new(LogBook::default());
    let supervisor = Supervisor::new(Facts::new(None), Default::default(), logs.clone());
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(ProcessService::new(
            "failing",
            reaper.clone(),
            vec![],
            shell("echo to stdout; echo to stderr >&2; exit 3"),
        )),
        Arc::new(ProcessService::new("obedient", reaper.clone(), vec![], shell("exec sleep 600"))),
        Arc::new(
            ProcessService::new(
                "stubborn",
                reaper.clone(),
                vec![],
                shell("trap '' TERM; echo ignoring TERM; while :; do sleep 0.1; done"),
            )
            .with_grace(Duration::from_secs(1)),
        ),
    ];
    supervisor.start_all(services).unwrap();

    let failing = until("restarted", &supervisor, "failing", |s| s.restarts >= 1).await;
    assert_eq!(failing.last_exit.as_deref(), Some("sh exited with status 3"), "{failing:?}");
    let lines = log_of(&logs, "failing");
    for want in ["to stdout", "to stderr"] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }

    until("ready", &supervisor, "obedient", |s| s.state == ServiceState::Ready).await;
    until("ready", &supervisor, "stubborn", |s| s.state == ServiceState::Ready).await;
    until("logged", &supervisor, "stubborn", |_| {
        log_of(&logs, "stubborn").iter().any(|l| l == "ignoring TERM")
    })
    .await;

    let started = Instant::now();
    supervisor.stop("obedient").await.unwrap();
    assert!(
        log_of(&logs, "obedient").iter().any(|l| l == "sh stopped: killed by SIGTERM"),
        "{:?}",
        log_of(&logs, "obedient")
    );
    assert!(started.elapsed() < Duration::from_secs(1), "SIGTERM ends it at once");

    supervisor.stop("stubborn").await.unwrap();
    let lines = log_of(&logs, "stubborn");
    assert!(lines.iter().any(|l| l.starts_with("no exit 1s after SIGTERM")), "{lines:?}");
    assert!(lines.iter().any(|l| l == "sh stopped: killed by SIGKILL"), "{lines:?}");
    let stubborn =
        until("stopped", &supervisor, "stubborn", |s| s.state == ServiceState::Stopped).await;
    assert_eq!(stubborn.restarts, 0);
}
