"""Output roots: a local (or shared POSIX) directory, or a prefix in an S3-compatible object store.

``parse_root`` turns what a user typed into a ``Root`` (a ``pyarrow.fs`` file system and a path
in it); ``check_root`` also probes an object store before any work starts: the endpoint (one TCP
connect with a short timeout, not the SDK's retries), the bucket and the credentials, each
failure one line naming the flag. The endpoint comes from the standard ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and the
credentials from the AWS SDK's standard chain (environment, ``~/.aws``, instance roles).

Object stores have no rename, so a result is built in a local staging directory and published
with ``publish_dir``: every file is uploaded, the completion marker (``manifest.json``) last;
readers trust a prefix only when its marker is there, and a failed upload removes what it wrote.
``cached_copy`` is the reading side: a published result copied once into a local cache, keyed by
its URI and its marker's bytes, so readers built for directories (DuckDB, safetensors) read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipelines.errors import GeolipError

MARKER = "manifest.json"
SUPPORTED = ("s3",)
# A probe that hangs is worse than one that fails: the SDK would retry for ~100 s.
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Root:
    """Where an output lives: ``uri`` as shown to users, ``fs`` and ``path`` as pyarrow needs."""

    uri: str
    fs: pafs.FileSystem
    path: str

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, name: str) -> Root:
        """``name`` (a relative ``a/b`` path) under this root."""
        return Root(f"{self.uri.rstrip('/')}/{name}", self.fs, f"{self.path.rstrip('/')}/{name}")


def is_uri(value: str | os.PathLike) -> bool:
    """``scheme://...`` (an object store or a remote file system), not a local path."""
    return isinstance(value, str) and "://" in value and value.split("://", 1)[0].isidentifier()


def endpoint_url() -> str | None:
    """The S3 endpoint of the standard AWS environment (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _endpoint_name() -> str:
    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        return "$AWS_ENDPOINT_URL_S3"
    return "$AWS_ENDPOINT_URL" if os.environ.get("AWS_ENDPOINT_URL") else "AWS S3"


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 file system from the standard AWS environment: a short connect timeout and three
    tries (the SDK's default retries an unreachable endpoint for minutes)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(
        endpoint_override=endpoint_url(),
        region=region,
        connect_timeout=PROBE_TIMEOUT_S,
        request_timeout=60,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    )


def parse_root(value: str | os.PathLike, flag: str) -> Root:
    """``value`` as a ``Root``: a local path made absolute, or ``s3://BUCKET[/PREFIX]``.

    Other schemes are refused with one line (as a path, ``gs://b/x`` would become ``./gs:/b/x``).
    """
    if not is_uri(value):
        path = Path(value).expanduser().resolve()
        return Root(str(path), pafs.LocalFileSystem(), str(path))
    text = str(value)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in SUPPORTED:
        raise GeolipError(
            f"{flag} {text}: {scheme}:// is not supported; use s3://BUCKET/PREFIX (any "
            "S3-compatible store, endpoint in $AWS_ENDPOINT_URL) or a local or shared POSIX path"
        )
    parsed = urlparse(text)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    parts = prefix.split("/") if prefix else []
    if not bucket or parsed.query or parsed.fragment or any(p in ("", ".", "..") for p in parts):
        raise GeolipError(f"{flag} {text}: expected s3://BUCKET/PREFIX")
    uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return Root(uri, s3_filesystem(), f"{bucket}/{prefix}" if prefix else bucket)


def check_root(value: str | os.PathLike, flag: str) -> Root:
    """``parse_root``, then (for an object store) the endpoint, bucket and credentials probed,
    each failure one ``GeolipError`` line naming ``flag``; nothing is written."""
    root = parse_root(value, flag)
    if root.remote:
        _probe_endpoint(root, flag)
        _probe_bucket(root, flag)
    return root


def _probe_endpoint(root: Root, flag: str) -> None:
    """One TCP connect to the endpoint (an unreachable one otherwise costs the SDK's retries)."""
    url = endpoint_url()
    if url is None:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        url = f"https://s3.{region}.amazonaws.com"
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not parsed.hostname:
        raise GeolipError(f"{flag} {root.uri}: {_endpoint_name()} {url!r} is not an http(s) URL")
    try:
        socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise GeolipError(
            f"{flag} {root.uri}: the S3 endpoint {url} ({_endpoint_name()}) cannot be reached "
            f"({exc.strerror or type(exc).__name__}); check the URL and that the server is up"
        ) from None


def _probe_bucket(root: Root, flag: str) -> None:
    """The bucket exists and the credentials may list it. HeadBucket answers a wrong key with a
    bare 403, as it answers a missing permission: ListObjects then says which it is."""
    bucket = root.path.split("/", 1)[0]
    listing = pafs.FileSelector(root.path, allow_not_found=True)
    try:
        found = root.fs.get_file_info(bucket).type != pafs.FileType.NotFound
    except OSError as head_error:
        problem = _s3_problem(head_error, bucket)
        try:
            root.fs.get_file_info(listing)
        except OSError as list_error:
            problem = _s3_problem(list_error, bucket)
        raise GeolipError(f"{flag} {root.uri}: {problem}") from None
    if not found:
        raise GeolipError(
            f"{flag} {root.uri}: bucket {bucket!r} does not exist at {endpoint_url() or 'AWS S3'}"
            " (create it first)"
        )
    try:
        root.fs.get_file_info(listing)
    except OSError as exc:
        raise GeolipError(f"{flag} {root.uri}: {_s3_problem(exc, bucket)}") from None


def _s3_problem(exc: OSError, bucket: str) -> str:
    """What an S3 error means for the user, on one line."""
    text = str(exc)
    if any(code in text for code in ("INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH")):
        return (
            "the S3 credentials were refused (wrong AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "or ~/.aws profile)"
        )
    if not _credentials_configured() and any(
        code in text for code in ("INTERNAL_FAILURE", "ACCESS_DENIED", "MISSING_AUTHENTICATION")
    ):  # the SDK found no key and went on unsigned: its error says nothing of that
        return (
            "no S3 credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "an AWS_PROFILE in ~/.aws, or use an instance role)"
        )
    if "INTERNAL_FAILURE" in text:  # what the SDK says when no credential source answered
        return (
            "the S3 request failed without a reason (INTERNAL_FAILURE: usually no usable "
            "credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or an AWS_PROFILE)"
        )
    if "ACCESS_DENIED" in text:
        return f"access to bucket {bucket!r} was denied (credentials missing or not allowed)"
    if "NETWORK_CONNECTION" in text:
        return f"the S3 endpoint {endpoint_url() or 'AWS S3'} does not answer"
    return " ".join(text.split())


def _credentials_configured() -> bool:
    """Whether any source of the AWS SDK's credential chain is configured (instance metadata,
    which cannot be seen without asking it, counts when not disabled)."""
    env = os.environ
    if (
        env.get("AWS_ACCESS_KEY_ID")
        or env.get("AWS_PROFILE")
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    ):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    ):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" / "credentials")
    if Path(shared).is_file() and Path(shared).stat().st_size > 0:
        return True
    return env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"


def describe(exc: OSError, root: Root, flag: str) -> GeolipError:
    """An S3 error met while working on ``root`` as one line naming ``flag``."""
    return GeolipError(f"{flag} {root.uri}: {_s3_problem(exc, root.path.split('/', 1)[0])}")


def read_bytes(root: Root, name: str) -> bytes | None:
    """The file ``name`` under ``root``, or None where there is none."""
    try:
        with root.fs.open_input_stream(root.child(name).path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def list_files(root: Root) -> list[str]:
    """The relative paths of every file under ``root`` (empty when there is nothing)."""
    selector = pafs.FileSelector(root.path, recursive=True, allow_not_found=True)
    base = root.path.rstrip("/") + "/"
    infos = root.fs.get_file_info(selector)
    return sorted(i.path[len(base) :] for i in infos if i.type == pafs.FileType.File)


def remove_files(root: Root, names: list[str]) -> None:
    """Delete ``names`` under ``root``; the marker first, so no reader trusts the rest meanwhile.

    pyarrow keeps an emptied "directory" alive with a ``prefix/`` marker object; where nothing
    is left under ``root``, those markers go too (up to the first level that holds files).
    """
    for name in sorted(names, key=lambda n: n != MARKER):
        with contextlib.suppress(FileNotFoundError):
            root.fs.delete_file(root.child(name).path)
    if names and root.remote:
        _prune_empty(root.fs, root.path)


def _prune_empty(fs: pafs.FileSystem, path: str) -> None:
    """Remove the directory markers of ``path`` and its parents while they hold no file (never
    the bucket itself)."""
    while "/" in path:
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        if any(i.type == pafs.FileType.File for i in fs.get_file_info(selector)):
            return
        with contextlib.suppress(FileNotFoundError):
            fs.delete_dir(path)
        path = path.rsplit("/", 1)[0]


def publish_dir(local: Path, root: Root, *, replace: list[str] = ()) -> None:
    """Upload the finished directory ``local`` to ``root``: every file, then ``MARKER`` last.

    ``replace`` (the files of an old result, with ``--overwrite``) are deleted first, marker
    first. A failure deletes what this upload wrote, so the prefix never holds a half result.
    """
    names = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    if MARKER not in names:
        raise RuntimeError(f"{local} has no {MARKER}: not a finished result")
    remove_files(root, list(replace))
    written: list[str] = []
    try:
        for name in [n for n in names if n != MARKER] + [MARKER]:
            written.append(name)  # before the upload: an interrupted one may have landed
            pafs.copy_files(
                str(local / name), root.child(name).path, destination_filesystem=root.fs
            )
    except BaseException:
        _roll_back(root, written)
        raise


def _roll_back(root: Root, written: list[str]) -> None:
    """Best effort: delete what a failed upload wrote (the failure itself is what is raised)."""
    for name in written:
        with contextlib.suppress(Exception):
            root.fs.delete_file(root.child(name).path)
    with contextlib.suppress(Exception):
        _prune_empty(root.fs, root.path)


def scratch_dir(prefix: str) -> Path:
    """A new local staging directory (``$GEOLIP_SCRATCH`` or the system temp directory; on a
    multi-node cluster, set it to a shared volume: the build's tasks read what is staged)."""
    base = os.environ.get("GEOLIP_SCRATCH") or tempfile.gettempdir()
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def cache_home() -> Path:
    """Where published results are cached for reading: ``$XDG_CACHE_HOME/geolip/remote``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geolip" / "remote"


def cached_copy(root: Root, flag: str) -> Path:
    """A local directory holding the published result at ``root`` (downloaded on first use).

    The cache key is the URI and the marker's bytes: a result published again (``--overwrite``)
    is a new key, so a stale copy is never read.
    """
    try:
        marker = read_bytes(root, MARKER)
        if marker is None:
            raise GeolipError(
                f"{flag} {root.uri}: no {MARKER} there (not a finished result, or nothing at all)"
            )
        key = hashlib.sha256(root.uri.encode() + b"\0" + marker).hexdigest()[:16]
        target = cache_home() / key
        if (target / MARKER).exists():
            return target
        _download(root, target, marker)
    except OSError as exc:
        raise describe(exc, root, flag) from None
    return target


def _download(root: Root, target: Path, marker: bytes) -> None:
    """Every file under ``root`` into ``target``, atomically (a partial copy is never seen);
    refused when the result was published again meanwhile (its files would be a mix)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for name in list_files(root):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(root.child(name).path, str(staging / name), source_filesystem=root.fs)
        if read_bytes(root, MARKER) != marker or (staging / MARKER).read_bytes() != marker:
            raise GeolipError(f"{root.uri} was replaced while it was read; run the command again")
        with contextlib.suppress(OSError):  # another reader finished first: theirs is the same
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def readable(value: str | os.PathLike, flag: str) -> str | os.PathLike:
    """``value`` itself for a local path; for a URI, a checked local copy of what is there."""
    if not is_uri(value):
        return value
    root = check_root(value, flag)
    return cached_copy(root, flag)
