"""The sweep's progress line: counts, rate and ETA under an injected clock; a live line on a
terminal, a line every N points elsewhere, nothing by default."""
from __future__ import annotations

import io
import re

import pytest

from sim.cli import main
from sim.dse import run_sweep
from sim.dse.progress import SweepProgress, format_duration
from test_sweep import fake_point, write        # the sweep tests' base experiment and stand-in


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("n,k,t", [(40, 1, 3.0), (40, 10, 25.0), (1000, 37, 61.5),
                                   (7, 6, 0.9)])
def test_eta_is_remaining_points_times_seconds_per_computed_point(n, k, t):
    clock = Clock()
    p = SweepProgress(n, stream=io.StringIO(), tty=False, clock=clock)
    assert p.eta() is None and p.rate() is None          # nothing computed yet
    for i in range(k):
        clock.t += t / k
        p.point_done("failed" if i % 3 == 2 else "ok")
    assert p.done == k and p.failed == k // 3
    assert p.rate() == pytest.approx(k / t)
    assert p.eta() == pytest.approx((n - k) * t / k)


def test_stored_and_dropped_points_count_as_done_but_not_in_the_rate():
    clock = Clock()
    p = SweepProgress(100, stream=io.StringIO(), tty=False, clock=clock)
    for _ in range(30):
        p.point_done("stored")                 # instant: already in the store
    for _ in range(10):
        p.point_done("dropped")
    for _ in range(6):
        clock.t += 2.0
        p.point_done("ok")
    assert p.done == 46 and p.ran == 6
    assert p.rate() == pytest.approx(6 / 12.0)
    assert p.eta() == pytest.approx((100 - 46) * 12.0 / 6)
    for _ in range(54):
        p.point_done("ok")
    assert p.eta() == 0.0
    with pytest.raises(ValueError):
        p.point_done("running")


def test_line_shows_done_total_failed_rate_and_eta():
    clock = Clock()
    p = SweepProgress(50, name="mq", stream=io.StringIO(), tty=False, clock=clock)
    for st in ("ok", "failed", "ok", "ok", "dropped"):
        clock.t += 2.5
        p.point_done(st)
    # 4 computed in 12.5 s -> 0.32 pt/s; 45 left -> 140.625 s
    line = p.line()
    assert line.startswith("mq: 5/50 (10 %)")
    assert "1 failed" in line and "1 dropped" in line and "0.32 pt/s" in line
    assert "elapsed 0:12" in line and "ETA 2:21" in line
    assert format_duration(3723) == "1:02:03" and format_duration(None) == "?"


def test_terminal_gets_one_rewritten_line_a_pipe_gets_every_nth():
    clock = Clock()
    tty = Tty()
    p = SweepProgress(10, stream=tty, clock=clock, refresh_s=1.0)
    assert p.tty
    for _ in range(10):
        clock.t += 0.5
        p.point_done("ok")
    p.close()
    out = tty.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    # refreshed at most once a second: at the start, after 1, 2, 3, 4 and 5 s (the last
    # point) and at close; not once per point
    assert out.count("\r") == 7
    assert out.rstrip().endswith("ETA 0:00")

    pipe = io.StringIO()
    p = SweepProgress(10, stream=pipe, every=4, clock=clock)
    assert not p.tty
    for _ in range(10):
        clock.t += 1.0
        p.point_done("ok")
    p.close()
    lines = pipe.getvalue().splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["4/10", "8/10", "10/10"]
    assert "\r" not in pipe.getvalue()

    quiet = io.StringIO()
    p = SweepProgress(10, stream=quiet, clock=clock)      # not a terminal, every=0
    for _ in range(10):
        p.point_done("ok")
    p.close()
    assert quiet.getvalue() == ""


SWEEP = """\
grid:
  arch.array.rows: [8, 16, 24, 32, 40]
constraints:
  - "arch.array.rows != 24"
"""


def test_run_sweep_feeds_the_progress_and_resume_counts_stored(tmp_path):
    exp = write(tmp_path, SWEEP)
    clock = Clock()
    p = SweepProgress(5, stream=io.StringIO(), tty=False, clock=clock)
    s = run_sweep(exp, tmp_path / "r.sqlite", executor="serial", fn=fake_point, progress=p)
    assert (p.ok, p.failed, p.dropped, p.stored) == (s.ok, s.failed, s.dropped, 0) == \
        (4, 0, 1, 0)
    p = SweepProgress(5, stream=io.StringIO(), tty=False, clock=clock)
    run_sweep(exp, tmp_path / "r.sqlite", executor="serial", fn=fake_point, progress=p)
    assert (p.ran, p.stored, p.done) == (0, 5, 5) and p.eta() == 0.0


def test_cli_progress_every_prints_lines_and_rejects_negative(tmp_path, capsys):
    exp = write(tmp_path, "grid:\n  arch.array.rows: [8, 16]\n"
                          "  model.num_layers: [1]")        # one layer: a quick real point
    out = tmp_path / "out"
    assert main(["sweep", str(exp), "--executor", "serial", "--out", str(out),
                 "--progress-every", "1"]) == 0
    err = capsys.readouterr().err
    assert re.findall(r"sw: (\d)/2", err) == ["1", "2"]
    assert main(["sweep", str(exp), "--out", str(out), "--resume",
                 "--progress-every", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--progress-every" in err and "\n" not in err
