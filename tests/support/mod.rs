//! Test support: a moto server (DynamoDB, Streams, KMS) on a free loopback
//! port, and the real credstash CLI pointed at it.
//!
//! The Python tools come from `.venv` (made by `scripts/test-env.sh`), or
//! from the folder named by `KUBESTASH_TEST_VENV`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod control_plane;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv holding moto and credstash.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("KUBESTASH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    assert!(
        venv.join("bin/python").exists() && venv.join("bin/credstash").exists(),
        "moto and credstash not found in {}: run scripts/test-env.sh first",
        venv.display()
    );
    venv
}

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it says it is ready.
    /// It exits by itself when this process does, even if `Drop` never runs.
    pub fn start() -> Moto {
        let port = free_port();
        let mut child = Command::new(venv().join("bin/python"))
            .arg(repo_root().join("tests/support/moto_guard.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("moto stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read moto's ready line");
        assert_eq!(line.trim(), "ready", "moto did not start");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Environment that points the AWS SDKs (Rust and boto3) at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// AWS SDK configuration for in-process clients talking to this server.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let credentials =
            aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// A command with the AWS environment set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.aws_env());
        command
    }

    /// Runs `tests/support/fixture.py` with `args`; panics on failure.
    pub fn fixture(&self, args: &[&str]) {
        let mut command = self.command(venv().join("bin/python"));
        command
            .arg(repo_root().join("tests/support/fixture.py"))
            .args(args);
        run_ok(&mut command);
    }

    /// The real credstash CLI with `args`.
    pub fn credstash(&self, args: &[&str]) -> Command {
        let mut command = self.command(venv().join("bin/credstash"));
        command.args(args);
        command
    }

    /// The kubestash binary with `args`.
    pub fn kubestash(&self, args: &[&str]) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_kubestash"));
        command.args(args);
        command
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs commands concurrently, panicking if any fails.
pub fn run_all_ok(commands: Vec<Command>) {
    let children: Vec<(String, Child)> = commands
        .into_iter()
        .map(|mut c| {
            let label = format!("{c:?}");
            let child = c
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            (label, child)
        })
        .collect();
    for (label, child) in children {
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "{label} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Polls `condition` until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nobody is listening on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Writes `contents` to a temporary file and returns its path (kept until the
/// directory is dropped).
pub fn temp_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

impl Moto {
    /// moto's API call counts by operation (`GET /_counts`); with `reset`,
    /// `POST /_counts`: returns them and starts counting from zero.
    pub fn api_counts(&self, reset: bool) -> std::collections::BTreeMap<String, u64> {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to moto");
        let method = if reset { "POST" } else { "GET" };
        write!(
            stream,
            "{method} /_counts HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("send /_counts request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read /_counts response");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        serde_json::from_str(&body).expect("/_counts JSON")
    }
}

/// The payload of an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Whether a test's subject (`what`: a tool it runs) is here to be run: a
/// test that cannot run it says so and skips, except under `CI=true`, where
/// it fails instead of passing green.
pub fn subject_available(what: &str, found: bool) -> bool {
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is missing: under CI=true a test that cannot run its subject fails"
        );
        eprintln!("{what} is missing: skipped");
    }
    found
}
