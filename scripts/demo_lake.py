"""Reads the demo's tiered Delta table with the deltalake package and DuckDB."""

import sys

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
