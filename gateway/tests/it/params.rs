//! Bound parameters at the protocol level: the parameter schema, the
//! updated handle DoPut returns, CancelFlightInfo on a bound statement, and
//! GetSchema for statements and prepared statements.

use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetTableTypes, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{Action, CancelFlightInfoRequest, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::{Gateway, TestRecord, create_topic, produce, unique};

async fn sql_client(gateway: &Gateway) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

fn offsets(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            column.values().to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_bind_through_the_handle_do_put_returns() {
    let topic = unique("params");
    create_topic(&topic, 2).await;
    let records: Vec<TestRecord> = (0..10).map(|i| TestRecord::value(i % 2, "x")).collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start(None).await;
    let mut client = sql_client(&gateway).await;

    let sql = format!(
        "SELECT _offset FROM \"{topic}\" WHERE _partition = $1 AND _offset >= $2 ORDER BY _offset"
    );
    let mut prepared = client.prepare(sql, None).await.expect("prepare");
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(
        parameters,
        Schema::new(vec![
            Field::new("$1", DataType::Int32, true),
            Field::new("$2", DataType::Int64, true),
        ])
    );

    // Two rows: the query runs for each, results in row order.
    let params = RecordBatch::try_new(
        Arc::new(parameters),
        vec![
            Arc::new(Int32Array::from(vec![1, 0])),
            Arc::new(Int64Array::from(vec![3, 4])),
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.expect("execute");
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let statement = Any::decode(ticket.ticket.clone())
        .unwrap()
        .unpack::<TicketStatementQuery>()
        .unwrap()
        .unwrap();
    let handle = String::from_utf8_lossy(&statement.statement_handle);
    assert!(
        handle.starts_with("kappa-q:") && handle.contains("\nkappa-stmt/1\n"),
        "the ticket carries a query id and the bound statement: {handle:?}"
    );
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("batches");
    assert_eq!(offsets(&batches), [3, 4, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_bound_statement_ends_its_stream() {
    let topic = unique("params-cancel");
    create_topic(&topic, 1).await;
    let records: Vec<TestRecord> = (0..5).map(|_| TestRecord::value(0, "x")).collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start(None).await;
    let mut client = sql_client(&gateway).await;

    let sql = format!("SELECT _offset FROM tail('{topic}', 'earliest') WHERE _offset >= ?");
    let mut prepared = client.prepare(sql, None).await.expect("prepare");
    let params =
        RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(vec![2])) as Arc<dyn Array>)])
            .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.expect("execute");

    let mut raw = gateway.client().await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let flight = raw.inner.do_get(ticket).await.expect("do_get").into_inner();
    let mut stream = FlightRecordBatchStream::new_from_flight_data(
        flight.map_err(|s| FlightError::Tonic(Box::new(s))),
    );
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = stream.next().await.expect("a batch").expect("no error");
        seen.extend(offsets(&[batch]));
    }
    assert_eq!(seen, [2, 3, 4]);

    let cancel = Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest::new(info).encode_to_vec().into(),
    };
    raw.inner.do_action(cancel).await.expect("cancelled");
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    match end {
        Some(Err(FlightError::Tonic(status))) => assert_eq!(status.code(), Code::Cancelled),
        other => panic!("expected Cancelled, got {other:?}"),
    }
}

/// The schema GetSchema answers for `command`.
async fn schema_of(gateway: &Gateway, command: impl ProstMessageExt) -> Result<Schema, Status> {
    let mut raw = gateway.client().await;
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let result = raw.inner.get_schema(descriptor).await?.into_inner();
    Ok(Schema::try_from(&result).expect("an IPC schema"))
}

#[tokio::test(flavor = "multi_thread")]
async fn get_schema_plans_statements_and_prepared_statements() {
    let gateway = Gateway::start(None).await;
    let sql = "SELECT $1 AS x, 1 AS one";
    let statement = schema_of(
        &gateway,
        CommandStatementQuery {
            query: "SELECT 1 AS one, 'x' AS s".into(),
            transaction_id: None,
        },
    )
    .await
    .expect("statement schema");
    let names: Vec<_> = statement
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(names, [("one", DataType::Int64), ("s", DataType::Utf8)]);

    // A prepared statement: unbound, its placeholder's column is untyped;
    // bound, it has the parameter's type.
    let mut raw = gateway.client().await;
    let create = Action {
        r#type: "CreatePreparedStatement".into(),
        body: ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    let mut results = raw
        .inner
        .do_action(create)
        .await
        .expect("prepare")
        .into_inner();
    let result = results.message().await.unwrap().expect("a result");
    let created: ActionCreatePreparedStatementResult =
        Any::decode(result.body).unwrap().unpack().unwrap().unwrap();
    let unbound = schema_of(
        &gateway,
        CommandPreparedStatementQuery {
            prepared_statement_handle: created.prepared_statement_handle.clone(),
        },
    )
    .await
    .expect("unbound prepared schema");
    assert_eq!(unbound.field(0).data_type(), &DataType::Null);

    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: created.prepared_statement_handle,
    };
    let params = RecordBatch::try_from_iter([(
        "0",
        Arc::new(StringArray::from(vec!["a"])) as Arc<dyn Array>,
    )])
    .unwrap();
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            command.as_any().encode_to_vec(),
        )))
        .build(futures::stream::iter([Ok(params)]))
        .map(|data| data.expect("encodes"));
    let mut answer = raw.inner.do_put(put).await.expect("bind").into_inner();
    let put_result = answer.message().await.unwrap().expect("DoPut answers");
    let bound = DoPutPreparedStatementResult::decode(put_result.app_metadata)
        .unwrap()
        .prepared_statement_handle
        .expect("an updated handle");
    let bound = schema_of(
        &gateway,
        CommandPreparedStatementQuery {
            prepared_statement_handle: bound,
        },
    )
    .await
    .expect("bound prepared schema");
    assert_eq!(bound.field(0).data_type(), &DataType::Utf8);
    assert_eq!(bound.field(1).data_type(), &DataType::Int64);

    // Other commands: what their FlightInfo says.
    let tables = schema_of(&gateway, CommandGetTableTypes {})
        .await
        .expect("table types schema");
    assert_eq!(tables.field(0).name(), "table_type");
}
