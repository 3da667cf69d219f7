//! kappa's plan nodes on the wire between gateways.
//!
//! A Kafka scan travels as what it reads (topic, the pinned offset ranges of
//! each output partition, how values decode) and never as how to reach the
//! brokers: the gateway that runs it reads with its own Kafka client and
//! credentials. Formats whose decoders come from a schema registry do not
//! travel yet; a plan holding one is run where it was planned
//! ([`super::Cluster::distributable`]).
//!
//! A lake tier travels as its label ([`LakeTierExec`]) over the files it
//! reads at its Delta version ([`LakeFilesExec`]); the gateway that runs it
//! plans the Delta scan again from its own lake (see
//! [`kappa_catalog::lake::travel`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_exprs;
use datafusion_proto::logical_plan::to_proto::serialize_exprs;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use kappa_catalog::lake::travel::{LakeFile, LakeFilesExec, LakeScanSpec};
use kappa_catalog::lake::{Lake, LakeTierExec};
use kappa_catalog::offsets::PartitionRange;
use kappa_catalog::scan::{KafkaScanExec, ScanSpec};
use kappa_catalog::{KafkaClient, ValueFormat};
use prost::Message;

/// Encodes and decodes kappa's plan nodes; decoded scans read through
/// `client` and `lake`.
#[derive(Debug, Clone)]
pub struct KappaCodec {
    client: Arc<KafkaClient>,
    lake: Option<Lake>,
}

impl KappaCodec {
    /// A codec whose decoded scans read with `client`, and from `lake`.
    pub fn new(client: Arc<KafkaClient>, lake: Option<Lake>) -> Self {
        Self { client, lake }
    }

    /// The lake decoded lake scans read from.
    pub fn lake(&self) -> Option<&Lake> {
        self.lake.as_ref()
    }

    /// Whether `format` can travel to another gateway.
    pub fn carries(format: &ValueFormat) -> bool {
        matches!(
            format,
            ValueFormat::Raw | ValueFormat::String | ValueFormat::Json(_) | ValueFormat::Csv
        )
    }
}

/// One of kappa's nodes.
#[derive(Clone, PartialEq, Message)]
struct KappaNodeProto {
    #[prost(oneof = "NodeProto", tags = "1, 2, 3")]
    node: Option<NodeProto>,
}

// One message per plan node, decoded and dropped at once: its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
enum NodeProto {
    #[prost(message, tag = "1")]
    KafkaScan(KafkaScanProto),
    #[prost(message, tag = "2")]
    LakeTier(LakeTierProto),
    #[prost(message, tag = "3")]
    LakeFiles(LakeFilesProto),
}

/// A lake tier's label; its one input travels as a node of its own.
#[derive(Clone, PartialEq, Message)]
struct LakeTierProto {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(uint64, tag = "2")]
    version: u64,
    /// Each partition's watermark, as a range `[0, watermark)`.
    #[prost(message, repeated, tag = "3")]
    watermarks: Vec<RangeProto>,
    /// `(n, files kept, files planned)` of a newest-records scan.
    #[prost(uint64, repeated, tag = "4")]
    last: Vec<u64>,
}

/// A lake tier's Delta scan: what it reads and its files.
#[derive(Clone, PartialEq, Message)]
struct LakeFilesProto {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(uint64, tag = "2")]
    version: u64,
    #[prost(message, optional, tag = "3")]
    columns: Option<protobuf::Schema>,
    #[prost(message, repeated, tag = "4")]
    filters: Vec<protobuf::LogicalExprNode>,
    #[prost(uint64, optional, tag = "5")]
    limit: Option<u64>,
    #[prost(message, repeated, tag = "6")]
    groups: Vec<FilesProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FilesProto {
    #[prost(string, repeated, tag = "1")]
    locations: Vec<String>,
    #[prost(uint64, repeated, tag = "2")]
    rows: Vec<u64>,
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
        .map_err(|e| DataFusionError::Internal(format!("encoding a plan node's schema: {e}")))
}

fn schema_from_proto(schema: Option<&protobuf::Schema>, what: &str) -> Result<SchemaRef> {
    let schema = schema.ok_or_else(|| {
        DataFusionError::Internal(format!("a plan node arrived without its {what}"))
    })?;
    let schema: Schema = schema
        .try_into()
        .map_err(|e| DataFusionError::Internal(format!("decoding a plan node's {what}: {e}")))?;
    Ok(Arc::new(schema))
}

impl PhysicalExtensionCodec for KappaCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let proto = KappaNodeProto::decode(buf).map_err(|e| {
            DataFusionError::Internal(format!("decoding a plan node from another gateway: {e}"))
        })?;
        let (node, inputs_wanted) = match proto.node {
            Some(NodeProto::KafkaScan(scan)) => (self.kafka_scan(scan)?, 0),
            Some(NodeProto::LakeFiles(files)) => (self.lake_files(files, ctx)?, 0),
            Some(NodeProto::LakeTier(tier)) => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(format!(
                        "a lake tier has one input, {} arrived",
                        inputs.len()
                    )));
                };
                (lake_tier(tier, Arc::clone(input)), 1)
            }
            None => {
                return Err(DataFusionError::Internal(
                    "a plan node of a kind this gateway does not know arrived (gateways of \
                     different versions?)"
                        .into(),
                ));
            }
        };
        if inputs.len() != inputs_wanted {
            return Err(DataFusionError::Internal(format!(
                "{} has {inputs_wanted} inputs, {} arrived",
                node.name(),
                inputs.len()
            )));
        }
        Ok(node)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            NodeProto::KafkaScan(kafka_scan_proto(scan)?)
        } else if let Some(tier) = node.downcast_ref::<LakeTierExec>() {
            NodeProto::LakeTier(lake_tier_proto(tier))
        } else if let Some(files) = node.downcast_ref::<LakeFilesExec>() {
            NodeProto::LakeFiles(lake_files_proto(files)?)
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} runs only on the gateway that planned it",
                node.name()
            )));
        };
        KappaNodeProto { node: Some(node) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding a plan node: {e}")))
    }
}

impl KappaCodec {
    fn kafka_scan(&self, proto: KafkaScanProto) -> Result<Arc<dyn ExecutionPlan>> {
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

    fn lake_files(
        &self,
        proto: LakeFilesProto,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filters =
            parse_exprs(&proto.filters, ctx, &DefaultLogicalExtensionCodec {}).map_err(|e| {
                DataFusionError::Internal(format!("decoding a lake scan's filters: {e}"))
            })?;
        let spec = LakeScanSpec {
            table: proto.table,
            version: proto.version,
            columns: schema_from_proto(proto.columns.as_ref(), "lake columns")?,
            filters,
            limit: proto.limit.map(|n| n as usize),
        };
        let files = proto
            .groups
            .into_iter()
            .map(|group| {
                group
                    .locations
                    .into_iter()
                    .zip(group.rows.into_iter().chain(std::iter::repeat(0)))
                    .map(|(location, rows)| LakeFile { location, rows })
                    .collect()
            })
            .collect();
        Ok(Arc::new(LakeFilesExec::new(spec, files, self.lake.clone())))
    }
}

fn lake_tier(proto: LakeTierProto, input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let last = match proto.last[..] {
        [n, kept, planned] => Some((n as usize, kept as usize, planned as usize)),
        _ => None,
    };
    Arc::new(LakeTierExec::arrived(
        proto.table,
        proto.version,
        proto
            .watermarks
            .iter()
            .map(|r| (r.partition, r.end))
            .collect(),
        last,
        input,
    ))
}

fn lake_tier_proto(tier: &LakeTierExec) -> LakeTierProto {
    LakeTierProto {
        table: tier.table().to_string(),
        version: tier.version(),
        watermarks: tier
            .watermarks()
            .iter()
            .map(|&(partition, end)| RangeProto {
                partition,
                start: 0,
                end,
            })
            .collect(),
        last: tier
            .last()
            .map(|(n, kept, planned)| vec![n as u64, kept as u64, planned as u64])
            .unwrap_or_default(),
    }
}

fn lake_files_proto(files: &LakeFilesExec) -> Result<LakeFilesProto> {
    let spec = files.spec();
    Ok(LakeFilesProto {
        table: spec.table.clone(),
        version: spec.version,
        columns: Some(schema_to_proto(&spec.columns)?),
        filters: serialize_exprs(&spec.filters, &DefaultLogicalExtensionCodec {}).map_err(|e| {
            DataFusionError::NotImplemented(format!(
                "a lake scan whose filters do not travel ({e}) runs only on the gateway that \
                 planned it"
            ))
        })?,
        limit: spec.limit.map(|n| n as u64),
        groups: files
            .files()
            .iter()
            .map(|group| FilesProto {
                locations: group.iter().map(|f| f.location.clone()).collect(),
                rows: group.iter().map(|f| f.rows).collect(),
            })
            .collect(),
    })
}

fn kafka_scan_proto(scan: &KafkaScanExec) -> Result<KafkaScanProto> {
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
    Ok(KafkaScanProto {
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
    })
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
        let codec = KappaCodec::new(client(), None);
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

    #[test]
    fn a_lake_tier_arrives_reading_the_same_files_with_the_same_filters() {
        use datafusion::logical_expr::{col, lit};
        use datafusion_proto::physical_plan::AsExecutionPlan;
        use datafusion_proto::protobuf::PhysicalPlanNode;

        let columns = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let spec = LakeScanSpec {
            table: "orders".into(),
            version: 7,
            columns,
            filters: vec![col("id").gt(lit(5_i64))],
            limit: Some(40),
        };
        let file = |name: &str, rows| LakeFile {
            location: format!("lake/tables/orders/{name}.parquet"),
            rows,
        };
        let files =
            LakeFilesExec::new(spec, vec![vec![file("a", 10), file("b", 20)], vec![]], None);
        let tier: Arc<dyn ExecutionPlan> = Arc::new(LakeTierExec::arrived(
            "orders",
            7,
            vec![(0, 120), (1, 80)],
            Some((5, 1, 2)),
            Arc::new(files),
        ));
        let codec = KappaCodec::new(client(), None);
        let proto = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&tier), &codec).unwrap();
        let back = proto
            .try_into_physical_plan(&TaskContext::default(), &codec)
            .unwrap();
        assert_eq!(
            displayable(back.as_ref()).indent(true).to_string(),
            displayable(tier.as_ref()).indent(true).to_string()
        );
        let back_files = back.children()[0].downcast_ref::<LakeFilesExec>().unwrap();
        assert_eq!(back_files.spec().filters, vec![col("id").gt(lit(5_i64))]);
        assert_eq!(back_files.spec().limit, Some(40));
        assert_eq!(back_files.files()[0][1], file("b", 20));
        assert_eq!(back.properties().partitioning.partition_count(), 2);
    }
}
