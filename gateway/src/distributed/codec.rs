//! kappa's plan nodes on the wire between gateways.
//!
//! A Kafka scan travels as what it reads (topic, the pinned offset ranges of
//! each output partition, how values decode) and never as how to reach the
//! brokers: the gateway that runs it reads with its own Kafka client and
//! credentials. Formats whose decoders come from a schema registry do not
//! travel yet; a plan holding one is run where it was planned
//! ([`super::Cluster::distributable`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use kappa_catalog::offsets::PartitionRange;
use kappa_catalog::scan::{KafkaScanExec, ScanSpec};
use kappa_catalog::{KafkaClient, ValueFormat};
use prost::Message;

/// Encodes and decodes kappa's plan nodes; decoded scans read through
/// `client`.
#[derive(Debug, Clone)]
pub struct KappaCodec {
    client: Arc<KafkaClient>,
}

impl KappaCodec {
    /// A codec whose decoded scans read with `client`.
    pub fn new(client: Arc<KafkaClient>) -> Self {
        Self { client }
    }

    /// Whether `format` can travel to another gateway.
    pub fn carries(format: &ValueFormat) -> bool {
        matches!(
            format,
            ValueFormat::Raw | ValueFormat::String | ValueFormat::Json(_) | ValueFormat::Csv
        )
    }
}

#[derive(Clone, PartialEq, Message)]
struct KafkaScanProto {
    #[prost(string, tag = "1")]
    topic: String,
    #[prost(enumeration = "FormatProto", tag = "2")]
    format: i32,
    /// The columns a JSON format declares apart from the table's.
    #[prost(message, optional, tag = "3")]
    json_columns: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "4")]
    value_schema: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "5")]
    output_schema: Option<protobuf::Schema>,
    #[prost(uint32, repeated, tag = "6")]
    projection: Vec<u32>,
    #[prost(bool, tag = "7")]
    projected: bool,
    #[prost(message, repeated, tag = "8")]
    ranges: Vec<RangeProto>,
    #[prost(message, repeated, tag = "9")]
    groups: Vec<GroupProto>,
    #[prost(string, repeated, tag = "10")]
    pushed_filters: Vec<String>,
    #[prost(uint64, optional, tag = "11")]
    limit: Option<u64>,
    #[prost(uint64, optional, tag = "12")]
    last: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
enum FormatProto {
    Raw = 0,
    String = 1,
    Json = 2,
    Csv = 3,
}

#[derive(Clone, PartialEq, Message)]
struct RangeProto {
    #[prost(int32, tag = "1")]
    partition: i32,
    #[prost(int64, tag = "2")]
    start: i64,
    #[prost(int64, tag = "3")]
    end: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GroupProto {
    #[prost(message, repeated, tag = "1")]
    ranges: Vec<RangeProto>,
}

fn to_proto_ranges(ranges: &[PartitionRange]) -> Vec<RangeProto> {
    ranges
        .iter()
        .map(|r| RangeProto {
            partition: r.partition,
            start: r.start,
            end: r.end,
        })
        .collect()
}

fn from_proto_ranges(ranges: &[RangeProto]) -> Vec<PartitionRange> {
    ranges
        .iter()
        .map(|r| PartitionRange::new(r.partition, r.start, r.end))
        .collect()
}

fn schema_to_proto(schema: &Schema) -> Result<protobuf::Schema> {
    schema
        .try_into()
        .map_err(|e| DataFusionError::Internal(format!("encoding a Kafka scan's schema: {e}")))
}

fn schema_from_proto(schema: Option<&protobuf::Schema>, what: &str) -> Result<SchemaRef> {
    let schema = schema.ok_or_else(|| {
        DataFusionError::Internal(format!("a Kafka scan arrived without its {what}"))
    })?;
    let schema: Schema = schema
        .try_into()
        .map_err(|e| DataFusionError::Internal(format!("decoding a Kafka scan's {what}: {e}")))?;
    Ok(Arc::new(schema))
}

impl PhysicalExtensionCodec for KappaCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal(format!(
                "a Kafka scan has no inputs, {} arrived",
                inputs.len()
            )));
        }
        let proto = KafkaScanProto::decode(buf).map_err(|e| {
            DataFusionError::Internal(format!("decoding a plan node from another gateway: {e}"))
        })?;
        let value_schema = schema_from_proto(proto.value_schema.as_ref(), "value columns")?;
        let format = match FormatProto::try_from(proto.format) {
            Ok(FormatProto::Raw) => ValueFormat::Raw,
            Ok(FormatProto::String) => ValueFormat::String,
            Ok(FormatProto::Csv) => ValueFormat::Csv,
            Ok(FormatProto::Json) => ValueFormat::Json(
                proto
                    .json_columns
                    .as_ref()
                    .map(|s| schema_from_proto(Some(s), "declared JSON columns"))
                    .transpose()?,
            ),
            Err(_) => {
                return Err(DataFusionError::Internal(format!(
                    "a Kafka scan in value format {} arrived, which this gateway does not know \
                     (gateways of different versions?)",
                    proto.format
                )));
            }
        };
        let spec = ScanSpec {
            topic: proto.topic,
            format,
            value_schema,
            projection: proto
                .projected
                .then(|| proto.projection.iter().map(|&i| i as usize).collect()),
            ranges: from_proto_ranges(&proto.ranges),
            pushed_filters: proto.pushed_filters,
            limit: proto.limit.map(|n| n as usize),
            last: proto.last.map(|n| n as usize),
        };
        let groups = proto
            .groups
            .iter()
            .map(|g| from_proto_ranges(&g.ranges))
            .collect();
        let schema = schema_from_proto(proto.output_schema.as_ref(), "columns")?;
        Ok(Arc::new(KafkaScanExec::from_groups(
            spec,
            schema,
            groups,
            Arc::clone(&self.client),
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = node.downcast_ref::<KafkaScanExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} runs only on the gateway that planned it",
                node.name()
            )));
        };
        let spec = scan.spec();
        let (format, json_columns) = match &spec.format {
            ValueFormat::Raw => (FormatProto::Raw, None),
            ValueFormat::String => (FormatProto::String, None),
            ValueFormat::Csv => (FormatProto::Csv, None),
            ValueFormat::Json(columns) => (
                FormatProto::Json,
                columns.as_deref().map(schema_to_proto).transpose()?,
            ),
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "a Kafka scan of {other} values runs only on the gateway that planned it"
                )));
            }
        };
        let proto = KafkaScanProto {
            topic: spec.topic.clone(),
            format: format as i32,
            json_columns,
            value_schema: Some(schema_to_proto(&spec.value_schema)?),
            output_schema: Some(schema_to_proto(&scan.schema())?),
            projection: spec
                .projection
                .iter()
                .flatten()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
            projected: spec.projection.is_some(),
            ranges: to_proto_ranges(&spec.ranges),
            groups: scan
                .groups()
                .iter()
                .map(|g| GroupProto {
                    ranges: to_proto_ranges(g),
                })
                .collect(),
            pushed_filters: spec.pushed_filters.clone(),
            limit: spec.limit.map(|n| n as u64),
            last: spec.last.map(|n| n as u64),
        };
        proto
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding a Kafka scan: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::displayable;
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;
    use kappa_catalog::KafkaOptions;

    fn client() -> Arc<KafkaClient> {
        // Connects lazily: no broker is contacted here.
        KafkaClient::new(KafkaOptions::new("127.0.0.1:1")).unwrap()
    }

    #[test]
    fn a_kafka_scan_arrives_reading_the_same_ranges_in_the_same_groups() {
        let columns = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let spec = ScanSpec {
            topic: "orders".into(),
            format: ValueFormat::Json(Some(Arc::clone(&columns))),
            value_schema: Arc::clone(&columns),
            projection: Some(vec![1, 4]),
            ranges: vec![PartitionRange::new(0, 3, 90), PartitionRange::new(2, 0, 7)],
            pushed_filters: vec!["_offset >= Int64(3)".into()],
            limit: None,
            last: Some(5),
        };
        let output = Arc::new(Schema::new(vec![
            Field::new("_partition", DataType::Int32, false),
            Field::new("id", DataType::Int64, true),
        ]));
        let groups = vec![
            vec![PartitionRange::new(0, 3, 90)],
            vec![],
            vec![PartitionRange::new(2, 0, 7)],
        ];
        let scan: Arc<dyn ExecutionPlan> = Arc::new(KafkaScanExec::from_groups(
            spec,
            output,
            groups.clone(),
            client(),
        ));
        let codec = KappaCodec::new(client());
        let mut buf = Vec::new();
        codec
            .try_encode(
                Arc::clone(&scan),
                &mut buf,
                &DefaultPhysicalProtoConverter {},
            )
            .unwrap();
        let ctx = TaskContext::default();
        let back = codec
            .try_decode(&buf, &[], &ctx, &DefaultPhysicalProtoConverter {})
            .unwrap();
        let back_scan = back.downcast_ref::<KafkaScanExec>().unwrap();
        assert_eq!(back_scan.groups(), groups.as_slice());
        assert_eq!(back.schema(), scan.schema());
        assert_eq!(back_scan.spec().projection, Some(vec![1, 4]));
        assert!(matches!(&back_scan.spec().format, ValueFormat::Json(Some(c)) if *c == columns));
        assert_eq!(
            displayable(back.as_ref()).indent(true).to_string(),
            displayable(scan.as_ref()).indent(true).to_string()
        );
    }
}
