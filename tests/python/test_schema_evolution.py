"""A table definition that changes: a column added to the definition is added to the lake table
(older files read it as null), in the gateway's union before and after the compactor merges it,
and for independent readers; a column dropped from the definition stops being written."""

import adbc_driver_flightsql.dbapi as flightsql
from deltalake import DeltaTable

from conftest import Gateway, produce
from test_compactor import compactor, orders, table  # noqa: F401 (fixture)


def query(gateway, sql):
    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def define(table, columns):
    table["config"].write_text(
        f'[[tables]]\nname = "{table["name"]}"\ntopic = "{table["topic"]}"\nformat = "json"\n'
        f'columns = "{columns}"\n'
    )


def amounts_by_id(gateway, name):
    rows = query(gateway, f"SELECT id, amount FROM {name} WHERE id IS NOT NULL")
    return {r["id"]: r["amount"] for r in rows}


def test_a_column_added_to_the_definition_reads_as_null_from_older_files(brokers, table):
    name = table["name"]
    define(table, "id BIGINT, customer VARCHAR")
    produce(brokers, table["topic"], orders(60))  # the records carry "amount" all along
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    assert "amount" not in DeltaTable(str(table["path"])).schema().to_arrow().names

    define(table, "id BIGINT, customer VARCHAR, amount DOUBLE")
    produce(brokers, table["topic"], orders(30, start=60))  # only in Kafka for now
    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        # Before the compactor runs again: the lake has no such column yet.
        amounts = amounts_by_id(gateway, name)
        assert len(amounts) == 88  # two poison records
        assert all(amounts[i] is None for i in amounts if i < 60), "tiered before the column existed"
        assert all(amounts[i] == i * 1.5 for i in amounts if i >= 60), "decoded from Kafka"
    finally:
        gateway.stop()

    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s")
    assert run.returncode == 0, run.stderr
    dt = DeltaTable(str(table["path"]))
    assert "amount" in dt.schema().to_arrow().names, "the new column was merged into the lake table"
    lake = {r["id"]: r["amount"] for r in dt.to_pyarrow_table(columns=["id", "amount"]).to_pylist()
            if r["id"] is not None}
    assert len(lake) == 88
    assert all(lake[i] is None for i in lake if i < 60) and all(lake[i] == i * 1.5 for i in lake if i >= 60)

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        assert amounts_by_id(gateway, name) == lake, "the gateway reads the same from the lake"
    finally:
        gateway.stop()


def test_a_column_dropped_from_the_definition_is_no_longer_written(brokers, table):
    name = table["name"]
    define(table, "id BIGINT, customer VARCHAR, amount DOUBLE")
    produce(brokers, table["topic"], orders(30))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0

    define(table, "id BIGINT, amount DOUBLE")
    produce(brokers, table["topic"], orders(30, start=30))
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s")
    assert run.returncode == 0, run.stderr
    rows = DeltaTable(str(table["path"])).to_pyarrow_table(columns=["id", "customer"]).to_pylist()
    customers = {r["id"]: r["customer"] for r in rows if r["id"] is not None}
    assert len(customers) == 58
    assert all(customers[i] == f"c{i % 5}" for i in customers if i < 30)
    assert all(customers[i] is None for i in customers if i >= 30)

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        rows = query(gateway, f"SELECT * FROM {name} WHERE id IS NOT NULL")
        assert len(rows) == 58 and "customer" not in rows[0]
    finally:
        gateway.stop()
