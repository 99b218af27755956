"""What a job may have on its cluster, not only what is up: GPU choice and admission that work
with autoscaling, and the wait for the nodes an autoscaler adds.

A KubeRay or cluster-launcher cluster starts with a head that schedules nothing and worker groups
at zero: ``ray.cluster_resources()`` then says "no GPUs, no CPUs" although the autoscaler adds
them as soon as something asks. So ``--gpu auto`` and a sweep's admission ask for the cluster's
*possible* resources (:func:`cluster_capacity`): what is up, plus what the autoscaler's node
groups may add where Ray knows them. Then the job asks for its bundles with a placement group and
waits ``--wait-nodes`` seconds for them (:func:`wait_for`): a pending placement group is what
makes the autoscaler add nodes, and a job that cannot get them fails with one line instead of
waiting forever (Ray Train's own wait retries without end, see ``runtime.fit``).

Three kinds of cluster (``Capacity.kind``):

- ``fixed``: no autoscaler; possible = what is up (one machine, a static cluster).
- ``node groups``: an autoscaler whose node groups Ray keeps in the GCS; possible = the larger of
  what is up and the groups' maxima (what Ray Train V2 itself checks against).
- ``autoscaler``: an autoscaler that does not publish its node groups (Ray 2.60's own v1 and v2
  autoscalers do not, nor its fake multi-node provider): anything may come, so nothing is
  refused up front, ``--gpu auto`` sees only what is up, and ``--gpu on`` or ``--workers-gpus``
  say what to wait for.

Ray is imported lazily: the CLI's flag checks run before any cluster is touched.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipelines.errors import GeolipError

if TYPE_CHECKING:
    from pipelines.runtime import RunContext

DEFAULT_WAIT_NODES = 600
"""Seconds a job waits for the nodes it asks for (``--wait-nodes``): an autoscaled GPU node
takes minutes to boot, pull the image and join."""
UNBOUNDED = float(sys.maxsize)
"""What Ray's node group configs say for "no limit" (a ``max_count`` of -1)."""
_KINDS = ("CPU", "GPU")


@dataclass(frozen=True)
class Capacity:
    """A cluster's resources now and what it may have (``possible`` None: not known, an
    autoscaler may add anything). ``shapes``: the resources of each node that is up or that a
    node group may add (a bundle must fit on one); None when not known."""

    kind: str
    now: dict
    possible: dict | None
    shapes: tuple[dict, ...] | None

    @property
    def scalable(self) -> bool:
        return self.kind != "fixed"

    def at_most(self, resource: str) -> float:
        """The most of ``resource`` the cluster may have (inf when not known)."""
        if self.possible is None:
            return math.inf
        return self.possible.get(resource, 0.0)

    def promised(self, ctx: RunContext) -> Capacity:
        """This capacity, with the GPUs ``--workers-gpus`` promises taken on trust (a node
        may join that nothing here knows of): only the wait can refuse them."""
        if not ctx.workers_gpus or self.possible is None:
            return self
        return replace(self, possible={**self.possible, "GPU": UNBOUNDED}, shapes=None)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "now": self.now, "possible": self.possible,
                "shapes": None if self.shapes is None else list(self.shapes)}  # fmt: skip


def cluster_capacity() -> Capacity:
    """The running cluster's ``Capacity`` (Ray must be initialised)."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    shapes = [_plain(n.get("Resources", {})) for n in alive]
    now = _plain(ray.cluster_resources())
    groups, limits = autoscaler_node_groups()
    if groups:
        # As Ray Train V2 reckons it: each group's resources times its most nodes (-1: no
        # limit), summed, within the cluster's own limits; never less than what is up.
        most: dict = {}
        for group in groups:
            count = group["max_count"]
            for key, value in group["resources"].items():
                more = UNBOUNDED if count < 0 else value * count
                most[key] = min(UNBOUNDED, most.get(key, 0.0) + more)
        possible = {k: min(v, limits.get(k, UNBOUNDED)) for k, v in most.items()}
        possible = {k: max(possible.get(k, 0.0), now.get(k, 0.0)) for k in {*possible, *now}}
        shapes += [g["resources"] for g in groups if g["max_count"] != 0]
        return Capacity("node groups", now, possible, tuple(shapes))
    if has_autoscaler():
        return Capacity("autoscaler", now, None, None)
    return Capacity("fixed", now, now, tuple(shapes))


def _plain(resources: dict) -> dict:
    """CPU, GPU and custom resources (not memory, node ids nor placement-group bundles)."""
    skip = ("memory", "object_store_memory")
    return {
        k: float(v)
        for k, v in resources.items()
        if k not in skip and not k.startswith("node:") and "_group_" not in k
        and not k.startswith("bundle_group")
    }  # fmt: skip


def autoscaler_node_groups() -> tuple[list[dict], dict]:
    """The autoscaler's node groups as Ray keeps them in the GCS, ``[{"name", "resources",
    "max_count"}]`` (empty when none are published), and the cluster's resource limits.

    Why a private API: ``ray._private.state.state.get_cluster_config()`` is what Ray Train V2
    checks a worker group against (``worker_group.py``) and the only place Ray exposes node
    groups to a driver; it has no public equivalent in Ray 2.60. Any failure of it (a Ray that
    moved or renamed it) reads as "not published", which only makes ``--gpu auto`` see less.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 (a private API: any change of it means "not known")
        return [], {}
    if config is None:
        return [], {}
    groups = [
        {"name": g.name, "resources": {k: float(v) for k, v in g.resources.items()},
         "max_count": int(g.max_count)}
        for g in config.node_group_configs
    ]  # fmt: skip
    return groups, {k: float(v) for k, v in config.max_resources.items()}


def has_autoscaler() -> bool:
    """Whether an autoscaler that can add nodes runs for this cluster.

    The v1 monitor publishes its report in the GCS's key-value store. A cluster started without
    an autoscaling config (``ray.init``, a hand-made ``ray start`` cluster) runs it too, over a
    read-only provider whose only node types are its nodes, named ``node_<node id>``: that one
    adds nothing. KubeRay's v2 autoscaler marks the cluster as v2. Private names again (no
    public API says it): any failure reads as "no autoscaler". For the first seconds of a head
    (before the monitor's first update) there is no report yet either.
    """
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        from ray.experimental.internal_kv import _internal_kv_get

        status = json.loads(_internal_kv_get("__autoscaling_status") or "{}")
        report = status.get("autoscaler_report") or {}
        types = (report.get("node_type_mapping") or {}).items()
        if report and not all(kind == f"node_{node}" for node, kind in types):
            return True
        return bool(is_autoscaler_v2(fetch_from_server=True))
    except Exception:  # noqa: BLE001
        return False


def worker_resources(ctx: RunContext, cap: Capacity) -> dict:
    """What one Ray Train worker reserves: ``{"GPU": n}`` or ``{"CPU": 1}``.

    ``--workers-gpus N``: N GPUs each, whatever is up now (the user says the cluster will have
    them). ``--gpu on``: one each, refused if the cluster has none and cannot get any.
    ``--gpu auto``: GPUs if the cluster has or may get any (an autoscaler that does not say what
    it may add: only if some are up now).
    """
    if ctx.workers_gpus:
        return {"GPU": float(ctx.workers_gpus)}
    if ctx.use_gpu is False:
        return {"CPU": 1.0}
    gpus = cap.now.get("GPU", 0.0) if cap.possible is None else cap.at_most("GPU")
    if ctx.use_gpu is None:
        return {"GPU": 1.0} if gpus > 0 else {"CPU": 1.0}
    if cap.at_most("GPU") <= 0:
        why = (
            ", and no node group of its autoscaler has one"
            if cap.scalable
            else " and no autoscaler"
        )
        raise GeolipError(
            f"--gpu on: the cluster has no GPUs and cannot get any (it has {amounts(cap.now)}"
            f"{why}); use --gpu auto or --gpu off, or add GPU nodes"
        )
    return {"GPU": 1.0}


def resolve(ctx: RunContext, cap: Capacity) -> RunContext:
    """``ctx`` with its GPU choice decided: ``use_gpu`` a bool and ``workers_gpus`` the GPUs per
    worker (None on CPUs)."""
    per = worker_resources(ctx, cap)
    gpus = per.get("GPU")
    return ctx.replace(use_gpu=gpus is not None, workers_gpus=gpus)


def check_possible(bundles: list[dict], cap: Capacity, what: str) -> None:
    """Refuse ``bundles`` (one job's) that the cluster can never hold: more of a resource than
    it may have, or a bundle no node (up or addable) fits. Nothing is refused where an
    autoscaler does not say what it may add."""
    need = total(bundles)
    short = [k for k, v in need.items() if v > cap.at_most(k) + 1e-9]
    if short:
        scope = "may have" if cap.kind == "node groups" else "has"
        raise GeolipError(
            f"{what} needs {amounts(need)}; the cluster {scope} at most {amounts(cap.possible)}"
            + (" (what is up and what its autoscaler may add)" if cap.scalable else "")
            + ": lower --workers or --workers-gpus, or add nodes"
        )
    if cap.shapes is None:
        return
    for bundle in {json.dumps(b, sort_keys=True): b for b in bundles}.values():
        if not any(all(s.get(k, 0.0) >= v for k, v in bundle.items()) for s in cap.shapes):
            raise GeolipError(
                f"{what}: no node of the cluster can hold one worker's {amounts(bundle)} "
                f"(its nodes: {'; '.join(amounts(s) for s in cap.shapes) or 'none'}); "
                "lower --workers-gpus or add bigger nodes"
            )


def wait_for(bundles: list[dict], timeout: float, what: str) -> None:
    """Ask the cluster for ``bundles`` at once (a placement group, packed as Ray Train packs its
    workers) and wait up to ``timeout`` seconds for them; then give them back for the job to
    take. The pending group is what makes an autoscaler add nodes. Raises one line naming
    ``--wait-nodes`` if they do not come."""
    from ray.util.placement_group import placement_group, remove_placement_group

    started = time.monotonic()
    pg = placement_group([dict(b) for b in bundles if b], strategy="PACK")
    try:
        ready = pg.wait(min(timeout, 2.0))
        if not ready and timeout > 2.0:
            # stderr: a note on the way, not the command's output (a refusal prints nothing
            # on stdout)
            print(
                f"{what}: waiting up to {timeout:g} s (--wait-nodes) for the cluster to have "
                f"{amounts(total(bundles))} free (it has {amounts(_now())})",
                file=sys.stderr,
                flush=True,
            )
            ready = pg.wait(max(0.0, timeout - (time.monotonic() - started)))
    finally:
        remove_placement_group(pg)
    if not ready:
        raise GeolipError(timeout_message(total(bundles), timeout, what))


def timeout_message(need: dict, timeout: float, what: str) -> str:
    """The one line of a job whose resources did not come in ``timeout`` seconds."""
    now = _now()
    short = [k for k in sorted(need) if now.get(k, 0.0) + 1e-9 < need[k]]
    if short:
        had = ", ".join(_amount(now.get(k, 0.0), k) for k in short)
        state = f"the cluster has had {had} for {timeout:g} s"
    else:
        state = f"the cluster has them but they have been in use for {timeout:g} s"
    return (
        f"--wait-nodes {timeout:g}: {what} asked for {amounts(need)}; {state}; raise "
        "--wait-nodes, lower --workers or --workers-gpus, or check that the autoscaler can "
        "add such nodes (node types, quotas)"
    )


def _now() -> dict:
    import ray

    return _plain(ray.cluster_resources())


def total(bundles: list[dict]) -> dict:
    """The sum of ``bundles`` per resource."""
    out: dict = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _num(value: float) -> str:
    return "unlimited" if value >= UNBOUNDED else f"{value:g}"


def amounts(resources: dict | None) -> str:
    """``2 GPUs, 0.5 CPUs`` (CPU and GPU first, then the rest)."""
    if not resources:
        return "nothing"
    keys = [k for k in _KINDS if k in resources] + sorted(set(resources) - set(_KINDS))
    return ", ".join(_amount(resources[k], k) for k in keys)


def _amount(value: float, resource: str) -> str:
    return f"{_num(value)} {resource}" + ("" if value == 1 else "s")


def claim(ctx: RunContext, what: str) -> RunContext:
    """A training's cluster check, before it writes anything: decide the GPU choice, refuse
    workers the cluster can never hold, and wait for them (``--wait-nodes``). Ray is
    started here if it is not. Returns ``ctx`` with ``use_gpu`` and ``workers_gpus`` decided
    (in process, as the caller decided them: there is nothing left to claim)."""
    from pipelines.runtime import init_ray

    if ctx.in_process:  # the calling process (a Tune trial) already holds its worker's share
        return ctx
    init_ray(ctx.workers)
    what = f"{what} ({ctx.workers} worker{'s' if ctx.workers > 1 else ''})"
    cap = cluster_capacity().promised(ctx)
    ctx = resolve(ctx, cap)
    bundles = [worker_bundle(ctx)] * ctx.workers
    check_possible(bundles, cap, what)
    wait_for(bundles, wait_seconds(ctx), what)
    return ctx


def worker_bundle(ctx: RunContext) -> dict:
    """One worker's bundle of a resolved ``ctx``."""
    return {"GPU": float(ctx.workers_gpus)} if ctx.use_gpu else {"CPU": 1.0}


def wait_seconds(ctx: RunContext) -> float:
    return float(DEFAULT_WAIT_NODES if ctx.wait_nodes is None else ctx.wait_nodes)


def gpus_per_worker(text: str) -> float:
    """An argparse ``type`` for ``--workers-gpus``: a number > 0, a fraction only up to 1 (Ray
    shares a GPU between workers but gives none more than one GPU in part)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GPUs, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number of GPUs > 0, got {text}")
    if value > 1 and not value.is_integer():
        raise argparse.ArgumentTypeError(
            f"more than one GPU per worker must be a whole number, got {text}"
        )
    return value


def add_capacity_arguments(p: argparse.ArgumentParser, what: str = "worker") -> None:
    """``--gpu``, ``--workers-gpus`` and ``--wait-nodes`` (train aleph, train svae, sweep)."""
    from pipelines.cli import int_at_least

    p.add_argument(
        "--gpu",
        choices=("auto", "on", "off"),
        default="auto",
        help="use GPUs: auto = if the cluster has or its autoscaler may add GPU nodes",
    )
    p.add_argument(
        "--workers-gpus",
        type=gpus_per_worker,
        default=None,
        metavar="N",
        help=f"GPUs per Ray Train {what} (e.g. 1, 2 or 0.5): the job asks for them and waits "
        "for the cluster to have them, as when the autoscaler does not say it can add GPU nodes",
    )
    p.add_argument(
        "--wait-nodes",
        type=int_at_least(0),
        default=None,
        metavar="SECONDS",
        help=f"how long to wait for the nodes the job needs to come up or free up, then fail "
        f"(default {DEFAULT_WAIT_NODES}; 0: fail at once)",
    )


def capacity_settings(args: argparse.Namespace) -> dict:
    """``RunContext`` settings from the flags of :func:`add_capacity_arguments`."""
    if args.workers_gpus is not None and args.gpu == "off":
        raise GeolipError(
            f"--workers-gpus {args.workers_gpus:g} asks for GPUs but --gpu off for none: drop "
            "one of them"
        )
    use_gpu = {"auto": None, "on": True, "off": False}[args.gpu]
    if args.workers_gpus is not None:
        use_gpu = True
    return {"use_gpu": use_gpu, "workers_gpus": args.workers_gpus, "wait_nodes": args.wait_nodes}
