"""Runs the demo's queries through the ADBC Flight SQL driver and prints the results."""

import re
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
    # Range queries: only the slice of the log they ask for is read.
    for title, query in [
        ("orders of the last 5 minutes, per customer",
         "SELECT customer, count(*) AS orders FROM orders "
         "WHERE _timestamp >= now() - INTERVAL '5 minutes' GROUP BY customer ORDER BY orders DESC"),
        ("the 3 newest orders of partition 1",
         "SELECT _partition, _offset, id, customer, amount FROM orders "
         "WHERE _partition = 1 ORDER BY _offset DESC LIMIT 3"),
    ]:
        cur.execute(query)
        print(f"\n{title}:")
        print(cur.fetch_df().to_string(index=False))
        # What the scan read, from EXPLAIN ANALYZE's metrics.
        cur.execute("EXPLAIN ANALYZE " + query)
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
        fetched = re.search(r"KafkaScanExec:.*records_fetched=([^,\]]+)", plan)
        print(f"(records read from Kafka: {fetched.group(1) if fetched else '?'})")
    cur.execute("EXPLAIN SELECT * FROM orders WHERE _partition = 1 AND _offset BETWEEN 100 AND 109")
    plan = cur.fetch_arrow_table().column("plan")[1].as_py()
    print("\nEXPLAIN of one partition's offsets 100..109:")
    print(plan)

