"""Reads the demo's tiered Delta table with the deltalake package and DuckDB, then through kappa,
where the table is the lake below each partition's watermark and Kafka from it on."""

import sys

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
from deltalake import DeltaTable

path = sys.argv[1]
table = DeltaTable(path)
watermarks = {p: table.transaction_version(f"kappa/orders/{p}") for p in range(3)}
print(f"\nDelta table {path}: version {table.version()}, watermarks (next offset to tier) {watermarks}")
files = table.file_uris()
print(
    duckdb.sql(
        f"SELECT _partition, count(*) AS records, min(_offset) AS first, max(_offset) AS last, "
        f"count(DISTINCT _date) AS days FROM read_parquet({files!r}) GROUP BY 1 ORDER BY 1"
    )
)

if len(sys.argv) > 2:
    with flightsql.connect(sys.argv[2], autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (_partition, _offset)) FROM orders")
        total, distinct = cur.fetchone()
        print(f"\nthrough kappa: {total} orders ({distinct} distinct offsets), from the lake and Kafka:")
        cur.execute("EXPLAIN SELECT * FROM orders")
        plan = cur.fetch_arrow_table().column("plan")[1].as_py()
        print("\n".join(line.strip() for line in plan.splitlines() if "ScanExec" in line or "ScanMetaExec" in line))

