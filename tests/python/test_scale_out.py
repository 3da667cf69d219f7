"""One query over three gateways: the gateway a query arrives at plans it and runs its stages'
tasks on itself and the two others (datafusion-distributed), each task reading its share of the
pinned offsets. The answers are those of a gateway on its own, and the work is spread."""

import json
import os
import random
import re
import subprocess
import sys
import threading
import time

import pytest

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_manager import AdbcStatusCode

from conftest import Gateway, create_topic, produce, query, unique
from test_compactor import compactor

RECORDS = 24_000
PARTITIONS = 3
# Small enough that these few records make several tasks (the default is 200,000 per task).
OFFSETS_PER_TASK = ["--offsets-per-task", "2000", "--lake-rows-per-task", "2000"]


@pytest.fixture(scope="module")
def topic(brokers):
    name = unique("scale")
    create_topic(brokers, name, partitions=PARTITIONS)
    produce(brokers, name, [{"partition": i % PARTITIONS, "key": b"k%d" % (i % 101),
                             "value": json.dumps({"id": i, "amount": i % 97, "note": "x" * (i % 13)}).encode()}
                            for i in range(RECORDS)])
    return name


@pytest.fixture(scope="module")
def cluster(brokers):
    """Three gateways: two workers, and a coordinator that lists them."""
    workers = [Gateway(brokers, None, ["--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, None, ["--workers", ",".join(f"http://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])
    alone = Gateway(brokers, None, [])
    yield {"coordinator": coordinator, "workers": workers, "alone": alone}
    for gateway in [coordinator, alone, *workers]:
        gateway.stop()


QUERIES = [
    'SELECT count(*) AS n, sum(length(_value)) AS bytes, min(_offset) AS lo, max(_offset) AS hi FROM "{t}"',
    'SELECT _partition, count(*) AS n, sum(_offset) AS offsets FROM "{t}" GROUP BY _partition ORDER BY 1',
    'SELECT _key, count(*) AS n, max(_offset) AS last FROM "{t}" GROUP BY _key ORDER BY n DESC, _key LIMIT 7',
    # A function of kappa's own (the JSON functions), run where each task runs.
    'SELECT json_get_int(_value, \'amount\') % 7 AS k, count(*) AS n, sum(json_get_int(_value, \'id\')) AS ids '
    'FROM "{t}" GROUP BY 1 ORDER BY 1',
    # A join: both sides split, shuffled by key.
    'SELECT a._partition, count(*) AS n FROM "{t}" a JOIN "{t}" b ON a._key = b._key AND a._offset = b._offset '
    'GROUP BY 1 ORDER BY 1',
]


@pytest.mark.parametrize("sql", QUERIES)
def test_a_query_across_three_gateways_answers_what_one_gateway_does(cluster, topic, sql):
    sql = sql.format(t=topic)
    assert query(cluster["coordinator"], sql) == query(cluster["alone"], sql)


def random_range_query(rng, topic):
    """A grouped read of random offset, partition and key ranges, wide enough to be split."""
    lo = rng.randrange(0, RECORDS // PARTITIONS // 4)
    hi = rng.randrange(RECORDS // PARTITIONS // 2, RECORDS // PARTITIONS + 50)
    parts = sorted(rng.sample(range(PARTITIONS), rng.randint(2, PARTITIONS)))
    where = [f"_offset >= {lo}", f"_offset {rng.choice(['<', '<='])} {hi}",
             f"_partition IN ({', '.join(map(str, parts))})"]
    if rng.random() < 0.5:
        where.append(f"_key <> 'k{rng.randrange(101)}'")
    group = rng.choice(["_partition", "_key", "_offset % 7"])
    return (f'SELECT {group} AS g, count(*) AS n, sum(_offset) AS s, min(_timestamp) AS t0, '
            f'max(length(_value)) AS w FROM "{topic}" WHERE {" AND ".join(where)} GROUP BY 1 ORDER BY 1')


def test_random_range_scans_across_the_cluster_answer_what_one_gateway_does(cluster, topic):
    rng = random.Random(20261207)
    distributed = 0
    for _ in range(12):
        sql = random_range_query(rng, topic)
        assert query(cluster["coordinator"], sql) == query(cluster["alone"], sql), sql
        distributed += "DistributedExec" in explain_analyze(cluster["coordinator"], sql)
    # Most are wide enough to be split (a narrow one runs on the coordinator alone).
    assert distributed >= 8, distributed


def explain_analyze(gateway, sql, verbose=False):
    plan = query(gateway, f"EXPLAIN ANALYZE {'VERBOSE ' if verbose else ''}{sql}").to_pydict()
    return "\n".join(plan["plan"])


def tasks_of(gateway, topic, verbose=False):
    """The tasks a grouped count over `topic` runs as on `gateway`, and the plan that says so."""
    plan = explain_analyze(gateway, f'SELECT _partition, count(*) FROM "{topic}" GROUP BY _partition', verbose)
    counts = {int(n) for n in re.findall(r"Stage \d+ ── tasks=(\d+)", plan)}
    return (max(counts) if counts else 1), plan


def wait_for_distributed(gateway, sql, tasks):
    """Waits (a few of the coordinator's health checks) until `sql` is planned as `tasks` tasks."""
    deadline = time.monotonic() + 15
    while f"tasks={tasks}" not in "\n".join(query(gateway, "EXPLAIN " + sql).column("plan").to_pylist()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def wait_for_tasks(gateway, topic, tasks):
    """Waits (a few of the coordinator's health checks) until queries run as `tasks` tasks."""
    deadline = time.monotonic() + 15
    while (seen := tasks_of(gateway, topic)[0]) != tasks and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen == tasks


def test_the_work_is_spread_over_the_gateways_and_small_queries_stay_local(cluster, topic):
    sql = f'SELECT _partition, count(*) FROM "{topic}" GROUP BY _partition'
    wait_for_tasks(cluster["coordinator"], topic, 3)
    plan = explain_analyze(cluster["coordinator"], sql, verbose=True)
    assert "DistributedExec" in plan, plan
    # Each task read its own share of the records, and two of the three ran on the other gateways.
    fetched = [int(float(n.rstrip(" K")) * (1000 if n.endswith("K") else 1))
               for n in re.findall(r"records_fetched=\{\d+:([\d.]+(?: K)?)\}", plan)]
    assert len(fetched) == 3 and all(fetched) and sum(fetched) == RECORDS, (fetched, plan)
    assert re.search(r"remote_coordinator_channels=[1-9]", plan), plan
    # It names the gateway each task ran on: the scan's three tasks, one on each gateway.
    scan_stage = re.search(r"Stage (\d+) ── tasks=3, partitions=\d+[^\n]*\n[^\n]*RepartitionExec", plan).group(1)
    routed = re.search(rf"^Stage {scan_stage}: (t0=.*)$", plan, re.M)
    assert routed, plan
    gateways = re.findall(r"t\d=http://([\d.:]+)/", routed.group(1))
    every = {g.address for g in [cluster["coordinator"], *cluster["workers"]]}
    assert len(gateways) == 3 and set(gateways) == every, (routed.group(0), every)
    # EXPLAIN shows the stages, their tasks and what each task's Kafka scan reads.
    shown = "\n".join(query(cluster["coordinator"], "EXPLAIN " + sql).column("plan").to_pylist())
    assert "Stage 1 ── tasks=3" in shown and "t2: KafkaScanExec" in shown, shown
    # Without the cluster, the same gateway plans it on its own.
    assert "DistributedExec" not in explain_analyze(cluster["alone"], sql)
    # A query reading less than two tasks' offsets is not distributed.
    small = f'SELECT count(*) FROM "{topic}" WHERE _offset < 100'
    assert "DistributedExec" not in explain_analyze(cluster["coordinator"], small)


def test_a_gateway_with_sign_in_joins_a_cluster_only_with_a_shared_token_secret(brokers, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text("")
    with pytest.raises(RuntimeError):
        Gateway(brokers, None, ["--worker", "--users", str(users)])


def signed_in(gateway, sql, user="analyst", password="s3cret"):
    with flightsql.connect(gateway.uri, db_kwargs={"username": user, "password": password},
                           autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_with_sign_in_the_tasks_carry_the_caller_and_each_gateway_checks_it(brokers, topic, tmp_path):
    """With --users, the coordinator's calls to the other gateways carry the caller, signed with the
    shared --token-secret, and are checked like any call: a gateway that does not accept the token
    (another secret) refuses the tasks, and the query fails saying so."""
    from conftest import hash_password
    users = tmp_path / "users.toml"
    users.write_text(f'[[users]]\nname = "analyst"\npassword_hash = "{hash_password("s3cret")}"\n'
                     f'tables = ["scale-*"]\n')
    signed = ["--users", str(users), "--token-secret", "the cluster's secret"]
    workers = [Gateway(brokers, None, [*signed, "--worker"]),
               Gateway(brokers, None, ["--users", str(users), "--token-secret", "another", "--worker"])]
    coordinator = Gateway(brokers, None, [*signed, "--workers", f"http://{workers[0].address}",
                                          *OFFSETS_PER_TASK])
    stranger = Gateway(brokers, None, [*signed, "--workers", f"http://{workers[1].address}",
                                       *OFFSETS_PER_TASK])
    try:
        sql = QUERIES[1].format(t=topic)
        explain = f"EXPLAIN {sql}"
        deadline = time.monotonic() + 15
        while "tasks=2" not in "\n".join(signed_in(coordinator, explain).column("plan").to_pylist()):
            assert time.monotonic() < deadline, "the coordinator never planned two tasks"
            time.sleep(0.5)
        answer = signed_in(coordinator, sql)
        assert answer == signed_in(workers[0], sql)
        analyzed = "\n".join(signed_in(coordinator, f"EXPLAIN ANALYZE VERBOSE {sql}").column("plan").to_pylist())
        assert re.search(r"remote_coordinator_channels=[1-9]", analyzed), analyzed
        # A gateway with another secret does not accept the caller the tasks carry.
        deadline = time.monotonic() + 15
        while "tasks=2" not in "\n".join(signed_in(stranger, explain).column("plan").to_pylist()):
            assert time.monotonic() < deadline, "the second coordinator never planned two tasks"
            time.sleep(0.5)
        with pytest.raises(flightsql.Error) as refused:
            signed_in(stranger, sql)
        message = str(refused.value)
        assert "(FailedPrecondition;" in message, message
        assert "refused the caller this gateway sent" in message and "--token-secret" in message, message
    finally:
        for gateway in [coordinator, stranger, *workers]:
            gateway.stop()


def test_a_gateway_lost_mid_query_is_retried_on_the_rest_and_comes_back(brokers, topic):
    """A worker killed while a query runs on it: the query, which had sent nothing yet, runs once
    more on the gateways that remain and answers in full (it would fail with Unavailable naming the
    gateway if that run failed too); the gateway, started again at its address, gets tasks again."""
    workers = [Gateway(brokers, None, ["--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, None, ["--workers", ",".join(f"http://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])
    back = None
    try:
        wait_for_tasks(coordinator, topic, 3)
        # About 5.7 million joined rows: a few seconds on each gateway.
        slow = (f'SELECT a._partition, count(*) AS n, sum(a._offset * b._offset) AS s FROM "{topic}" a '
                f'JOIN "{topic}" b ON a._key = b._key GROUP BY 1 ORDER BY 1')
        expected = query(workers[1], slow)
        lost = workers[0]
        killer = threading.Timer(0.5, lost.process.kill)
        killer.start()
        answer = query(coordinator, slow)
        killer.join()
        assert lost.process.poll() is not None, "the worker was killed"
        assert answer == expected

        # Later queries run on the coordinator and the worker left, with every row.
        assert query(coordinator, f'SELECT count(*) AS n FROM "{topic}"').to_pydict() == {"n": [RECORDS]}
        wait_for_tasks(coordinator, topic, 2)

        back = Gateway(brokers, None, ["--worker"], listen=lost.address)
        wait_for_tasks(coordinator, topic, 3)
        assert query(coordinator, slow) == expected
    finally:
        for gateway in [coordinator, *workers, *([back] if back else [])]:
            gateway.stop()


def test_gateways_found_by_dns_name_share_the_queries(brokers, topic, cluster):
    """--workers-dns: the addresses a name resolves to (a headless Service's pods) are the cluster,
    looked up again each second; here `localhost` and one worker's port."""
    worker = cluster["workers"][0]
    port = worker.address.rsplit(":", 1)[1]
    coordinator = Gateway(brokers, None, ["--workers-dns", f"localhost:{port}", *OFFSETS_PER_TASK])
    try:
        wait_for_tasks(coordinator, topic, 2)
        sql = QUERIES[1].format(t=topic)
        assert query(coordinator, sql) == query(cluster["alone"], sql)
    finally:
        coordinator.stop()


def test_gateways_found_by_dns_name_over_tls_are_checked_against_that_name(brokers, topic, cluster, tmp_path, pki):
    """--workers-dns with TLS: the gateways the name resolves to are reached at their addresses
    (https://), and their certificates are checked against the name, which is all a headless
    Service's pods share: here certificates that name `localhost` and no address."""
    from cryptography import x509
    from conftest import certificate
    ca, ca_key, ca_pem, _ = certificate("kappa DNS test CA", ca=True)
    _, _, cert_pem, key_pem = certificate("localhost", ca.subject, ca_key, san=[x509.DNSName("localhost")])
    for name, data in {"ca": ca_pem, "cert": cert_pem, "key": key_pem}.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    tls = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
           "--cluster-ca", str(tmp_path / "ca.pem")]
    # Every gateway is given the name, as a Deployment's pods all are: the worker's calls back to the
    # coordinator (a shuffle's reads) check its certificate against it too.
    from conftest import closed_port
    port = closed_port()
    dns = ["--workers-dns", f"localhost:{port}"]
    worker = Gateway(brokers, None, [*tls, *dns], listen=f"127.0.0.1:{port}")
    coordinator = Gateway(brokers, None, [*tls, *dns, *OFFSETS_PER_TASK])
    client_tls = {"adbc.flight.sql.client_option.tls_root_certs": ca_pem.decode(),
                  "adbc.flight.sql.client_option.tls_override_hostname": "localhost"}

    try:
        sql = QUERIES[1].format(t=topic)
        assert_runs_across(tls_query(coordinator, client_tls), sql, 2, query(cluster["alone"], sql))
    finally:
        coordinator.stop()
        worker.stop()


TIERED_RECORDS = 18_000
TAIL_RECORDS = 3_000


@pytest.fixture(scope="module")
def tiered(brokers, tmp_path_factory):
    """A table most of whose records the compactor tiered into the lake (in many files), the rest
    only in Kafka, and three gateways over it (the same definitions and lake), plus one alone."""
    topic = unique("scale-tier")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "tiered_" + topic.split("-")[-1]
    folder = tmp_path_factory.mktemp("scale-tier")
    config = folder / "kappa.toml"
    config.write_text(f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
                      f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n')
    lake = folder / "lake"

    def orders(start, count):
        return [{"partition": i % PARTITIONS, "key": b"k%d" % (i % 101),
                 "value": json.dumps({"id": i, "customer": f"c{i % 17}", "amount": i * 0.5}).encode()}
                for i in range(start, start + count)]

    produce(brokers, topic, orders(0, TIERED_RECORDS))
    run = compactor(brokers, lake, config, "--tier-after", "0s", "--max-records-per-commit", "1500")
    assert run.returncode == 0, run.stderr
    produce(brokers, topic, orders(TIERED_RECORDS, TAIL_RECORDS))
    args = ["--lake", str(lake)]
    text = config.read_text()
    workers = [Gateway(brokers, text, [*args, "--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, text, [*args, "--workers", ",".join(f"http://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])
    alone = Gateway(brokers, text, args)
    assert wait_for_distributed(coordinator, f'SELECT _partition, count(*) FROM "{name}" GROUP BY 1', 3)
    yield {"table": name, "coordinator": coordinator, "alone": alone, "config": text, "lake": lake,
           "workers": workers}
    for gateway in [coordinator, alone, *workers]:
        gateway.stop()


TIERED_QUERIES = [
    'SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(amount) AS amount, min(_offset) AS lo, '
    'max(_offset) AS hi FROM "{t}"',
    'SELECT customer, _partition, count(*) AS n, sum(id) AS ids FROM "{t}" GROUP BY 1, 2 ORDER BY 1, 2',
    # Rows on both sides of the seam, filtered, and a limit over a sort.
    'SELECT _partition, count(*) AS n FROM "{t}" WHERE amount > 4000 AND _offset % 3 = 0 GROUP BY 1 ORDER BY 1',
    'SELECT id, customer FROM "{t}" WHERE customer IN (\'c3\', \'c5\') ORDER BY id DESC LIMIT 9',
    # A join of the table with itself, both sides read from the lake and from Kafka.
    'SELECT a.customer, count(*) AS n FROM "{t}" a JOIN "{t}" b ON a.id = b.id AND a._key = b._key '
    'GROUP BY 1 ORDER BY 1',
]


@pytest.mark.parametrize("sql", TIERED_QUERIES)
def test_a_tiered_table_across_three_gateways_answers_what_one_gateway_does(tiered, sql):
    sql = sql.format(t=tiered["table"])
    assert query(tiered["coordinator"], sql) == query(tiered["alone"], sql)
    plan = explain_analyze(tiered["coordinator"], sql)
    assert "DistributedExec" in plan and "LakeFilesExec" in plan, plan


def test_the_lake_tier_is_read_in_shares_on_every_gateway(tiered):
    """The lake's files are split between the tasks by rows; each gateway plans the Delta scan of
    its files again from its own lake, and together they read every tiered row once."""
    table = tiered["table"]
    sql = f'SELECT _partition, count(*) AS n FROM "{table}" GROUP BY 1 ORDER BY 1'
    shown = "\n".join(query(tiered["coordinator"], "EXPLAIN " + sql).column("plan").to_pylist())
    assert "DistributedExec" in shown and "LakeTierExec" in shown, shown
    shares = re.findall(r"LakeFilesExec: table=\S+, version=\d+, files=(\d+), rows=(\d+)", shown)
    # The stage's tasks are shared between the union's two sides: the lake's get two or more.
    assert len(shares) >= 2 and all(int(files) > 0 for files, _ in shares), shown
    rows = [int(rows) for _, rows in shares]
    watermarks = re.search(r"LakeTierExec: table=\S+, version=\d+, below=\[([^\]]*)\]", shown).group(1)
    assert sum(rows) == sum(int(w.split(":")[1]) for w in watermarks.split(", ")), shown
    assert max(rows) <= 2 * min(rows), shares
    # Tasks ran on the other gateways, and the answer is one gateway's.
    analyzed = explain_analyze(tiered["coordinator"], sql, verbose=True)
    assert "LakeFilesExec" in analyzed and re.search(r"remote_coordinator_channels=[1-9]", analyzed), analyzed
    assert query(tiered["coordinator"], sql) == query(tiered["alone"], sql)
    total = query(tiered["coordinator"], f'SELECT count(*) AS n FROM "{table}"').to_pydict()
    assert total == {"n": [TIERED_RECORDS + TAIL_RECORDS]}


def test_lake_rows_weigh_less_than_offsets_so_a_short_lake_scan_stays_on_one_gateway(brokers, tiered):
    """A lake row costs about a tenth of a Kafka record to read: the tiered rows make two tasks'
    work counted as offsets, but not counted as lake rows (2,000,000 a task by default)."""
    members = ",".join(f"http://{w.address}" for w in tiered["workers"])
    offsets_only = Gateway(brokers, tiered["config"], ["--lake", str(tiered["lake"]), "--workers", members,
                                                       "--offsets-per-task", "2000"])
    try:
        table = tiered["table"]
        explain = lambda gateway, sql: "\n".join(query(gateway, "EXPLAIN " + sql).column("plan").to_pylist())
        # The table's Kafka tail read twice (6,000 offsets) is worth three tasks: once this
        # gateway sees the others answer, it runs across them.
        twice = (f'SELECT _partition, count(*) FROM (SELECT _partition FROM "{table}" UNION ALL '
                 f'SELECT _partition FROM "{table}") GROUP BY 1')
        deadline = time.monotonic() + 15
        while "DistributedExec" not in explain(offsets_only, twice):
            assert time.monotonic() < deadline, explain(offsets_only, twice)
            time.sleep(0.5)
        # Read once, its tail (3,000 offsets) and its 18,000 lake rows (0.009 of a task) are not
        # two tasks' worth: it stays whole.
        sql = f'SELECT _partition, count(*) FROM "{table}" GROUP BY 1'
        shown = explain(offsets_only, sql)
        assert "DistributedExec" not in shown and "LakeTierExec" in shown, shown
        assert query(offsets_only, sql + " ORDER BY 1") == query(tiered["alone"], sql + " ORDER BY 1")
        # The same query with the rows counted alike (the fixture's coordinator) runs across.
        shown = "\n".join(query(tiered["coordinator"], "EXPLAIN " + sql).column("plan").to_pylist())
        assert "DistributedExec" in shown, shown
    finally:
        offsets_only.stop()


def test_a_gateway_on_another_lake_fails_the_query_rather_than_read_less(brokers, tiered, tmp_path):
    """Every gateway must reach the same lake: a worker whose --lake lacks the pinned Delta version
    fails the query, saying so, instead of answering without the lake's rows."""
    worker = Gateway(brokers, tiered["config"], ["--lake", str(tmp_path / "another"), "--worker"])
    coordinator = Gateway(brokers, tiered["config"], ["--lake", str(tiered["lake"]),
                                                      "--workers", f"http://{worker.address}", *OFFSETS_PER_TASK])
    try:
        # Only the lake's rows: both tasks read lake files, one of them on the worker.
        sql = f'SELECT _partition, count(*) AS n FROM "{tiered["table"]}" WHERE _offset < 5000 GROUP BY 1 ORDER BY 1'
        assert wait_for_distributed(coordinator, sql, 2)
        with pytest.raises(flightsql.Error) as failed:
            query(coordinator, sql)
        message = str(failed.value)
        assert "this gateway's lake has no Delta version" in message and "same --lake" in message, message
        # The code a lake error has on one gateway (Unavailable), not an unknown error's (Internal).
        assert "Unavailable" in message and failed.value.status_code == AdbcStatusCode.IO, repr(failed.value)
    finally:
        coordinator.stop()
        worker.stop()


def test_a_rolling_restart_under_load_loses_no_query_of_the_gateways_it_is_not_restarting(brokers, tiered):
    """Three gateways, each listing all three, each answering a steady stream of distributed queries.
    Each is stopped (SIGTERM: it drains) and started again at its address in turn. Queries sent to
    the gateway while it is down are refused, as they must be; every other query, coordinated by
    another gateway and maybe running tasks on the one stopping, gets its whole answer."""
    from conftest import closed_port
    addresses = [f"127.0.0.1:{closed_port()}" for _ in range(3)]
    members = ",".join(f"http://{a}" for a in addresses)
    args = ["--lake", str(tiered["lake"]), "--workers", members, *OFFSETS_PER_TASK]

    def start(address):
        return Gateway(brokers, tiered["config"], args, listen=address)

    gateways = [start(a) for a in addresses]
    sql = (f'SELECT customer, count(*) AS n, sum(id) AS ids FROM "{tiered["table"]}" '
           f'GROUP BY 1 ORDER BY 1')
    expected = query(tiered["alone"], sql)
    for gateway in gateways:
        assert wait_for_distributed(gateway, sql, 3)
    down = [None]  # the index of the gateway being restarted, if any
    results = []  # (target, restarting at the time, ok, detail)
    stop = threading.Event()

    def load(target):
        while not stop.is_set():
            restarting_before = down[0]
            try:
                ok = query(gateways[target], sql) == expected
                detail = "" if ok else "a different answer"
            except Exception as e:  # noqa: BLE001 (every failure is recorded and judged below)
                ok, detail = False, str(e)
            results.append((target, {restarting_before, down[0]}, ok, detail))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        for i, address in enumerate(addresses):
            down[0] = i
            gateways[i].stop()
            gateways[i] = start(address)
            assert wait_for_distributed(gateways[i], sql, 3)
            down[0] = None
            time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        for gateway in gateways:
            gateway.stop()
    lost = [(target, detail) for target, restarting, ok, detail in results if not ok and target not in restarting]
    assert not lost, lost
    assert sum(ok for *_, ok, _ in results) >= 20, len(results)


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture()
def namespace():
    """A network namespace joined to the host by a veth pair, for a gateway the test can cut off
    (`ip link set <host side> down`): its connections then get no answer and no reset."""
    import uuid
    name = f"kappa-{uuid.uuid4().hex[:8]}"
    if ip("netns", "add", name).returncode != 0:
        pytest.skip("network namespaces need root (ip netns add failed)")
    index = random.randrange(1, 250)
    host_side, inside = f"kh{name[-6:]}", f"kn{name[-6:]}"
    host_ip, inside_ip = f"10.213.{index}.1", f"10.213.{index}.2"
    try:
        for command in (["link", "add", host_side, "type", "veth", "peer", "name", inside],
                        ["link", "set", inside, "netns", name],
                        ["addr", "add", f"{host_ip}/24", "dev", host_side],
                        ["link", "set", host_side, "up"],
                        ["netns", "exec", name, "ip", "addr", "add", f"{inside_ip}/24", "dev", inside],
                        ["netns", "exec", name, "ip", "link", "set", inside, "up"],
                        ["netns", "exec", name, "ip", "link", "set", "lo", "up"]):
            done = ip(*command)
            assert done.returncode == 0, (command, done.stderr)
        yield {"name": name, "host_side": host_side, "host_ip": host_ip, "inside_ip": inside_ip}
    finally:
        ip("netns", "del", name)
        ip("link", "del", host_side)


def test_a_gateway_cut_off_mid_query_is_given_up_within_seconds(brokers, tiered, namespace):
    """A worker whose network goes silent (no reset, no answer) while a query runs tasks on it: within
    seconds the channels between gateways give up on it (they ping), and the query, which had sent
    nothing yet, runs once more on the gateway left and answers in full, never waiting forever or
    answering in part."""
    import relay
    broker_host, broker_port = brokers.rsplit(":", 1)
    # The namespace reaches the broker (advertised on the host's loopback) through two relays.
    relay.in_background((namespace["host_ip"], int(broker_port)), (broker_host, int(broker_port)))
    inside_relay = subprocess.Popen(
        ["ip", "netns", "exec", namespace["name"], sys.executable, relay.__file__,
         f"127.0.0.1:{broker_port}", f"{namespace['host_ip']}:{broker_port}"],
        stdout=subprocess.PIPE, text=True)
    assert inside_relay.stdout.readline().strip() == "relaying"
    lake = ["--lake", str(tiered["lake"])]
    worker = Gateway(brokers, tiered["config"], [*lake, "--worker"], listen=f"{namespace['inside_ip']}:0",
                     run_in=["ip", "netns", "exec", namespace["name"]])
    # The query timeout bounds the test if the query waits for the lost gateway (it did, before the
    # channels between gateways pinged): it then fails with DeadlineExceeded, not Unavailable.
    coordinator = Gateway(brokers, tiered["config"], [*lake, "--workers", f"http://{worker.address}",
                                                      "--query-timeout", "60s", *OFFSETS_PER_TASK],
                          listen=f"{namespace['host_ip']}:0")
    try:
        table = tiered["table"]
        slow = (f'SELECT a.customer, count(*) AS n, sum(a.id * b.id) AS s FROM "{table}" a '
                f'JOIN "{table}" b ON a.customer = b.customer GROUP BY 1 ORDER BY 1')
        assert wait_for_distributed(coordinator, slow, 2)
        cut = threading.Timer(1.0, lambda: ip("link", "set", namespace["host_side"], "down"))
        cut.start()
        expected = query(tiered["alone"], slow)
        started = time.monotonic()
        answer = query(coordinator, slow)
        took = time.monotonic() - started
        cut.join()
        assert answer == expected
        assert took < 20, took
        # The next queries run on the coordinator alone, with every row.
        counting = f'SELECT count(*) AS n FROM "{table}"'
        assert query(coordinator, counting) == query(tiered["alone"], counting)
    finally:
        coordinator.stop()
        # Cut off, it could only wait out its grace for calls that will never end.
        worker.process.kill()
        worker.stop()
        inside_relay.kill()


def test_gateways_serving_tls_run_a_query_across_each_other_over_tls(brokers, topic, pki):
    """With TLS, the gateways reach each other at https:// addresses, checking each other's
    certificates against --cluster-ca; a plain http:// member is refused at start."""
    paths = pki["paths"]
    tls = ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]), "--cluster-ca", str(paths["ca"])]
    with pytest.raises(RuntimeError):
        Gateway(brokers, None, [*tls, "--workers", "http://127.0.0.1:1"])
    workers = [Gateway(brokers, None, [*tls, "--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, None, [*tls, "--workers", ",".join(f"https://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])

    over_tls = tls_query(coordinator, {"adbc.flight.sql.client_option.tls_root_certs": pki["ca"].decode()})
    try:
        sql = QUERIES[1].format(t=topic)
        assert_runs_across(over_tls, sql, 3, query_plain(brokers, sql))
    finally:
        for gateway in [coordinator, *workers]:
            gateway.stop()


def test_gateways_under_mutual_tls_present_their_own_certificates_to_each_other(brokers, topic, pki):
    """With --tls-client-ca every caller must present a certificate that CA signed, the gateways of
    the cluster too: each presents its own (--tls-cert) for the tasks and the health checks. A
    large answer's slices are fetched from each gateway with the client's own certificate."""
    import pyarrow.flight as fl
    from conftest import flight_sql_command
    paths = pki["paths"]
    tls = ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]), "--cluster-ca", str(paths["ca"]),
           "--tls-client-ca", str(paths["ca"])]
    workers = [Gateway(brokers, None, [*tls, "--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, None, [*tls, "--workers", ",".join(f"https://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])
    client_tls = {"adbc.flight.sql.client_option.tls_root_certs": pki["ca"].decode(),
                  "adbc.flight.sql.client_option.mtls_cert_chain": pki["client_cert"].decode(),
                  "adbc.flight.sql.client_option.mtls_private_key": pki["client_key"].decode()}

    mutual = tls_query(coordinator, client_tls)
    try:
        sql = QUERIES[1].format(t=topic)
        assert_runs_across(mutual, sql, 3, query_plain(brokers, sql))
        # An answer in slices: one endpoint per gateway, each fetched there over mutual TLS.
        full = f'SELECT _partition, _offset FROM "{topic}"'
        options = {"tls_root_certs": pki["ca"], "cert_chain": pki["client_cert"], "private_key": pki["client_key"]}
        client = fl.FlightClient(f"grpc+tls://{coordinator.address}", **options)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(full)))
        client.close()
        places = [[location.uri.decode() for location in e.locations] for e in info.endpoints]
        assert sorted(p[0] for p in places[1:]) == sorted(f"grpc+tls://{w.address}" for w in workers), places
        counts = []
        for endpoint, place in zip(info.endpoints[1:], places[1:]):
            remote = fl.FlightClient(place[0], **options)
            counts.append(remote.do_get(endpoint.ticket).read_all().num_rows)
            remote.close()
        assert all(counts), counts
        assert mutual(full).num_rows == RECORDS
        # The health check command presents a certificate too (--cert, --key), and is refused without.
        check = [os.environ["KAPPA_GATEWAY_BIN"], "healthcheck", "--address", f"https://{workers[0].address}",
                 "--ca", str(paths["ca"])]
        assert subprocess.run([*check, "--cert", str(paths["cert"]), "--key", str(paths["key"])],
                              capture_output=True).returncode == 0
        assert subprocess.run(check, capture_output=True).returncode != 0
        # A caller without a certificate is refused by every gateway of the cluster.
        for gateway in [coordinator, *workers]:
            with pytest.raises(flightsql.Error):
                with flightsql.connect(f"grpc+tls://{gateway.address}", db_kwargs={
                        "adbc.flight.sql.client_option.tls_root_certs": pki["ca"].decode()},
                        autocommit=True) as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetch_arrow_table()
    finally:
        for gateway in [coordinator, *workers]:
            gateway.stop()


def tls_query(coordinator, db_kwargs):
    """What answers `sql` from `coordinator` over TLS, ADBC given `db_kwargs`."""
    def run(sql):
        with flightsql.connect(f"grpc+tls://{coordinator.address}", db_kwargs=db_kwargs,
                               autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()
    return run


def assert_runs_across(run, sql, tasks, expected):
    """Waits until `run`'s coordinator plans `sql` as `tasks` tasks, then checks that it answers
    `expected` with tasks on the other gateways."""
    deadline = time.monotonic() + 15
    while f"tasks={tasks}" not in "\n".join(run(f"EXPLAIN {sql}").column("plan").to_pylist()):
        assert time.monotonic() < deadline, f"the coordinator never planned {tasks} tasks"
        time.sleep(0.5)
    assert run(sql) == expected
    analyzed = "\n".join(run(f"EXPLAIN ANALYZE VERBOSE {sql}").column("plan").to_pylist())
    assert re.search(r"remote_coordinator_channels=[1-9]", analyzed), analyzed


def query_plain(brokers, sql):
    """`sql`'s answer from a gateway of its own, without TLS."""
    alone = Gateway(brokers, None, [])
    try:
        return query(alone, sql)
    finally:
        alone.stop()
