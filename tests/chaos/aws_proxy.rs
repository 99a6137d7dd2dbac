//! A small HTTP/1.1 proxy in front of moto through which the operator
//! reaches DynamoDB, DynamoDB Streams and KMS, so that AWS can misbehave
//! like the real service: throttling (400 ThrottlingException /
//! ProvisionedThroughputExceededException), 500s, dropped connections and
//! outages. The driver's own credstash writes go to moto directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::ops::AwsFault;

#[derive(Debug, Default)]
struct Pending {
    throttle: u32,
    server_error: u32,
    drop: u32,
    down_until: Option<Instant>,
    /// KMS Decrypt answers 500 until switched off (tests of one failure).
    kms_down: bool,
}

/// What happens to one request.
enum Verdict {
    Forward,
    Answer(u16, &'static str),
    Drop,
}

/// The running proxy.
pub struct AwsProxy {
    pub endpoint: String,
    pending: Arc<Mutex<Pending>>,
    served_faults: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl AwsProxy {
    /// A proxy in front of `moto` (its endpoint is `http://ADDR`).
    pub async fn in_front_of(moto: &crate::support::Moto) -> AwsProxy {
        let upstream = moto
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("moto address");
        AwsProxy::start(upstream).await
    }

    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> AwsProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the AWS proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let proxy = AwsProxy {
            endpoint,
            pending: Arc::default(),
            served_faults: Arc::default(),
            requests: Arc::default(),
        };
        let (pending, faults, requests) = (
            proxy.pending.clone(),
            proxy.served_faults.clone(),
            proxy.requests.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (pending, faults, requests) =
                    (pending.clone(), faults.clone(), requests.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream, pending, faults, requests).await;
                });
            }
        });
        proxy
    }

    /// Arms a fault for the operator's next requests.
    pub fn inject(&self, fault: &AwsFault) {
        let mut p = self.pending.lock().expect("proxy state");
        match fault {
            AwsFault::Throttle(n) => p.throttle += n,
            AwsFault::ServerError(n) => p.server_error += n,
            AwsFault::Drop(n) => p.drop += n,
            AwsFault::Outage(ms) => {
                p.down_until = Some(Instant::now() + Duration::from_millis(*ms))
            }
        }
    }

    /// KMS Decrypt answers `500 KMSInternalException` while `down` (other
    /// requests pass): items fail to open for a reason that may pass.
    #[allow(dead_code)]
    pub fn kms_unavailable(&self, down: bool) {
        self.pending.lock().expect("proxy state").kms_down = down;
    }

    /// Disarms every fault (a quiet period starts).
    pub fn clear(&self) {
        *self.pending.lock().expect("proxy state") = Pending::default();
    }

    /// Requests answered with a fault so far.
    pub fn faults_served(&self) -> u64 {
        self.served_faults.load(Ordering::Relaxed)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn verdict(pending: &Mutex<Pending>, head: &str) -> Verdict {
    let mut p = pending.lock().expect("proxy state");
    if p.kms_down && header(head, "x-amz-target").is_some_and(|t| t == "TrentService.Decrypt") {
        return Verdict::Answer(500, "KMS unavailable");
    }
    if p.down_until.is_some_and(|t| Instant::now() < t) {
        return Verdict::Drop;
    }
    if p.drop > 0 {
        p.drop -= 1;
        Verdict::Drop
    } else if p.throttle > 0 {
        p.throttle -= 1;
        Verdict::Answer(400, "throttle")
    } else if p.server_error > 0 {
        p.server_error -= 1;
        Verdict::Answer(500, "InternalServerError")
    } else {
        Verdict::Forward
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    pending: Arc<Mutex<Pending>>,
    faults: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut client, &mut buffer).await? else {
            return Ok(());
        };
        requests.fetch_add(1, Ordering::Relaxed);
        match verdict(&pending, &head) {
            Verdict::Drop => {
                faults.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Verdict::Answer(code, kind) => {
                faults.fetch_add(1, Ordering::Relaxed);
                let response = fault_response(&head, code, kind);
                client.write_all(&response).await?;
            }
            Verdict::Forward => {
                let response = forward(upstream, &head, &body).await?;
                client.write_all(&response).await?;
            }
        }
    }
}

/// Reads one request: its head (up to the blank line) and its body.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Ok(Some((head, body)))
}

/// Sends the request to moto on a fresh connection and returns the answer,
/// re-framed with a Content-Length (keep-alive towards the operator).
async fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    let mut request: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    request.push_str("Connection: close\r\n\r\n");
    server.write_all(request.as_bytes()).await?;
    server.write_all(body).await?;
    let mut raw = Vec::new();
    server.read_to_end(&mut raw).await?;
    let head_end = find(&raw, b"\r\n\r\n")
        .map(|at| at + 4)
        .unwrap_or(raw.len());
    let response_head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut payload = raw[head_end..].to_vec();
    if header(&response_head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        payload = dechunk(&payload);
    } else if let Some(n) =
        header(&response_head, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        payload.truncate(n);
    }
    let mut out: String = response_head
        .trim_end()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !(l.starts_with("connection:")
                || l.starts_with("content-length:")
                || l.starts_with("transfer-encoding:"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// The error AWS sends, shaped for the service the request went to.
fn fault_response(head: &str, code: u16, kind: &str) -> Vec<u8> {
    let target = header(head, "x-amz-target").unwrap_or_default();
    let (content_type, type_) = if target.starts_with("TrentService.") {
        (
            "application/x-amz-json-1.1",
            if code == 400 {
                "ThrottlingException"
            } else {
                "KMSInternalException"
            },
        )
    } else if target.starts_with("DynamoDBStreams") {
        (
            "application/x-amz-json-1.0",
            if code == 400 {
                "com.amazonaws.dynamodb.v20120810#ThrottlingException"
            } else {
                "com.amazonaws.dynamodb.v20120810#InternalServerError"
            },
        )
    } else if code == 400 {
        (
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        )
    } else {
        (
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
        )
    };
    let body = format!(r#"{{"__type":"{type_}","message":"chaos proxy: {kind}"}}"#);
    let reason = if code == 400 {
        "Bad Request"
    } else {
        "Internal Server Error"
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nx-amzn-RequestId: chaos\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(body, b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        body = body.get(end + 2..).unwrap_or_default();
    }
    out
}
