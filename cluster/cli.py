"""``geolip submit`` and ``geolip jobs list|status|logs|stop`` (plugged in through the
``geolip.commands`` entry point)."""

from __future__ import annotations

import argparse
import math

from pipelines.cli import Command


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="job server URL (default $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else "
        "http://127.0.0.1:8265)",
    )


def non_negative(text: str) -> float:
    """An argparse ``type``: a finite number >= 0 (entrypoint CPUs or GPUs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _add_submit(p: argparse.ArgumentParser) -> None:
    _address(p)
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return once the job is submitted (default: stream its logs until it ends and "
        "exit with its status, as `ray job submit` does)",
    )
    p.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        help="wait for the job (the default; kept for scripts from when waiting was opt-in)",
    )
    p.add_argument(
        "--runtime-env",
        default=None,
        metavar="FILE",
        help="a Ray runtime env as YAML or JSON (pip, env_vars, working_dir, ...); the env vars "
        "geolip submit sets itself go over its env_vars",
    )
    p.add_argument(
        "--entrypoint-num-cpus",
        type=non_negative,
        default=None,
        metavar="N",
        help="CPUs reserved for the entrypoint, the job's driver (default: Ray's, 0)",
    )
    p.add_argument(
        "--entrypoint-num-gpus",
        type=non_negative,
        default=None,
        metavar="N",
        help="GPUs reserved for the entrypoint (default: Ray's, 0)",
    )
    p.add_argument("--working-dir", default=None, help="upload this directory and run from it")
    p.add_argument("--data-dir", default=None, help="absolute data directory on shared storage")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI the job logs to")
    p.add_argument("--submission-id", default=None, help="job id (default: a stable one)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable of the job (repeatable)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- geolip COMMAND ...")


def _submit(args: argparse.Namespace) -> int:
    from cluster.submit import Submission, SubmitError, submit

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SubmitError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    sub = Submission(
        tuple(command),
        args.address,
        args.wait,
        args.working_dir,
        args.data_dir,
        args.tracking_uri,
        args.submission_id,
        env,
        args.runtime_env,
        args.entrypoint_num_cpus,
        args.entrypoint_num_gpus,
    )
    return submit(sub)


def _add_id(p: argparse.ArgumentParser) -> None:
    _address(p)
    p.add_argument("submission_id", help="the job's submission id")


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cluster.submit import client, job_errors

    table = Table("submission id", "status", "entrypoint")
    jobs = client(args.address)
    with job_errors("jobs list", args.address):
        jobs = sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0)
    for job in jobs:
        table.add_row(job.submission_id or job.job_id or "", str(job.status.value), job.entrypoint)
    Console().print(table)
    return 0


def _status(args: argparse.Namespace) -> int:
    from cluster.submit import client, job_errors

    jobs = client(args.address)
    with job_errors(f"jobs status {args.submission_id}", args.address):
        info = jobs.get_job_info(args.submission_id)
    print(
        f"{args.submission_id}: {info.status.value}"
        + (f" ({info.message})" if info.message else "")
    )
    return 0


def _add_logs(p: argparse.ArgumentParser) -> None:
    _add_id(p)
    p.add_argument("--follow", action="store_true", help="stream until the job ends")


def _logs(args: argparse.Namespace) -> int:
    from cluster.submit import client, follow, job_errors

    jobs = client(args.address)
    with job_errors(f"jobs logs {args.submission_id}", args.address):
        if args.follow:
            jobs.get_job_info(args.submission_id)  # an unknown id: one line, before streaming
            return follow(jobs, args.submission_id)
        logs = jobs.get_job_logs(args.submission_id)
    print(logs, end="")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from cluster.submit import client, job_errors

    jobs = client(args.address)
    with job_errors(f"jobs stop {args.submission_id}", args.address):
        stopped = jobs.stop_job(args.submission_id)
    print(f"{args.submission_id}: " + ("stop requested" if stopped else "already finished"))
    return 0


COMMANDS = [
    Command(
        "submit", "submit a geolip command as a Ray job on a running cluster", _add_submit, _submit
    ),
    Command("jobs list", "the cluster's jobs", _address, _list),
    Command("jobs status", "one job's status", _add_id, _status),
    Command("jobs logs", "one job's logs (--follow to stream)", _add_logs, _logs),
    Command("jobs stop", "stop a running job", _add_id, _stop),
]
