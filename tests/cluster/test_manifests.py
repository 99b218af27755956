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
    (service,) = _by_kind("Service")
    tracking = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    for pod in _pod_templates():
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: claims[m["name"]] for m in container["volumeMounts"]}
            assert mounts["/data"] == claim["metadata"]["name"]
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            if container["name"] != "mlflow":
                assert env == {"GEOLIP_DATA": "/data", "MLFLOW_TRACKING_URI": tracking}


def test_mlflow_server_keeps_its_store_on_the_shared_volume() -> None:
    (deployment,) = _by_kind("Deployment")
    (service,) = _by_kind("Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert "--backend-store-uri sqlite:////data/mlflow/mlflow.db" in command
    assert "--artifacts-destination /data/mlflow/artifacts" in command
    assert service["spec"]["type"] == "ClusterIP"  # in-cluster only
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]


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


@pytest.mark.parametrize("path", LAUNCHER, ids=str)
def test_launcher_yaml_validates_against_rays_schema(path: Path) -> None:
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(config)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("/data" in c for c in config["initialization_commands"])
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "eight"
    with pytest.raises(Exception, match="eight"):
        validate_config(broken)
