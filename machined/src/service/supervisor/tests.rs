use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures_util::future::BoxFuture;

use super::*;
use crate::facts::Fact;

/// A service made to order: it takes `up_after` to come up, fails its first `failures`
/// runs, leaves readiness to a health check when it has one, and notes when it stops.
struct Fake {
    id: &'static str,
    needs: Vec<Dependency>,
    up_after: Duration,
    failures: AtomicU32,
    healthy: Option<Arc<AtomicBool>>,
    stops: Arc<Mutex<Vec<&'static str>>>,
}

impl Fake {
    fn new(
        id: &'static str,
        needs: Vec<Dependency>,
        stops: &Arc<Mutex<Vec<&'static str>>>,
    ) -> Fake {
        Fake {
            id,
            needs,
            up_after: Duration::from_millis(100),
            failures: AtomicU32::new(0),
            healthy: None,
            stops: stops.clone(),
        }
    }
}

impl Service for Fake {
    fn id(&self) -> &'static str {
        self.id
    }

    fn dependencies(&self) -> Vec<Dependency> {
        self.needs.clone()
    }

    fn run(self: Arc<Self>, ctx: ServiceContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            tokio::time::sleep(self.up_after).await;
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                anyhow::bail!("{} fails on purpose", self.id);
            }
            match self.healthy {
                Some(_) => ctx.running(),
                None => ctx.ready(),
            }
            ctx.stop.cancelled().await;
            // Stopping takes a while, so an order of stops that ignored dependencies shows.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.stops.lock().unwrap().push(self.id);
            Ok(())
        })
    }

    fn health_check(self: Arc<Self>) -> Option<super::super::HealthCheck> {
        let healthy = self.healthy.clone()?;
        Some(Box::pin(async move {
            match healthy.load(Ordering::SeqCst) {
                true => Ok(()),
                false => Err("not answering".into()),
            }
        }))
    }
}

fn supervisor(facts: Arc<Facts>) -> Arc<Supervisor> {
    Arc::new(Supervisor::new(facts, Default::default(), Default::default()))
}

fn status(supervisor: &Supervisor, id: &str) -> ServiceStatus {
    supervisor.list().into_iter().find(|s| s.id == id).unwrap()
}

fn stops() -> Arc<Mutex<Vec<&'static str>>> {
    Arc::default()
}

async fn settle(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::test(start_paused = true)]
async fn start_follows_dependencies_and_stop_runs_in_reverse() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let mut slow_db = Fake::new("db", vec![], &stopped);
    slow_db.up_after = Duration::from_secs(3);
    sup.start_all(vec![
        Arc::new(Fake::new("web", vec![Dependency::Service("app")], &stopped)),
        Arc::new(Fake::new("app", vec![Dependency::Service("db")], &stopped)),
        Arc::new(slow_db),
    ])
    .unwrap();
    settle(Duration::from_secs(1)).await;
    let app = status(&sup, "app");
    assert_eq!(app.state, ServiceState::Waiting);
    assert_eq!(app.waiting_for.as_deref(), Some("db (Starting)"));
    assert_eq!(status(&sup, "web").waiting_for.as_deref(), Some("app (Waiting)"));
    settle(Duration::from_secs(3)).await;
    for id in ["db", "app", "web"] {
        assert_eq!(status(&sup, id).state, ServiceState::Ready, "{id}");
        assert_eq!(status(&sup, id).waiting_for, None);
    }
    assert!(matches!(
        sup.stop("db").await,
        Err(SupervisorError::Needed { service: "db", dependant: "app" })
    ));
    sup.stop_all().await;
    assert_eq!(*stopped.lock().unwrap(), ["web", "app", "db"]);
    assert_eq!(status(&sup, "db").state, ServiceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependency_holds_its_dependants_waiting() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let broken = Fake::new("broken", vec![], &stopped);
    broken.failures.store(u32::MAX, Ordering::SeqCst);
    sup.start_all(vec![
        Arc::new(broken),
        Arc::new(Fake::new("needs-it", vec![Dependency::Service("broken")], &stopped)),
    ])
    .unwrap();
    settle(Duration::from_secs(20)).await;
    let broken = status(&sup, "broken");
    assert!(broken.restarts >= 3, "{broken:?}");
    assert_eq!(broken.last_exit.as_deref(), Some("broken fails on purpose"));
    let waiting = status(&sup, "needs-it");
    assert_eq!(waiting.state, ServiceState::Waiting);
    let shown = waiting.waiting_for.unwrap();
    assert!(shown == "broken (Failed)" || shown == "broken (Starting)", "{shown}");
}

#[tokio::test(start_paused = true)]
async fn a_fact_with_a_limit_is_waited_for_that_long_only() {
    let stopped = stops();
    let facts = Facts::new(None);
    let sup = supervisor(facts.clone());
    let limit = Some(Duration::from_secs(10));
    sup.start_all(vec![
        Arc::new(Fake::new("addressed", vec![Dependency::Fact(Fact::Addresses, limit)], &stopped)),
        Arc::new(Fake::new(
            "on-var",
            vec![Dependency::Fact(Fact::EphemeralVolume, None)],
            &stopped,
        )),
    ])
    .unwrap();
    settle(Duration::from_secs(5)).await;
    assert_eq!(status(&sup, "addressed").waiting_for.as_deref(), Some("addresses"));
    settle(Duration::from_secs(6)).await;
    assert_eq!(status(&sup, "addressed").state, ServiceState::Ready);
    assert_eq!(status(&sup, "on-var").state, ServiceState::Waiting);
    facts.volumes.send_modify(|v| v.ephemeral = true);
    settle(Duration::from_secs(1)).await;
    assert_eq!(status(&sup, "on-var").state, ServiceState::Ready);
}

#[tokio::test(start_paused = true)]
async fn health_moves_a_service_between_running_and_ready() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let healthy = Arc::new(AtomicBool::new(false));
    let mut checked = Fake::new("checked", vec![], &stopped);
    checked.healthy = Some(healthy.clone());
    sup.start_all(vec![
        Arc::new(checked),
        Arc::new(Fake::new("after", vec![Dependency::Service("checked")], &stopped)),
    ])
    .unwrap();
    settle(Duration::from_secs(3)).await;
    let s = status(&sup, "checked");
    assert_eq!(
        (s.state, s.health),
        (ServiceState::Running, Health::Unhealthy("not answering".into()))
    );
    assert_eq!(status(&sup, "after").state, ServiceState::Waiting);
    healthy.store(true, Ordering::SeqCst);
    settle(Duration::from_secs(2)).await;
    let s = status(&sup, "checked");
    assert_eq!((s.state, s.health), (ServiceState::Ready, Health::Healthy));
    assert_eq!(status(&sup, "after").state, ServiceState::Ready);
    healthy.store(false, Ordering::SeqCst);
    settle(HEALTH_INTERVAL_READY + Duration::from_secs(1)).await;
    assert_eq!(status(&sup, "checked").state, ServiceState::Running);
}

#[tokio::test(start_paused = true)]
async fn restarts_after_failure_and_stops_on_request() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let flaky = Fake::new("flaky", vec![], &stopped);
    flaky.failures.store(1, Ordering::SeqCst);
    sup.start_all(vec![Arc::new(flaky)]).unwrap();
    settle(Duration::from_millis(200)).await;
    let s = status(&sup, "flaky");
    assert_eq!((s.state, s.restarts), (ServiceState::Failed, 0));
    settle(BACKOFF_START + Duration::from_millis(200)).await;
    let s = status(&sup, "flaky");
    assert_eq!((s.state, s.restarts), (ServiceState::Ready, 1));
    assert!(matches!(sup.start("flaky"), Err(SupervisorError::AlreadyRunning(_))));
    sup.stop("flaky").await.unwrap();
    assert_eq!(status(&sup, "flaky").state, ServiceState::Stopped);
    assert!(matches!(sup.stop("flaky").await, Err(SupervisorError::NotRunning(_))));
    assert!(matches!(sup.stop("nope").await, Err(SupervisorError::UnknownService(_))));
    sup.start("flaky").unwrap();
    settle(Duration::from_millis(200)).await;
    assert_eq!(status(&sup, "flaky").state, ServiceState::Ready);
}

#[tokio::test]
async fn circles_and_unknown_dependencies_are_refused() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let circle = sup.start_all(vec![
        Arc::new(Fake::new("a", vec![Dependency::Service("b")], &stopped)),
        Arc::new(Fake::new("b", vec![Dependency::Service("c")], &stopped)),
        Arc::new(Fake::new("c", vec![Dependency::Service("a")], &stopped)),
    ]);
    assert_eq!(
        circle.unwrap_err().to_string(),
        "services depend on one another in a circle: a -> b -> c -> a"
    );
    let unknown =
        sup.start_all(vec![Arc::new(Fake::new("a", vec![Dependency::Service("x")], &stopped))]);
    assert!(matches!(
        unknown,
        Err(SupervisorError::UnknownDependency { service: "a", dependency: "x" })
    ));
    assert!(sup.list().is_empty(), "nothing was registered");
}

#[tokio::test(start_paused = true)]
async fn a_restart_ends_the_run_and_starts_it_again_without_letting_go() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    sup.start_all(vec![Arc::new(Fake::new("svc", vec![], &stopped))]).unwrap();
    settle(Duration::from_secs(1)).await;
    assert_eq!(status(&sup, "svc").state, ServiceState::Ready);
    sup.restart("svc").unwrap();
    // Still supervised while it restarts: no second instance, and a stop would find it.
    assert!(matches!(sup.start("svc"), Err(SupervisorError::AlreadyRunning(_))));
    settle(Duration::from_secs(1)).await;
    assert_eq!(*stopped.lock().unwrap(), ["svc"], "the first run ended");
    let s = status(&sup, "svc");
    assert_eq!((s.state, s.restarts), (ServiceState::Ready, 0), "{s:?}");
    assert!(s.events.iter().any(|e| e.message == "restart requested"), "{s:?}");
    sup.stop("svc").await.unwrap();
    sup.restart("svc").unwrap();
    settle(Duration::from_secs(1)).await;
    assert_eq!(status(&sup, "svc").state, ServiceState::Ready, "a stopped service is started");
    assert!(matches!(
        sup.start_all(vec![Arc::new(Fake::new("svc", vec![], &stopped))]),
        Err(SupervisorError::AlreadyStarted)
    ));
}

#[tokio::test]
async fn two_services_with_one_name_are_refused() {
    let stopped = stops();
    let sup = supervisor(Facts::new(None));
    let twins: Vec<Arc<dyn Service>> = vec![
        Arc::new(Fake::new("twin", vec![], &stopped)),
        Arc::new(Fake::new("twin", vec![], &stopped)),
    ];
    assert!(matches!(sup.start_all(twins), Err(SupervisorError::Duplicate("twin"))));
    assert!(sup.list().is_empty());
}
