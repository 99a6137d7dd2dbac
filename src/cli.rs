//! The `kubestash` command line: subcommands and their exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::credstash::{self, EncryptionContext, ReaderOptions, TableLocation, TableRead};
use crate::leader::{ElectionConfig, Timing};
use crate::value::SecretValue;

/// Exit code: everything was read.
pub const EXIT_OK: u8 = 0;
/// Exit code: the table (or the named item) could not be read.
pub const EXIT_TABLE_FAILED: u8 = 1;
/// Exit code: some items failed; the good ones were still printed.
pub const EXIT_ITEMS_FAILED: u8 = 2;
/// Exit code of `run`: this replica lost the Lease and stopped writing; the
/// kubelet starts it again and it campaigns afresh (expected, not a crash).
pub const EXIT_LOST_LEASE: u8 = 3;

/// Keeps Kubernetes Secrets in step with a credstash table.
#[derive(Debug, Parser)]
#[command(name = "kubestash", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List credstash names with their latest versions.
    List(TableArgs),
    /// Print the plaintext of one credstash name.
    Get(GetArgs),
    /// Print every name's latest plaintext, like `credstash getall`.
    Getall(GetallArgs),
    /// Print the CredstashSync CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator: reconcile CredstashSyncs into Secrets.
    Run(RunArgs),
    /// Sync the table into the current kubeconfig's cluster once; print the plan.
    Sync(SyncArgs),
}

/// `kubestash sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Print the plan (key names only) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Namespace never written; repeat for several (default: kube-system,
    /// kube-public, kube-node-lease).
    #[arg(long = "exclude", value_name = "NAMESPACE")]
    pub exclude: Vec<String>,
    /// Remove keys that are no longer in the table (only after a complete read).
    #[arg(long)]
    pub prune: bool,
    /// Field manager name (`kubestash/<name>`): use the CredstashSync's name
    /// to act as that CredstashSync would.
    #[arg(long, default_value = "sync")]
    pub name: String,
    #[command(flatten)]
    pub table: TableArgs,
}

/// `kubestash run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "KUBESTASH_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Log format (verbosity comes from RUST_LOG, default info).
    #[arg(long, env = "KUBESTASH_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    /// The operator's own namespace, never written (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// The pod's name, reported in events.
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Parallel Scan segments for full reads.
    #[arg(long, default_value_t = ReaderOptions::default().scan_segments)]
    pub scan_segments: u32,
    /// KMS Decrypt calls in flight at once, per CredstashSync.
    #[arg(long, default_value_t = ReaderOptions::default().decrypt_concurrency)]
    pub decrypt_concurrency: usize,
    /// Longest one attempt of a table read's AWS call (a Scan page, a Query,
    /// a KMS Decrypt) before it is cut and retried. Raise it only for a slow
    /// endpoint (a local emulator scanning a large table).
    #[arg(long, env = "KUBESTASH_AWS_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub aws_attempt_timeout: std::time::Duration,
    /// How often a followed DynamoDB stream is checked for replacement
    /// (disabled and re-enabled) and new shards, and a table without a
    /// stream for a new one (DescribeTable + DescribeStream).
    #[arg(long, env = "KUBESTASH_STREAM_CHECK_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub stream_check_interval: std::time::Duration,
    /// Run for leadership of a Lease: only the replica holding it syncs,
    /// the others wait to take over.
    #[arg(long, env = "KUBESTASH_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE).
    #[arg(long, env = "KUBESTASH_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KUBESTASH_LEADER_ELECTION_NAME",
        default_value = "kubestash"
    )]
    pub leader_election_name: String,
    /// How long the Lease is valid after its last renewal: a crashed
    /// leader is replaced after at most this long.
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps writing without a successful renewal.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// How often the leader renews, and failed attempts are retried.
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub leader_elect_retry_period: std::time::Duration,
}

impl RunArgs {
    /// The election this replica takes part in (`None` without
    /// `--leader-elect`), or why the flags do not make one.
    pub fn election(&self, identity: &str) -> Result<Option<ElectionConfig>, String> {
        if !self.leader_elect {
            return Ok(None);
        }
        let namespace = self
            .leader_election_namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .or_else(|| Some(self.namespace.clone()).filter(|ns| !ns.is_empty()))
            .ok_or("--leader-elect needs --leader-election-namespace or POD_NAMESPACE")?;
        let timing = Timing::new(
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        )
        .map_err(|err| err.to_string())?;
        Ok(Some(ElectionConfig {
            namespace,
            name: self.leader_election_name.clone(),
            identity: identity.to_owned(),
            timing,
        }))
    }
}

/// Where the table is, as credstash's flags say it.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// The credstash table.
    #[arg(
        long,
        short = 't',
        env = "KUBESTASH_TABLE",
        default_value = "credential-store"
    )]
    pub table: String,
    /// AWS region of the table (default: the SDK's chain, then us-east-1).
    #[arg(long, short = 'r')]
    pub region: Option<String>,
    /// AWS region of the KMS key, when it differs from the table's.
    #[arg(long)]
    pub kms_region: Option<String>,
    /// KMS encryption context, `key=value`; repeat for several.
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_context_pair)]
    pub encryption_context: Vec<(String, String)>,
    /// Parallel Scan segments for full reads.
    #[arg(long, default_value_t = ReaderOptions::default().scan_segments)]
    pub scan_segments: u32,
    /// KMS Decrypt calls in flight at once.
    #[arg(long, default_value_t = ReaderOptions::default().decrypt_concurrency)]
    pub decrypt_concurrency: usize,
    /// Longest one attempt of an AWS call before it is cut and retried.
    #[arg(long, env = "KUBESTASH_AWS_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = parse_interval)]
    pub aws_attempt_timeout: std::time::Duration,
}

impl TableArgs {
    /// The table's location and encryption context.
    pub fn location(&self) -> TableLocation {
        TableLocation {
            table: self.table.clone(),
            region: self.region.clone(),
            kms_region: self.kms_region.clone(),
            encryption_context: self
                .encryption_context
                .iter()
                .cloned()
                .collect::<EncryptionContext>(),
        }
    }

    fn reader_options(&self) -> ReaderOptions {
        ReaderOptions {
            scan_segments: self.scan_segments,
            decrypt_concurrency: self.decrypt_concurrency,
            attempt_timeout: self.aws_attempt_timeout,
            ..ReaderOptions::default()
        }
    }
}

/// `kubestash get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The credstash name.
    pub name: String,
    /// A specific version (zero-padded like credstash does); default: the latest.
    #[arg(long, short = 'v')]
    pub version: Option<String>,
    /// Do not print a newline after the value.
    #[arg(long, short = 'n')]
    pub no_newline: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

/// `kubestash getall`.
#[derive(Debug, Args)]
pub struct GetallArgs {
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub table: TableArgs,
}

/// Output formats of `getall`, as credstash names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Yaml,
    Dotenv,
}

fn parse_context_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// A positive duration such as `30s` or `2m`.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    match crate::duration::parse_duration(text) {
        Ok(interval) if interval.is_zero() => Err("must be more than 0s".into()),
        Ok(interval) => Ok(interval),
        Err(err) => Err(err.to_string()),
    }
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::List(args) => list(&args).await,
        Command::Get(args) => get(&args).await,
        Command::Getall(args) => getall(&args).await,
        Command::Crd => print_crd(),
        Command::Run(args) => run_operator(args).await,
        Command::Sync(args) => sync_once(&args).await,
    };
    ExitCode::from(code)
}

async fn run_operator(args: RunArgs) -> u8 {
    crate::telemetry::init(args.log_format, "info");
    let identity = crate::leader::identity(args.instance.as_deref());
    let election = match args.election(&identity) {
        Ok(election) => election,
        Err(err) => return fail(&err),
    };
    let settings = crate::controller::Settings {
        operator_namespace: args.namespace,
        instance: args.instance,
        reader: ReaderOptions {
            scan_segments: args.scan_segments,
            decrypt_concurrency: args.decrypt_concurrency,
            attempt_timeout: args.aws_attempt_timeout,
            ..ReaderOptions::default()
        },
        stream_check_interval: args.stream_check_interval,
        write_gate: Default::default(),
    };
    let replica = crate::operator::Replica { identity, election };
    let shutdown = crate::operator::shutdown_signal();
    match crate::operator::run(args.listen, settings, replica, shutdown).await {
        Ok(()) => EXIT_OK,
        Err(err @ crate::operator::RunError::LostLease(_)) => {
            tracing::warn!(error = %err, "kubestash stopped");
            EXIT_LOST_LEASE
        }
        Err(err) => {
            tracing::error!(error = %err, "kubestash stopped");
            EXIT_TABLE_FAILED
        }
    }
}

async fn sync_once(args: &SyncArgs) -> u8 {
    crate::telemetry::init(crate::telemetry::LogFormat::Text, "warn");
    let mut spec = crate::crd::CredstashSyncSpec::new(args.table.table.clone());
    spec.region = args.table.region.clone();
    spec.kms_region = args.table.kms_region.clone();
    spec.encryption_context = args.table.encryption_context.iter().cloned().collect();
    spec.dry_run = args.dry_run;
    spec.prune = args.prune;
    if !args.exclude.is_empty() {
        spec.excluded_namespaces = args.exclude.clone();
    }
    let spec = match spec.validate() {
        Ok(spec) => spec,
        Err(err) => return fail(&err),
    };
    let metrics = match crate::metrics::Metrics::new() {
        Ok(metrics) => metrics,
        Err(err) => return fail(&err),
    };
    let client = match crate::kube_client::client(metrics.clone(), None).await {
        Ok(client) => client,
        Err(err) => return fail(&format!("connecting to Kubernetes: {err}")),
    };
    let cluster = match crate::sync::ListedCluster::list(client).await {
        Ok(cluster) => cluster,
        Err(err) => return fail(&format!("listing namespaces and managed Secrets: {err}")),
    };
    let reader = std::sync::Arc::new(
        credstash::connect(&args.table.location(), args.table.reader_options()).await,
    );
    let now = tokio::time::Instant::now();
    let engine = crate::sync::Engine::new(&cluster, &metrics, &args.name, &spec);
    let (outcome, _snapshot) = engine.full_sync(&reader, now).await;
    report_sync(&outcome)
}

/// Prints a one-shot sync's plan and problems; the exit code says how it went.
fn report_sync(outcome: &crate::sync::SyncOutcome) -> u8 {
    let mut out = outcome.plan.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&outcome.summary());
    out.push('\n');
    let printed = print_stdout(out.as_bytes());
    let problems = [
        &outcome.key_failures,
        &outcome.conflicts,
        &outcome.write_failures,
        &outcome.skipped,
        &outcome.invalid_names,
    ];
    for line in problems.into_iter().flatten() {
        eprintln!("kubestash: {line}");
    }
    if let Some(err) = &outcome.table_error {
        return fail(err);
    }
    let failed = !outcome.key_failures.is_empty() || !outcome.write_failures.is_empty();
    if failed {
        EXIT_ITEMS_FAILED
    } else {
        printed
    }
}

fn print_crd() -> u8 {
    match crate::crd::crd_yaml() {
        Ok(yaml) => print_stdout(yaml.as_bytes()),
        Err(err) => fail(&err),
    }
}

async fn list(args: &TableArgs) -> u8 {
    let reader = credstash::connect(&args.location(), args.reader_options()).await;
    match reader.list_latest().await {
        Ok(ids) => {
            let width = ids.iter().map(|id| id.name.len()).max().unwrap_or(0);
            let mut out = String::new();
            for id in ids {
                out.push_str(&format!("{:width$} -- version {}\n", id.name, id.version));
            }
            print_stdout(out.as_bytes())
        }
        Err(err) => fail(&err),
    }
}

async fn get(args: &GetArgs) -> u8 {
    let reader = credstash::connect(&args.table.location(), args.table.reader_options()).await;
    let found = match &args.version {
        Some(version) => reader.read_version(&args.name, version).await,
        None => reader.read_latest(&args.name).await,
    };
    match found {
        Ok(Some(entry)) => match entry.value {
            Ok(value) => {
                let mut bytes = value.expose().to_vec();
                if !args.no_newline {
                    bytes.push(b'\n');
                }
                print_stdout(&bytes)
            }
            Err(err) => {
                eprintln!("kubestash: {}: {err}", entry.id);
                EXIT_ITEMS_FAILED
            }
        },
        Ok(None) => {
            let version = args
                .version
                .as_deref()
                .map(|v| format!(" version {v:?}"))
                .unwrap_or_default();
            eprintln!(
                "kubestash: {:?}{version} not found in table {:?}",
                args.name, args.table.table
            );
            EXIT_TABLE_FAILED
        }
        Err(err) => fail(&err),
    }
}

async fn getall(args: &GetallArgs) -> u8 {
    let reader = credstash::connect(&args.table.location(), args.table.reader_options()).await;
    let read = reader.read_all().await;
    let (texts, failures) = printable_values(&read);
    for failure in &failures {
        eprintln!("kubestash: {failure}");
    }
    let rendered = match render(&texts, args.format) {
        Ok(text) => text,
        Err(err) => return fail(&err),
    };
    let printed = print_stdout(rendered.as_bytes());
    if let Some(err) = &read.error {
        eprintln!("kubestash: the read is incomplete: {err}");
        return EXIT_TABLE_FAILED;
    }
    if printed != EXIT_OK {
        return printed;
    }
    if failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_ITEMS_FAILED
    }
}

/// The UTF-8 values of a read by name, and one line per item that failed
/// (name and cause, never a value).
pub fn printable_values(read: &TableRead) -> (BTreeMap<&str, &str>, Vec<String>) {
    let mut texts = BTreeMap::new();
    let mut failures: Vec<String> = read
        .unnamed_failures
        .iter()
        .map(|err| format!("unreadable item: {err}"))
        .collect();
    for entry in read.entries() {
        let name = &entry.id.name;
        match entry
            .value
            .as_ref()
            .map(SecretValue::expose)
            .map(std::str::from_utf8)
        {
            Ok(Ok(text)) => {
                texts.insert(name.as_str(), text);
            }
            Ok(Err(_)) => failures.push(format!(
                "{}: the value is not UTF-8 text; `kubestash get` prints its raw bytes",
                entry.id
            )),
            Err(err) => failures.push(format!("{}: {err}", entry.id)),
        }
    }
    (texts, failures)
}

/// Renders name -> value the way `credstash getall -f FORMAT` does.
pub fn render(values: &BTreeMap<&str, &str>, format: OutputFormat) -> Result<String, RenderError> {
    match format {
        OutputFormat::Json => {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(values, &mut serializer)?;
            out.push(b'\n');
            String::from_utf8(out).map_err(|_| RenderError::NotUtf8)
        }
        OutputFormat::Yaml => Ok(serde_yaml::to_string(values)?),
        OutputFormat::Dotenv => Ok(values
            .iter()
            .map(|(name, value)| format!("{}='{}'\n", name.to_uppercase(), value))
            .collect()),
    }
}

/// Rendering output failed (should not happen for string maps).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("rendered output is not UTF-8")]
    NotUtf8,
}

fn print_stdout(bytes: &[u8]) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => EXIT_OK,
        // A closed pipe (`| head`) is not the table's fault, but the output is short.
        Err(err) => {
            eprintln!("kubestash: writing output: {err}");
            EXIT_TABLE_FAILED
        }
    }
}

fn fail(err: &dyn std::fmt::Display) -> u8 {
    eprintln!("kubestash: {err}");
    EXIT_TABLE_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_context_pairs_parse_and_reject_garbage() {
        assert_eq!(
            parse_context_pair("app=web").unwrap(),
            ("app".into(), "web".into())
        );
        assert_eq!(
            parse_context_pair("k=a=b").unwrap(),
            ("k".into(), "a=b".into())
        );
        assert!(parse_context_pair("novalue").is_err());
        assert!(parse_context_pair("=v").is_err());
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["kubestash", "run"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn leader_election_is_off_unless_asked_for() {
        assert_eq!(run_args(&[]).election("me").unwrap(), None);
    }

    #[test]
    fn leader_election_defaults_follow_controller_runtime() {
        let args = run_args(&["--leader-elect", "--namespace", "ops"]);
        let election = args.election("pod-1_ab").unwrap().unwrap();
        assert_eq!(election.namespace, "ops");
        assert_eq!(election.name, "kubestash");
        assert_eq!(election.identity, "pod-1_ab");
        assert_eq!(election.timing, Timing::default());
        let args = run_args(&[
            "--leader-elect",
            "--namespace",
            "ops",
            "--leader-election-namespace",
            "locks",
            "--leader-election-name",
            "stash",
            "--leader-elect-lease-duration",
            "30s",
        ]);
        let election = args.election("pod-1_ab").unwrap().unwrap();
        assert_eq!(
            (election.namespace.as_str(), election.name.as_str()),
            ("locks", "stash")
        );
        assert_eq!(
            election.timing.lease_duration(),
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn leader_election_needs_a_namespace_and_sane_timing() {
        let err = run_args(&["--leader-elect"]).election("x").unwrap_err();
        assert!(err.contains("--leader-election-namespace"), "{err}");
        let args = run_args(&[
            "--leader-elect",
            "--namespace",
            "ops",
            "--leader-elect-renew-deadline",
            "20s",
        ]);
        let err = args.election("x").unwrap_err();
        assert!(err.contains("renew-deadline"), "{err}");
    }

    #[test]
    fn renders_like_credstash_getall() {
        let values: BTreeMap<&str, &str> = [("b.name", "two"), ("a", "it's")].into_iter().collect();
        let json = render(&values, OutputFormat::Json).unwrap();
        assert_eq!(
            json,
            "{\n    \"a\": \"it's\",\n    \"b.name\": \"two\"\n}\n"
        );
        let dotenv = render(&values, OutputFormat::Dotenv).unwrap();
        assert_eq!(dotenv, "A='it's'\nB.NAME='two'\n");
        let yaml: BTreeMap<String, String> =
            serde_yaml::from_str(&render(&values, OutputFormat::Yaml).unwrap()).unwrap();
        assert_eq!(yaml.get("b.name").map(String::as_str), Some("two"));
    }
}
