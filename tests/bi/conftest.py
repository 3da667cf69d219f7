"""Fixtures for the BI-tool tests. They run in their own virtual environment ($KAPPA_CACHE/venv-bi,
scripts/test-bi.sh): Apache Superset and flightsql-dbapi pin SQLAlchemy < 2, which the main venv's
sqlalchemy-adbc cannot share. The gateway, topic and producer helpers are tests/python's, loaded by
path so both suites start the real gateway binary (plain, or with TLS and sign-in) the same way."""

import importlib.util
import json
from pathlib import Path

import pytest


def _client_helpers():
    """tests/python/conftest.py as a module of its own: importing it as `conftest` would clash with
    this file."""
    path = Path(__file__).resolve().parents[1] / "python" / "conftest.py"
    spec = importlib.util.spec_from_file_location("kappa_client_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _client_helpers()
Gateway = _helpers.Gateway
create_topic = _helpers.create_topic
produce = _helpers.produce
unique = _helpers.unique
# Fixtures: KAPPA_BROKERS as scripts/test.sh sets it, and the gateway with TLS, users and grants.
brokers, pki, secured = _helpers.brokers, _helpers.pki, _helpers.secured

# Orders per region: distinct counts, so a chart's bar heights tell the regions apart.
REGIONS = {"north": 10, "south": 20, "east": 30}
COLUMNS = "id BIGINT, region VARCHAR, amount DOUBLE"


def sales_records():
    """Ids 0-9 are north, 10-29 south, 30-59 east; amount is 1.5 x id."""
    regions = [region for region, count in REGIONS.items() for _ in range(count)]
    return [
        {"partition": i % 2, "key": f"k{i}".encode(),
         "value": json.dumps({"id": i, "region": region, "amount": i * 1.5}).encode()}
        for i, region in enumerate(regions)
    ]


def table_config(table, topic):
    return f'[[tables]]\nname = "{table}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n'


@pytest.fixture(scope="session")
def sales(brokers):
    """A 2-partition topic of JSON sales declared as table `sales_<suffix>`, served by a plaintext,
    anonymous gateway."""
    topic = unique("bi-sales")
    create_topic(brokers, topic, partitions=2)
    produce(brokers, topic, sales_records())
    table = "sales_" + topic.split("-")[-1]
    gateway = Gateway(brokers, table_config(table, topic))
    host, port = gateway.address.rsplit(":", 1)
    yield {"gateway": gateway, "host": host, "port": int(port), "table": table, "topic": topic}
    gateway.stop()
