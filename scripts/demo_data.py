"""Produces the demo's sample data: JSON orders with keys, timestamps and headers."""

import argparse
import json
import random
import time
from datetime import datetime, timezone

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

CUSTOMERS = ["ada", "grace", "linus", "barbara", "edsger", "margaret", "ken", "dennis"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--first-id", type=int, default=0, help="id of the first order (to add more later)")
    args = parser.parse_args()

    admin = AdminClient({"bootstrap.servers": args.brokers})
    if args.topic not in admin.list_topics(timeout=10).topics:
        for f in admin.create_topics([NewTopic(args.topic, args.partitions, 1)]).values():
            f.result(timeout=30)

    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 20})
    rng = random.Random(42)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - args.count * 1000  # one order a second, ending now
    for i in range(args.count):
        ts = start_ms + i * 1000
        order = {
            "id": args.first_id + i,
            "customer": rng.choice(CUSTOMERS),
            "amount": round(rng.uniform(5, 500), 2),
            "placed_at": datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat(),
        }
        producer.produce(
            args.topic,
            key=order["customer"].encode(),
            value=json.dumps(order).encode(),
            timestamp=ts,
            headers=[("source", b"demo"), ("schema", b"orders.v1")],
        )
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    if left:
        raise SystemExit(f"{left} records not delivered")
    print(f"produced {args.count} orders to '{args.topic}' ({args.partitions} partitions)")


if __name__ == "__main__":
    main()
