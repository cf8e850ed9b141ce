//! Fuzzing every request of the machine API against real machined processes: a node in
//! maintenance mode (anonymous TLS) and a configured node (as os:admin) get, for each RPC of
//! the proto, random bytes, truncated and bit-flipped encodings of valid requests, and
//! well-formed requests with hostile values (huge and negative numbers, strings up to
//! 100 KiB, invalid UTF-8, device and `..` paths). Bodies go out raw, through a codec that
//! does not encode, so malformed protobuf reaches the server's decoder.
//!
//! Each call must end within [`CALL_TIMEOUT`] with OK or a status a client can act on; a
//! transport failure (a reset stream, a dropped connection) or an `Unknown` status means the
//! handler panicked or the server misbehaved. After each RPC's batch, machined must still
//! live, answer `Version`, and stay under [`RSS_LIMIT_KIB`].
//!
//! The node under test is a real process on the host, so nothing that would really stop it
//! is sent: see [`Care`]. The seed is fixed; `CAIRN_FUZZ_SEED` replays another one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::config::MachineConfig;
use cairn_api::machine as pb;
use cairn_tests::{configured_node, proc_status_kib, Node};
use ctl::connect::{channel, connect, insecure_tls, mutual_tls, NodeAddress};
use ctl::ctlconfig::CtlConfig;
use futures_util::StreamExt;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use protox::prost_reflect;
use rustls::ClientConfig;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The seed when `CAIRN_FUZZ_SEED` sets none.
const SEED: u64 = 0xCA1B_F022_5EED_0001;
/// Bodies sent to each RPC, per node.
const BODIES_PER_RPC: usize = 150;
/// Calls in flight at once on the fuzzing connection (machined allows 32 streams).
const IN_FLIGHT: usize = 8;
/// How long one call may take, from sending to the last message read.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a following stream (`follow: true`) may stay quiet before we leave it.
const FOLLOW_IDLE: Duration = Duration::from_millis(250);
/// Messages read from a stream before it is dropped.
const STREAM_MESSAGES: usize = 4;
/// The longest strings and byte fields sent.
const LONG: usize = 100 * 1024;
/// A body over machined's request limit (a config at its largest, 1 MiB, plus 64 KiB).
const OVERSIZED: usize = 1024 * 1024 + 128 * 1024;
/// machined's resident memory must stay below this, throughout.
const RSS_LIMIT_KIB: u64 = 200 * 1024;
/// The API's contract: the RPCs fuzzed are the ones it declares (its descriptors, compiled
/// by protox as the api crate's build compiles them).
const PROTO_INCLUDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/proto");
/// The machine API's `.proto`, below [`PROTO_INCLUDE`].
const PROTO_FILE: &str = "cairn/machine/v1alpha1/machine.proto";

/// What must not be sent to an RPC, so that the node under test keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Care {
    /// Anything may be sent.
    None,
    /// The node would obey any body that decodes (an empty request): to a configured node,
    /// only bodies that fail to decode go; a node in maintenance mode refuses them all.
    UndecodableWhenConfigured,
    /// No valid body naming `apid` (our connection) or `machined`.
    SpareTheApi,
    /// No body carrying a config that parses and validates.
    NoValidConfig,
}

/// One RPC: how to fuzz it and what it may answer.
struct Rpc {
    name: &'static str,
    care: Care,
    /// Answers (to anyone) in maintenance mode.
    open_in_maintenance: bool,
    /// May answer OK to fuzzed bodies at all (a random config or bootstrap proof never fits).
    ever_ok: bool,
}

const fn rpc(name: &'static str, care: Care, open: bool, ever_ok: bool) -> Rpc {
    Rpc { name, care, open_in_maintenance: open, ever_ok }
}

/// Every RPC of the proto. A new one fails the test until it is listed here, with a
/// decision about what is safe to send it.
const RPCS: &[Rpc] = &[
    rpc("Version", Care::None, true, true),
    rpc("ApplyConfiguration", Care::NoValidConfig, true, false),
    rpc("Bootstrap", Care::None, true, false),
    rpc("GetConfiguration", Care::None, false, true),
    rpc("Reboot", Care::UndecodableWhenConfigured, false, true),
    rpc("Shutdown", Care::UndecodableWhenConfigured, false, true),
    rpc("ServiceList", Care::None, false, true),
    // Starting apid while it runs is refused; starting the others is harmless in host mode.
    rpc("ServiceStart", Care::None, false, true),
    rpc("ServiceStop", Care::SpareTheApi, false, true),
    rpc("ServiceRestart", Care::SpareTheApi, false, true),
    rpc("Logs", Care::None, false, true),
    rpc("Dmesg", Care::None, false, true),
    rpc("Events", Care::None, false, true),
    rpc("Stats", Care::None, false, true),
    rpc("Time", Care::None, false, true),
    rpc("Disks", Care::None, true, true),
    rpc("Mounts", Care::None, false, true),
    rpc("List", Care::None, false, true),
    rpc("Read", Care::None, false, true),
    // Host mode runs no kubelet: these answer FailedPrecondition; restarting a pod is
    // harmless anyway.
    rpc("Pods", Care::None, false, false),
    rpc("PodRestart", Care::None, false, false),
    rpc("PodEvents", Care::None, false, false),
    rpc("ContainerLogs", Care::None, false, false),
    // A fuzzed body is never a valid pod, nor names a manifest that exists.
    rpc("ManifestApply", Care::None, false, false),
    rpc("ManifestDelete", Care::None, false, false),
    // A body without documents (an empty one decodes so) applies or deletes nothing, OK; the
    // store of a host-mode node is all a fuzzed file could change.
    rpc("ObjectsApply", Care::None, false, true),
    rpc("ObjectsDelete", Care::None, false, true),
    rpc("ObjectsGet", Care::None, false, true),
    // Host mode has no slots: both answer FailedPrecondition once the request decodes.
    rpc("Upgrade", Care::None, false, false),
    rpc("Rollback", Care::None, false, false),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Maintenance,
    Configured,
}

#[test]
fn the_fuzz_table_covers_every_rpc_of_the_proto() {
    let api = Api::load();
    // The descriptors say what the fuzzing relies on.
    let streams: Vec<&str> = api.rpcs.iter().filter(|(_, s)| *s).map(|(r, _)| r.name).collect();
    assert_eq!(streams, ["Logs", "Dmesg", "Events", "List", "Read", "ContainerLogs", "Upgrade"]);
    let list = &api.requests["List"];
    assert!(list.iter().any(|f| f.name == "root" && f.number == 1 && f.kind == Kind::String));
    assert!(list.iter().any(|f| f.name == "recursion_depth" && f.kind == Kind::Varint));
    assert!(api.requests["Reboot"].is_empty());
    assert_eq!(api.prefix, "/cairn.machine.v1alpha1.MachineService/");
}

#[test]
fn a_node_in_maintenance_mode_answers_fuzzed_anonymous_requests_cleanly() {
    let node = Node::start().unwrap();
    fuzz(&node, insecure_tls(None).unwrap(), Mode::Maintenance);
}

#[test]
fn a_configured_node_answers_fuzzed_admin_requests_cleanly() {
    let (cluster, node) = configured_node();
    let admin = CtlConfig::load(&cluster.admin()).unwrap();
    let tls = mutual_tls(admin.context(&cluster.admin(), None).unwrap()).unwrap();
    fuzz(&node, tls, Mode::Configured);
}

/// Sends every RPC its batch of bodies, checking machined after each batch.
fn fuzz(node: &Node, tls: Arc<ClientConfig>, mode: Mode) {
    let api = Api::load();
    let seed = std::env::var("CAIRN_FUZZ_SEED")
        .ok()
        .map(|s| parse_seed(&s).unwrap_or_else(|| panic!("CAIRN_FUZZ_SEED={s:?} is no number")))
        .unwrap_or(SEED);
    let pid = node.pid().expect("machined runs");
    // A FIFO without a writer: reading it must be refused, never block.
    let _ = Command::new("mkfifo").arg(node.root().join("fifo")).status();
    let root = node.root().display().to_string();
    let started = Instant::now();
    let rss_before = proc_status_kib(pid, "VmRSS").expect("machined's VmRSS");
    println!("{mode:?}: seed {seed:#x} (CAIRN_FUZZ_SEED replays one), VmRSS {rss_before} KiB");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rss_max = rss_before;
    let mut failures = Vec::new();
    runtime.block_on(async {
        let mut panics = PanicWatch::default();
        check_alive(node, &tls, mode, "before fuzzing").await;
        panics.new_ones(node);
        let channel = raw_channel(&node.address, tls.clone()).await.unwrap();
        let grpc = Grpc::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let target = Target { address: &node.address, tls: &tls, grpc, mode };
        for (rpc, streaming) in &api.rpcs {
            let batch_seed = splitmix(seed ^ fnv1a(rpc.name) ^ mode as u64);
            let context = BodyContext { root: &root, fields: &api.requests[rpc.name] };
            let mut report = run_batch(&target, &api, rpc, *streaming, batch_seed, &context).await;
            let rss = check_alive(node, &tls, mode, &format!("the {} batch", rpc.name)).await;
            rss_max = rss_max.max(rss);
            // A panic in a spawned task (a file walk, say) can end a stream that looks whole.
            report.failures.extend(panics.new_ones(node).into_iter().map(|panic| {
                format!("{mode:?} {} seed {batch_seed:#x}: machined {panic}", rpc.name)
            }));
            println!(
                "{mode:?} {:<18} {:>3} sent, {:>5} ms, VmRSS {rss:>6} KiB: {}{}{}",
                rpc.name,
                report.sent,
                report.elapsed.as_millis(),
                report
                    .outcomes
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match report.collateral {
                    0 => String::new(),
                    n => format!(" ({n} failed only beside a call that broke the connection)"),
                },
                report
                    .skipped
                    .iter()
                    .map(|(why, n)| format!("; {n} not sent: {why}"))
                    .collect::<String>()
            );
            for failure in &report.failures {
                println!("  FAILED: {failure}");
            }
            failures.extend(report.failures);
            assert!(report.sent > 0, "every {} body was skipped", rpc.name);
        }
        // A method the service does not have.
        let path = PathAndQuery::from_maybe_shared(format!("{}NoSuchMethod", api.prefix)).unwrap();
        let answer = tokio::time::timeout(
            CALL_TIMEOUT,
            send(target.grpc.clone(), path, false, false, Arc::default()),
        )
        .await
        .expect("NoSuchMethod: no answer in time")
        .unwrap();
        match answer {
            Answer::Status(s) if s.code() == Code::Unimplemented && s.source().is_none() => {}
            other => panic!("NoSuchMethod: expected Unimplemented, got {other:?}"),
        }
    });
    drop(runtime);

    let rss_after = proc_status_kib(pid, "VmRSS").expect("machined's VmRSS");
    let peak = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    println!(
        "{mode:?}: {} RPCs fuzzed in {:.1} s; machined VmRSS {rss_before} KiB before, \
         {rss_after} KiB after, {rss_max} KiB at most between batches, peak (VmHWM) {peak} KiB",
        api.rpcs.len(),
        started.elapsed().as_secs_f64()
    );
    for (what, kib) in [("after fuzzing", rss_after), ("between batches", rss_max)] {
        if kib >= RSS_LIMIT_KIB {
            failures.push(format!(
                "{mode:?}: machined's VmRSS {what} is {kib} KiB, over {RSS_LIMIT_KIB} KiB \
                 (before: {rss_before} KiB)"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems with {mode:?} machined (seed {seed:#x}):\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// What a batch did.
#[derive(Default)]
struct BatchReport {
    sent: usize,
    /// Bodies not sent, by why (see [`Care`]).
    skipped: BTreeMap<&'static str, usize>,
    /// Calls that failed only because another one broke the connection they shared.
    collateral: usize,
    elapsed: Duration,
    /// How many calls ended each way ("OK", "NotFound", ...).
    outcomes: BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// Where a batch's calls go.
struct Target<'a> {
    address: &'a str,
    tls: &'a Arc<ClientConfig>,
    /// The connection the batch shares.
    grpc: Grpc<Channel>,
    mode: Mode,
}

async fn run_batch(
    target: &Target<'_>,
    api: &Api,
    rpc: &Rpc,
    streaming: bool,
    seed: u64,
    context: &BodyContext<'_>,
) -> BatchReport {
    let (grpc, mode) = (&target.grpc, target.mode);
    let mut rng = XorShift::new(seed);
    let mut report = BatchReport::default();
    let path = PathAndQuery::from_maybe_shared(format!("{}{}", api.prefix, rpc.name)).unwrap();
    let mut probes = Vec::new();
    for iteration in 0..BODIES_PER_RPC {
        let (kind, body) = make_body(&mut rng, iteration, context);
        if let Some(why) = unsafe_to_send(rpc, mode, &body) {
            *report.skipped.entry(why).or_default() += 1;
            continue;
        }
        let follows = follows(rpc.name, &body);
        probes.push(Probe { iteration, kind, body: Arc::new(body), follows });
    }
    let started = Instant::now();
    let calls = probes.iter().map(|probe| {
        let (grpc, path) = (grpc.clone(), path.clone());
        async move { (probe, probe.call(grpc, path, rpc, streaming, mode).await) }
    });
    let mut results: Vec<_> =
        futures_util::stream::iter(calls).buffer_unordered(IN_FLIGHT).collect().await;
    report.elapsed = started.elapsed();
    results.sort_by_key(|(probe, _)| probe.iteration);
    for (probe, (took, verdict)) in results {
        report.sent += 1;
        let failure = match verdict {
            Ok(outcome) => {
                *report.outcomes.entry(outcome).or_default() += 1;
                continue;
            }
            // The connection broke under this call: it, or another call in flight, did that.
            // Alone, it tells which.
            Err(Problem::Transport(problem)) => {
                let alone = match raw_channel(target.address, target.tls.clone()).await {
                    Ok(channel) => Grpc::new(channel),
                    Err(e) => {
                        report.failures.push(format!("{mode:?}: connecting again: {e:#}"));
                        continue;
                    }
                };
                match probe.call(alone, path.clone(), rpc, streaming, mode).await.1 {
                    Ok(outcome) => {
                        *report.outcomes.entry(format!("{outcome} (alone)")).or_default() += 1;
                        report.collateral += 1;
                        continue;
                    }
                    Err(Problem::Transport(_)) => format!(
                        "{problem}; sent again alone, on a connection of its own, it fails again"
                    ),
                    Err(Problem::Answer(again)) => {
                        format!("{problem}; sent again alone: {again}")
                    }
                }
            }
            Err(Problem::Answer(problem)) => problem,
        };
        report.failures.push(format!(
            "{mode:?} {} seed {seed:#x} iteration {} ({}, {} bytes, {} ms): {failure}",
            rpc.name,
            probe.iteration,
            probe.kind,
            probe.body.len(),
            took.as_millis()
        ));
    }
    report
}

/// One body for one RPC.
struct Probe {
    iteration: usize,
    kind: &'static str,
    body: Arc<Vec<u8>>,
    /// A stream that stays open for news.
    follows: bool,
}

impl Probe {
    /// Sends the body; returns how long that took and the outcome's name, or what is wrong.
    async fn call(
        &self,
        grpc: Grpc<Channel>,
        path: PathAndQuery,
        rpc: &Rpc,
        streaming: bool,
        mode: Mode,
    ) -> (Duration, Result<String, Problem>) {
        let started = Instant::now();
        let call = send(grpc, path, streaming, self.follows, self.body.clone());
        let verdict = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => Err(Problem::Answer(format!("no answer within {CALL_TIMEOUT:?}"))),
            Ok(Err(problem)) => Err(Problem::Answer(problem)),
            Ok(Ok(answer)) => judge(rpc, mode, &answer),
        };
        (started.elapsed(), verdict)
    }
}

/// What is wrong with an answer.
enum Problem {
    /// The stream was reset or the connection lost.
    Transport(String),
    /// Anything else: a status no client can act on, a wrong OK, a stall.
    Answer(String),
}

/// Why `body` must not go to `rpc` on a node in `mode`, if it must not (see [`Care`]).
fn unsafe_to_send(rpc: &Rpc, mode: Mode, body: &[u8]) -> Option<&'static str> {
    match rpc.care {
        Care::None => None,
        Care::UndecodableWhenConfigured => {
            // RebootRequest and ShutdownRequest are both empty: one decoder tells for both.
            let decodes = match rpc.name {
                "Reboot" => pb::RebootRequest::decode(body).is_ok(),
                "Shutdown" => pb::ShutdownRequest::decode(body).is_ok(),
                other => panic!("{other}: no decoder for its Care"),
            };
            (mode == Mode::Configured && decodes).then_some("the node would obey it")
        }
        Care::SpareTheApi => match pb::ServiceRequest::decode(body) {
            Ok(r) if r.id == "apid" || r.id == "machined" => Some("it names apid or machined"),
            _ => None,
        },
        Care::NoValidConfig => match pb::ApplyConfigurationRequest::decode(body) {
            Ok(r) if MachineConfig::from_yaml(&r.data).is_ok() => Some("it holds a valid config"),
            _ => None,
        },
    }
}

/// Whether a stream stays open for new records (and may go quiet) after its history.
fn follows(rpc: &str, body: &[u8]) -> bool {
    match rpc {
        "Logs" => pb::LogsRequest::decode(body).is_ok_and(|r| r.follow),
        "Dmesg" => pb::DmesgRequest::decode(body).is_ok_and(|r| r.follow),
        "Events" => pb::EventsRequest::decode(body).is_ok_and(|r| r.follow),
        _ => false,
    }
}

/// How a call ended, as far as the server's answer goes.
#[derive(Debug)]
enum Answer {
    /// OK; for a stream, the messages read before leaving it.
    Ok { messages: usize },
    /// A status: from the server, or made up by the client when the transport failed.
    Status(Status),
}

/// Sends one raw body; `Err` when a stream that does not follow stalls. A following stream
/// is left once it goes quiet.
async fn send(
    mut grpc: Grpc<Channel>,
    path: PathAndQuery,
    streaming: bool,
    follows: bool,
    body: Arc<Vec<u8>>,
) -> Result<Answer, String> {
    grpc.ready().await.map_err(|e| format!("the connection failed before the call: {e}"))?;
    if !streaming {
        return Ok(match grpc.unary::<_, Vec<u8>, _>(Request::new(body), path, RawCodec).await {
            Ok(_) => Answer::Ok { messages: 1 },
            Err(status) => Answer::Status(status),
        });
    }
    let mut stream = match grpc.server_streaming(Request::new(body), path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Answer::Status(status)),
    };
    let idle = if follows { FOLLOW_IDLE } else { CALL_TIMEOUT };
    let mut messages = 0;
    while messages < STREAM_MESSAGES {
        match tokio::time::timeout(idle, stream.message()).await {
            Err(_) if follows => break,
            Err(_) => return Err(format!("the stream stalled after {messages} messages")),
            Ok(Ok(Some(_))) => messages += 1,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => return Ok(Answer::Status(status)),
        }
    }
    Ok(Answer::Ok { messages })
}

/// The outcome's name when the answer is one a client can act on; else what is wrong.
fn judge(rpc: &Rpc, mode: Mode, answer: &Answer) -> Result<String, Problem> {
    let status = match answer {
        Answer::Ok { messages } => {
            let may = rpc.ever_ok && (mode == Mode::Configured || rpc.open_in_maintenance);
            return if may {
                Ok("OK".into())
            } else {
                Err(Problem::Answer(format!(
                    "answered OK ({messages} messages) where it must refuse"
                )))
            };
        }
        Answer::Status(status) => status,
    };
    let message = status.message();
    let shown = || format!("{:?}: {}", status.code(), clip(message, 300));
    if status.source().is_some() {
        // Statuses from the server come in trailers; ones with a source were made up by the
        // client from a reset stream or a broken connection: a panicking handler, or worse.
        return Err(Problem::Transport(format!(
            "transport-level failure (stream reset or connection lost): {}",
            shown()
        )));
    }
    if message.trim().is_empty() {
        return Err(Problem::Answer(format!("{:?} without a message", status.code())));
    }
    let code = format!("{:?}", status.code());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::Unimplemented => Ok(code),
        // tonic's own answer to a body that is no protobuf of the request's type.
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Ok("Internal (undecodable)".into())
        }
        // The file or the kernel log failed while streaming (/proc/self/mem, say).
        Code::Internal if rpc.name == "Read" && message.starts_with("reading: ") => Ok(code),
        Code::Internal | Code::Unavailable
            if rpc.name == "Dmesg" && message.starts_with("/dev/kmsg: ") =>
        {
            Ok(code)
        }
        Code::DataLoss if message.starts_with("follower fell") => Ok(code),
        _ => Err(Problem::Answer(format!("unclean status {}", shown()))),
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// Checks that machined lives and answers `Version` in the expected mode; returns its
/// VmRSS in KiB.
async fn check_alive(node: &Node, tls: &Arc<ClientConfig>, mode: Mode, after: &str) -> u64 {
    let dead = |why: String| -> ! {
        let output = node.output();
        let tail: Vec<&str> = output.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("after {after}: {why}\nmachined's last lines:\n{}", tail.join("\n"))
    };
    let pid = node.pid().unwrap_or_else(|| dead("machined is not running".into()));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| dead(format!("/proc/{pid}/status: {e}: machined is gone")));
    if let Some(state) = status.lines().find(|l| l.starts_with("State:")) {
        if state.contains("zombie") || state.contains("dead") {
            dead(format!("machined exited ({})", state.trim()));
        }
    }
    let address = NodeAddress::parse(&node.address).unwrap();
    let version = tokio::time::timeout(CALL_TIMEOUT, async {
        let mut client = connect(&address, tls.clone()).await.map_err(|e| format!("{e:#}"))?;
        client.version(pb::VersionRequest {}).await.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")))
    .unwrap_or_else(|e| dead(format!("Version failed: {e}")))
    .into_inner();
    let expected = match mode {
        Mode::Maintenance => pb::NodeMode::Maintenance,
        Mode::Configured => pb::NodeMode::Configured,
    };
    if version.mode != expected as i32 {
        dead(format!("the node is in mode {}, not {expected:?}", version.mode));
    }
    proc_status_kib(pid, "VmRSS").unwrap_or_else(|| dead("no VmRSS".into()))
}

/// Finds the panics machined printed since the last look.
#[derive(Default)]
struct PanicWatch {
    seen: usize,
}

impl PanicWatch {
    /// Each new panic: its `panicked at` line and the message after it.
    fn new_ones(&mut self, node: &Node) -> Vec<String> {
        let output = node.output();
        let new = output.get(self.seen..).unwrap_or_default();
        self.seen = output.len();
        let lines: Vec<&str> = new.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.contains("panicked at"))
            .map(|(i, line)| {
                let message = lines.get(i + 1).copied().unwrap_or_default();
                format!("{} {}", line.trim(), message.trim())
            })
            .collect()
    }
}

/// A gRPC channel to `address`, as ctl opens them: the raw codec needs the channel itself.
async fn raw_channel(address: &str, tls: Arc<ClientConfig>) -> anyhow::Result<Channel> {
    Ok(channel(&NodeAddress::parse(address)?, tls).await?.0)
}

/// Sends bytes as they are and hands back what comes, undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Arc<Vec<u8>>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Arc<Vec<u8>>;
    type Error = Status;

    fn encode(&mut self, item: Arc<Vec<u8>>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut message = vec![0; src.remaining()];
        src.copy_to_slice(&mut message);
        Ok(Some(message))
    }
}

// ---------------------------------------------------------------------------------------
// The proto, as far as fuzzing needs it.

/// The RPCs of the proto (in its order, with whether they stream) and their requests' fields.
struct Api {
    /// `/package.Service/`.
    prefix: String,
    rpcs: Vec<(&'static Rpc, bool)>,
    requests: HashMap<&'static str, Vec<Field>>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    number: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Bytes,
    Bool,
    /// int32, int64, uint32, uint64, sint*, enums: varints.
    Varint,
    Fixed64,
    Fixed32,
    Message,
}

impl Api {
    /// Compiles the proto; panics when its RPCs and [`RPCS`] differ.
    fn load() -> Api {
        let pool = protox::Compiler::new([PROTO_INCLUDE])
            .and_then(|mut compiler| Ok(compiler.open_file(PROTO_FILE)?.descriptor_pool()))
            .unwrap_or_else(|e| panic!("{PROTO_FILE}: {e}"));
        let file = pool.get_file_by_name(PROTO_FILE).expect("the compiled file");
        let services: Vec<_> = file.services().collect();
        let [service] = &services[..] else {
            panic!("{PROTO_FILE} declares {} services, not one", services.len())
        };
        let declared: BTreeSet<String> = service.methods().map(|m| m.name().to_string()).collect();
        let listed: BTreeSet<String> = RPCS.iter().map(|r| r.name.to_string()).collect();
        let new: Vec<_> = declared.difference(&listed).collect();
        let gone: Vec<_> = listed.difference(&declared).collect();
        assert!(
            new.is_empty() && gone.is_empty(),
            "the proto's RPCs changed: new {new:?} (list them in RPCS, deciding what is safe to \
             send them), gone {gone:?}"
        );
        let mut rpcs = Vec::new();
        let mut requests = HashMap::new();
        for method in service.methods() {
            let rpc = RPCS.iter().find(|r| r.name == method.name()).expect("listed");
            let fields = method
                .input()
                .fields()
                .map(|field| Field {
                    name: field.name().to_string(),
                    number: field.number().into(),
                    kind: Kind::of(&field.kind()),
                })
                .collect();
            // A client stream is fuzzed with one message, as a unary request.
            rpcs.push((rpc, method.is_server_streaming()));
            requests.insert(rpc.name, fields);
        }
        Api { prefix: format!("/{}/", service.full_name()), rpcs, requests }
    }
}

impl Kind {
    /// How a field of this protobuf type goes on the wire.
    fn of(kind: &prost_reflect::Kind) -> Kind {
        use prost_reflect::Kind as Proto;
        match kind {
            Proto::String => Kind::String,
            Proto::Bytes => Kind::Bytes,
            Proto::Bool => Kind::Bool,
            Proto::Int32
            | Proto::Int64
            | Proto::Uint32
            | Proto::Uint64
            | Proto::Sint32
            | Proto::Sint64
            | Proto::Enum(_) => Kind::Varint,
            Proto::Double | Proto::Fixed64 | Proto::Sfixed64 => Kind::Fixed64,
            Proto::Float | Proto::Fixed32 | Proto::Sfixed32 => Kind::Fixed32,
            Proto::Message(_) => Kind::Message,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bodies.

/// What body generation needs to know about the node and the request.
struct BodyContext<'a> {
    /// The node's root directory (its STATE lies below).
    root: &'a str,
    fields: &'a [Field],
}

/// The `iteration`th body of a batch, and what kind it is.
fn make_body(
    rng: &mut XorShift,
    iteration: usize,
    cx: &BodyContext<'_>,
) -> (&'static str, Vec<u8>) {
    match iteration {
        0 => ("empty", Vec::new()),
        1 => ("oversized", rng.bytes(OVERSIZED)),
        2..=5 => ("edges", edges(cx, iteration - 2)),
        _ => match iteration % 7 {
            0 => {
                let len = if rng.chance(3) { rng.below(4096) } else { rng.below(48) };
                ("random bytes", rng.bytes(len))
            }
            1 => ("valid", message(rng, cx, false)),
            2 => ("hostile values", message(rng, cx, true)),
            3 => {
                let hostile = rng.chance(2);
                let mut body = message(rng, cx, hostile);
                body.truncate(rng.below(body.len().max(1)));
                ("truncated", body)
            }
            4 => {
                let mut body = message(rng, cx, false);
                if body.is_empty() {
                    body = random_fields(rng);
                }
                for _ in 0..=rng.below(3) {
                    let bit = rng.below(body.len() * 8);
                    body[bit / 8] ^= 1 << (bit % 8);
                }
                ("bit-flipped", body)
            }
            5 => ("random fields", random_fields(rng)),
            _ => {
                let mut body = message(rng, cx, false);
                body.extend(random_fields(rng));
                ("valid + random fields", body)
            }
        },
    }
}

/// A request with every field at one of four edges at once: numbers at `i32::MIN`,
/// `i32::MAX`, -1 or 0 (and strings and bytes of [`LONG`] in the last), whatever the seed.
fn edges(cx: &BodyContext<'_>, edge: usize) -> Vec<u8> {
    let long = edge == 3;
    let mut out = Vec::new();
    for field in cx.fields {
        match field.kind {
            Kind::String => {
                let text = match field.name.as_str() {
                    "path" | "root" if long => format!("/{}", "a".repeat(LONG)),
                    "path" | "root" => cx.root.to_string(),
                    _ if long => "a".repeat(LONG),
                    "id" => "logflush".to_string(),
                    _ => "x".to_string(),
                };
                put_bytes(&mut out, field.number, text.as_bytes());
            }
            Kind::Bytes => {
                let data = match field.name.as_str() {
                    _ if long => vec![b'a'; LONG],
                    "data" => b"version: v1alpha1\n".to_vec(),
                    _ => vec![0; 32],
                };
                put_bytes(&mut out, field.number, &data);
            }
            Kind::Bool => put_varint_field(&mut out, field.number, (edge % 2) as u64),
            Kind::Varint => {
                let values = [i32::MIN as i64 as u64, i32::MAX as u64, u64::MAX, 0];
                put_varint_field(&mut out, field.number, values[edge]);
            }
            Kind::Fixed64 => {
                put_tag(&mut out, field.number, 1);
                out.extend_from_slice(&[0xff; 8]);
            }
            Kind::Fixed32 => {
                put_tag(&mut out, field.number, 5);
                out.extend_from_slice(&[0xff; 4]);
            }
            Kind::Message => put_bytes(&mut out, field.number, &[]),
        }
    }
    out
}

/// A request with each field of the right wire type (some left out, some repeated); with
/// `hostile`, values at the edges, invalid UTF-8 and unknown fields.
fn message(rng: &mut XorShift, cx: &BodyContext<'_>, hostile: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in cx.fields {
        if rng.chance(5) {
            continue;
        }
        let times = if rng.chance(8) { 2 } else { 1 };
        for _ in 0..times {
            match field.kind {
                Kind::String => {
                    let mut text = match field.name.as_str() {
                        "path" | "root" => path(rng, cx.root),
                        "id" => service_name(rng),
                        _ => text(rng),
                    };
                    if hostile && rng.chance(3) {
                        break_utf8(rng, &mut text);
                    }
                    put_bytes(&mut out, field.number, &text);
                }
                Kind::Bytes => {
                    let data = match field.name.as_str() {
                        "data" => config_junk(rng),
                        _ => {
                            let len = *rng.pick(&[0, 1, 31, 32, 33, 64, 1024, LONG]);
                            rng.bytes(len)
                        }
                    };
                    put_bytes(&mut out, field.number, &data);
                }
                Kind::Bool => {
                    let value =
                        if hostile { *rng.pick(&[2, 127, u64::MAX]) } else { rng.below(2) as u64 };
                    put_varint_field(&mut out, field.number, value);
                }
                Kind::Varint => {
                    let value = if hostile && rng.chance(3) {
                        *rng.pick(&[1 << 31, 1 << 32, 1 << 40, u64::MAX, u64::MAX - 1])
                    } else {
                        let small = [0, 1, -1, 2, 3, 5, 10, 100, 65536];
                        let edges = [i32::MAX as i64, i32::MIN as i64, i32::MAX as i64 - 1];
                        if rng.chance(3) {
                            *rng.pick(&edges) as u64
                        } else if rng.chance(4) {
                            rng.next() as i32 as i64 as u64
                        } else {
                            *rng.pick(&small) as u64
                        }
                    };
                    put_varint_field(&mut out, field.number, value);
                }
                Kind::Fixed64 => {
                    let value = *rng.pick(&[f64::NAN, f64::INFINITY, -0.0, 1e308, 0.5]);
                    put_tag(&mut out, field.number, 1);
                    out.extend_from_slice(&value.to_le_bytes());
                }
                Kind::Fixed32 => {
                    put_tag(&mut out, field.number, 5);
                    out.extend_from_slice(&(rng.next() as u32).to_le_bytes());
                }
                Kind::Message => {
                    let inner = random_fields(rng);
                    put_bytes(&mut out, field.number, &inner);
                }
            }
        }
    }
    if hostile && rng.chance(2) {
        // Unknown fields a decoder must skip.
        let number = *rng.pick(&[6, 15, 16, 100, 536_870_911]);
        let len = rng.below(64);
        put_bytes(&mut out, number, &rng.bytes(len));
    }
    out
}

/// Fields of any number and wire type, some of them impossible: number 0, numbers past the
/// largest, wire types 6 and 7, lengths that lie, groups that never end, overlong varints.
fn random_fields(rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(5) {
        let number =
            *rng.pick(&[0, 1, 2, 3, 4, 5, 7, 16, 19_000, 536_870_911, 536_870_912, 1 << 35]);
        let wire = rng.below(8) as u8;
        put_tag(&mut out, number, wire);
        match wire {
            0 => match rng.below(4) {
                0 => out.extend_from_slice(&[0xff; 11]),
                1 => out.push(0x80),
                _ => {
                    let random = rng.next();
                    put_varint(&mut out, *rng.pick(&[0, 1, u64::MAX, random]))
                }
            },
            1 => {
                let len = if rng.chance(4) { 3 } else { 8 };
                out.extend(rng.bytes(len));
            }
            2 => {
                let len = rng.below(64);
                let payload = rng.bytes(len);
                let claimed = match rng.below(4) {
                    0 => payload.len() as u64 + 1 + rng.below(1000) as u64,
                    1 => *rng.pick(&[u32::MAX as u64, 1 << 31, u64::MAX]),
                    _ => payload.len() as u64,
                };
                put_varint(&mut out, claimed);
                out.extend(payload);
            }
            5 => {
                let len = if rng.chance(4) { 2 } else { 4 };
                out.extend(rng.bytes(len));
            }
            // Groups (3, 4) and the wire types that do not exist (6, 7) carry nothing here.
            _ => {}
        }
    }
    out
}

/// Paths: devices, FIFOs, /proc oddities, STATE, `..`, relative, overlong and random.
fn path(rng: &mut XorShift, root: &str) -> Vec<u8> {
    const FIXED: &[&str] = &[
        "",
        "/",
        ".",
        "..",
        "../..",
        "../../../../etc/passwd",
        "/..",
        "/../../..",
        "//",
        "relative/path",
        "~root",
        "/nonexistent",
        "/etc/hostname",
        "/etc/passwd",
        "/etc",
        "/tmp",
        "/dev/zero",
        "/dev/null",
        "/dev/urandom",
        "/dev/kmsg",
        "/dev/fd/0",
        "/proc/kmsg",
        "/proc/self/mem",
        "/proc/self/status",
        "/proc/self/environ",
        "/proc/self/fd/0",
        "/proc/self/root",
        "/proc/1/cwd",
        "/sys/block",
        "/etc/passwd\0x",
        "/\u{202e}txt.exe",
        "/dev/",
    ];
    let text = match rng.below(10) {
        0..=4 => rng.pick(FIXED).to_string(),
        5 | 6 => {
            let own = ["system/state/config.yaml", "system/state", "fifo", "", "machined.out"];
            format!("{root}/{}", rng.pick(&own))
        }
        // Past PATH_MAX (4096) and NAME_MAX (255).
        7 => format!("/{}", "a/".repeat(rng.below(3000))),
        8 => format!("/{}", "x".repeat(200 + rng.below(200))),
        _ => {
            let mut text = String::from("/");
            text.push_str(&String::from_utf8(self::text(rng)).expect("text() is UTF-8"));
            text
        }
    };
    text.into_bytes()
}

/// Service and log names: real ones, near misses and junk.
fn service_name(rng: &mut XorShift) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "logflush",
        "settings",
        "network",
        "power-button",
        "apid",
        "machined",
        "",
        " ",
        "apid ",
        "APID",
        "../apid",
        "logflush\0",
        "*",
        "%s%n%x",
        "kernel",
    ];
    if rng.chance(4) {
        text(rng)
    } else {
        rng.pick(NAMES).as_bytes().to_vec()
    }
}

/// Valid UTF-8 of any length up to [`LONG`], odd characters included.
fn text(rng: &mut XorShift) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "/", ".", "..", "-", "_", " ", "\n", "\t", "%", "\\", "é", "ß", "日", "🦀",
        "\u{202e}", "\u{feff}", "\0", "\u{7f}",
    ];
    let len = match rng.below(8) {
        0 => 0,
        1..=4 => rng.below(32),
        5 | 6 => rng.below(4096),
        _ => LONG - rng.below(1024),
    };
    let mut out = Vec::with_capacity(len + 4);
    while out.len() < len {
        out.extend_from_slice(rng.pick(PIECES).as_bytes());
    }
    out
}

/// Puts a byte sequence that is no UTF-8 somewhere in `text`.
fn break_utf8(rng: &mut XorShift, text: &mut Vec<u8>) {
    const BROKEN: &[&[u8]] =
        &[b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"];
    let at = rng.below(text.len() + 1);
    // Inside a character or not, the result is invalid either way.
    let broken = rng.pick(BROKEN);
    text.splice(at..at, broken.iter().copied());
}

/// Machine configs that are no valid config: broken YAML, hostile YAML, random bytes.
fn config_junk(rng: &mut XorShift) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "machine:",
        "\n",
        "  ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "&a ",
        "*a ",
        "!!binary ",
        "!!str ",
        "---\n",
        "...\n",
        "%YAML 1.2\n",
        "hostname: ",
        "install:",
        "disk: /dev/sda",
        "network:",
        "clientCa:",
        "crt: ",
        "key: ",
        "'",
        "\"",
        "\t",
        "? ",
        "|\n",
        ">\n",
        "~",
        "version: v1alpha1\n",
        "0x",
        "1e999",
        "-.inf",
        "\u{feff}",
    ];
    match rng.below(6) {
        0 => {
            let len = if rng.chance(4) { LONG } else { rng.below(4096) };
            rng.bytes(len)
        }
        1 | 2 => {
            let mut out = if rng.chance(2) { b"version: v1alpha1\n".to_vec() } else { Vec::new() };
            let len = if rng.chance(5) { LONG } else { rng.below(2048) };
            while out.len() < len {
                out.extend_from_slice(rng.pick(TOKENS).as_bytes());
            }
            out
        }
        3 => {
            // Nested deeper than any parser should follow.
            let open = *rng.pick(&["[", "{a: ", "- "]);
            format!("version: v1alpha1\nmachine: {}", open.repeat(rng.below(LONG / 4))).into_bytes()
        }
        4 => {
            let mut out = b"version: v1alpha1\nmachine:\n  hostname: ".to_vec();
            out.extend(text(rng));
            out
        }
        _ => {
            // Aliases that multiply.
            let mut out = String::from("version: v1alpha1\na0: &a0 [x, x, x, x, x, x, x, x]\n");
            for i in 1..8 {
                let p = i - 1;
                out += &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
            }
            out.into_bytes()
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u64, wire: u8) {
    put_varint(out, number << 3 | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
    put_tag(out, number, 0);
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_tag(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

// ---------------------------------------------------------------------------------------
// Randomness: deterministic, from a seed.

/// xorshift64.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(splitmix(seed).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// True once in `n` times.
    fn chance(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.parse().ok(),
    }
}
