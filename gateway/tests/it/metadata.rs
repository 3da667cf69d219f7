//! Flight SQL metadata calls list the catalog, schema and tables with schemas.

use arrow::array::AsArray;
use arrow::datatypes::Schema;
use arrow_flight::IpcMessage;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, SqlInfo,
};

use crate::support::{Gateway, create_topic, unique};

#[tokio::test(flavor = "multi_thread")]
async fn catalogs_schemas_and_tables_are_listed() {
    let topic = unique("meta");
    create_topic(&topic, 1).await;
    let config = format!(
        "[[tables]]\nname = \"decl\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"a INT, b VARCHAR\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;

    let info = client.flight_info(CommandGetCatalogs {}).await.unwrap();
    let catalogs = client.fetch(info).await.unwrap().batch();
    assert_eq!(catalogs.column(0).as_string::<i32>().value(0), "kafka");

    let info = client
        .flight_info(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = client.fetch(info).await.unwrap().batch();
    let schema_names: Vec<&str> = (0..schemas.num_rows())
        .map(|i| schemas.column(1).as_string::<i32>().value(i))
        .collect();
    assert_eq!(schema_names, ["default", "system"]);

    let info = client
        .flight_info(CommandGetTables {
            catalog: Some("kafka".into()),
            db_schema_filter_pattern: Some("default".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let result = client.fetch(info).await.unwrap();
    assert_eq!(result.info_schema, *result.stream_schema);
    let tables = result.batch();
    let names = tables.column(2).as_string::<i32>();
    let row = |name: &str| (0..tables.num_rows()).find(|&i| names.value(i) == name);
    let decl = row("decl").expect("declared table listed");
    let raw = row(&topic).expect("topic listed");
    let schema_of = |i: usize| {
        let bytes = tables.column(4).as_binary::<i32>().value(i).to_vec();
        Schema::try_from(IpcMessage(bytes.into())).unwrap()
    };
    let decl_columns: Vec<String> = schema_of(decl)
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        decl_columns,
        [
            "_partition",
            "_offset",
            "_timestamp",
            "_key",
            "_headers",
            "a",
            "b",
            "_error",
            "_value"
        ]
    );
    assert_eq!(schema_of(raw).field(4).name(), "_value");

    let info = client.flight_info(CommandGetTableTypes {}).await.unwrap();
    let types = client.fetch(info).await.unwrap().batch();
    assert_eq!(types.column(0).as_string::<i32>().value(0), "TABLE");

    let info = client
        .flight_info(CommandGetSqlInfo {
            info: vec![
                SqlInfo::FlightSqlServerName as u32,
                SqlInfo::FlightSqlServerReadOnly as u32,
            ],
        })
        .await
        .unwrap();
    let sql_info = client.fetch(info).await.unwrap();
    assert_eq!(sql_info.rows(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_metadata_is_empty_not_unimplemented() {
    use arrow_flight::sql::{CommandGetExportedKeys, CommandGetPrimaryKeys};

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let info = client
        .flight_info(CommandGetPrimaryKeys {
            catalog: Some("kafka".into()),
            db_schema: Some("default".into()),
            table: "orders".into(),
        })
        .await
        .expect("GetPrimaryKeys is answered");
    let result = client.fetch(info).await.expect("DoGet");
    assert_eq!(result.rows(), 0);
    assert_eq!(result.info_schema, *result.stream_schema);
    assert_eq!(result.info_schema.field(5).name(), "key_sequence");

    let info = client
        .flight_info(CommandGetExportedKeys {
            catalog: None,
            db_schema: None,
            table: "orders".into(),
        })
        .await
        .expect("GetExportedKeys is answered");
    let result = client.fetch(info).await.expect("DoGet");
    assert_eq!(result.rows(), 0);
    assert_eq!(result.info_schema.fields().len(), 13);
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_accepts_anonymous_clients() {
    use arrow_flight::HandshakeRequest;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let request = futures::stream::once(async { HandshakeRequest::default() });
    let answer = client
        .inner
        .handshake(request)
        .await
        .expect("handshake accepted");
    let bearer = answer
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = answer
        .into_inner()
        .message()
        .await
        .expect("response")
        .expect("one message");
    // Anonymous clients get a token too, so a client that signs in before
    // every session works the same with and without users configured.
    let token = String::from_utf8(response.payload.to_vec()).unwrap();
    assert!(token.starts_with("kappa1."), "{token}");
    assert_eq!(bearer, Some(format!("Bearer {token}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn xdbc_type_info_lists_the_types_kappa_produces() {
    use arrow_flight::sql::CommandGetXdbcTypeInfo;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let info = client
        .flight_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("GetXdbcTypeInfo is answered");
    let result = client.fetch(info).await.expect("DoGet");
    assert_eq!(result.info_schema, *result.stream_schema);
    let batch = result.batch();
    let names = batch.column(0).as_string::<i32>();
    let names: Vec<&str> = (0..batch.num_rows()).map(|i| names.value(i)).collect();
    for expected in [
        "BIGINT",
        "INTEGER",
        "DOUBLE",
        "VARCHAR",
        "VARBINARY",
        "TIMESTAMP",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}
