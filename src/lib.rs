//! kubestash: keeps Kubernetes Secrets in step with a credstash table.
//!
//! A full sync reads the table ([`credstash`]), maps it to the Secrets it
//! should become ([`mapping`], typed by the rules of [`templates`]), plans against what the cluster has and
//! applies ([`secrets`]), run by the sync engine ([`sync`]); [`controller`] runs it per CredstashSync ([`crd`])
//! and writes status, events and [`metrics`]. Between full syncs the
//! table's DynamoDB stream ([`stream`]) names the keys to read again, and
//! workloads that reference a changed Secret are restarted ([`rollout`]).
//! `kubestash run` ([`operator`]) serves [`server`]'s endpoints and runs the
//! controller, while this replica leads ([`leader`], [`write_gate`]); the
//! other subcommands are in [`cli`].

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
pub mod sync;
pub mod telemetry;
pub mod templates;
pub mod value;
pub mod write_gate;
