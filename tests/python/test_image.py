"""The container image: deploy/docker/Dockerfile lints clean, and the image scripts/image.sh builds
from its runtime stage runs both binaries, as the non-root user, with the Dockerfile's settings."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

DOCKERFILES = ["deploy/docker/Dockerfile", "deploy/docker/test-broker.Dockerfile"]


def docker(*args):
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_lints_clean(dockerfile):
    binary = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    run = subprocess.run([binary, os.path.join(ROOT, dockerfile)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stdout + run.stderr


def test_the_image_runs_both_binaries_as_a_non_root_user(kappa_image):
    assert docker("run", "--rm", kappa_image, "id", "-u").strip() == "10001"
    assert docker("run", "--rm", kappa_image, "id", "-un").strip() == "kappa"
    for binary, env in [("kappa-gateway", "KAPPA_GATEWAY_BIN"), ("kappa-compactor", "KAPPA_COMPACTOR_BIN")]:
        host = subprocess.run([os.environ[env], "--version"], capture_output=True, text=True, check=True).stdout
        assert docker("run", "--rm", kappa_image, binary, "--version") == host
        assert "Usage: " + binary in docker("run", "--rm", kappa_image, binary, "--help")
    assert "healthcheck" in docker("run", "--rm", kappa_image, "kappa-gateway", "--help")
    # The lake folder is the user's, so a fresh volume mounted there is writable.
    owner = docker("run", "--rm", kappa_image, "stat", "-c", "%u:%g", "/var/lib/kappa/lake")
    assert owner.strip() == "10001:10001"


def runtime_stage():
    """The Dockerfile's runtime stage, instruction by instruction (continuation lines joined)."""
    with open(os.path.join(ROOT, "deploy", "docker", "Dockerfile")) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = lines.index("FROM ${RUNTIME_IMAGE} AS runtime")
    return [line.split(None, 1) for line in lines[start + 1:]]


def test_the_image_is_the_dockerfiles_runtime_stage(kappa_image):
    config = json.loads(docker("image", "inspect", kappa_image))[0]["Config"]
    stage = runtime_stage()
    want = {keyword: rest for keyword, rest in stage}
    assert config["User"] == want["USER"]
    assert config["WorkingDir"] == want["WORKDIR"]
    assert config["Cmd"] == json.loads(want["CMD"])
    assert config.get("Entrypoint") is None
    assert sorted(config["ExposedPorts"]) == sorted(f"{p}/tcp" for p in want["EXPOSE"].split())
    for assignment in shlex.split(want["ENV"]):
        assert assignment in config["Env"]
    options, command = want["HEALTHCHECK"].split(" CMD ", 1)
    assert config["Healthcheck"]["Test"] == ["CMD", *json.loads(command)]
    assert config["Healthcheck"]["Retries"] == int(re.search(r"--retries=(\d+)", options).group(1))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: the manifests cannot be rendered")
def test_every_kubernetes_container_command_runs_in_the_image(kappa_image):
    """deploy/kubernetes gives the image whole command lines (`args:`, no `command:`): with no
    ENTRYPOINT in the image, each names a binary and subcommand the image has."""
    import yaml

    rendered = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, "deploy", "kubernetes", "overlays", "production")],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    commands = set()
    for doc in yaml.safe_load_all(rendered.stdout):
        spec = (doc or {}).get("spec", {})
        pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {})).get("spec", {})
        for container in pod.get("containers", []):
            line = container.get("command", []) + container.get("args", [])
            commands.add(tuple(word for word in line if not word.startswith("-"))[:2])
    assert ("kappa-gateway", "serve") in commands and ("kappa-compactor", "run") in commands, commands
    for command in sorted(commands):
        assert f"Usage: {command[0]} {command[1]}" in docker("run", "--rm", kappa_image, *command, "--help")
