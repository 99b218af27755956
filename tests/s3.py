"""A real S3-compatible server for tests: moto's standalone server on a free 127.0.0.1 port.

The server runs as a subprocess in its own process group (ended with SIGTERM, then SIGKILL, at
the end of the block). It starts open, which lets the fixture create an IAM user with an access
key allowed ``s3:*`` (but one denied key, ``DENIED_PREFIX``) and one bucket; then authentication is switched on (moto's
``/moto-api/reset-auth``), so that a wrong key is refused as a real S3 refuses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.runtime import free_port

MOTO = Path(sys.executable).with_name("moto_server")
REGION = "us-east-1"
DENIED_PREFIX = "no-manifest"
"""Under this prefix (any bucket) the key may not write ``manifest.json``: a publish that fails
at its last step, as a bucket policy or a full quota makes it fail."""
_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::*/{DENIED_PREFIX}/manifest.json",
        },
    ],
}


@dataclass(frozen=True)
class S3Server:
    """Where the server is, a valid key pair and the bucket created for the test."""

    endpoint: str
    key_id: str
    secret: str
    bucket: str

    def env(self, **overrides: str) -> dict[str, str]:
        """The standard AWS environment a client of this server needs (geolip, boto3, MLflow)."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
        return env | overrides

    def client(self):
        """A boto3 S3 client with the valid key (for listing and reading in assertions)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name=REGION,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2")
        found = pages.paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in found for o in page.get("Contents", []))


def _wait_up(endpoint: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s")


def _provision(endpoint: str, bucket: str) -> tuple[str, str]:
    """An IAM user allowed ``s3:*``, its key pair and ``bucket``; then auth is switched on."""
    import boto3

    open_creds = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, **open_creds)
    iam.create_user(UserName="geolip")
    iam.put_user_policy(UserName="geolip", PolicyName="s3", PolicyDocument=json.dumps(_POLICY))
    key = iam.create_access_key(UserName="geolip")["AccessKey"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **open_creds)
    s3.create_bucket(Bucket=bucket)
    # text/plain: a form content type would leave moto an empty body to parse.
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req, timeout=10).close()
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextlib.contextmanager
def s3_server(bucket: str = "geolip-test", timeout: float = 60) -> Iterator[S3Server]:
    """Run moto's S3 server while the block runs, with ``bucket`` created."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_up(endpoint, proc, timeout)
        key_id, secret = _provision(endpoint, bucket)
        yield S3Server(endpoint, key_id, secret, bucket)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def use_server(monkeypatch, server: S3Server, cache: Path) -> S3Server:
    """Point this process's standard AWS environment at ``server``; readers cache in ``cache``."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return server
