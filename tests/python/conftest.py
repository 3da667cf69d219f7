"""Fixtures for client tests: the real broker (from scripts/test.sh), the real
gateway binary on port 0, and confluent-kafka to produce test data."""

import datetime
import hashlib
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "registry"))
import test_registry  # noqa: E402 (the schema registry's test double)

DEADLINE_S = 30
# ADBC Flight SQL options for a gateway with TLS and sign-in on.
TLS_ROOT = "adbc.flight.sql.client_option.tls_root_certs"
AUTH_HEADER = "adbc.flight.sql.authorization_header"


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/test.sh", pytrace=False)
    return value


@pytest.fixture(scope="session")
def brokers():
    return _required_env("KAPPA_BROKERS")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(brokers, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config={"retention.ms": "-1"})],
        operation_timeout=DEADLINE_S,
    )
    for future in futures.values():
        future.result(timeout=DEADLINE_S)


def produce(brokers, topic, records):
    """records: iterable of dicts with partition, key, value, headers, timestamp (ms)."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    for r in records:
        producer.produce(
            topic,
            value=r.get("value"),
            key=r.get("key"),
            partition=r.get("partition", 0),
            headers=r.get("headers"),
            timestamp=r.get("timestamp", int(time.time() * 1000)),
            on_delivery=on_delivery,
        )
    remaining = producer.flush(DEADLINE_S)
    assert remaining == 0 and not errors, f"undelivered: {remaining}, errors: {errors}"


def delete_records(brokers, topic, partition, before):
    """DeleteRecords: the partition's log start moves to `before`."""
    from confluent_kafka import TopicPartition

    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.delete_records([TopicPartition(topic, partition, before)], request_timeout=DEADLINE_S)
    for future in futures.values():
        future.result(timeout=DEADLINE_S)


def protobuf_field(number, payload):
    """A length-delimited protobuf field, encoded by hand (pyarrow.flight speaks Flight, not Flight
    SQL, so tests that drive Flight SQL through it build the commands themselves)."""
    length, out = len(payload), bytearray([number << 3 | 2])
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + payload


def flight_sql_command(sql):
    """A Flight SQL CommandStatementQuery in a protobuf Any, for a FlightDescriptor."""
    return protobuf_field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + \
        protobuf_field(2, protobuf_field(1, sql.encode()))


class Gateway:
    def __init__(self, brokers, config_text=None, extra_args=(), env=None, listen="127.0.0.1:0", run_in=()):
        """`run_in`: a command the gateway runs under (`ip netns exec NAME`)."""
        binary = _required_env("KAPPA_GATEWAY_BIN")
        args = [*run_in, binary, "serve", "--listen", listen, "--brokers", brokers, *extra_args]
        self._config = None
        if config_text:
            self._config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            self._config.write(config_text)
            self._config.close()
            args += ["--config", self._config.name]
        env = dict(env or os.environ, KAPPA_LOG="warn")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        self.address = self._wait_for_address()

    def _wait_for_address(self):
        found = {}

        def read():
            for line in self.process.stdout:
                if line.startswith("listening on "):
                    found["addr"] = line.split(" ", 2)[2].strip()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(DEADLINE_S)
        if "addr" not in found:
            self.stop()
            raise RuntimeError("kappa-gateway did not print its address in time")
        return found["addr"]

    @property
    def uri(self):
        return f"grpc://{self.address}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self._config:
            os.unlink(self._config.name)


@pytest.fixture(scope="module")
def orders(brokers):
    """A 3-partition topic of JSON orders (and one bad record), declared as a table."""
    topic = unique("py-orders")
    create_topic(brokers, topic, partitions=3)
    now = int(time.time() * 1000)
    records = [
        {
            "partition": i % 3,
            "key": f"k{i}".encode(),
            "value": f'{{"id": {i}, "customer": "c{i % 7}", "amount": {i * 2.5}}}'.encode(),
            "headers": [("source", b"pytest")],
            "timestamp": now - 1000 + i,
        }
        for i in range(300)
    ]
    records.append({"partition": 0, "key": b"bad", "value": b"{oops", "timestamp": now})
    produce(brokers, topic, records)
    table = "orders_" + topic.split("-")[-1]
    config = (
        f'[[tables]]\nname = "{table}"\ntopic = "{topic}"\nformat = "json"\n'
        f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n'
    )
    gateway = Gateway(brokers, config)
    yield {"gateway": gateway, "table": table, "topic": topic, "count": len(records)}
    gateway.stop()


# A gateway with TLS, users, tokens and grants (test_security, test_clients).

def certificate(subject, issuer=None, issuer_key=None, ca=False, san=None):
    """A certificate for `subject`, self-signed or signed by `issuer`: (cert, key, PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert, key, pem, key_pem


def hash_password(password):
    """The hash `kappa-gateway hash-password` makes, for a users file."""
    run = subprocess.run([os.environ["KAPPA_GATEWAY_BIN"], "hash-password"], input=password + "\n",
                         capture_output=True, text=True, check=True)
    return run.stdout.strip()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key, ca_pem, _ = certificate("kappa test CA", ca=True)
    ip = ipaddress.ip_address("127.0.0.1")
    _, _, server_pem, server_key = certificate("127.0.0.1", ca.subject, ca_key,
                                               san=[x509.IPAddress(ip), x509.DNSName("localhost")])
    _, _, client_pem, client_key = certificate("analyst", ca.subject, ca_key)
    files = {"ca": ca_pem, "cert": server_pem, "key": server_key, "client_cert": client_pem, "client_key": client_key}
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return {"paths": paths, **files}


@pytest.fixture(scope="session")
def secured(brokers, pki, tmp_path_factory):
    """A gateway with TLS and sign-in on: a JSON table `orders_…` (n = 0‥4) and a raw topic
    `secrets_…`; users analyst (password s3cret, token bi-token: orders_* and system.partitions),
    admin (root-pw: everything) and reader (token no-system-token: orders_*)."""
    suffix = unique("sec").split("-")[-1]
    orders, secrets = f"orders_{suffix}", f"secrets_{suffix}"
    for topic in (orders, secrets):
        create_topic(brokers, topic, partitions=1)
        produce(brokers, topic, [{"partition": 0, "value": b'{"n": %d}' % i} for i in range(5)])
    config = f'[[tables]]\nname = "{orders}"\ntopic = "{orders}"\nformat = "json"\ncolumns = "n BIGINT"\n'
    users = tmp_path_factory.mktemp("users") / "users.toml"
    users.write_text(
        f'[[users]]\nname = "analyst"\npassword_hash = "{hash_password("s3cret")}"\n'
        f'tables = ["orders_*", "system.partitions"]\n\n'
        f'[[users]]\nname = "admin"\npassword_hash = "{hash_password("root-pw")}"\ntables = ["*", "system.*"]\n\n'
        f'[[users]]\nname = "reader"\ntables = ["orders_*"]\n\n'
        f'[[tokens]]\nuser = "reader"\nsha256 = "{hashlib.sha256(b"no-system-token").hexdigest()}"\n'
        f'expires = "2999-01-01T00:00:00Z"\n\n'
        f'[[tokens]]\nuser = "analyst"\nsha256 = "{hashlib.sha256(b"bi-token").hexdigest()}"\n'
        f'expires = "2999-01-01T00:00:00Z"\n\n'
        f'[[tokens]]\nuser = "analyst"\nsha256 = "{hashlib.sha256(b"old-token").hexdigest()}"\n'
        f'expires = "2001-01-01T00:00:00Z"\n'
    )
    paths = pki["paths"]
    gateway = Gateway(brokers, config, extra_args=["--users", str(users), "--tls-cert", str(paths["cert"]),
                                                   "--tls-key", str(paths["key"])])
    yield {"gateway": gateway, "uri": f"grpc+tls://{gateway.address}", "orders": orders, "secrets": secrets,
           "ca": pki["ca"].decode()}
    gateway.stop()


def query(gateway, sql):
    """The Arrow table `sql` answers on `gateway` (a new ADBC connection)."""
    import adbc_driver_flightsql.dbapi as flightsql

    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def closed_port():
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry():
    """The schema registry's test double (tests/registry/test_registry.py) on a free port: its URL."""
    server, url = test_registry.serve()
    yield url
    server.shutdown()


# Container images built by scripts/image.sh (test_image, test_compose).

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# scripts/image.sh's exit code when no container engine can run on this machine.
NO_ENGINE = 3


def build_image(*args):
    """Runs scripts/image.sh (installing Docker's engine and making the base the first time) and
    returns the image reference it prints last; skips, saying why, only where no engine can run."""
    run = subprocess.run(["bash", os.path.join(ROOT, "scripts", "image.sh"), *args],
                         capture_output=True, text=True, timeout=1800)
    if run.returncode == NO_ENGINE:
        pytest.skip("no container engine can run here: " + " ".join(run.stderr.splitlines()[-5:]))
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kappa_image():
    _required_env("KAPPA_GATEWAY_BIN")
    _required_env("KAPPA_COMPACTOR_BIN")
    return build_image()


@pytest.fixture(scope="session")
def broker_image(kappa_image):
    return build_image("broker")
