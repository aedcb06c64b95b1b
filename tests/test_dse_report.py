"""``strata report``: the page's tables against an independent Pareto filter, configs shown only
when they are the ones that ran, escaping, bad input, and the page in headless Chromium."""
from __future__ import annotations

import base64
import html
import itertools
import json
import os
import re
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.dse import Store, load_sweep
from sim.dse import report as rep

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PAYLOAD = '</td></tr><script>document.title="PWNED"</script><img src=x onerror="x()">'
KEYS = ["arch.array.rows", "arch.label"]


class Tables(HTMLParser):
    """Every table of a page: id -> list of rows (cell texts), header first."""

    def __init__(self):
        super().__init__()
        self.tables, self.cur, self.row, self.cell = {}, None, None, None
        self.imgs, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.cur = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self.cur is not None:
            self.row = [] if "more" not in (a.get("class") or "") else None
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.cur.append(self.row)
            self.row = None
        elif tag == "table":
            self.cur = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse(page: str) -> Tables:
    t = Tables()
    t.feed(page)
    return t


def brute_front(v: np.ndarray) -> set:
    return {i for i, a in enumerate(v)
            if not any(np.all(b <= a) and np.any(b < a) for j, b in enumerate(v) if j != i)}


def fake_store(folder: Path, n=14, seed=0) -> tuple[Path, dict]:
    """A sweep store with two runs per ok point, failed points (one with an HTML payload in
    its error) and a dropped point; returns the store and {(run, point): metrics}."""
    rng = np.random.default_rng(seed)
    db = folder / "results.sqlite"
    metrics = {}
    with Store(db) as s:
        s.set_meta(name="fake<sweep>", file=str(folder / "gone.yaml"), keys=KEYS,
                   base_hash="0" * 64)
        for i in range(n):
            ov = {"arch.array.rows": int(16 * (i + 1)),
                  "arch.label": PAYLOAD if i == 3 else f"d{i}"}
            rows = []
            for run in ("decode", "prefill"):
                m = {"latency_s": float(rng.integers(1, 6)) / 10,   # ties on purpose
                     "energy_j": float(rng.integers(1, 6)), "area_mm2": float(rng.random())}
                metrics[(run, i)] = m
                rows.append({"variant": "v", "run": run, **m, "tokens_per_s": 1.0})
            s.record(f"h{i:02d}", i, ov, "ok", rows=rows, wall_s=0.5)
        s.record("hf1", n, {"arch.array.rows": 7, "arch.label": "x"}, "failed",
                 error="RuntimeError: " + PAYLOAD)
        s.record("hf2", n + 1, {"arch.array.rows": 9, "arch.label": "y"}, "failed",
                 error="ValueError: plain")
        s.record("hd", n + 2, {"arch.array.rows": 5, "arch.label": "z"}, "dropped",
                 error="constraint 'rows > 8' is false")
    return db, metrics


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report of the fake store, written by the CLI: (folder, page, metrics)."""
    folder = tmp_path_factory.mktemp("report")
    db, metrics = fake_store(folder)
    assert main(["report", str(folder), "--figures", "pareto"]) == 0
    return folder, (folder / "report.html").read_text(), metrics


def test_page_tables_match_the_store_and_an_independent_pareto_filter(report):
    folder, page, metrics = report
    t = parse(page)
    # header counts, per point (not per run row)
    assert "14 ok, 2 failed, 1 dropped" in page
    # two runs x three objective pairs, each a PNG that decodes
    assert len(t.imgs) == 6 and all(s.startswith("data:image/png;base64,") for s in t.imgs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in t.imgs)
    # the Pareto table: exactly the brute-force front in each run
    head, *rows = t.tables["pareto-table"]
    assert head[:4] == ["point", "run", *KEYS]
    got = {(r[1], int(r[0])) for r in rows}
    want = set()
    for run in ("decode", "prefill"):
        v = np.array([[metrics[(run, i)][k] for k in ("latency_s", "energy_j", "area_mm2")]
                      for i in range(14)])
        want |= {(run, i) for i in brute_front(v)}
    assert got == want
    # all points: one row per ok point and run, plus one per failed/dropped point
    assert len(t.tables["points-table"]) - 1 == 14 * 2 + 3
    # failed and dropped points with their errors, the payload shown as text
    failed = t.tables["failed-table"][1:]
    assert sorted(r[-1] for r in failed) == sorted(["RuntimeError: " + PAYLOAD,
                                                    "ValueError: plain"])
    assert t.tables["dropped-table"][1:][0][-1] == "constraint 'rows > 8' is false"
    # escaping: the page's own script is the only one; the payload never appears raw
    assert t.scripts == 1 and PAYLOAD not in page and "<sweep>" not in page
    assert "fake&lt;sweep&gt;" in page
    # nothing is loaded from outside the page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "gone.yaml is not here" in page          # no full config without the sweep file


def test_the_csv_export_gives_the_same_pareto_points(tmp_path):
    db, _ = fake_store(tmp_path)
    with Store(db) as s:
        s.write_csv(tmp_path / "points.csv")
    a = parse(rep.render_report(rep.load_report_data(db), figures=[]))
    b = parse(rep.render_report(rep.load_report_data(tmp_path / "points.csv"), figures=[]))
    assert a.tables["pareto-table"] == b.tables["pareto-table"]
    assert a.tables["failed-table"] == b.tables["failed-table"]


def test_report_is_deterministic_and_objectives_are_chosen(tmp_path):
    db, metrics = fake_store(tmp_path)
    objectives = [("latency_s", "min"), ("tokens_per_s", "max")]
    page = rep.render_report(rep.load_report_data(db, objectives), figures=["pareto"])
    assert page == rep.render_report(rep.load_report_data(db, objectives),
                                     figures=["pareto"])                      # byte for byte
    assert len(parse(page).imgs) == 2
    rows = parse(page).tables["pareto-table"][1:]
    for run in ("decode", "prefill"):        # tokens_per_s is constant: the fastest points
        best = min(metrics[(run, i)]["latency_s"] for i in range(14))
        want = {i for i in range(14) if metrics[(run, i)]["latency_s"] == best}
        assert {int(r[0]) for r in rows if r[1] == run} == want


def test_a_search_store_reports_its_own_objectives(tmp_path):
    db, metrics = fake_store(tmp_path)
    with Store(db) as s:
        s.set_meta(search={"sampler": "tpe", "seed": 3,
                           "objectives": [["energy_j", "max"], ["area_mm2", "min"]]})
    data = rep.load_report_data(db)
    assert data.objectives == [("energy_j", "max"), ("area_mm2", "min")]
    page = rep.render_report(data, figures=[])
    assert "guided search (tpe, seed 3)" in page
    rows = parse(page).tables["pareto-table"][1:]
    for run in ("decode", "prefill"):
        v = np.array([[-metrics[(run, i)]["energy_j"], metrics[(run, i)]["area_mm2"]]
                      for i in range(14)])
        assert {int(r[0]) for r in rows if r[1] == run} == brute_front(v)


def test_full_config_is_the_one_that_ran_or_is_not_shown(tmp_path):
    sweep = load_sweep(str(ROOT / "experiments/sweep_systolic_array.yaml"))
    pts = [p for p in itertools.islice(sweep.points(), 4) if p.exp is not None][:2]
    db = tmp_path / "results.sqlite"
    with Store(db) as s:
        s.set_meta(name=sweep.name, file=sweep.file, keys=list(sweep.keys),
                   base_hash=sweep.base.hash())
        for k, p in enumerate(pts):      # a trade-off: both on the front
            s.record(p.hash, p.index, p.overrides, "ok", rows=[
                {"variant": "v", "run": "decode", "latency_s": 1.0 + k, "energy_j": 2.0 - k}])
    page = rep.render_report(rep.load_report_data(db), figures=[])
    blocks = re.findall(r"<summary>full resolved config</summary><pre>(.*?)</pre>", page, re.S)
    shown = [json.loads(html.unescape(b)) for b in blocks]
    assert shown == [p.exp.model_dump(mode="json") for p in pts]
    with Store(db) as s:
        s.set_meta(base_hash="f" * 64)          # the file no longer gives what ran
    page = rep.render_report(rep.load_report_data(db), figures=[])
    assert "full resolved config" not in page and "does not give the stored base" in page


def test_figure_kinds_are_pluggable(tmp_path):
    db, _ = fake_store(tmp_path)

    @rep.register_figure("test-svg")
    def svg(data, tmp):
        yield rep.Figure("a <b> figure", svg=f'<svg xmlns="http://www.w3.org/2000/svg" '
                         f'width="{len(data.keys)}" height="1"/>')
    try:
        page = rep.render_report(rep.load_report_data(db), figures=["test-svg"])
    finally:
        del rep.FIGURES["test-svg"]
    t = parse(page)
    assert len(t.imgs) == 1 and t.imgs[0].startswith("data:image/svg+xml;base64,")
    assert 'width="2"' in base64.b64decode(t.imgs[0].split(",", 1)[1]).decode()
    assert "a &lt;b&gt; figure" in page
    assert 'id="fig-test-svg">test-svg (1)' in page


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    db, _ = fake_store(tmp_path / "ok")
    garbage = tmp_path / "x.sqlite"
    garbage.write_bytes(b"not a database at all")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "points.csv").write_text("")
    cases = [([str(tmp_path / "nope")], "no such file"),
             ([str(tmp_path)], "points.csv"),
             ([str(garbage)], "not an SQLite store"),
             ([str(other)], "without points and meta"),
             ([str(tmp_path / "empty")], "unreadable CSV"),
             ([str(db), "--objective", "latency"], "did you mean 'latency_s'"),
             ([str(db), "--objective", "latency_s:up"], "min|max"),
             ([str(db), "--objective", "arch.label"], "numeric metric"),
             ([str(db), "--objective", "energy_j", "--objective", "energy_j"], "once"),
             ([str(db), "--figures", "paretoo"], "did you mean 'pareto'"),
             ([str(db), "--max-rows", "0"], "--max-rows")]
    for argv, what in cases:
        assert main(["report", *argv, "--out", str(tmp_path / "r.html")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and what in err, (argv, err)
    assert not (tmp_path / "r.html").exists()


# ----------------------------------------------------------------------- the browser ----
CHECK = """<script>
(function(){
  var out = {};
  out.imgs = Array.prototype.map.call(document.images, function(i){return i.naturalWidth;});
  out.rows = {};
  document.querySelectorAll("table.sortable").forEach(function(t){
    out.rows[t.id] = t.tBodies[0].rows.length;});
  function col(t, name){
    var hs = Array.prototype.map.call(t.tHead.rows[0].cells, function(c){
      return c.textContent.replace(/[\\u25B2\\u25BC ]+$/, "");});
    return hs.indexOf(name);}
  function values(t, i){
    return Array.prototype.filter.call(t.tBodies[0].rows, function(r){
      return !r.classList.contains("more");}).map(function(r){
      return r.cells[i].textContent;});}
  var t = document.getElementById("points-table");
  var lat = col(t, "latency_s"), pt = col(t, "point"), lab = col(t, "arch.label");
  t.tHead.rows[0].cells[lat].click();
  out.lat_asc = values(t, lat);
  t.tHead.rows[0].cells[lat].click();
  out.lat_desc = values(t, lat);
  t.tHead.rows[0].cells[pt].click();
  out.point_asc = values(t, pt);
  t.tHead.rows[0].cells[lab].click();
  out.label_asc = values(t, lab);
  var p = document.getElementById("pareto-table");
  p.tHead.rows[0].cells[col(p, "latency_s")].click();
  out.pareto_pairs = Array.prototype.every.call(p.tBodies[0].rows, function(r, k, all){
    return r.classList.contains("more") === (k % 2 === 1);});
  out.title = document.title;
  var pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"CI: {CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
    pytest.skip("headless Chromium not installed (apt-get install chromium); CI requires it")


def test_page_renders_in_headless_chromium_and_sorts(report, tmp_path):
    chromium = _chromium()
    _, page, metrics = report
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK, 1))
    profile = tmp_path / "profile"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="check">(.*?)</pre>', r.stdout, re.S)
    assert m, r.stderr[-2000:]
    out = json.loads(html.unescape(m.group(1)))
    assert len(out["imgs"]) == 6 and all(w > 100 for w in out["imgs"])     # decoded figures
    assert out["rows"]["points-table"] == 31 and out["rows"]["failed-table"] == 2
    assert out["rows"]["dropped-table"] == 1 and out["rows"]["pareto-table"] % 2 == 0
    lat = sorted(m["latency_s"] for m in metrics.values())
    shown = [float(v) for v in out["lat_asc"] if v]
    assert shown == lat and out["lat_asc"][len(lat):] == ["", "", ""]   # empty cells last
    assert [float(v) for v in out["lat_desc"] if v] == lat[::-1]
    pts = [int(v) for v in out["point_asc"]]
    assert pts == sorted(pts) and pts[-1] == 16          # numeric, not text ("16" < "2")
    ds = [s for s in out["label_asc"] if re.fullmatch(r"d[0-9]+", s)]
    assert len(ds) == 26 and ds == sorted(ds, key=lambda s: int(s[1:]))   # text, "d2" < "d10"
    assert out["pareto_pairs"]                 # each config row moved with its point
    assert out["title"] == "Strata report: fake<sweep>"    # the payload did not run


def test_a_sweep_where_nothing_ran_still_reports_its_errors(tmp_path):
    db = tmp_path / "results.sqlite"
    with Store(db) as s:
        s.set_meta(name="broken", keys=["k"])
        s.record("a", 0, {"k": 1}, "failed", error="KeyError: 'x'")
        s.record("b", 1, {"k": 2}, "running")            # left by a killed sweep
    page = rep.render_report(rep.load_report_data(db))
    t = parse(page)
    assert "0 ok, 1 failed, 0 dropped, 1 running" in page and not t.imgs
    assert t.tables["failed-table"][1:] == [["0", "1", "KeyError: 'x'"]]
    assert len(t.tables["pareto-table"]) == 1           # the header alone


def test_every_default_figure_kind_draws_from_a_sweep(tmp_path):
    """Two numeric keys and energy components: each kind of sim.dse.plots appears, per run."""
    rng = np.random.default_rng(1)
    db = tmp_path / "results.sqlite"
    with Store(db) as s:
        s.set_meta(name="kinds", keys=["arch.a", "arch.b"])
        for i, (a, b) in enumerate(itertools.product([1, 2, 4], [8, 16])):
            e = rng.random(2)
            s.record(f"h{i}", i, {"arch.a": a, "arch.b": b}, "ok", rows=[
                {"variant": "v", "run": "decode", "latency_s": float(rng.random()),
                 "energy_j": float(e.sum()), "area_mm2": float(a * b),
                 "energy_cells_j": float(e[0]), "energy_dram_j": float(e[1])}])
    page = rep.render_report(rep.load_report_data(db))
    t = parse(page)
    for kind, n in (("pareto", 3), ("pareto3d", 1), ("lines", 2), ("heatmap", 1),
                    ("energy", 1)):
        assert f'id="fig-{kind}">{kind} ({n})</h3>' in page, kind
    assert len(t.imgs) == 8
    assert all(base64.b64decode(s.split(",", 1)[1])[:4] == b"\x89PNG" for s in t.imgs)
