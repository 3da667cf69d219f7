"""Runs one query through the ADBC Flight SQL driver and prints the result."""

import sys

import adbc_driver_flightsql.dbapi as flightsql

uri = sys.argv[1] if len(sys.argv) > 1 else "grpc://127.0.0.1:50051"
sql = """
SELECT customer, count(*) AS orders, round(sum(amount), 2) AS revenue,
       min(_timestamp) AS first_order, max(_timestamp) AS last_order
FROM orders
GROUP BY customer
ORDER BY revenue DESC
"""
with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
    cur.execute(sql)
    print(cur.fetch_df().to_string(index=False))
    cur.execute("SELECT _partition, count(*) AS records, min(_offset) AS first, max(_offset) AS last "
                "FROM orders GROUP BY _partition ORDER BY _partition")
    print()
    print(cur.fetch_df().to_string(index=False))
