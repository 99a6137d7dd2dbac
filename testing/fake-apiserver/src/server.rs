//! The server: shared state, start/stop, and the public test API.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::faults::{Fault, Faults, RequestCounters};
use crate::resources::Registry;
use crate::store::{LogEntry, Store};
use crate::write::{self, Ownership, WriteCtx};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Tunables of a fake server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// How many writes the event log keeps (older watch resourceVersions get 410 Expired).
    pub event_log_capacity: usize,
    /// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Print one line per request to stderr (method, path, query, status).
    pub log_requests: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            event_log_capacity: 10_000,
            bookmark_interval: Duration::from_secs(10),
            default_watch_timeout: Duration::from_secs(1800),
            log_requests: false,
        }
    }
}

/// A paged list snapshot (for `continue` tokens).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// resourceVersion of the first page.
    pub rv: u64,
    /// All items (external form), in order.
    pub items: Vec<Value>,
}

/// State guarded by one lock.
#[derive(Debug)]
pub struct Inner {
    /// Objects and event log.
    pub store: Store,
    /// Served resources.
    pub registry: Registry,
    /// List snapshots by id.
    pub snapshots: HashMap<u64, Snapshot>,
    snapshot_order: VecDeque<u64>,
    next_snapshot: u64,
    /// Namespaces whose content must be deleted (namespace controller queue).
    pub pending_namespace_cleanups: Vec<String>,
    /// Uids of Secrets stored with a nil []byte in `data` (applied as an
    /// explicit null): their next write is never a no-op.
    pub nil_bytes: std::collections::HashSet<String>,
}

impl Inner {
    fn new(cfg: &Config) -> Self {
        Inner {
            store: Store::new(cfg.event_log_capacity),
            registry: Registry::new(),
            snapshots: HashMap::new(),
            snapshot_order: VecDeque::new(),
            next_snapshot: 1,
            pending_namespace_cleanups: vec![],
            nil_bytes: Default::default(),
        }
    }

    /// Recomputes CRD-served resources from the stored CRDs.
    pub fn refresh_registry(&mut self) {
        let crds = self
            .store
            .list("apiextensions.k8s.io/customresourcedefinitions", None);
        self.registry.set_crds(crds.iter());
    }

    /// Saves a list snapshot; returns its id.
    pub fn save_snapshot(&mut self, snap: Snapshot) -> u64 {
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(id, snap);
        self.snapshot_order.push_back(id);
        while self.snapshot_order.len() > 256 {
            if let Some(old) = self.snapshot_order.pop_front() {
                self.snapshots.remove(&old);
            }
        }
        id
    }

    /// Runs queued namespace deletions.
    pub fn run_namespace_controller(&mut self) {
        let queue = std::mem::take(&mut self.pending_namespace_cleanups);
        for ns in queue {
            write::cleanup_namespace(self, &ns);
        }
    }
}

/// State shared by the server's tasks and the test API.
#[derive(Debug)]
pub struct Shared {
    inner: Mutex<Inner>,
    faults: Mutex<Faults>,
    counters: Mutex<RequestCounters>,
    /// Configuration.
    pub config: Config,
    /// Flips to true when the server stops.
    pub shutdown: watch::Receiver<bool>,
    /// Bumped to end every open watch (a dropped connection).
    pub watch_drops: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Locks the object state.
    pub fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Takes a matching fault, if any.
    pub fn take_fault(
        &self,
        verb: &str,
        resource: &str,
        user_agent: &str,
    ) -> Option<crate::faults::FaultAction> {
        lock(&self.faults).take(verb, resource, user_agent)
    }

    /// Counts a request as it arrives.
    pub fn arrived(&self, verb: &str, resource: &str) {
        lock(&self.counters).arrived(verb, resource);
    }

    /// Counts an answered request.
    pub fn record(&self, verb: &str, resource: &str, status: u16, user_agent: &str) {
        lock(&self.counters).record(verb, resource, status, user_agent);
    }
}

/// A running fake kube-apiserver.
///
/// ```no_run
/// # async fn demo() -> Result<(), fake_apiserver::Error> {
/// let server = fake_apiserver::FakeApiServer::start().await?;
/// let client = server.client();
/// // ... use client; inspect server.counters() ...
/// server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts on `127.0.0.1:0` with default settings.
    pub async fn start() -> Result<FakeApiServer, Error> {
        Self::start_with(Config::default()).await
    }

    /// Starts on the given address with default settings.
    pub async fn start_on(addr: SocketAddr) -> Result<FakeApiServer, Error> {
        Self::start_with(Config {
            addr,
            ..Config::default()
        })
        .await
    }

    /// Starts with explicit settings.
    pub async fn start_with(config: Config) -> Result<FakeApiServer, Error> {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut inner = Inner::new(&config);
        seed(&mut inner);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(RequestCounters::default()),
            config,
            shutdown: shutdown_rx.clone(),
            watch_drops: watch::channel(0).0,
        });
        let app = crate::handlers::router(shared.clone());
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(FakeApiServer {
            shared,
            addr,
            shutdown_tx,
            task: Some(task),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` for this server (default namespace `default`).
    ///
    /// Must be called inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        let uri: http::Uri = self.url().parse().unwrap_or_default();
        let config = kube::Config::new(uri);
        kube::Client::try_from(config)
            .unwrap_or_else(|e| panic!("kube client for the fake server: {e}"))
    }

    /// A kubeconfig (context `fake`, namespace `default`, no credentials).
    pub fn kubeconfig_yaml(&self) -> String {
        crate::kubeconfig::kubeconfig_yaml(&self.url())
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> RequestCounters {
        lock(&self.shared.counters).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        *lock(&self.shared.counters) = RequestCounters::default();
    }

    /// Makes the next `fault.count` matching requests fail or wait.
    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Drops all pending faults.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Compacts the event log at the current resourceVersion (like an etcd
    /// compaction): watches from older resourceVersions get `410 Expired`.
    pub fn compact(&self) {
        let mut inner = self.shared.inner();
        inner.store.compact();
        inner.snapshots.clear();
    }

    /// Ends every watch that is open now, as a dropped connection would.
    pub fn drop_watches(&self) {
        self.shared.watch_drops.send_modify(|n| *n += 1);
    }

    /// Every write from now on, in commit order, straight from the store
    /// (no request counted, no fault applied): for tests that must see each
    /// state any watch could show. Objects are in stored form; the storage
    /// key is `{group}/{plural}` (`/secrets` for core Secrets). A receiver
    /// that falls more than 4096 writes behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.shared.inner().store.subscribe()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.inner().store.current_rv()
    }

    /// Reads a stored object directly (external form of the given resource), bypassing HTTP.
    pub fn get_object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let inner = self.shared.inner();
        let res = inner.registry.find(group, version, plural)?.clone();
        inner
            .store
            .get(&res.storage, namespace, name)
            .map(|o| write::external(&res, o))
    }

    /// Stops serving: ends watches, closes connections.
    pub async fn stop(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Creates the namespaces every cluster has.
fn seed(inner: &mut Inner) {
    let Some(res) = inner.registry.find("", "v1", "namespaces").cloned() else {
        return;
    };
    let ctx = WriteCtx {
        res,
        subresource: None,
        dry_run: false,
        manager: "kube-apiserver".into(),
        strict: false,
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = write::create(inner, &ctx, None, obj, Ownership::Update);
    }
}

impl crate::faults::FaultInjection for FakeApiServer {
    fn inject_fault(&self, fault: Fault) {
        FakeApiServer::inject_fault(self, fault);
    }

    fn clear_faults(&self) {
        FakeApiServer::clear_faults(self);
    }

    fn counters(&self) -> RequestCounters {
        FakeApiServer::counters(self)
    }

    fn reset_counters(&self) {
        FakeApiServer::reset_counters(self);
    }

    fn drop_watches(&self) {
        FakeApiServer::drop_watches(self);
    }

    /// Compacts the event log and ends the open watches: their resumption
    /// gets `410 Expired`.
    fn expire_watches(&self) {
        self.compact();
        self.drop_watches();
    }
}
