"""Each notebook and BI client in its ordinary workflow against a gateway with TLS and sign-in on:
it connects, lists the tables with their column types and runs a query with bound parameters.

The gateway (conftest's `secured`) serves `orders_…` (JSON, n = 0‥4) to the user analyst."""

import adbc_driver_flightsql.dbapi as flightsql
import pandas as pd
import polars as pl
import pyarrow.flight as flight
import pytest
import sqlalchemy
from IPython.core.interactiveshell import InteractiveShell
from sql.connection import ConnectionManager

from conftest import TLS_ROOT, flight_sql_command

ANALYST = {"username": "analyst", "password": "s3cret"}


@pytest.fixture
def conn(secured):
    """An ADBC connection over TLS, signed in with a password."""
    with flightsql.connect(secured["uri"], db_kwargs={TLS_ROOT: secured["ca"], **ANALYST}, autocommit=True) as conn:
        yield conn


@pytest.fixture
def engine(secured):
    """SQLAlchemy 2 through sqlalchemy-adbc over TLS (its default), the static token as the password
    (the dialect sends a URL's password as a Bearer token)."""
    url = sqlalchemy.URL.create("adbc+flightsql", username="analyst", password="bi-token",
                                host="127.0.0.1", port=int(secured["gateway"].address.rsplit(":", 1)[1]),
                                query={TLS_ROOT: secured["ca"]})
    engine = sqlalchemy.create_engine(url)
    yield engine
    engine.dispose()


def test_adbc_lists_typed_tables_and_binds_parameters(conn, secured):
    tables = {t["table_name"]: t for c in conn.adbc_get_objects(depth="columns").read_all().to_pylist()
              for s in c["catalog_db_schemas"] if s["db_schema_name"] == "default" for t in s["db_schema_tables"]}
    assert secured["orders"] in tables and all(name.startswith("orders_") for name in tables), \
        "only the granted tables (orders_*) are listed"
    assert tables[secured["orders"]]["table_type"] == "table"
    types = {c["column_name"]: c["xdbc_type_name"] for c in tables[secured["orders"]]["table_columns"]}
    assert types["n"] == "BIGINT" and types["_timestamp"] == "TIMESTAMP WITH TIME ZONE", types
    with conn.cursor() as cur:
        cur.execute(f"SELECT n FROM {secured['orders']} WHERE n >= ? ORDER BY n", parameters=(3,))
        assert cur.fetchall() == [(3,), (4,)]


def test_pandas_reads_with_parameters_through_sqlalchemy(engine, secured):
    frame = pd.read_sql(sqlalchemy.text(f"SELECT n FROM {secured['orders']} WHERE n < :below ORDER BY n"),
                        engine, params={"below": 2})
    assert frame["n"].tolist() == [0, 1]


def test_polars_reads_with_parameters(conn, engine, secured):
    sql = f"SELECT n, _offset FROM {secured['orders']} WHERE n BETWEEN ? AND ? ORDER BY n"
    frame = pl.read_database(sql, connection=conn, execute_options={"parameters": (1, 2)})
    assert frame.schema == pl.Schema({"n": pl.Int64, "_offset": pl.Int64})
    assert frame["n"].to_list() == [1, 2]
    named = pl.read_database(sqlalchemy.text(f"SELECT n FROM {secured['orders']} WHERE n > :low ORDER BY n"),
                             connection=engine, execute_options={"parameters": {"low": 3}})
    assert named["n"].to_list() == [4]


def test_sqlalchemy_reflects_and_selects_with_parameters(engine, secured):
    inspector = sqlalchemy.inspect(engine)
    listed = inspector.get_table_names(schema="default")
    assert secured["orders"] in listed and secured["secrets"] not in listed, listed
    columns = {c["name"]: c["type"] for c in inspector.get_columns(secured["orders"], schema="default")}
    assert isinstance(columns["n"], sqlalchemy.BigInteger), columns
    table = sqlalchemy.Table(secured["orders"], sqlalchemy.MetaData(), autoload_with=engine, schema="default")
    query = sqlalchemy.select(table.c.n).where(table.c.n > 0).order_by(table.c.n).limit(2)
    with engine.connect() as connection:
        assert [row.n for row in connection.execute(query)] == [1, 2]


def test_jupysql_magic_binds_named_parameters(engine, secured):
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "sql")
        shell.run_line_magic("config", 'SqlMagic.named_parameters = "enabled"')
        shell.run_line_magic("config", "SqlMagic.displaylimit = 0")
        shell.user_ns.update(engine=engine, low=2)
        shell.run_line_magic("sql", "engine")
        result = shell.run_cell_magic("sql", "", f"SELECT n FROM {secured['orders']} WHERE n >= :low ORDER BY n")
        assert result.DataFrame()["n"].tolist() == [2, 3, 4]
        tables = shell.run_line_magic("sqlcmd", "tables --schema default")
        assert secured["orders"] in str(tables)
    finally:
        # Closed here, not at exit (where jupysql prints each URL, certificate included).
        ConnectionManager.close_all()
        InteractiveShell.clear_instance()


def test_pyarrow_flight_get_schema_plans_without_running(secured):
    """Plain pyarrow.flight, signed in with Basic: GetSchema answers the schema GetFlightInfo and
    DoGet give, column types and SQL type names included, without running the query."""
    client = flight.FlightClient(secured["uri"], tls_root_certs=secured["ca"])
    try:
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("analyst", "s3cret")])
        descriptor = flight.FlightDescriptor.for_command(
            flight_sql_command(f"SELECT n, _timestamp FROM {secured['orders']} WHERE n > 2"))
        schema = client.get_schema(descriptor, options).schema
        assert schema.names == ["n", "_timestamp"]
        assert schema.field("_timestamp").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"TIMESTAMP WITH TIME ZONE"
        info = client.get_flight_info(descriptor, options)
        assert info.schema.equals(schema, check_metadata=True)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        assert table.schema.equals(schema, check_metadata=True) and table.column("n").to_pylist() == [3, 4]
    finally:
        client.close()
