//! Bound parameters at the protocol level: the parameter schema, the
//! updated handle DoPut returns, the binding kept for clients that execute
//! the handle they prepared, CancelFlightInfo on a bound statement, and
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
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetTableTypes, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{Action, CancelFlightInfoRequest, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use prost::bytes::Bytes;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::{Client, Gateway, TestRecord, create_topic, produce, unique};

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

/// CreatePreparedStatement for `sql`: the handle the gateway gives out.
async fn create_prepared(raw: &mut Client, sql: &str) -> Bytes {
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
    created.prepared_statement_handle
}

/// Binds `params` to `handle` with DoPut: the updated handle DoPut returns.
async fn bind_with_do_put(raw: &mut Client, handle: Bytes, params: RecordBatch) -> Bytes {
    try_bind_with_do_put(raw, handle, params)
        .await
        .expect("bind")
}

/// Binds `params` to `handle` with DoPut, which may refuse them.
async fn try_bind_with_do_put(
    raw: &mut Client,
    handle: Bytes,
    params: RecordBatch,
) -> Result<Bytes, Status> {
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            command.as_any().encode_to_vec(),
        )))
        .build(futures::stream::iter([Ok(params)]))
        .map(|data| data.expect("encodes"));
    let mut answer = raw.inner.do_put(put).await?.into_inner();
    let put_result = answer.message().await?.expect("DoPut answers");
    Ok(
        DoPutPreparedStatementResult::decode(put_result.app_metadata)
            .unwrap()
            .prepared_statement_handle
            .expect("an updated handle"),
    )
}

/// One parameter column of strings, as ADBC names it.
fn strings(values: &[&str]) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "0",
        Arc::new(StringArray::from(values.to_vec())) as Arc<dyn Array>,
    )])
    .unwrap()
}

/// GetFlightInfo and DoGet for prepared statement `handle`: the first
/// column's strings.
async fn run_prepared(raw: &mut Client, handle: Bytes) -> Result<Vec<String>, Status> {
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let info = raw.inner.get_flight_info(descriptor).await?.into_inner();
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    let flight = raw.inner.do_get(ticket).await?.into_inner();
    let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
        flight.map_err(|s| FlightError::Tonic(Box::new(s))),
    )
    .try_collect()
    .await
    .expect("batches");
    Ok(batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            column
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect())
}

/// What flightsql-dbapi (Apache Superset's driver) does: DoPut, then execute
/// the handle it prepared rather than the one DoPut returned. The gateway
/// keeps the latest binding for that handle until the statement is closed.
#[tokio::test(flavor = "multi_thread")]
async fn executing_the_prepared_handle_after_do_put_uses_its_binding() {
    let gateway = Gateway::start(None).await;
    let mut raw = gateway.client().await;
    let created = create_prepared(&mut raw, "SELECT $1 AS x").await;
    let other = create_prepared(&mut raw, "SELECT $1 AS x").await;
    assert_ne!(created, other, "each prepared statement has its own id");

    let unbound = CommandPreparedStatementQuery {
        prepared_statement_handle: created.clone(),
    };
    let untyped = schema_of(&gateway, unbound.clone()).await.unwrap();
    assert_eq!(untyped.field(0).data_type(), &DataType::Null);
    bind_with_do_put(&mut raw, created.clone(), strings(&["a"])).await;
    bind_with_do_put(&mut raw, other.clone(), strings(&["b"])).await;
    let typed = schema_of(&gateway, unbound).await.unwrap();
    assert_eq!(
        typed.field(0).data_type(),
        &DataType::Utf8,
        "GetSchema takes the kept binding as GetFlightInfo does"
    );
    assert_eq!(
        run_prepared(&mut raw, created.clone()).await.unwrap(),
        ["a"]
    );
    assert_eq!(run_prepared(&mut raw, other.clone()).await.unwrap(), ["b"]);
    assert_eq!(
        run_prepared(&mut raw, created.clone()).await.unwrap(),
        ["a"],
        "kept"
    );
    bind_with_do_put(&mut raw, created.clone(), strings(&["c"])).await;
    assert_eq!(
        run_prepared(&mut raw, created.clone()).await.unwrap(),
        ["c"],
        "rebound"
    );

    let close = Action {
        r#type: "ClosePreparedStatement".into(),
        body: ActionClosePreparedStatementRequest {
            prepared_statement_handle: created.clone(),
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    raw.inner.do_action(close).await.expect("closed");
    let unbound = run_prepared(&mut raw, created).await.unwrap_err();
    assert_eq!(unbound.code(), Code::InvalidArgument);
    assert!(
        unbound.message().contains("missing parameter(s) $1"),
        "{unbound}"
    );
}

/// A kept binding never outlives what its client showed: a DoPut that fails
/// drops it (running the prepared handle then fails, rather than with the
/// values before), and running DoPut's own handle drops it (that client does
/// not need it).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rebind_or_a_run_of_do_puts_handle_drops_the_kept_binding() {
    let gateway = Gateway::start(None).await;
    let mut raw = gateway.client().await;
    let created = create_prepared(&mut raw, "SELECT $1 AS x").await;
    bind_with_do_put(&mut raw, created.clone(), strings(&["a"])).await;
    let two_columns = RecordBatch::try_from_iter([
        (
            "0",
            Arc::new(StringArray::from(vec!["b"])) as Arc<dyn Array>,
        ),
        (
            "1",
            Arc::new(StringArray::from(vec!["c"])) as Arc<dyn Array>,
        ),
    ])
    .unwrap();
    let refused = try_bind_with_do_put(&mut raw, created.clone(), two_columns)
        .await
        .expect_err("one parameter, two values");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    let unbound = run_prepared(&mut raw, created.clone())
        .await
        .expect_err("the binding before the failed one is gone");
    assert!(
        unbound.message().contains("missing parameter(s) $1"),
        "{unbound}"
    );

    let updated = bind_with_do_put(&mut raw, created.clone(), strings(&["d"])).await;
    assert_eq!(run_prepared(&mut raw, updated).await.unwrap(), ["d"]);
    let unbound = run_prepared(&mut raw, created)
        .await
        .expect_err("its client runs DoPut's handle: nothing kept");
    assert!(
        unbound.message().contains("missing parameter(s) $1"),
        "{unbound}"
    );
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
    let created = create_prepared(&mut raw, sql).await;
    let unbound = schema_of(
        &gateway,
        CommandPreparedStatementQuery {
            prepared_statement_handle: created.clone(),
        },
    )
    .await
    .expect("unbound prepared schema");
    assert_eq!(unbound.field(0).data_type(), &DataType::Null);

    let bound = bind_with_do_put(&mut raw, created, strings(&["a"])).await;
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
