"""Metadata as drivers and BI tools read it: ADBC's get_info, get_objects at
every depth, table types, the current catalog and schema; SQLAlchemy 2 through
the sqlalchemy-adbc dialect (reflection and a Core select with parameters)."""

import adbc_driver_flightsql.dbapi as flightsql
import pytest
import sqlalchemy

TOPIC_COLUMNS = ["_partition", "_offset", "_timestamp", "_key", "_headers", "id", "customer", "amount", "_error", "_value"]
TYPE_NAMES = {
    "_partition": "INTEGER",
    "_offset": "BIGINT",
    "_timestamp": "TIMESTAMP WITH TIME ZONE",
    "_key": "VARBINARY",
    "_headers": "ARRAY<STRUCT<key VARCHAR, value VARBINARY>>",
    "id": "BIGINT",
    "customer": "VARCHAR",
    "amount": "DOUBLE",
    "_error": "VARCHAR",
    "_value": "VARBINARY",
}


@pytest.fixture
def conn(orders):
    with flightsql.connect(orders["gateway"].uri, autocommit=True) as conn:
        yield conn


def test_get_info_names_kappa(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "kappa"
    assert info["vendor_version"]


def test_current_catalog_and_schema(conn):
    assert conn.adbc_current_catalog == "kafka"
    assert conn.adbc_current_db_schema == "default"


def test_table_types_are_what_sqlalchemy_dialects_filter_on(conn):
    assert conn.adbc_get_table_types() == ["table", "view"]


def test_get_objects_catalogs(conn):
    objects = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["kafka"]


def test_get_objects_db_schemas_lists_information_schema(conn):
    objects = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
    schemas = [s["db_schema_name"] for s in objects[0]["catalog_db_schemas"]]
    assert schemas == ["default", "information_schema", "system"]
    assert all(s["db_schema_tables"] is None for s in objects[0]["catalog_db_schemas"])


def test_get_objects_tables_with_types(conn, orders):
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = {
        (s["db_schema_name"], t["table_name"]): t
        for s in objects[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    assert tables[("default", orders["table"])]["table_type"] == "table"
    assert tables[("default", orders["topic"])]["table_type"] == "table"
    assert tables[("system", "partitions")]["table_type"] == "table"
    assert tables[("information_schema", "columns")]["table_type"] == "view"
    assert tables[("default", orders["table"])]["table_columns"] is None


def test_get_objects_filters_on_table_type(conn, orders):
    objects = conn.adbc_get_objects(depth="tables", table_types_filter=["view"]).read_all().to_pylist()
    listed = {(s["db_schema_name"], t["table_name"]) for s in objects[0]["catalog_db_schemas"] for t in s["db_schema_tables"] or []}
    assert listed and all(schema == "information_schema" for schema, _ in listed)


def test_get_objects_columns_carry_xdbc_type_names(conn, orders):
    objects = conn.adbc_get_objects(
        depth="columns", catalog_filter="kafka", db_schema_filter="default", table_name_filter=orders["table"]
    ).read_all().to_pylist()
    (table,) = objects[0]["catalog_db_schemas"][0]["db_schema_tables"]
    columns = table["table_columns"]
    assert [c["column_name"] for c in columns] == TOPIC_COLUMNS
    assert {c["column_name"]: c["xdbc_type_name"] for c in columns} == TYPE_NAMES
    assert [c["ordinal_position"] for c in columns] == list(range(1, 11))
    by_name = {c["column_name"]: c for c in columns}
    assert by_name["_offset"]["xdbc_data_type"] == -5  # BIGINT
    assert by_name["_timestamp"]["xdbc_data_type"] == 93  # TIMESTAMP


def test_table_schema_keeps_nullability_and_type_names(conn, orders):
    schema = conn.adbc_get_table_schema(orders["table"], catalog_filter="kafka", db_schema_filter="default")
    assert not schema.field("_offset").nullable
    assert schema.field("customer").nullable
    assert schema.field("_timestamp").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"TIMESTAMP WITH TIME ZONE"


def test_query_results_carry_sql_type_names(conn, orders):
    """What JDBC's ResultSetMetaData.getColumnTypeName answers from (DBeaver shows it per column)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT customer, sum(amount) AS total, max(_timestamp) AS last FROM {orders['table']} "
                    "GROUP BY customer LIMIT 1")
        schema = cur.fetch_arrow_table().schema
    type_name = lambda column: schema.field(column).metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"].decode()  # noqa: E731
    assert [type_name(c) for c in ("customer", "total", "last")] == ["VARCHAR", "DOUBLE", "TIMESTAMP WITH TIME ZONE"]


@pytest.fixture
def engine(orders):
    # sqlalchemy-adbc defaults to TLS; the test gateway is plaintext.
    engine = sqlalchemy.create_engine(f"adbc+flightsql://{orders['gateway'].address}?tls=false")
    yield engine
    engine.dispose()


def test_sqlalchemy_lists_tables_and_schemas(engine, orders):
    inspector = sqlalchemy.inspect(engine)
    assert {"default", "information_schema", "system"} <= set(inspector.get_schema_names())
    names = inspector.get_table_names(schema="default")
    assert orders["table"] in names and orders["topic"] in names
    assert "partitions" in inspector.get_table_names(schema="system")
    assert "columns" in inspector.get_view_names(schema="information_schema")


def test_sqlalchemy_reflects_typed_columns(engine, orders):
    types = sqlalchemy.types
    columns = {c["name"]: c["type"] for c in sqlalchemy.inspect(engine).get_columns(orders["table"], schema="default")}
    assert list(columns) == TOPIC_COLUMNS
    assert isinstance(columns["_partition"], types.Integer)
    assert isinstance(columns["id"], types.BigInteger)
    assert isinstance(columns["customer"], types.String)
    assert isinstance(columns["amount"], types.Float)
    assert isinstance(columns["_timestamp"], types.DateTime)
    assert isinstance(columns["_key"], types.LargeBinary)


def test_sqlalchemy_core_select_with_parameters(engine, orders):
    table = sqlalchemy.Table(orders["table"], sqlalchemy.MetaData(), autoload_with=engine, schema="default")
    query = (
        sqlalchemy.select(table.c.id, table.c.customer, table.c.amount)
        .where(table.c.customer == "c3")
        .where(table.c.id >= 100)
        .order_by(table.c.id)
        .limit(3)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    assert [tuple(r) for r in rows] == [(101, "c3", 252.5), (108, "c3", 270.0), (115, "c3", 287.5)]


def test_listing_tables_with_the_broker_down_fails_instead_of_answering_empty():
    """An empty list would look complete: SHOW TABLES, information_schema and GetTables say
    Unavailable, as a query does, within the Kafka request timeout."""
    from conftest import Gateway, closed_port

    gateway = Gateway(f"127.0.0.1:{closed_port()}", extra_args=["--kafka-request-timeout", "2s"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn:
            for sql in ["SHOW TABLES", "SELECT table_name FROM information_schema.tables"]:
                with conn.cursor() as cur, pytest.raises(flightsql.OperationalError) as failed:
                    cur.execute(sql)
                    cur.fetchall()
                assert "Unavailable" in str(failed.value) and "broker unavailable" in str(failed.value), failed.value
            with pytest.raises(flightsql.Error) as failed:
                conn.adbc_get_objects(depth="tables").read_all()
            assert "Unavailable" in str(failed.value), failed.value
            # What does not list topics still answers.
            with conn.cursor() as cur:
                cur.execute("SELECT 1 AS one")
                assert cur.fetchall() == [(1,)]
    finally:
        gateway.stop()
