"""outputs.steps: file streams a serving run's steps to steps.csv from the engines' compact
storage; the file is byte for byte the memory mode's, read back it is the same frame."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

import sim
from sim.cli import main
from sim.config import ConfigError
from sim.system import serve_frames
from sim.system.coordinator import Coordinator
from sim.system.stepcsv import format_chunk
from test_serving_memory import _inputs      # requests and a 3-client cluster that preempts


def _exp(**outputs):
    client = {"arch": "h100-sxm", "model": "llama-3.2-1b", "mode": "exact",
              "engine": {"scheduler": "continuous", "max_num_seqs": 4}}
    return {"name": "steps_stream", "seed": 0,
            "workload": {"arrivals": {"process": "poisson", "rate": 40.0},
                         "lengths": {"prompt": {"dist": "uniform", "low": 16, "high": 160},
                                     "output": {"dist": "uniform", "low": 2, "high": 40}},
                         "requests": 24, "seed": 3},
            "cluster": {"clients": [{"name": "a", **client}, {"name": "b", **client}],
                        "router": {"name": "round_robin"}},
            "outputs": {"plots": ["timeline"], **outputs},
            "variants": [{"name": "cont", "set": {}},
                         {"name": "chunk", "set": {
                             "cluster.clients.0.engine.scheduler": "chunked",
                             "cluster.clients.1.engine.scheduler": "chunked"}}]}


def _write(tmp_path, exp, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(exp))
    return p


def test_formatter_writes_what_pandas_writes():
    rng = np.random.default_rng(0)
    n = 5000
    ns = np.r_[0, 1, 99_999, 100_000, 10**9, 10**15 - 1, 10**15, 2**60,
               rng.integers(0, 10**15, n), np.cumsum(rng.integers(1, 10**8, n))]
    m = len(ns)
    energy = rng.random(m) * 10.0 ** rng.uniform(-12, 4, m)
    energy[::97] = np.nan
    counts = rng.integers(0, 10**6, m).astype(np.int32)
    names = ["h100-0", "b"]
    codes = rng.integers(0, 2, m).astype(np.int8)
    ref = pd.DataFrame({"client": pd.Categorical.from_codes(codes, names), "start_s": ns * 1e-9,
                        "n": counts, "e": energy}).to_csv(index=False, header=False).encode()
    got = format_chunk([("cat", codes, names), ("ns", ns, None), ("int", counts, None),
                        ("float", energy, None)])
    assert got == ref
    # a column of repeats (a step table's energies) is formatted once per distinct value
    reps = np.round(rng.random(m), 3)
    reps[::50] = np.nan
    ref = pd.DataFrame({"n": counts, "e": reps}).to_csv(index=False, header=False).encode()
    assert format_chunk([("int", counts, None), ("float", reps, None)]) == ref


@pytest.mark.parametrize("names", [{}, {"client0": "x,0"}])     # a comma: pandas writes it
def test_streamed_csv_is_the_frames_csv_across_chunk_sizes(tmp_path, names):
    r, c = _inputs("chunked")
    f = serve_frames(r, c)
    steps = f.steps.assign(client=f.steps["client"].map(lambda v: names.get(v, v)))
    steps.to_csv(tmp_path / "frame.csv", index=False)
    want = (tmp_path / "frame.csv").read_bytes()
    for rows in (1, 50, 1 << 20):
        co = Coordinator(r, c)
        co.env.process(co._arrivals())
        co.eng.run()
        assert co.write_steps(tmp_path / "s.csv", names, rows=rows) == len(steps)
        assert (tmp_path / "s.csv").read_bytes() == want
    g = serve_frames(r, c, steps_path=tmp_path / "g.csv")
    assert g.steps is None and (tmp_path / "g.csv").read_bytes() == \
        f.steps.to_csv(index=False).encode()


def test_cli_file_mode_byte_identical_and_lazy_steps_equal_the_frame(tmp_path, capsys):
    mem = _write(tmp_path, _exp(), "mem.yaml")
    fil = _write(tmp_path, _exp(steps="file"), "file.yaml")
    assert main(["run", str(mem), "--out", str(tmp_path / "m")]) == 0
    assert main(["run", str(fil), "--out", str(tmp_path / "f")]) == 0
    for v in ("cont", "chunk"):
        for name in ("steps.csv", "requests.csv", "clients.csv"):
            assert (tmp_path / "m" / v / name).read_bytes() == \
                (tmp_path / "f" / v / name).read_bytes(), (v, name)
        assert (tmp_path / "f" / f"timeline_{v}.png").is_file()
        sm = json.loads((tmp_path / "m" / v / "summary.json").read_text())["steps"]
        sf = json.loads((tmp_path / "f" / v / "summary.json").read_text())["steps"]
        for k in ("count", "by_kind"):
            assert sm[k] == sf[k]
        assert sm["busy_fraction"].keys() == sf["busy_fraction"].keys()
        flat = lambda d: np.array([d["mean_sequences"], d["padding_fraction"],  # noqa: E731
                                   *d["busy_fraction"].values(), *d["kv_blocks_used"].values()])
        assert np.allclose(flat(sm), flat(sf), rtol=1e-12, atol=0)
    memory = sim.serve(mem)
    lazy = sim.serve(fil, out=tmp_path / "api")
    for v in ("cont", "chunk"):
        r = lazy.variants[v]
        assert r.steps_frame is None and r.steps_path == str(tmp_path / "api" / v / "steps.csv")
        pd.testing.assert_frame_equal(r.steps, memory.variants[v].steps, check_exact=True)
    none = sim.serve({**_exp(steps="none"), "outputs": {"steps": "none"}})
    assert all(len(r.steps) == 0 and "steps" not in r.summary for r in none.variants.values())


def test_bad_steps_option_and_file_mode_without_a_folder(tmp_path, capsys):
    p = _write(tmp_path, _exp(steps="disk"))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "outputs.steps" in err and str(p) in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="outputs.steps"):
        sim.serve(_exp(steps="file"))
    with pytest.raises(ConfigError, match="outputs.steps.*timeline"):     # nothing to draw
        sim.serve(_exp(steps="none"))
