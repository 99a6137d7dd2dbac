//! credstash: the item format, its crypto, and reading a table.
//!
//! `crypto` and `item` are pure; `kms` and `table` talk to AWS.

pub mod crypto;
pub mod error;
pub mod item;
pub mod kms;
pub mod table;

pub use error::{ItemError, KmsError, TableError};
pub use item::ItemId;
pub use kms::{EncryptionContext, KeyService, KmsTally};
pub use table::{Entry, ReadStats, ReaderOptions, TableRead, TableReader};

use std::time::Duration;

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};

/// Where a credstash table and its KMS key live.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableLocation {
    pub table: String,
    /// DynamoDB region; `None` = the SDK's usual chain (`AWS_REGION`, profile),
    /// then `us-east-1` as credstash does.
    pub region: Option<String>,
    /// KMS region when it differs from the table's (`--kms-region`).
    pub kms_region: Option<String>,
    pub encryption_context: EncryptionContext,
}

/// credstash's last-resort region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Builds a reader for `location` from the AWS SDK's standard environment
/// (credentials chain, `AWS_ENDPOINT_URL`, profiles).
pub async fn connect(location: &TableLocation, options: ReaderOptions) -> TableReader {
    let shared = aws_sdk_config(location.region.as_deref()).await;
    let shared = shared
        .into_builder()
        .timeout_config(timeouts(options.attempt_timeout))
        .build();
    connect_with(&shared, location, options)
}

/// Builds a reader for `location` from an AWS configuration made elsewhere
/// (`location.region` is ignored; `kms_region` still applies).
pub fn connect_with(
    shared: &aws_config::SdkConfig,
    location: &TableLocation,
    options: ReaderOptions,
) -> TableReader {
    let dynamodb = aws_sdk_dynamodb::Client::new(shared);
    let mut kms_config = aws_sdk_kms::config::Builder::from(shared);
    if let Some(kms_region) = &location.kms_region {
        kms_config = kms_config.region(Region::new(kms_region.clone()));
    }
    let kms = aws_sdk_kms::Client::from_conf(kms_config.build());
    let keys = KeyService::new(kms, location.encryption_context.clone());
    TableReader::new(dynamodb, location.table.clone(), keys, options)
}

/// Longest wait for a TCP (and TLS) connection to an AWS endpoint. A
/// regional endpoint answers in milliseconds, a VPC endpoint or NAT in well
/// under a second; a black-holed route fails after this and is retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one attempt of a call may take, by default. Every call kubestash
/// makes (a Scan or Query page of at most 1 MB, a KMS Decrypt, GetRecords,
/// which never long-polls, DescribeTable/Stream) answers in well under a
/// second on AWS; ten times headroom still cuts a hung connection quickly
/// enough to retry. Table reads take `--aws-attempt-timeout` for slower
/// endpoints (a local emulator's Scan of a large table).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one call may take with all its retries (5 attempts with
/// backoff), by default: three attempts' worth when the attempt timeout is
/// raised. Bounds what one AWS call can cost a sync (`syncTimeout`, 5 min
/// by default) or one stream shard's poll.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeouts of every call: [`CONNECT_TIMEOUT`], `attempt`, and
/// [`OPERATION_TIMEOUT`] or three attempts, whichever is longer.
fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(OPERATION_TIMEOUT.max(attempt * 3))
        .build()
}

/// The shared AWS configuration: region as asked (or the default chain, or
/// `us-east-1`), standard retries with a few more attempts for throttling,
/// and [`CONNECT_TIMEOUT`], [`ATTEMPT_TIMEOUT`] and [`OPERATION_TIMEOUT`] on
/// every call of every client built from it.
pub async fn aws_sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(timeouts(ATTEMPT_TIMEOUT));
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::new(DEFAULT_REGION))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::Credentials;
    use aws_sdk_dynamodb::error::SdkError;
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    /// An endpoint that accepts connections and never answers.
    async fn hung_endpoint() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        format!("http://{address}")
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_an_endpoint_that_never_answers_times_out() {
        let shared = aws_sdk_config(Some("eu-west-1")).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&shared)
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url(hung_endpoint().await)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let started = Instant::now();
        let call = client
            .describe_table()
            .table_name("credential-store")
            .send();
        let error = tokio::time::timeout(Duration::from_secs(600), call)
            .await
            .expect("the SDK gives up by itself")
            .expect_err("nothing answers");
        let waited = started.elapsed();
        assert!(matches!(error, SdkError::TimeoutError(_)), "{error:?}");
        assert!(
            waited >= ATTEMPT_TIMEOUT && waited <= OPERATION_TIMEOUT + Duration::from_secs(1),
            "gave up after {waited:?} (virtual time)"
        );
    }

    #[test]
    fn a_raised_attempt_timeout_leaves_room_for_three_attempts() {
        let default = timeouts(ATTEMPT_TIMEOUT);
        assert_eq!(default.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(default.operation_timeout(), Some(OPERATION_TIMEOUT));
        let slow = timeouts(Duration::from_secs(40));
        assert_eq!(
            slow.operation_attempt_timeout(),
            Some(Duration::from_secs(40))
        );
        assert_eq!(slow.operation_timeout(), Some(Duration::from_secs(120)));
        assert_eq!(slow.connect_timeout(), Some(CONNECT_TIMEOUT));
    }
}
