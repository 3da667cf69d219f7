//! Bound parameters at the protocol level: the parameter schema, the
//! updated handle DoPut returns, and CancelFlightInfo on a bound statement.

use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::{Action, CancelFlightInfoRequest};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

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
