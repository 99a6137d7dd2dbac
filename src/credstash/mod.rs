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
pub use kms::{EncryptionContext, KeyService};
pub use table::{Entry, ReadStats, ReaderOptions, TableRead, TableReader};

use aws_config::{retry::RetryConfig, BehaviorVersion, Region};

/// Where a credstash table and its KMS key live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// The shared AWS configuration: region as asked (or the default chain, or
/// `us-east-1`), standard retries with a few more attempts for throttling.
pub async fn aws_sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(5));
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
