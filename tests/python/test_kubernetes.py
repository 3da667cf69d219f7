"""The Kubernetes manifests in deploy/kubernetes, validated offline: each overlay rendered by
`kubectl kustomize`, checked by `kubernetes-validate --strict` against two Kubernetes versions, and
every flag and KAPPA_* variable the containers are given known to the binary they run."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["dev", "production"]
VERSIONS = ["1.33.0", "1.37.0"]
# Custom resources have no schema in kubernetes-validate; the test checks them itself.
CUSTOM = {"ServiceMonitor"}

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None,
                                reason="kubectl is not installed: the manifests cannot be rendered")


def render(overlay):
    run = subprocess.run(["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, tmp_path_factory):
    text = render(request.param)
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(text)
    return {"name": request.param, "path": path, "docs": [d for d in yaml.safe_load_all(text) if d]}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_and_strict(overlay, version):
    binary = shutil.which("kubernetes-validate") or str(pathlib.Path(os.sys.executable).parent / "kubernetes-validate")
    run = subprocess.run([binary, "--strict", "--quiet", "-k", version, str(overlay["path"])],
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    for line in output.splitlines():
        assert any(f"kind {kind} " in line for kind in CUSTOM), f"{overlay['name']} on {version}: {line}"


def containers(docs):
    """(resource, pod spec, container) of every workload."""
    for doc in docs:
        spec = None
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if spec:
            for container in spec["containers"]:
                yield doc, spec, container


def help_text(binary, subcommand):
    env_name = {"kappa-gateway": "KAPPA_GATEWAY_BIN", "kappa-compactor": "KAPPA_COMPACTOR_BIN"}[binary]
    path = os.environ.get(env_name)
    if not path:
        pytest.fail(f"{env_name} is not set: run scripts/test.sh", pytrace=False)
    run = subprocess.run([path, subcommand, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_every_flag_and_variable_exists_in_the_binary(overlay):
    """A container's own flags and KAPPA_* variables are its subcommand's; a variable of a ConfigMap
    shared by several containers is read by at least one of them."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in overlay["docs"] if d["kind"] == "ConfigMap"}
    shared_readers = {}
    checked = 0
    for doc, _, container in containers(overlay["docs"]):
        binary, subcommand, *flags = container["args"]
        text = help_text(binary, subcommand)
        known_flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
        known_env = set(re.findall(r"\[env: (KAPPA_[A-Z0-9_]+)", text))
        for flag in (f for f in flags if f.startswith("--")):
            assert flag in known_flags, f"{doc['metadata']['name']}: {binary} {subcommand} has no {flag}"
            checked += 1
        for name in (e["name"] for e in container.get("env", []) if e["name"].startswith("KAPPA_")):
            assert name in known_env, f"{doc['metadata']['name']}: {binary} {subcommand} reads no {name}"
            checked += 1
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                for name in configmaps[source["configMapRef"]["name"]]:
                    shared_readers.setdefault(name, set())
                    if name in known_env:
                        shared_readers[name].add(f"{binary} {subcommand}")
    for name, readers in shared_readers.items():
        if name.startswith("KAPPA_"):
            assert readers, f"no container reads {name}"
            checked += 1
    assert checked > 20


def test_the_gateway_is_probed_on_its_grpc_health_service(overlay):
    (deployment, _, gateway), = [(d, s, c) for d, s, c in containers(overlay["docs"]) if d["kind"] == "Deployment"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["KAPPA_LISTEN"].endswith(f":{ports['grpc']}")
    assert env["KAPPA_METRICS_LISTEN"].endswith(f":{ports['metrics']}")
    for probe in ("startupProbe", "readinessProbe"):
        assert gateway[probe]["grpc"]["port"] == ports["grpc"], probe
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # Room for --shutdown-grace before the kubelet kills the pod.
    grace = int(env["KAPPA_SHUTDOWN_GRACE"].rstrip("s"))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    kinds = {d["kind"] for d in overlay["docs"]}
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob"} <= kinds
    services = [d for d in overlay["docs"] if d["kind"] == "Service"]
    assert any(s["spec"].get("clusterIP") == "None" for s in services), "a headless Service for peers"


def test_secrets_are_referenced_by_the_names_they_have(overlay):
    docs = overlay["docs"]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    referenced = set()
    for _, spec, container in containers(docs):
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                referenced.add(ref["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    assert referenced, "the gateway needs its token secret and users file"
    if overlay["name"] == "dev":
        assert referenced <= secrets, f"not generated: {referenced - secrets}"
    else:
        # Created by the operator beforehand, under these names (docs/deploy.md).
        assert referenced == {"kappa-gateway-secrets", "kappa-users"}


def test_production_shards_the_compactor_by_completion_index():
    docs = [d for d in yaml.safe_load_all(render("production")) if d]
    (cronjob,) = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == "kappa-compactor"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    shards = job["completions"]
    assert job["parallelism"] == shards > 1
    container = job["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--shard") + 1] == f"$(SHARD_INDEX)/{shards}"
    (index,) = [e for e in container["env"] if e["name"] == "SHARD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (peers,) = [d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= peers["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in peers["spec"]["ports"]}
