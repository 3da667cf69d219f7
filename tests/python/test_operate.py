"""Operating kappa: both binaries' `/metrics` on `--metrics-listen` after a known workload (the
compactor's tiering counters, the gateway's lake lag per table), every metric the Grafana
dashboard in deploy/grafana draws found in them, and the compactor's clean exit on SIGTERM."""

import json
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import DEADLINE_S, Gateway, create_topic, produce, unique
from test_compactor import s3  # noqa: F401 (the fixture: a moto S3 server with a bucket)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "kappa.json"


def samples(text):
    """{series: value} of an exposition (`name{labels}` as written)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def get(address, path):
    with urllib.request.urlopen(f"http://{address}{path}", timeout=DEADLINE_S) as answer:
        return answer.status, answer.read().decode()


def wait_for(check, what):
    deadline = time.monotonic() + DEADLINE_S * 2
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what}: not within the deadline")


class Compactor:
    """`kappa-compactor run --every 1h` with its metrics port: one pass, then it waits."""

    def __init__(self, brokers, lake, topic):
        binary = os.environ.get("KAPPA_COMPACTOR_BIN")
        if not binary:
            pytest.fail("KAPPA_COMPACTOR_BIN is not set: run scripts/test.sh", pytrace=False)
        self.process = subprocess.Popen(
            [binary, "run", "--every", "1h", "--tier-after", "0s", "--brokers", brokers, "--lake", str(lake),
             "--table", topic, "--metrics-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, KAPPA_LOG="warn"))
        found = {}

        def read():
            for line in self.process.stdout:
                if line.startswith("metrics on "):
                    found["addr"] = line.split(" ", 2)[2].strip()
            # Keep draining: the pass prints its summary later.

        threading.Thread(target=read, daemon=True).start()
        self.address = wait_for(lambda: found.get("addr"), "the compactor's metrics address")


def test_metrics_of_both_binaries_and_the_dashboard(brokers, tmp_path):
    topic = unique("ops")
    create_topic(brokers, topic, partitions=2)
    produce(brokers, topic, [{"partition": i % 2, "value": b"x%d" % i} for i in range(40)])
    lake = tmp_path / "lake"

    compactor = Compactor(brokers, lake, topic)
    try:
        assert get(compactor.address, "/healthz")[0] == 200
        after_pass = wait_for(
            lambda: (m := samples(get(compactor.address, "/metrics")[1]))
            ["kappa_compactor_last_success_timestamp_seconds"] > 0 and m,
            "the compactor's first pass")
        assert after_pass["kappa_compactor_records_tiered_total"] == 40
        # One commit per partition at most; at least one.
        assert after_pass['kappa_compactor_commits_total{outcome="ok"}'] >= 1
        assert after_pass['kappa_compactor_commits_total{outcome="error"}'] == 0
        assert abs(after_pass["kappa_compactor_last_success_timestamp_seconds"] - time.time()) < 600
        assert any(s.startswith('kappa_build_info{binary="kappa-compactor"') for s in after_pass)
        compactor_text = get(compactor.address, "/metrics")[1]

        # 7 records more, in Kafka only: the gateway's lag for the table.
        produce(brokers, topic, [{"partition": 0, "value": b"late"} for _ in range(7)])
        gateway = Gateway(brokers, extra_args=["--lake", str(lake), "--metrics-listen", "127.0.0.1:0"])
        try:
            address = gateway_metrics_address(gateway)
            wait_for(lambda: get_status(address, "/readyz") == 200, "the gateway ready")
            gateway_text = get(address, "/metrics")[1]
            lag = samples(gateway_text)
            assert lag[f'kappa_table_lake_lag_records{{table="{topic}"}}'] == 7
            assert lag[f'kappa_table_lake_lag_seconds{{table="{topic}"}}'] >= 0
        finally:
            gateway.stop()

        # Every metric the dashboard draws is one of the two binaries' series.
        served = set(re.sub(r"\{.*", "", s) for s in {**samples(gateway_text), **samples(compactor_text)})
        drawn = set(re.findall(r"\bkappa_[a-z_]+", json.dumps(json.loads(DASHBOARD.read_text()))))
        assert drawn, "the dashboard draws no kappa metric"
        assert drawn <= served, f"drawn but not served: {sorted(drawn - served)}"

        # SIGTERM while idle between passes: not ready, then a clean exit.
        compactor.process.send_signal(signal.SIGTERM)
        assert compactor.process.wait(DEADLINE_S) == 0
    finally:
        if compactor.process.poll() is None:
            compactor.process.kill()


def get_status(address, path):
    try:
        return get(address, path)[0]
    except urllib.error.HTTPError as e:
        return e.code


def gateway_metrics_address(gateway):
    """The `metrics on` line the gateway prints after `listening on`."""
    line = gateway.process.stdout.readline()
    assert line.startswith("metrics on "), line
    return line.split(" ", 2)[2].strip()


def healthcheck(*args):
    run = subprocess.run([os.environ["KAPPA_GATEWAY_BIN"], "healthcheck", *args], capture_output=True, text=True,
                         timeout=DEADLINE_S)
    return run.returncode, run.stdout + run.stderr


def test_healthcheck_over_tls_with_sign_in_on(secured, pki):
    """The health service answers on the TLS Flight port with no credentials; `healthcheck` trusts the
    gateway's certificate through --ca, and refuses it without."""
    address = f"https://{secured['gateway'].address}"
    ca = str(pki["paths"]["ca"])
    code, output = wait_for(lambda: (r := healthcheck("--address", address, "--ca", ca))[0] == 0 and r,
                            "the TLS gateway SERVING")
    assert "SERVING" in output
    code, output = healthcheck("--address", address)
    assert code == 1 and "cannot connect" in output, output


def test_a_gateway_on_an_s3_lake_becomes_ready(brokers, s3):
    """Readiness lists the lake: on an object store too (moto's S3 server), not only in a folder."""
    gateway = Gateway(brokers, extra_args=["--lake", "s3://lake/kappa", "--metrics-listen", "127.0.0.1:0"],
                      env=dict(os.environ, **s3["options"]))
    try:
        address = gateway_metrics_address(gateway)
        wait_for(lambda: get_status(address, "/readyz") == 200, "the gateway on S3 ready")
        code, output = healthcheck("--address", gateway.address)
        assert code == 0, output
    finally:
        gateway.stop()
