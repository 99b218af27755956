"""Progress of long work (``pipelines.progress``): the ETA text, when a bar is drawn and where,
the library's progress callbacks (which must not change a figure), and ``geolip eval``'s bars.

No Ray: the eval commands are single-process, as in ``tests/pipelines/aleph/test_train_eval_cli``.
"""

from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from aleph_configs import tiny_cfg

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.bpb import bpb_streamed, bpb_windowed, segment_count, window_count
from geolip.aleph.checkpoint import save_checkpoint
from geolip.aleph.data import fixed_eval_batches
from geolip.aleph.experiments.contrast import controller_contrast
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from pipelines.cli import main
from pipelines.progress import ENV, bar, duration, eta

TEXT = b"the cat sat on the mat and the dog sat on the log; a bird sang in the tree. " * 40


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [
        (0, 10, 5.0, "?"),  # no pace yet
        (5, 10, 50.0, "50s"),
        (1, 9, 10.0, "1m20s"),
        (2, 100, 150.0, "2h02m"),  # 7350 s left
        (10, 10, 3.0, "0s"),
        (12, 10, 3.0, "0s"),  # past the end (a resumed run's extra report)
    ],
)
def test_eta(done, total, elapsed, expected) -> None:
    assert eta(done, total, elapsed) == expected


def test_duration() -> None:
    assert [duration(s) for s in (0, 0.4, 59.6, 61, 3599, 3600, 90061)] == [
        "0s",
        "0s",
        "1m00s",
        "1m01s",
        "59m59s",
        "1h00m",
        "25h01m",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _use_bar(total: int, desc: str = "scoring", unit: str = "window") -> None:
    with bar(total, desc, unit) as b:
        for _ in range(total):
            b.update(1)


def test_bar_is_off_where_stderr_is_not_a_terminal(monkeypatch, capsys) -> None:
    monkeypatch.delenv(ENV, raising=False)
    _use_bar(5)
    assert capsys.readouterr() == ("", "")


def test_bar_is_drawn_on_a_terminal_unless_switched_off(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    _use_bar(5)
    assert "5/5" in tty.getvalue()
    monkeypatch.setenv(ENV, "0")
    off = _Terminal()
    monkeypatch.setattr(sys, "stderr", off)
    _use_bar(5)
    assert off.getvalue() == ""


def test_forced_bar_goes_to_stderr_and_ends_at_its_total(monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENV, "1")
    _use_bar(7, "bpb windowed")
    out, err = capsys.readouterr()
    assert out == ""
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("bpb windowed: 100%") and "7/7" in last, err


@pytest.fixture(scope="module")
def model() -> AlephLM:
    torch.manual_seed(0)
    return AlephLM(tiny_cfg("pmix"), bank_from_bytes(TEXT, 64)).eval()


@pytest.fixture(scope="module")
def held() -> np.ndarray:
    return np.frombuffer(TEXT[:1501], dtype=np.uint8).copy()  # not a multiple of 3 bytes


def test_windowed_progress_counts_every_window_and_changes_nothing(model, held) -> None:
    T = model.cfg.seq_trigrams
    calls: list[int] = []
    with_progress = bpb_windowed(model, held, T, batch=3, progress=calls.append)
    n = window_count(len(held), T)
    assert n > 6 and sum(calls) == n
    assert calls == [3] * (n // 3) + ([n % 3] if n % 3 else [])  # once per batch
    assert with_progress == bpb_windowed(model, held, T, batch=3)  # every figure, exactly


def test_window_count_at_the_edges(model) -> None:
    T = model.cfg.seq_trigrams
    for n_bytes in (6, 7, 3 * (T + 1), 3 * (T + 2), 3 * (3 * T + 7)):
        arr = np.frombuffer(TEXT[:n_bytes], dtype=np.uint8).copy()
        calls: list[int] = []
        bpb_windowed(model, arr, progress=calls.append)
        assert sum(calls) == window_count(n_bytes, T), n_bytes
    assert window_count(5, T) == 0


def test_streamed_and_contrast_progress(model, held) -> None:
    T, calls = 8, []
    streamed = bpb_streamed(model, held, n_streams=3, T=T, progress=calls.append)
    assert calls == [1] * segment_count(len(held), 3, T) and len(calls) > 1
    assert streamed == bpb_streamed(model, held, n_streams=3, T=T)
    batches = fixed_eval_batches(held, 6, model.cfg.seq_trigrams, batch=4)
    calls = []
    report = controller_contrast(model, batches, ("permute",), (0, 1), progress=calls.append)
    assert sum(calls) == 6 * (1 + 2) and calls[:2] == [4, 2]
    assert report == controller_contrast(model, batches, ("permute",), (0, 1))


def _checkpoint(tmp_path):
    run_cfg = with_head(tiny(), "pmix")
    torch.manual_seed(0)
    model = AlephLM(run_cfg.model, bank_from_bytes(TEXT, 64))
    return save_checkpoint(tmp_path / "ck", model, run_cfg), run_cfg.model.seq_trigrams


def _bar_totals(err: str, desc: str) -> list[tuple[str, str]]:
    """(done, total) of each bar ``desc`` that started and reached 100%. A bar may draw its
    final state twice (an update past ``mininterval``, then ``close``): drawn once is one bar."""
    started = len(re.findall(rf"{desc}:   0%\|", err))
    done = sorted(set(re.findall(rf"{desc}: 100%\|[^|]*\| (\d+)/(\d+)", err)))
    return done * started


def test_eval_commands_show_bars_only_when_asked(tmp_path, monkeypatch, capsys) -> None:
    ck, T = _checkpoint(tmp_path)
    common = ["--corpus", "builtin:python-docs", "--data-dir", str(tmp_path), "--no-log"]
    common += ["--format", "json"]
    argv = ["eval", "aleph", str(ck), *common, "--eval-bytes", "4000", "--streams", "2"]
    argv += ["--no-kn", "--no-compressors"]
    monkeypatch.delenv(ENV, raising=False)
    assert main(argv) == 0
    assert "100%" not in capsys.readouterr().err  # a captured stderr is not a terminal

    monkeypatch.setenv(ENV, "1")
    assert main(argv) == 0
    out, err = capsys.readouterr()
    n_bytes = json.loads(out)["bytes"]
    windows, segments = window_count(n_bytes, T), segment_count(n_bytes, 2, T)
    assert windows > 1 and segments > 1
    assert _bar_totals(err, "bpb windowed") == [(str(windows), str(windows))], err
    assert _bar_totals(err, "bpb streamed") == [(str(segments), str(segments))], err

    argv = ["eval", "contrast", str(ck), *common, "--windows", "5", "--seeds", "2"]
    assert main([*argv, "--ops", "permute,rotate"]) == 0
    scored = str(5 * (1 + 2 * 2))
    assert _bar_totals(capsys.readouterr().err, "controller contrast") == [(scored, scored)]
