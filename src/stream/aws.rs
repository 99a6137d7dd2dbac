//! [`StreamSource`] over the AWS SDK (DynamoDB Streams + DynamoDB).

use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{self as ddbs, OperationType, ShardIteratorType};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::source::{
    EventKind, IteratorPosition, RecordsPage, ShardInfo, StreamError, StreamPage, StreamRecord,
    StreamSource, StreamStatusKind, TableStream,
};

/// The credstash table's hash key: the credstash name.
const NAME_KEY: &str = "name";

/// DynamoDB Streams and DynamoDB clients.
#[derive(Debug, Clone)]
pub struct AwsStreamSource {
    streams: aws_sdk_dynamodbstreams::Client,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl AwsStreamSource {
    /// Clients built from a shared AWS configuration (region, credentials,
    /// endpoint, retries): see [`crate::credstash::aws_sdk_config`].
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            streams: aws_sdk_dynamodbstreams::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
        }
    }

    /// From clients made elsewhere.
    pub fn from_clients(
        streams: aws_sdk_dynamodbstreams::Client,
        dynamodb: aws_sdk_dynamodb::Client,
    ) -> Self {
        Self { streams, dynamodb }
    }

    async fn table_stream_impl(&self, table: &str) -> Result<TableStream, StreamError> {
        let output = self
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify(&format!("DescribeTable {table}"), e))?;
        let description = output.table();
        let enabled = description
            .and_then(|t| t.stream_specification())
            .is_some_and(|s| s.stream_enabled());
        let latest_arn = description
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_owned);
        Ok(TableStream {
            enabled,
            latest_arn,
        })
    }

    async fn describe_stream_impl(
        &self,
        arn: &str,
        start: Option<&str>,
    ) -> Result<StreamPage, StreamError> {
        let output = self
            .streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify(&format!("DescribeStream {arn}"), e))?;
        let description = output.stream_description().ok_or_else(|| {
            StreamError::Other(format!("DescribeStream {arn}: no StreamDescription"))
        })?;
        let status = description
            .stream_status()
            .map(stream_status)
            .ok_or_else(|| StreamError::Other(format!("DescribeStream {arn}: no StreamStatus")))?;
        let shards = description
            .shards()
            .iter()
            .map(|s| shard_info(arn, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StreamPage {
            status,
            shards,
            last_evaluated_shard_id: description.last_evaluated_shard_id().map(str::to_owned),
        })
    }

    async fn get_shard_iterator_impl(
        &self,
        arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<String, StreamError> {
        let (kind, sequence_number) = iterator_type(position);
        let output = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence_number)
            .send()
            .await
            .map_err(|e| classify(&format!("GetShardIterator {shard_id}"), e))?;
        output.shard_iterator().map(str::to_owned).ok_or_else(|| {
            StreamError::Other(format!("GetShardIterator {shard_id}: no ShardIterator"))
        })
    }

    async fn get_records_impl(&self, iterator: &str) -> Result<RecordsPage, StreamError> {
        let output = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .send()
            .await
            .map_err(|e| classify("GetRecords", e))?;
        let records = output.records().iter().filter_map(stream_record).collect();
        Ok(RecordsPage {
            records,
            next_iterator: output.next_shard_iterator().map(str::to_owned),
        })
    }
}

impl StreamSource for AwsStreamSource {
    fn table_stream<'a>(
        &'a self,
        table: &'a str,
    ) -> BoxFuture<'a, Result<TableStream, StreamError>> {
        Box::pin(self.table_stream_impl(table))
    }

    fn describe_stream<'a>(
        &'a self,
        arn: &'a str,
        exclusive_start_shard_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<StreamPage, StreamError>> {
        Box::pin(self.describe_stream_impl(arn, exclusive_start_shard_id))
    }

    fn get_shard_iterator<'a>(
        &'a self,
        arn: &'a str,
        shard_id: &'a str,
        position: &'a IteratorPosition,
    ) -> BoxFuture<'a, Result<String, StreamError>> {
        Box::pin(self.get_shard_iterator_impl(arn, shard_id, position))
    }

    fn get_records<'a>(
        &'a self,
        iterator: &'a str,
    ) -> BoxFuture<'a, Result<RecordsPage, StreamError>> {
        Box::pin(self.get_records_impl(iterator))
    }
}

/// Maps an SDK error onto what the follower acts on, by error code.
fn classify<E>(context: &str, error: SdkError<E>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    let message = format!("{context}: {}", DisplayErrorContext(&error));
    match code.as_deref() {
        Some("ExpiredIteratorException") => StreamError::ExpiredIterator(message),
        Some("TrimmedDataAccessException") => StreamError::TrimmedData(message),
        Some("ResourceNotFoundException") => StreamError::ResourceNotFound(message),
        Some(
            "LimitExceededException"
            | "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded",
        ) => StreamError::Throttled(message),
        _ => StreamError::Other(message),
    }
}

fn stream_status(status: &ddbs::StreamStatus) -> StreamStatusKind {
    match status {
        ddbs::StreamStatus::Enabling => StreamStatusKind::Enabling,
        ddbs::StreamStatus::Enabled => StreamStatusKind::Enabled,
        ddbs::StreamStatus::Disabling => StreamStatusKind::Disabling,
        // DISABLED, and any status added later: not live.
        _ => StreamStatusKind::Disabled,
    }
}

fn shard_info(arn: &str, shard: &ddbs::Shard) -> Result<ShardInfo, StreamError> {
    let shard_id = shard.shard_id().ok_or_else(|| {
        StreamError::Other(format!("DescribeStream {arn}: a shard without ShardId"))
    })?;
    Ok(ShardInfo {
        shard_id: shard_id.to_owned(),
        parent_shard_id: shard.parent_shard_id().map(str::to_owned),
        ending_sequence_number: shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .map(str::to_owned),
    })
}

fn iterator_type(position: &IteratorPosition) -> (ShardIteratorType, Option<String>) {
    match position {
        IteratorPosition::Latest => (ShardIteratorType::Latest, None),
        IteratorPosition::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
        IteratorPosition::AfterSequenceNumber(seq) => {
            (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()))
        }
        IteratorPosition::AtSequenceNumber(seq) => {
            (ShardIteratorType::AtSequenceNumber, Some(seq.clone()))
        }
    }
}

/// A record reduced to our terms; records without a sequence number or a
/// known event type are skipped (logged).
fn stream_record(record: &ddbs::Record) -> Option<StreamRecord> {
    let event = match record.event_name() {
        Some(OperationType::Insert) => EventKind::Insert,
        Some(OperationType::Modify) => EventKind::Modify,
        Some(OperationType::Remove) => EventKind::Remove,
        other => {
            tracing::warn!(event = ?other, "stream record with an unknown event type skipped");
            return None;
        }
    };
    let Some(data) = record.dynamodb() else {
        tracing::warn!("stream record without a dynamodb section skipped");
        return None;
    };
    let Some(sequence_number) = data.sequence_number() else {
        tracing::warn!("stream record without a sequence number skipped");
        return None;
    };
    let name = data
        .keys()
        .and_then(|keys| keys.get(NAME_KEY))
        .and_then(|value| value.as_s().ok())
        .cloned();
    let created = data.approximate_creation_date_time().and_then(to_chrono);
    Some(StreamRecord {
        sequence_number: sequence_number.to_owned(),
        event,
        name,
        created,
    })
}

fn to_chrono(time: &aws_sdk_dynamodbstreams::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::DateTime as AwsDateTime;
    use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, StreamRecord as AwsRecord};

    fn record(event: OperationType, name: Option<AttributeValue>) -> Record {
        let mut data = AwsRecord::builder()
            .sequence_number("000000000000000000042")
            .approximate_creation_date_time(AwsDateTime::from_secs(1_700_000_000))
            .keys("version", AttributeValue::S("0000000000000000001".into()));
        if let Some(name) = name {
            data = data.keys(NAME_KEY, name);
        }
        Record::builder()
            .event_name(event)
            .dynamodb(data.build())
            .build()
    }

    #[test]
    fn a_record_gives_its_name_event_sequence_and_time() {
        let name = AttributeValue::S("ns/secret/KEY".into());
        let parsed = stream_record(&record(OperationType::Remove, Some(name))).expect("parsed");
        assert_eq!(parsed.event, EventKind::Remove);
        assert_eq!(parsed.name.as_deref(), Some("ns/secret/KEY"));
        assert_eq!(parsed.sequence_number, "000000000000000000042");
        assert_eq!(parsed.created.map(|t| t.timestamp()), Some(1_700_000_000));
    }

    #[test]
    fn a_name_that_is_not_a_string_is_none() {
        let name = AttributeValue::N("7".into());
        let parsed = stream_record(&record(OperationType::Insert, Some(name))).expect("parsed");
        assert_eq!(parsed.name, None);
        let parsed = stream_record(&record(OperationType::Modify, None)).expect("parsed");
        assert_eq!((parsed.event, parsed.name), (EventKind::Modify, None));
    }

    #[test]
    fn a_record_without_a_sequence_number_is_skipped() {
        let record = Record::builder()
            .event_name(OperationType::Insert)
            .dynamodb(AwsRecord::builder().build())
            .build();
        assert_eq!(stream_record(&record), None);
    }

    #[test]
    fn iterator_positions_map_to_aws_types() {
        let seq = "123".to_string();
        assert_eq!(
            iterator_type(&IteratorPosition::AfterSequenceNumber(seq.clone())),
            (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()))
        );
        assert_eq!(
            iterator_type(&IteratorPosition::AtSequenceNumber(seq.clone())),
            (ShardIteratorType::AtSequenceNumber, Some(seq))
        );
        assert_eq!(
            iterator_type(&IteratorPosition::Latest),
            (ShardIteratorType::Latest, None)
        );
        assert_eq!(
            iterator_type(&IteratorPosition::TrimHorizon),
            (ShardIteratorType::TrimHorizon, None)
        );
    }
}
