//! iceoryx2 as a peer: its inter-process publish-subscribe over shared memory, with the
//! subscriber busy-waiting (`receive` in a loop), or sleeping on iceoryx2's event service
//! (a notifier rung after every send, a listener waited on when nothing is there).
//!
//! iceoryx2's single-threaded ports (`ipc::Service`, its fastest) cannot move between
//! threads, so each endpoint is built by the thread that uses it: [`pair`] and [`fan`] hand
//! out builders, not endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;

use crate::peers::{Build, Endpoint};

/// Samples a subscriber may hold unread before the publisher waits (iceoryx2's
/// `RetryUntilDelivered`: lossless, like the other transports measured).
const BUFFER: usize = 256;

/// Longest a sleeping subscriber waits on its listener before it looks for samples again: a
/// safety bound, not a poll interval; [`limited_waits`] says how often it ended a wait, so a
/// figure it shaped shows. In the 1 → N fan-out hundreds of waits end by it (thousands with
/// 1 ms, which gave iceoryx2 fan-out figures within the spread of these). A fan-out run of
/// iceoryx2 alone once stalled for good with this bound, cause not found.
pub const WAIT_LIMIT: Duration = Duration::from_millis(10);

/// Listener waits [`WAIT_LIMIT`] ended (no notification arrived) since the last call.
static LIMITED: AtomicUsize = AtomicUsize::new(0);

/// How many sleeping subscribers' waits ended by [`WAIT_LIMIT`] rather than a notification
/// since the last call.
pub fn limited_waits() -> usize {
    LIMITED.swap(0, Ordering::Relaxed)
}

/// A name for a fresh pair of services (each measurement gets its own, so no state carries
/// over from the last one).
fn fresh(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "memchan-bench/{}/{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The services one direction uses: publish-subscribe, and the event service that wakes
/// sleeping subscribers.
#[derive(Clone)]
struct Names {
    data: String,
    event: String,
}

impl Names {
    fn new(what: &str) -> Self {
        let data = fresh(what);
        let event = format!("{data}/event");
        Names { data, event }
    }
}

/// A publisher of byte slices and the notifier that wakes its sleeping subscribers.
type Tx = (Publisher<ipc::Service, [u8], ()>, Notifier<ipc::Service>);
/// A subscriber of byte slices and the listener it sleeps on.
type Rx = (Subscriber<ipc::Service, [u8], ()>, Listener<ipc::Service>);

/// The publish-subscribe service's port factory (it tells how many ports are attached).
type Data = iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

/// One iceoryx2 port set in one thread: a node and what it publishes and/or subscribes to.
struct Ports {
    tx: Option<(Tx, Data)>,
    rx: Option<(Rx, Data)>,
    /// Subscribers each service has when every endpoint is built.
    subscribers: usize,
    /// Whether the other side's ports have been waited for (see [`Ports::connect`]).
    connected: bool,
    /// Whether the subscriber sleeps on the listener (else it busy-waits).
    sleep: bool,
    /// Kept last: ports are dropped before their node.
    _node: Node<ipc::Service>,
}

/// Opens (or creates) `names`' services for `subscribers` subscribers of `max`-byte messages.
fn services(
    node: &Node<ipc::Service>,
    names: &Names,
    subscribers: usize,
) -> (
    Data,
    iceoryx2::service::port_factory::event::PortFactory<ipc::Service>,
) {
    let data = node
        .service_builder(&names.data.as_str().try_into().expect("service name"))
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(subscribers)
        .max_nodes(subscribers + 2)
        .history_size(0)
        .subscriber_max_buffer_size(BUFFER)
        .enable_safe_overflow(false)
        .open_or_create()
        .expect("iceoryx2 publish-subscribe service");
    let event = node
        .service_builder(&names.event.as_str().try_into().expect("service name"))
        .event()
        .max_notifiers(1)
        .max_listeners(subscribers)
        .max_nodes(subscribers + 2)
        .open_or_create()
        .expect("iceoryx2 event service");
    (data, event)
}

/// Waits (up to 30 s) until `ready` says the other side's ports exist.
fn await_ports(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "iceoryx2: no {what} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Ports {
    /// Ports publishing on `tx` and subscribing to `rx`, for `subscribers` subscribers per
    /// service and messages up to `max` bytes.
    fn new(
        tx: Option<&Names>,
        rx: Option<&Names>,
        subscribers: usize,
        max: usize,
        sleep: bool,
    ) -> Self {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .expect("iceoryx2 node");
        let tx = tx.map(|names| {
            let (data, event) = services(&node, names, subscribers);
            let publisher = data
                .publisher_builder()
                .initial_max_slice_len(max)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("iceoryx2 publisher");
            let notifier = event.notifier_builder().create().expect("notifier");
            ((publisher, notifier), data)
        });
        let rx = rx.map(|names| {
            let (data, event) = services(&node, names, subscribers);
            let subscriber = data
                .subscriber_builder()
                .buffer_size(BUFFER)
                .create()
                .expect("iceoryx2 subscriber");
            let listener = event.listener_builder().create().expect("listener");
            ((subscriber, listener), data)
        });
        Ports {
            tx,
            rx,
            subscribers,
            connected: false,
            sleep,
            _node: node,
        }
    }

    /// Before the first sample, waits until the other side's ports exist and connects to
    /// them: a subscriber connects to a publisher created after it only at its next
    /// `receive`, and a publisher whose queue to a subscriber not yet connected is full drops
    /// what it sends there (`RetryUntilDelivered` waits only on connected ones). Without
    /// this, a 1 → 2 fan-out lost samples in some runs and its reader waited forever. It is
    /// done at first use, not when the ports are built, because some workloads build both
    /// ends in one thread.
    fn connect(&mut self) {
        if self.connected {
            return;
        }
        if let Some(((publisher, _), data)) = &self.tx {
            await_ports("subscribers", || {
                data.dynamic_config().number_of_subscribers() >= self.subscribers
            });
            publisher
                .update_connections()
                .expect("iceoryx2 connections");
        }
        if let Some(((subscriber, _), data)) = &self.rx {
            await_ports("publisher", || {
                data.dynamic_config().number_of_publishers() >= 1
            });
            subscriber
                .update_connections()
                .expect("iceoryx2 connections");
        }
        self.connected = true;
    }
}

impl Endpoint for Ports {
    fn send(&mut self, msg: &[u8]) {
        self.connect();
        let ((publisher, notifier), _) = self.tx.as_ref().expect("a publishing endpoint");
        let sample = publisher
            .loan_slice_uninit(msg.len())
            .expect("iceoryx2 loan");
        sample.write_from_slice(msg).send().expect("iceoryx2 send");
        if self.sleep {
            notifier.notify().expect("iceoryx2 notify");
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.connect();
        let ((subscriber, listener), _) = self.rx.as_ref().expect("a subscribing endpoint");
        loop {
            if let Some(sample) = subscriber.receive().expect("iceoryx2 receive") {
                // Touch the payload where it lies, as memchan's mapped reader does.
                let payload = sample.payload();
                buf[0] = payload.first().copied().unwrap_or(0);
                return payload.len();
            }
            if self.sleep {
                let t0 = std::time::Instant::now();
                listener
                    .timed_wait(|_| {}, WAIT_LIMIT)
                    .expect("iceoryx2 wait");
                if t0.elapsed() >= WAIT_LIMIT {
                    LIMITED.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Two connected endpoints (a → b and b → a), each built in the thread that uses it.
pub fn pair(max: usize, sleep: bool) -> (Build, Build) {
    let (ab, ba) = (Names::new("ab"), Names::new("ba"));
    let (ab2, ba2) = (ab.clone(), ba.clone());
    (
        Box::new(move || Box::new(Ports::new(Some(&ab), Some(&ba), 1, max, sleep))),
        Box::new(move || Box::new(Ports::new(Some(&ba2), Some(&ab2), 1, max, sleep))),
    )
}

/// A publisher to `readers` subscribers, which sleep on events if `sleep`: the writer's
/// builder and one builder per reader. Each builder runs in its own thread before the start
/// barrier and connects its ports there, not at first use: with 8 readers on one CPU, the
/// last reader's first `receive` (which connects its side) could come after the writer had
/// filled its 256-sample queue, which iceoryx2 then drops without an error, leaving that
/// reader waiting forever (the fan-out stall of one full benchmark run).
pub fn fan(readers: usize, max: usize, sleep: bool) -> (Build, Vec<Build>) {
    let names = Names::new("fan");
    let ends = (0..readers)
        .map(|_| {
            let names = names.clone();
            Box::new(move || {
                let mut p = Ports::new(None, Some(&names), readers, max, sleep);
                p.connect();
                Box::new(p) as Box<dyn Endpoint>
            }) as Build
        })
        .collect();
    let writer: Build = Box::new(move || {
        let mut p = Ports::new(Some(&names), None, readers, max, sleep);
        p.connect();
        Box::new(p)
    });
    (writer, ends)
}
