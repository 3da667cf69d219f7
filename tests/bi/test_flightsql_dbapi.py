"""flightsql-dbapi 0.2.2, the DB-API driver and SQLAlchemy 1.4 dialect Apache Superset reaches kappa
through (`datafusion://HOST:PORT`): queries, reflection with typed columns, Core selects, and TLS
with a password or a static token.

What the driver does on its own (read in its source, seen against kappa):
- Without `feature-sqlalchemy-prepared-statements=on` in the URL its SQLAlchemy compiler inlines
  every bound value as a literal (a `bindparam` given its value only at execute time renders as
  NULL); with it, values travel as DoPut parameters (dense unions).
- After DoPut it executes the handle it prepared, not the one DoPut returns.
- Errors are pyarrow.flight's, not the DB-API's (so SQLAlchemy does not wrap them).
- Any value of `insecure` (even `False`) means plaintext; its URL cannot name a CA, so over TLS the
  dialect either trusts the system's roots or skips verification (`disable_server_verification`).
  The DB-API client takes pyarrow.flight's `tls_root_certs`.
"""

import pyarrow.flight as flight
import pytest
import sqlalchemy
from flightsql import FlightSQLClient, connect
from sqlalchemy import types


def client(sales, **options):
    return FlightSQLClient(host=sales["host"], port=sales["port"], insecure=True, **options)


def test_dbapi_cursor_reads_rows_with_their_types(sales):
    with connect(client(sales)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, region, amount FROM {sales['table']} WHERE id < 3 ORDER BY id")
        assert cur.fetchall() == [[0, "north", 0.0], [1, "north", 1.5], [2, "north", 3.0]]
        assert cur.description == [("id", types.BIGINT), ("region", types.TEXT), ("amount", types.FLOAT)]


def test_dbapi_cursor_binds_parameters(sales):
    with connect(client(sales)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) AS n FROM {sales['table']} WHERE region = ? AND id >= ?", ("east", 40))
        assert cur.fetchall() == [[20]]


@pytest.fixture
def engine(sales):
    engine = sqlalchemy.create_engine(f"datafusion://{sales['host']}:{sales['port']}?insecure=True")
    yield engine
    engine.dispose()


def test_sqlalchemy_lists_schemas_and_tables(engine, sales):
    inspector = sqlalchemy.inspect(engine)
    assert {"default", "information_schema", "system"} <= set(inspector.get_schema_names())
    tables = inspector.get_table_names(schema="default")
    assert sales["table"] in tables and sales["topic"] in tables, tables
    assert "partitions" in inspector.get_table_names(schema="system")


def test_sqlalchemy_reflects_typed_columns(engine, sales):
    columns = {c["name"]: c for c in sqlalchemy.inspect(engine).get_columns(sales["table"], schema="default")}
    assert list(columns) == ["_partition", "_offset", "_timestamp", "_key", "_headers",
                             "id", "region", "amount", "_error", "_value"]
    expected = {"_partition": types.Integer, "_offset": types.BigInteger, "_timestamp": types.DateTime,
                "_key": types.BINARY, "id": types.BigInteger, "region": types.String, "amount": types.Float}
    for name, kind in expected.items():
        assert isinstance(columns[name]["type"], kind), (name, columns[name]["type"])
    assert not any(isinstance(c["type"], types.NullType) for c in columns.values()), columns
    assert not columns["_offset"]["nullable"] and columns["region"]["nullable"]


def core_select(engine, sales, low):
    table = sqlalchemy.Table(sales["table"], sqlalchemy.MetaData(), autoload_with=engine, schema="default")
    return (sqlalchemy.select(table.c.id, table.c.region, table.c.amount)
            .where(table.c.id > low).order_by(table.c.id).limit(3))


def test_sqlalchemy_core_select_with_inlined_values(engine, sales):
    with engine.connect() as conn:
        rows = conn.execute(core_select(engine, sales, 50)).fetchall()
    assert [tuple(r) for r in rows] == [(51, "east", 76.5), (52, "east", 78.0), (53, "east", 79.5)]


def test_sqlalchemy_core_select_with_bound_parameters(sales):
    engine = sqlalchemy.create_engine(
        f"datafusion://{sales['host']}:{sales['port']}?insecure=True&feature-sqlalchemy-prepared-statements=on")
    try:
        with engine.connect() as conn:
            query = core_select(engine, sales, sqlalchemy.bindparam("low"))
            rows = conn.execute(query, {"low": 50}).fetchall()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(51, "east", 76.5), (52, "east", 78.0), (53, "east", 79.5)]


def tls_client(secured, **options):
    host, port = secured["gateway"].address.rsplit(":", 1)
    return FlightSQLClient(host=host, port=int(port), **options)


def test_dbapi_over_tls_with_a_password(secured):
    with connect(tls_client(secured, user="analyst", password="s3cret", tls_root_certs=secured["ca"])) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) AS n FROM {secured['orders']}")
            assert cur.fetchall() == [[5]]


def test_dbapi_over_tls_refuses_a_wrong_password_or_an_unknown_ca(secured):
    with pytest.raises(flight.FlightUnauthenticatedError, match="wrong user name or password"):
        tls_client(secured, user="analyst", password="guess", tls_root_certs=secured["ca"])
    # A token needs no handshake, so the first query meets the unknown CA (over a handshake,
    # pyarrow reports it as "Could not finish writing before closing").
    with connect(tls_client(secured, token="bi-token")) as conn, conn.cursor() as cur:
        with pytest.raises(flight.FlightUnavailableError, match="certificate verify failed"):
            cur.execute("SELECT 1")


@pytest.mark.parametrize("url", ["datafusion://analyst:s3cret@{address}", "datafusion://{address}&token=bi-token"],
                         ids=["password", "token"])
def test_sqlalchemy_over_tls_lists_and_reads_only_granted_tables(secured, url):
    """The dialect's URL carries a user and password (Basic sign-in, then the Bearer token the
    gateway returns) or a static token; it cannot name a CA, so verification is off."""
    address = f"{secured['gateway'].address}?disable_server_verification=True"
    engine = sqlalchemy.create_engine(url.format(address=address))
    try:
        tables = sqlalchemy.inspect(engine).get_table_names(schema="default")
        assert secured["orders"] in tables and secured["secrets"] not in tables, tables
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {secured['orders']}")).scalar() == 5
        # The driver raises pyarrow's errors as they are, not DB-API ones.
        with pytest.raises(flight.FlightUnauthorizedError, match=f"may not read default.{secured['secrets']}"):
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {secured['secrets']}"))
    finally:
        engine.dispose()
