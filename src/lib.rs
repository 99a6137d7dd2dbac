//! kubestash: keeps Kubernetes Secrets in step with a credstash table.
//!
//! Data flows one way: read the table ([`credstash`]) -> desired state
//! ([`mapping`]) -> plan and apply ([`secrets`]) -> status ([`controller`]).

pub mod allocator;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod credstash;
pub mod duration;
pub mod kube_client;
pub mod leader;
pub mod mapping;
pub mod metrics;
pub mod operator;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod value;
pub mod write_gate;
