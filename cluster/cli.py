"""``geolip submit`` and ``geolip jobs list|status|logs|stop`` (plugged in through the
``geolip.commands`` entry point)."""

from __future__ import annotations

import argparse

from pipelines.cli import Command


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="job server URL (default $RAY_ADDRESS, else http://127.0.0.1:8265)",
    )


def _add_submit(p: argparse.ArgumentParser) -> None:
    _address(p)
    p.add_argument(
        "--wait", action="store_true", help="stream the logs; exit with the job's status"
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
