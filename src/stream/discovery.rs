//! Which stream to follow: `spec.streamArn`, or the table's `LatestStreamArn`.

use super::source::{StreamError, StreamSource};

/// What to follow: a table, and optionally a pinned stream ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// The credstash table.
    pub table: String,
    /// `spec.streamArn`; `None`: the table's `LatestStreamArn`.
    pub explicit_arn: Option<String>,
}

impl StreamTarget {
    /// Follow the table's current stream, whatever its ARN.
    pub fn table(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            explicit_arn: None,
        }
    }

    /// Follow exactly `arn` (`spec.streamArn`).
    pub fn pinned(table: impl Into<String>, arn: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            explicit_arn: Some(arn.into()),
        }
    }
}

/// The outcome of stream discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// A live stream to follow.
    Enabled {
        /// Its ARN.
        arn: String,
    },
    /// No live stream: the table has none (or it is disabled), or the pinned
    /// stream is disabled or gone. Condition `Streaming=False`, reason
    /// `StreamDisabled`.
    Disabled,
}

/// Finds the stream to follow.
///
/// With a pinned ARN: one `DescribeStream` page (a disabled or deleted stream
/// is [`Discovered::Disabled`]). Otherwise one `DescribeTable`: the
/// table's `LatestStreamArn` when `StreamEnabled` is true. Cheap enough to
/// run every minute.
pub async fn discover(
    source: &dyn StreamSource,
    target: &StreamTarget,
) -> Result<Discovered, StreamError> {
    match &target.explicit_arn {
        Some(arn) => discover_pinned(source, arn).await,
        None => discover_from_table(source, &target.table).await,
    }
}

async fn discover_pinned(source: &dyn StreamSource, arn: &str) -> Result<Discovered, StreamError> {
    match source.describe_stream(arn, None).await {
        Ok(page) if page.status.is_live() => Ok(Discovered::Enabled {
            arn: arn.to_owned(),
        }),
        Ok(_) | Err(StreamError::ResourceNotFound(_)) => Ok(Discovered::Disabled),
        Err(e) => Err(e),
    }
}

async fn discover_from_table(
    source: &dyn StreamSource,
    table: &str,
) -> Result<Discovered, StreamError> {
    let stream = source.table_stream(table).await?;
    match stream.latest_arn {
        Some(arn) if stream.enabled => Ok(Discovered::Enabled { arn }),
        _ => Ok(Discovered::Disabled),
    }
}
