//! Admission: whether a request may be read at all, and what reading it may cost, decided
//! from its method and its connection before one byte of its body is read.
//!
//! tonic reads a whole request message into memory before a handler runs, so checks in the
//! handlers come too late: a client could hold megabytes in PID 1 on every stream of every
//! connection with requests it never finishes, whether or not it may make them. Here, in
//! front of tonic:
//! - the caller's role is decided from the connection's certificate and the node's mode, and
//!   a call the caller may not make is answered at once, its body unread;
//! - each call has its own largest message: only `ApplyConfiguration`, `ManifestApply`
//!   and `ObjectsApply`/`ObjectsDelete`
//!   take a config-sized one, `Upgrade` takes bundle chunks, every other call a small one;
//! - every message's declared length is taken from a byte budget before its bytes are read,
//!   and given back once tonic has decoded it. Admins and everyone else have budgets of their
//!   own, so strangers cannot spend an admin's; one network gets only part of the others';
//! - a message that stops arriving half-way is ended, so a slow sender cannot sit on budget.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_api::role::Role;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

use crate::api::auth::{authorize, Call};
use crate::api::budget::{ByteBudget, Reservation};
use crate::api::connection::{ConnectionInfo, OpenRequest};
use crate::node::config::NodeMode;

/// The path prefix of the API's methods.
const SERVICE_PATH: &str = "/cairn.machine.v1alpha1.MachineService/";
/// gRPC's message prefix: a compression flag and a big-endian length.
const MESSAGE_PREFIX: usize = 5;
/// The largest message of calls that carry a config or a manifest: one at its largest,
/// with room for the rest of the request.
pub const LARGE_MESSAGE_BYTES: usize = cairn_api::config::shape::MAX_CONFIG_BYTES + 64 * 1024;
/// The largest `Upgrade` message: a bundle chunk as `ctl upgrade` sends them (1 MiB), with
/// room for the envelope.
pub const UPGRADE_MESSAGE_BYTES: usize = (1 << 20) + 1024;
/// The largest message of every other call: names, paths (4 KiB at most on Linux), proofs.
pub const SMALL_MESSAGE_BYTES: usize = 16 * 1024;
/// Request bytes that admins' requests may hold at once: an apply and an upgrade side by side,
/// many times over.
pub const ADMIN_BUDGET_BYTES: usize = 24 << 20;
/// Request bytes that everyone else's requests (readers, operators, and anonymous callers in
/// maintenance mode) may hold at once...
pub const OTHERS_BUDGET_BYTES: usize = 8 << 20;
/// ...and one network's share of that: two configs at their largest.
pub const OTHERS_BUDGET_PER_NETWORK_BYTES: usize = 2 * LARGE_MESSAGE_BYTES;
/// A message whose next bytes do not come within this is ended.
pub const MESSAGE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A message must be whole within this from its first byte (a megabyte in 5 minutes is
/// 3.5 KB/s: slower than any link a node is managed over).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What a call's request may hold.
fn max_message(call: Call) -> usize {
    match call {
        Call::ApplyConfiguration
        | Call::ManifestApply
        | Call::ObjectsApply
        | Call::ObjectsDelete => LARGE_MESSAGE_BYTES,
        Call::Upgrade => UPGRADE_MESSAGE_BYTES,
        _ => SMALL_MESSAGE_BYTES,
    }
}

/// The call a request path names.
pub fn call_of(path: &str) -> Option<Call> {
    use Call::*;
    Some(match path.strip_prefix(SERVICE_PATH)? {
        "Version" => Version,
        "Bootstrap" => Bootstrap,
        "ApplyConfiguration" => ApplyConfiguration,
        "GetConfiguration" => GetConfiguration,
        "Reboot" => Reboot,
        "Shutdown" => Shutdown,
        "ServiceList" => ServiceList,
        "ServiceStart" => ServiceStart,
        "ServiceStop" => ServiceStop,
        "ServiceRestart" => ServiceRestart,
        "Logs" => Logs,
        "Dmesg" => Dmesg,
        "Events" => Events,
        "Stats" => Stats,
        "Time" => Time,
        "Disks" => Disks,
        "Mounts" => Mounts,
        "List" => List,
        "Read" => Read,
        "Pods" => Pods,
        "PodRestart" => PodRestart,
        "PodEvents" => PodEvents,
        "ContainerLogs" => ContainerLogs,
        "ManifestApply" => ManifestApply,
        "ManifestDelete" => ManifestDelete,
        "ObjectsApply" => ObjectsApply,
        "ObjectsDelete" => ObjectsDelete,
        "ObjectsGet" => ObjectsGet,
        "Upgrade" => Upgrade,
        "Rollback" => Rollback,
        _ => return None,
    })
}

/// The node's mode, as admission needs it.
pub type ModeSource = Arc<dyn Fn() -> NodeMode + Send + Sync>;

/// Admission's state: the budgets, and how much they have lent since memory was last given
/// back to the system.
pub struct Admission {
    mode: ModeSource,
    admins: ByteBudget,
    others: ByteBudget,
    lent: AtomicUsize,
}

/// A request admitted: what its body may hold.
struct Admitted {
    call: Call,
    budget: ByteBudget,
    address: IpAddr,
    open: OpenRequest,
}

impl Admission {
    /// Admission for a node whose mode `mode` tells.
    pub fn new(mode: ModeSource) -> Arc<Self> {
        Arc::new(Admission {
            mode,
            admins: ByteBudget::new(ADMIN_BUDGET_BYTES, ADMIN_BUDGET_BYTES),
            others: ByteBudget::new(OTHERS_BUDGET_BYTES, OTHERS_BUDGET_PER_NETWORK_BYTES),
            lent: AtomicUsize::new(0),
        })
    }

    /// Request bytes lent since the last call (to decide whether freeing memory is worth it).
    pub fn take_lent(&self) -> usize {
        self.lent.swap(0, Ordering::Relaxed)
    }

    /// Request bytes held at this moment.
    pub fn held(&self) -> usize {
        self.admins.held() + self.others.held()
    }

    /// Decides on a request from its head alone.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<Admitted, Status> {
        let call = call_of(request.uri().path())
            .ok_or_else(|| Status::unimplemented(format!("no method {}", request.uri().path())))?;
        let connection = request
            .extensions()
            .get::<ConnectionInfo>()
            .ok_or_else(|| Status::internal("a request without a connection"))?;
        let open = connection.activity.open();
        let certs = connection.tls.peer_certs();
        let caller = authorize((self.mode)(), certs.as_deref().map(Vec::as_slice), call)?;
        let budget =
            if caller.holds(Role::Admin) { self.admins.clone() } else { self.others.clone() };
        let address =
            connection.tls.get_ref().remote_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        Ok(Admitted { call, budget, address, open })
    }
}

/// The admission layer, for tonic's server builder.
#[derive(Clone)]
pub struct AdmissionLayer(pub Arc<Admission>);

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { admission: self.0.clone(), inner }
    }
}

/// The service [`AdmissionLayer`] wraps around the API.
#[derive(Clone)]
pub struct AdmissionService<S> {
    admission: Arc<Admission>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for AdmissionService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let admitted = match self.admission.admit(&request) {
            Ok(admitted) => admitted,
            // Dropping the request here drops its body unread: HTTP/2 resets the stream.
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let Admitted { call, budget, address, open } = admitted;
        let request = request.map(|body| {
            Body::new(BoundedBody::new(body, call, budget, address, self.admission.clone()))
        });
        // The service that was polled ready serves this request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| Body::new(OpenUntilEnd { body, _open: open })))
        })
    }
}

/// A response body that keeps its request open (against the connection's idle timeout) until
/// it ends or the client goes away.
struct OpenUntilEnd {
    body: Body,
    _open: OpenRequest,
}

impl HttpBody for OpenUntilEnd {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body read under its call's limits: each message's declared length is checked
/// against the call's largest and taken from the budget before its bytes are read on.
struct BoundedBody {
    body: Body,
    call: Call,
    max_message: usize,
    budget: ByteBudget,
    address: IpAddr,
    admission: Arc<Admission>,
    /// The prefix of the message being read, as far as it came.
    prefix: [u8; MESSAGE_PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come, and their reservation.
    remaining: usize,
    current: Option<Reservation>,
    /// Messages complete in the bytes passed on, held until tonic asks for more (by then it
    /// has decoded them).
    complete: Vec<Reservation>,
    /// When the current message must be whole, and when its next bytes must come.
    message_deadline: Instant,
    stall: Pin<Box<Sleep>>,
}

impl BoundedBody {
    fn new(
        body: Body,
        call: Call,
        budget: ByteBudget,
        address: IpAddr,
        admission: Arc<Admission>,
    ) -> Self {
        BoundedBody {
            body,
            call,
            max_message: max_message(call),
            budget,
            address,
            admission,
            prefix: [0; MESSAGE_PREFIX],
            prefix_len: 0,
            remaining: 0,
            current: None,
            complete: Vec::new(),
            message_deadline: Instant::now(),
            stall: Box::pin(tokio::time::sleep(MESSAGE_STALL_TIMEOUT)),
        }
    }

    /// Accounts for the next bytes of the body.
    fn account(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.complete.extend(self.current.take());
                }
                continue;
            }
            let n = (MESSAGE_PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len < MESSAGE_PREFIX {
                continue;
            }
            self.prefix_len = 0;
            let length = u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes")) as usize;
            self.start_message(length)?;
        }
        Ok(())
    }

    fn start_message(&mut self, length: usize) -> Result<(), Status> {
        if length > self.max_message {
            return Err(Status::resource_exhausted(format!(
                "a {:?} request of {length} bytes is larger than the {} bytes it may be",
                self.call, self.max_message
            )));
        }
        if length == 0 {
            return Ok(());
        }
        let reservation = self.budget.reserve(self.address, length).map_err(|e| {
            Status::resource_exhausted(format!("the node is busy: {e}; try again shortly"))
        })?;
        self.admission.lent.fetch_add(length, Ordering::Relaxed);
        self.current = Some(reservation);
        self.remaining = length;
        let now = Instant::now();
        self.message_deadline = now + MESSAGE_TIMEOUT;
        self.stall.as_mut().reset((now + MESSAGE_STALL_TIMEOUT).min(self.message_deadline));
        Ok(())
    }
}

impl HttpBody for BoundedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        // Asked for more: what was passed on before is decoded.
        self.complete.clear();
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    if let Err(status) = self.account(&data) {
                        self.current = None;
                        return Poll::Ready(Some(Err(status)));
                    }
                    if self.current.is_some() {
                        let next =
                            (Instant::now() + MESSAGE_STALL_TIMEOUT).min(self.message_deadline);
                        self.stall.as_mut().reset(next);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                if self.current.is_some() && self.stall.as_mut().poll(cx).is_ready() {
                    self.current = None;
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "the {:?} request stopped arriving half-way (its bytes must come within {}s of each other and whole within {}s)",
                        self.call,
                        MESSAGE_STALL_TIMEOUT.as_secs(),
                        MESSAGE_TIMEOUT.as_secs()
                    )))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose frames the test sends.
    fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Status>(Frame::data(b)));
        (tx, Body::new(http_body_util::StreamBody::new(stream)))
    }

    fn message(len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.resize(MESSAGE_PREFIX + len, 7);
        bytes
    }

    fn bounded(body: Body, call: Call, budget: &ByteBudget) -> BoundedBody {
        let admission = Admission::new(Arc::new(|| NodeMode::Maintenance));
        BoundedBody::new(body, call, budget.clone(), "192.0.2.1".parse().unwrap(), admission)
    }

    use tokio_stream::StreamExt as _;

    #[test]
    fn every_method_of_the_service_has_a_call() {
        let proto = include_str!("../../../api/proto/cairn/machine/v1alpha1/machine.proto");
        let methods: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| &l[..l.find('(').unwrap()])
            .collect();
        assert!(methods.len() > 20, "{methods:?}");
        for method in methods {
            assert!(call_of(&format!("{SERVICE_PATH}{method}")).is_some(), "{method}");
        }
        assert_eq!(call_of("/other.Service/Version"), None);
    }

    #[tokio::test]
    async fn a_message_larger_than_its_call_takes_is_refused_from_its_prefix() {
        let budget = ByteBudget::new(1 << 30, 1 << 30);
        let (tx, body) = channel_body();
        let mut body = bounded(body, Call::Version, &budget);
        // Only the prefix is sent: the refusal does not wait for the bytes.
        tx.send(Bytes::from(message(SMALL_MESSAGE_BYTES + 1)[..MESSAGE_PREFIX].to_vec()))
            .await
            .unwrap();
        let refused = body.frame().await.unwrap().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("Version request of 16385 bytes"), "{refused:?}");
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_message_holds_budget_until_the_next_read() {
        let budget = ByteBudget::new(2 << 20, 2 << 20);
        let (tx, body) = channel_body();
        let mut body = bounded(body, Call::ApplyConfiguration, &budget);
        let whole = message(1 << 20);
        // A partial message holds its whole declared length.
        tx.send(Bytes::from(whole[..1000].to_vec())).await.unwrap();
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.held(), 1 << 20);
        tx.send(Bytes::from(whole[1000..].to_vec())).await.unwrap();
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.held(), 1 << 20, "given back before tonic asked for more");
        // A second body cannot take more than the rest.
        let (tx2, other) = channel_body();
        let mut other = bounded(other, Call::ApplyConfiguration, &budget);
        tx2.send(Bytes::from(message(LARGE_MESSAGE_BYTES)[..MESSAGE_PREFIX].to_vec()))
            .await
            .unwrap();
        let busy = other.frame().await.unwrap().unwrap_err();
        assert!(busy.message().contains("the node is busy"), "{busy:?}");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn dropping_a_half_read_body_gives_its_budget_back() {
        let budget = ByteBudget::new(1 << 30, 1 << 30);
        let (tx, body) = channel_body();
        let mut body = bounded(body, Call::Upgrade, &budget);
        let mut two = message(10);
        two.extend(message(UPGRADE_MESSAGE_BYTES));
        tx.send(Bytes::from(two[..100].to_vec())).await.unwrap();
        body.frame().await.unwrap().unwrap();
        assert_eq!(budget.held(), 10 + UPGRADE_MESSAGE_BYTES);
        drop(body);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_stops_arriving_is_ended() {
        let budget = ByteBudget::new(1 << 30, 1 << 30);
        let (tx, body) = channel_body();
        let mut body = bounded(body, Call::ApplyConfiguration, &budget);
        tx.send(Bytes::from(message(1000)[..10].to_vec())).await.unwrap();
        body.frame().await.unwrap().unwrap();
        let ended = body.frame().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(budget.held(), 0);
        drop(tx);
    }
}
