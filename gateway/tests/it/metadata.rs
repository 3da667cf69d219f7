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
    assert_eq!(schema_names, ["default", "information_schema", "system"]);

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
    let types: Vec<&str> = (0..types.num_rows())
        .map(|i| types.column(0).as_string::<i32>().value(i))
        .collect();
    assert_eq!(types, ["table", "view"]);

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
        "TIMESTAMP WITH TIME ZONE",
        "ARRAY",
        "STRUCT",
        "DECIMAL",
        "DATE",
        "BOOLEAN",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// The tables of `CommandGetTables` as (schema, table, type) rows.
async fn listed(
    client: &mut crate::support::Client,
    command: CommandGetTables,
) -> Vec<(String, String, String)> {
    let info = client.flight_info(command).await.unwrap();
    let batch = client.fetch(info).await.unwrap().batch();
    (0..batch.num_rows())
        .map(|i| {
            let text = |c: usize| batch.column(c).as_string::<i32>().value(i).to_string();
            (text(1), text(2), text(3))
        })
        .collect()
}

fn tables_command(types: &[&str], include_schema: bool) -> CommandGetTables {
    CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: types.iter().map(|t| t.to_string()).collect(),
        include_schema,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn table_types_filter_in_any_case_and_information_schema_is_listed() {
    let topic = unique("meta-types");
    create_topic(&topic, 1).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;

    let all = listed(&mut client, tables_command(&[], false)).await;
    let row = |schema: &str, table: &str| {
        all.iter()
            .find(|(s, t, _)| s == schema && t == table)
            .map(|(_, _, kind)| kind.clone())
    };
    assert_eq!(row("default", &topic).as_deref(), Some("table"));
    assert_eq!(row("system", "partitions").as_deref(), Some("table"));
    assert_eq!(row("information_schema", "tables").as_deref(), Some("view"));
    assert_eq!(
        row("information_schema", "columns").as_deref(),
        Some("view")
    );

    // JDBC tools ask for TABLE and VIEW.
    let tables = listed(&mut client, tables_command(&["TABLE"], false)).await;
    assert!(tables.iter().any(|(_, t, _)| t == &topic));
    assert!(tables.iter().all(|(_, _, kind)| kind == "table"));
    let views = listed(&mut client, tables_command(&["VIEW"], false)).await;
    assert!(!views.is_empty());
    assert!(
        views
            .iter()
            .all(|(s, _, kind)| s == "information_schema" && kind == "view")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn table_schemas_carry_sql_types_and_nullability_per_column() {
    let topic = unique("meta-cols");
    create_topic(&topic, 1).await;
    let config = format!(
        "[[tables]]\nname = \"typed\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"a INT, b VARCHAR, c DECIMAL(10, 2), d TIMESTAMP\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;
    let info = client
        .flight_info(CommandGetTables {
            table_name_filter_pattern: Some("typed".into()),
            ..tables_command(&[], true)
        })
        .await
        .unwrap();
    let tables = client.fetch(info).await.unwrap().batch();
    assert_eq!(tables.num_rows(), 1);
    let bytes = tables.column(4).as_binary::<i32>().value(0).to_vec();
    let schema = Schema::try_from(IpcMessage(bytes.into())).unwrap();
    let meta = |column: &str, key: &str| {
        schema
            .field_with_name(column)
            .unwrap()
            .metadata()
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{column} has no {key}"))
    };
    let type_name = |column: &str| meta(column, "ARROW:FLIGHT:SQL:TYPE_NAME");
    assert_eq!(type_name("_partition"), "INTEGER");
    assert_eq!(type_name("_offset"), "BIGINT");
    assert_eq!(type_name("_timestamp"), "TIMESTAMP WITH TIME ZONE");
    assert_eq!(type_name("_key"), "VARBINARY");
    assert_eq!(
        type_name("_headers"),
        "ARRAY<STRUCT<key VARCHAR, value VARBINARY>>"
    );
    assert_eq!(type_name("a"), "INTEGER");
    assert_eq!(type_name("b"), "VARCHAR");
    assert_eq!(type_name("c"), "DECIMAL");
    assert_eq!(type_name("d"), "TIMESTAMP");
    assert_eq!(meta("c", "ARROW:FLIGHT:SQL:PRECISION"), "10");
    assert_eq!(meta("c", "ARROW:FLIGHT:SQL:SCALE"), "2");
    assert_eq!(meta("_timestamp", "ARROW:FLIGHT:SQL:SCALE"), "6");
    assert_eq!(meta("b", "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE"), "1");
    assert!(!schema.field_with_name("_offset").unwrap().is_nullable());
    assert!(schema.field_with_name("b").unwrap().is_nullable());
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_info_answers_every_id_jdbc_asks_for() {
    use arrow::array::{Array, UnionArray};

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let info = client
        .flight_info(CommandGetSqlInfo { info: vec![] })
        .await
        .unwrap();
    let result = client.fetch(info).await.unwrap();
    assert_eq!(result.info_schema, *result.stream_schema);
    let batch = result.batch();
    let ids: Vec<u32> = batch
        .column(0)
        .as_primitive::<arrow::datatypes::UInt32Type>()
        .values()
        .to_vec();
    // What the Flight SQL JDBC driver's DatabaseMetaData reads: a missing
    // one is a NullPointerException in the client.
    for id in [0, 1, 3, 8, 9, 100].into_iter().chain(500..=576) {
        assert!(ids.contains(&id), "SqlInfo {id} missing");
    }
    let values = batch
        .column(1)
        .as_any()
        .downcast_ref::<UnionArray>()
        .unwrap();
    let value_of = |id: u32| {
        let row = ids.iter().position(|i| *i == id).unwrap();
        values.value(row)
    };
    // Keywords and function lists are string lists with entries.
    for id in [
        SqlInfo::SqlKeywords,
        SqlInfo::SqlNumericFunctions,
        SqlInfo::SqlStringFunctions,
        SqlInfo::SqlSystemFunctions,
        SqlInfo::SqlDatetimeFunctions,
    ] {
        let list = value_of(id as u32);
        let list = list.as_list::<i32>();
        assert!(list.value(0).len() > 5, "{id:?} is short");
    }
    let case = value_of(SqlInfo::SqlIdentifierCase as u32);
    assert_eq!(
        case.as_primitive::<arrow::datatypes::Int32Type>().value(0),
        3,
        "unquoted names fold to lower case"
    );
    let transactions = value_of(SqlInfo::SqlTransactionsSupported as u32);
    assert!(!transactions.as_boolean().value(0));
    let cancel = value_of(SqlInfo::FlightSqlServerCancel as u32);
    assert!(cancel.as_boolean().value(0));
    // The JDBC driver reads the default isolation as a Long.
    let isolation = value_of(SqlInfo::SqlDefaultTransactionIsolation as u32);
    assert_eq!(isolation.data_type(), &arrow::datatypes::DataType::Int64);
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_info_tells_the_sql_size_limit() {
    use arrow::array::{Array, UnionArray};

    let gateway = Gateway::start_with_args(None, &["--max-sql-bytes", "4096"]).await;
    let mut client = gateway.client().await;
    let id = SqlInfo::SqlMaxStatementLength as u32;
    let info = client
        .flight_info(CommandGetSqlInfo { info: vec![id] })
        .await
        .unwrap();
    let batch = client.fetch(info).await.unwrap().batch();
    assert_eq!(batch.num_rows(), 1);
    let value = batch
        .column(1)
        .as_any()
        .downcast_ref::<UnionArray>()
        .unwrap()
        .value(0);
    assert_eq!(
        value.as_primitive::<arrow::datatypes::Int64Type>().value(0),
        4096
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_options_name_the_current_catalog_and_schema() {
    use arrow_flight::Action;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let mut answers = client
        .inner
        .do_action(Action {
            r#type: "GetSessionOptions".into(),
            body: Default::default(),
        })
        .await
        .expect("GetSessionOptions is answered")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one result");
    // GetSessionOptionsResult { session_options: {catalog: "kafka", schema: "default"} }
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.contains("catalog") && text.contains("kafka"), "{text}");
    assert!(
        text.contains("schema") && text.contains("default"),
        "{text}"
    );
}
