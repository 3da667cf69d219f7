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

        def show(title, sql):
            cur.execute(sql)
            print(f"\n{title}\n{cur.fetch_arrow_table().to_pandas().to_string(index=False)}")

        show(
            "through kappa, one table: each partition's rows from the lake (below its watermark) and Kafka:",
            "SELECT o._partition AS partition, p.lake_watermark, "
            "count(*) FILTER (WHERE o._offset < p.lake_watermark) AS from_lake, "
            "count(*) FILTER (WHERE o._offset >= p.lake_watermark) AS from_kafka, "
            "count(DISTINCT o._offset) AS distinct_offsets "
            "FROM orders o JOIN system.partitions p ON p.topic = 'orders' AND p.partition = o._partition "
            "GROUP BY 1, 2 ORDER BY 1",
        )
        w = watermarks[0]
        show(
            f"the seam in partition 0 (watermark {w}): no gap, no duplicate:",
            f"SELECT _offset, id, customer, amount, CASE WHEN _offset < {w} THEN 'lake' ELSE 'kafka' END AS tier "
            f"FROM orders WHERE _partition = 0 AND _offset BETWEEN {w - 2} AND {w + 1} ORDER BY _offset",
        )
        cur.execute("EXPLAIN SELECT * FROM orders")
        plan = cur.fetch_arrow_table().column("plan")[1].as_py()
        print("\nthe plan reads both tiers:")
        print("\n".join(line.strip() for line in plan.splitlines() if "LakeTierExec" in line or "KafkaScanExec" in line))
