"""The one-call GPU check (``make gpu-check``): parity of every GPU path, then a benchmark, as
JSON + Markdown. Needs only PyTorch (and Triton for fla): no Ray, MLflow, DuckDB or pytest.

Checks (each PASS / FAIL / n/a with its figure), on ``--device`` against fp64 oracles on CPU:
the chunked scan's values, gradients and final state; ``attn_impl=fla`` (its own parity gate);
the fused decode step; the bank log-sum-exp (tiled vs naive, with gradients); decode equals the
full pass for a small model; one bf16-autocast training step against fp32; ``train.compile``'s
own parity check. Benchmark: one 23M-tier attention layer fwd+bwd (PyTorch chunk, fla, SDPA) at
T = 2K...64K with peak memory, decode ms/token over 8 layers (fused step vs SDPA's KV read), and
``calib23m`` training bytes/s under bf16 autocast.

    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu-check          # on the GPU machine
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --quick     # the code paths, here

Missing wheels (numpy for geolip's models, einops + fla-core for fla) are installed from
``gpu-wheels/`` when that folder travels with the tree (``make gpu-wheels`` fills it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WHEELS = Path(__file__).resolve().parents[1] / "gpu-wheels"


def ensure_wheels() -> list[str]:
    """Install what is missing from ``gpu-wheels/`` (offline); the names still missing."""
    import importlib.util

    missing = [m for m in ("numpy", "einops", "fla") if importlib.util.find_spec(m) is None]
    if missing and WHEELS.is_dir():
        names = ["fla-core" if m == "fla" else m for m in missing]
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links"]
        subprocess.run([*pip, str(WHEELS), *names], check=False)
        importlib.invalidate_caches()
    return [m for m in ("numpy", "einops", "fla") if importlib.util.find_spec(m) is None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    ap.add_argument("--quick", action="store_true", help="tiny shapes: the code paths only")
    args = ap.parse_args(argv)
    still_missing = ensure_wheels()
    import torch
    from gpu_check_cases import CHECKS, benchmark

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "missing": still_missing,
        "quick": args.quick,
    }
    print(f"gpu-check on {info['device']} (torch {info['torch']}, CUDA {info['cuda']})", flush=True)
    checks = []
    for name, fn in CHECKS:
        t0 = time.perf_counter()
        try:
            status, detail = fn(device, args.quick)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failure
            status, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        checks.append({"check": name, "status": status, "detail": detail})
        print(f"  {status:<4} {name}: {detail} ({time.perf_counter() - t0:.1f}s)", flush=True)
    bench = benchmark(device, args.quick)
    write(args.out, info, checks, bench)
    failed = [c["check"] for c in checks if c["status"] == "FAIL"]
    print(f"{len(failed)} check(s) failed{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


def write(out: Path, info: dict, checks: list[dict], bench: dict) -> None:
    """``gpu_check.json`` and ``gpu_check.md`` under ``out`` (written whole, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"info": info, "checks": checks, "benchmark": bench}
    lines = [f"# gpu-check on {info['device']}", "", f"torch {info['torch']}, CUDA {info['cuda']}"]
    lines += ["", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {c['check']} | {c['status']} | {c['detail']} |" for c in checks]
    for table, rows in bench.items():
        if rows:
            keys = list(rows[0])
            lines += ["", f"## {table}", "", "| " + " | ".join(keys) + " |"]
            lines += ["|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    for name, text in (
        ("gpu_check.json", json.dumps(doc, indent=1)),
        ("gpu_check.md", "\n".join(lines)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out / name)
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
