//! A fake Kubernetes API server for tests.
//!
//! It speaks kube-apiserver's HTTP API (JSON, plus the protobuf bodies kubectl
//! sends on create) for the resources kubestash, kube-rs and kubectl use:
//! discovery, namespaces, secrets, configmaps, events (core and
//! `events.k8s.io/v1`), leases, CustomResourceDefinitions and the custom
//! resources they serve. See the crate README for what is and is not
//! implemented.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fake_apiserver::{FakeApiServer, Fault};
//! let server = FakeApiServer::start().await?;
//! let client = server.client();
//! server.inject_fault(Fault::status("list", "secrets", 1, 500));
//! // ... exercise code under test with `client` ...
//! assert_eq!(server.counters().count("list", "secrets"), 1);
//! server.stop().await;
//! # Ok(()) }
//! ```

pub mod apps;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod faults;
pub mod fieldset;
pub mod handlers;
pub mod kubeconfig;
pub mod managed;
pub mod patch;
pub mod protobuf;
pub mod proxy;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod util;
pub mod validation;
pub mod watch;
pub mod write;

pub use errors::ApiError;
pub use faults::{Fault, FaultAction, FaultInjection, RequestCounters, WriteRecord};
pub use proxy::FaultProxy;
pub use server::{Config, Error, FakeApiServer};
