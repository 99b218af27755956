"""The cluster files parse, validate and agree: KubeRay manifests, the launcher YAML (against the
schema Ray ships), the Dockerfile, and the Ray version the project runs."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from pipelines.cli import build_parser, load_commands

ROOT = Path(__file__).resolve().parents[2] / "cluster"
KUBERAY = sorted((ROOT / "kuberay").glob("*.yaml"))
LAUNCHER = sorted((ROOT / "launcher").glob("*.yaml"))
IMAGE = f"geolip/geolip:ray{ray.__version__}-py311-gpu"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind(kind: str) -> list[dict]:
    return [d for p in KUBERAY for d in _docs(p) if d["kind"] == kind]


def _pod_templates() -> list[dict]:
    (cluster,) = _by_kind("RayCluster")
    spec = cluster["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    return pods + [d["spec"]["template"]["spec"] for d in _by_kind("Deployment")]


def test_dockerfile_manifests_and_launcher_pin_the_tested_ray() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1) == ray.__version__
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in dockerfile
    for cluster in _by_kind("RayCluster"):
        assert cluster["spec"]["rayVersion"] == ray.__version__
    images = [c["image"] for pod in _pod_templates() for c in pod["containers"]]
    images += [yaml.safe_load(p.read_text())["docker"]["image"] for p in LAUNCHER]
    assert images and set(images) == {IMAGE}


def test_raycluster_head_gpu_workers_auth_and_shared_storage() -> None:
    (cluster,) = _by_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no work on the head
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    (claim,) = _by_kind("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    service = _named("Service", "geolip-mlflow")
    tracking = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    for pod in _pod_templates():
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: claims[m["name"]] for m in container["volumeMounts"]}
            assert mounts["/data"] == claim["metadata"]["name"]
            env = _env(container)
            if container["name"] != "mlflow":
                assert env == {"GEOLIP_DATA": "/data", "MLFLOW_TRACKING_URI": tracking}


def _named(kind: str, name: str) -> dict:
    (doc,) = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def _env(container: dict) -> dict:
    """name → value, or ``secret:NAME/KEY`` for a value taken from a Secret."""
    out = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        out[e["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else e["value"]
    return out


def test_mlflow_server_keeps_runs_in_postgres_and_artifacts_on_the_shared_volume() -> None:
    deployment = _named("Deployment", "geolip-mlflow")
    service = _named("Service", "geolip-mlflow")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert '--backend-store-uri "postgresql://mlflow@${PGHOST}:${PGPORT}/mlflow"' in command
    assert "sqlite" not in command
    assert "--artifacts-destination /data/mlflow/artifacts" in command
    env = _env(container)
    assert env["PGHOST"] == "geolip-postgres"
    assert env["PGPASSWORD"] == "secret:geolip-postgres/password"  # never in the manifest
    assert service["spec"]["type"] == "ClusterIP"  # in-cluster only
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]


def test_postgres_has_its_own_volume_and_the_same_secret() -> None:
    db = _named("StatefulSet", "geolip-postgres")
    service = _named("Service", "geolip-postgres")
    (container,) = db["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["POSTGRES_USER"] == "mlflow" and env["POSTGRES_DB"] == "mlflow"
    assert env["POSTGRES_PASSWORD"] == "secret:geolip-postgres/password"
    (claim,) = db["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # a local disk, not the RWX share
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == db["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == int(
        _env(_named("Deployment", "geolip-mlflow")["spec"]["template"]["spec"]["containers"][0])[
            "PGPORT"
        ]
    )


@pytest.mark.parametrize("path", [p for p in KUBERAY if p.name.startswith("rayjob-")], ids=str)
def test_rayjobs_run_real_geolip_commands_on_shared_paths(path: Path) -> None:
    (job,) = _docs(path)
    (cluster,) = _by_kind("RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "geolip"
    args = build_parser(load_commands()).parse_args(argv[1:])  # a typo'd flag fails here
    for flag in ("out", "data_dir"):
        value = getattr(args, flag, None)
        assert value is None or value.startswith("/data")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["GEOLIP_DATA"] == "/data"
    if hasattr(args, "gpu"):  # GPU workers scale from zero: ask, do not detect what is up now
        assert args.gpu == "on"


@pytest.mark.parametrize("path", LAUNCHER, ids=str)
def test_launcher_yaml_validates_against_rays_schema(path: Path) -> None:
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(config)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("/data" in c for c in config["initialization_commands"])
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] >= 1
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "eight"
    with pytest.raises(Exception, match="eight"):
        validate_config(broken)


@pytest.mark.parametrize("path", LAUNCHER, ids=str)
def test_launcher_runs_mlflow_on_postgres_on_the_head(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert "sqlite" not in path.read_text()  # no SQLite file shared over EFS
    head = config["available_node_types"][config["head_node_type"]]
    init = " ".join(head["initialization_commands"])
    assert "postgres:16" in init and "-p 127.0.0.1:5432:5432" in init  # not exposed off the head
    assert "--env-file /etc/geolip/pg.env" in init and "umask 077" in init
    start = " ".join(config["head_start_ray_commands"])
    assert "--backend-store-uri postgresql://mlflow@127.0.0.1:5432/mlflow" in start
    assert "--artifacts-destination /data/mlflow/artifacts" in start
    assert 'MLFLOW_TRACKING_URI="http://$(hostname -I' in start
    workers = " ".join(config["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    assert "/etc/geolip:/etc/geolip:ro" in config["docker"]["head_run_options"][0]
