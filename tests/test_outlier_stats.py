"""Outlier profiles: measuring (sim.numerics.outlier_stats), the schema and loader
(sim.config.outliers), the weights readers (sim.io.weights), profiles from checkpoints and the
writer (sim.io.profiles), the synthetic generator, its recipes and the shipped profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from sim.config import ConfigError, load_model
from sim.config.outliers import (
    BLOCK_OPS,
    OutlierProfile,
    available_profiles,
    available_recipes,
    load_outlier_profile,
    load_synthetic_recipe,
    outliers_dir,
    recipes_dir,
    shipped_recipes,
)
from sim.io.profiles import profile_from_weights, render_profile, write_profile
from sim.io.weights import SafetensorsFile, canonical_op, read_safetensors, write_safetensors
from sim.numerics.outlier_stats import (
    calibrate_base_rate,
    count_outliers,
    measure_matrix,
    op_shapes,
    outlier_mask,
    shipped_profile,
    synthetic_matrix,
    synthetic_profile,
)

SHIPPED = ["llama-2-7b", "llama-2-13b", "llama-3-8b", "opt-6.7b", "vila-7b"]
MODERN = ["llama-2-7b", "llama-2-13b", "llama-3-8b"]

TINY = {
    "name": "tiny", "source": "test", "hidden_size": 256, "num_layers": 2, "num_heads": 2,
    "num_kv_heads": 1, "head_dim": 128, "intermediate_size": 384, "ffn": "gated",
    "vocab_size": 512, "max_position": 64, "norm": "rmsnorm",
}


@pytest.fixture(scope="module")
def tiny():
    return load_model(dict(TINY))


def _params(**over):
    fields = dict(load_synthetic_recipe("llama-2-7b").params.model_dump())
    fields.update(over)
    from sim.config.outliers import SyntheticParams

    return SyntheticParams(**fields)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _hand_built() -> np.ndarray:
    """3 x 256 (2 MaBs, 32 uBs per row), body +-1, spikes +-40 at known places."""
    w = np.tile(np.array([1.0, -1.0]), (3, 128))
    spikes = {
        0: [0, 9, 10, 16, 18, 20, 128, 130, 132, 134, 135],  # uB0:1, uB1:2 adj, uB2:3, uB16:5
        2: [200, 207, 208],  # uB25: 200 and 207 (not adjacent), uB26: 208 (other uB)
    }
    for r, cols in spikes.items():
        for i, c in enumerate(cols):
            w[r, c] = 40.0 * (-1) ** i
    return w


def test_hand_built_matrix_gives_exact_counts():
    w = _hand_built()
    mask = outlier_mask(w)
    assert mask.sum() == 14 and not mask[1].any()
    c = count_outliers(w)
    assert (c.ubs, c.ubs_with, c.candidates, c.outliers, c.over_cap, c.adjacent) == (96, 6, 14, 13, 1, 4)
    assert c.per_ub.tolist() == [90, 2, 2, 1, 1]
    assert c.tiles == {64: (3, 12), 128: (3, 6)}      # (with outliers, total)
    s = measure_matrix(w)
    assert s.shape == [3, 256]
    assert s.frac_ub_with_outliers == pytest.approx(6 / 96)
    assert s.outliers_per_ub == pytest.approx({1: 2 / 6, 2: 2 / 6, 3: 1 / 6, 4: 1 / 6}, rel=1e-5)
    assert s.frac_ub_over_cap == pytest.approx(1 / 96, rel=1e-5)
    assert s.frac_weights_outliers == pytest.approx(13 / 768, rel=1e-5)
    assert s.adjacency == pytest.approx(4 / 14, rel=1e-5)
    assert s.frac_rowtile_with_outliers == {64: 0.25, 128: 0.5}
    # Chunking rows is exact; zeros are never outliers; a constant block has none.
    assert measure_matrix(w, chunk_rows=1) == s
    z = w.copy()
    z[0, :128] = 0.0
    z[0, 5] = 40.0
    assert outlier_mask(z)[0, :128].tolist() == [i == 5 for i in range(128)]
    assert not outlier_mask(np.full((2, 128), 3.0)).any()


def _reference_counts(w, k, micro, macro, widths):
    """Plain-Python loops over rows and blocks: the definitions, written the slow way."""
    rows, n = w.shape
    mask = np.zeros(w.shape, bool)
    for r in range(rows):
        for b0 in range(0, n, macro):
            blk = w[r, b0:b0 + macro]
            mu, sd = blk.mean(), blk.std()
            for j, x in enumerate(blk):
                mask[r, b0 + j] = abs(x - mu) > k * sd and x != 0
    ubs = with_ = adj = cand = 0
    hist = [0] * (micro // 2 + 1)
    for r in range(rows):
        for u0 in range(0, n, micro):
            m = mask[r, u0:u0 + micro]
            ubs += 1
            cnt = int(m.sum())
            cand += cnt
            with_ += cnt > 0
            hist[min(cnt, micro // 2)] += 1
            for j in range(len(m)):
                if m[j] and ((j > 0 and m[j - 1]) or (j + 1 < len(m) and m[j + 1])):
                    adj += 1
    tiles = {}
    for wd in widths:
        with_outliers = total = 0
        for r in range(rows):
            for t0 in range(0, n, wd):
                total += 1
                with_outliers += bool(mask[r, t0:t0 + wd].any())
        tiles[wd] = (with_outliers, total)
    return ubs, with_, cand, adj, hist, tiles


@pytest.mark.parametrize("shape,micro,macro,widths", [
    ((7, 200), 8, 128, (64, 128)),   # partial last macro-block, uB and tiles
    ((5, 256), 4, 64, (16, 48)),
    ((3, 96), 8, 32, (40,)),
])
def test_vectorized_counts_match_a_loop_reference(shape, micro, macro, widths):
    rng = np.random.default_rng(5)
    w = rng.standard_t(3, size=shape)
    w[rng.random(shape) < 0.05] *= 6
    w[:, 9:11] = 25.0  # an adjacent pair in every row (same uB for micro 4 and 8)
    w[0, 7:9] = -25.0  # a pair across a uB boundary
    c = count_outliers(w, micro=micro, macro=macro, rowtile_widths=widths)
    ubs, with_, cand, adj, hist, tiles = _reference_counts(w, 3.0, micro, macro, widths)
    assert (c.ubs, c.ubs_with, c.candidates, c.adjacent) == (ubs, with_, cand, adj)
    assert c.per_ub.tolist() == hist
    assert c.tiles == tiles
    assert with_ > 0 and adj > 0


def test_statistics_agree_with_the_mx_quantizer():
    mx = pytest.importorskip("sim.numerics.mx")
    if not hasattr(mx, "quantize"):
        pytest.skip("sim.numerics.mx has no quantize()")
    w = synthetic_matrix(64, 512, 0.03, _params(), np.random.default_rng(3)) * 0.01
    s = measure_matrix(w)
    for width in (64, 128):
        st = mx.quantize(w, bb=2).stats(row_width=width)
        assert s.frac_ub_with_outliers == pytest.approx(st.frac_ub_with_outliers, rel=1e-5)
        assert s.frac_weights_outliers == pytest.approx(st.frac_outlier_weights, rel=1e-5)
        assert s.rowtile(width) == pytest.approx(st.frac_row_segments_with_outliers, rel=1e-5)
        hist = np.asarray(st.outliers_per_ub_hist, float)[1:]
        assert list(s.outliers_per_ub.values()) == pytest.approx(list(hist / hist.sum()), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Safetensors and npz
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_safetensors_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    # Multiples of 1/8 below 16 in magnitude are exact in F16 and BF16.
    tensors = {"a.weight": rng.integers(-127, 128, (6, 10)) / 8.0,
               "b": rng.integers(-127, 128, (3,)) / 8.0,
               "empty": np.zeros((0, 4))}
    path = write_safetensors(tmp_path / f"t_{dtype}.safetensors", tensors, dtype=dtype,
                             metadata={"format": "pt"})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert header["a.weight"] == {"dtype": dtype, "shape": [6, 10], "data_offsets": header["a.weight"]["data_offsets"]}
    assert header["__metadata__"] == {"format": "pt"}
    back = read_safetensors(path)
    assert set(back) == set(tensors)
    for name, value in tensors.items():
        assert back[name].dtype == np.float32 and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value.astype(np.float32))
    f = SafetensorsFile(path)
    assert f.dtype("a.weight") == dtype and f.shape("a.weight") == (6, 10)


def test_bf16_bits_and_rounding(tmp_path):
    x = np.array([1.0, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.0e38, np.inf], np.float32)
    path = write_safetensors(tmp_path / "r.safetensors", {"x": x}, dtype="BF16")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    bits = np.frombuffer(raw[8 + n:], "<u2")
    assert bits[:2].tolist() == [0x3F80, 0xC020]  # exact values
    back = read_safetensors(path)["x"]
    # ties go to even: 1 + 2^-8 -> 1.0, 1 + 3*2^-8 -> 1 + 2^-6 (= 1 + 4 * 2^-8)
    assert back[:4].tolist() == [1.0, -2.5, 1.0, 1 + 2 ** -6]
    assert np.isinf(back[5])


def test_corrupt_safetensors_names_file_and_tensor(tmp_path):
    path = write_safetensors(tmp_path / "c.safetensors", {"w": np.ones((4, 4))})
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["w"]["data_offsets"] = [0, 60]
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + bytes(raw[8 + n:]))
    with pytest.raises(ConfigError) as e:
        SafetensorsFile(bad)
    assert "bad.safetensors" in str(e.value) and e.value.key == "w.data_offsets"
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ConfigError, match="short.safetensors"):
        SafetensorsFile(tmp_path / "short.safetensors")


def test_tensor_names_map_to_layer_and_op():
    assert canonical_op("layers.3.q_proj") == (3, "q_proj")
    assert canonical_op("model.layers.12.mlp.down_proj.weight") == (12, "down_proj")
    assert canonical_op("model.decoder.layers.0.self_attn.out_proj.weight") == (0, "o_proj")
    assert canonical_op("model.decoder.layers.5.fc1.weight") == (5, "up_proj")
    assert canonical_op("model.layers.1.self_attn.qkv_proj.weight") == (1, "qkv_proj")
    assert canonical_op("lm_head.weight") == (-1, "lm_head")
    assert canonical_op("model.layers.3.self_attn.q_proj.bias") is None
    assert canonical_op("model.norm.weight") is None


def _tiny_weights(tiny, seed=0):
    """Strata-orientation [K, N] arrays of every op of the tiny model, with outliers."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in range(tiny.num_layers):
        for op, (k, n) in op_shapes(tiny).items():
            out[(layer, op)] = synthetic_matrix(k, n, 0.02, _params(), rng)
    return out


def test_profile_from_safetensors_and_npz_transposes_out_in(tmp_path, tiny):
    weights = _tiny_weights(tiny)
    hf = {}
    for (layer, op), w in weights.items():
        part = "self_attn" if op in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        hf[f"model.layers.{layer}.{part}.{op}.weight"] = w.T  # HF [out, in]
        hf[f"model.layers.{layer}.{part}.{op}.bias"] = np.zeros(w.shape[1])
    st = write_safetensors(tmp_path / "m.safetensors", hf, dtype="F32")
    npz = tmp_path / "m.npz"
    np.savez(npz, **{f"layers.{layer}.{op}": w.T for (layer, op), w in weights.items()})
    kn = tmp_path / "kn.npz"
    np.savez(kn, **{f"layers.{layer}.{op}": w for (layer, op), w in weights.items()})

    a = profile_from_weights(st, tiny)
    b = profile_from_weights(npz, tiny)
    c = profile_from_weights(kn, tiny, layout="in_out")
    assert a.layers == b.layers == c.layers
    for (layer, op), w in weights.items():
        assert a.stats(layer, op) == measure_matrix(w)  # measured on [K, N] = transposed file array
        assert a.stats(layer, op).shape == list(w.shape)
    # Groups along N of W[K, N] differ from groups along the HF rows: orientation matters.
    w = weights[(0, "k_proj")]
    assert measure_matrix(w.T).shape != measure_matrix(w).shape
    prov = a.provenance
    assert prov.files[0].name == "m.safetensors" and len(prov.files[0].sha256) == 64
    assert "transposed" in prov.orientation and "m.safetensors" in prov.source
    assert prov.generator.endswith("profile_from_weights")
    # A round trip through the YAML writer and loader keeps every number.
    path = write_profile(a, tmp_path / "measured.yaml")
    assert load_outlier_profile(path).model_dump() == a.model_dump()


def test_profile_from_weights_errors_and_fused_ops(tmp_path, tiny):
    weights = _tiny_weights(tiny, seed=2)
    # Wrong layout on a non-square op: the message names file, tensor and the fix.
    kn = tmp_path / "kn.npz"
    np.savez(kn, **{f"layers.{layer}.{op}": w for (layer, op), w in weights.items()})
    with pytest.raises(ConfigError) as e:
        profile_from_weights(kn, tiny)
    assert "kn.npz" in str(e.value) and "layout" in str(e.value)
    assert e.value.key.startswith("layers.0.")
    # A missing op is named.
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{f"layers.{layer}.{op}": w.T for (layer, op), w in weights.items()
                         if (layer, op) != (1, "down_proj")})
    with pytest.raises(ConfigError) as e:
        profile_from_weights(partial, tiny)
    assert e.value.key == "layers.1.down_proj"
    # Fused qkv_proj / gate_up_proj (Phi-3 style) split by the model's shapes.
    fused = {}
    for layer in range(tiny.num_layers):
        g = {op: weights[(layer, op)] for op in BLOCK_OPS}
        fused[f"model.layers.{layer}.self_attn.qkv_proj.weight"] = np.concatenate(
            [g["q_proj"], g["k_proj"], g["v_proj"]], axis=1).T
        fused[f"model.layers.{layer}.self_attn.o_proj.weight"] = g["o_proj"].T
        fused[f"model.layers.{layer}.mlp.gate_up_proj.weight"] = np.concatenate(
            [g["gate_proj"], g["up_proj"]], axis=1).T
        fused[f"model.layers.{layer}.mlp.down_proj.weight"] = g["down_proj"].T
    f = write_safetensors(tmp_path / "fused.safetensors", fused, dtype="F32")
    p = profile_from_weights(f, tiny)
    for (layer, op), w in weights.items():
        assert p.stats(layer, op) == measure_matrix(w)
    with pytest.raises(ConfigError, match="out_in"):
        profile_from_weights(f, tiny, layout="rows")


# --------------------------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------------------------


def test_generator_is_deterministic(tiny):
    p = _params()
    a = synthetic_matrix(32, 256, 0.02, p, np.random.default_rng([7, 1, 2]))
    b = synthetic_matrix(32, 256, 0.02, p, np.random.default_rng([7, 1, 2]))
    c = synthetic_matrix(32, 256, 0.02, p, np.random.default_rng([8, 1, 2]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    pa = synthetic_profile(tiny, p, seed=11)
    pb = synthetic_profile(tiny, p.model_dump(), seed=11)  # params as a mapping
    pc = synthetic_profile(tiny, p, seed=12)
    assert render_profile(pa) == render_profile(pb)
    assert pa.layers != pc.layers
    assert pa.provenance.seed == 11 and pa.provenance.params == p


def test_calibration_finds_the_rate_for_a_target(tiny):
    p = calibrate_base_rate(tiny, _params(), seed=3, target=0.06, tol=0.002)
    prof = synthetic_profile(tiny, p, seed=3)
    assert prof.mean("frac_ub_with_outliers") == pytest.approx(0.06, abs=0.002)
    assert p.target_frac_ub == 0.06


def test_shipped_profiles_meet_the_calibration_targets():
    s = {n: load_outlier_profile(n).summary() for n in SHIPPED}
    for n in SHIPPED:
        target = load_outlier_profile(n).provenance.params.target_frac_ub
        assert s[n]["frac_ub_with_outliers"] == pytest.approx(target, abs=0.002), n
        assert s[n]["max_frac_weights_outliers"] <= 0.051, n  # "up to ~5% of a layer's weights"
    # Average over the shipped models: 9% of uBs (EBW 2.36 at bb=2 with EBW_O = 6).
    mean = np.mean([s[n]["frac_ub_with_outliers"] for n in SHIPPED])
    assert mean == pytest.approx(0.09, abs=0.003)
    assert 2 + 4 * mean == pytest.approx(2.36, abs=0.015)
    for n in MODERN + ["vila-7b"]:  # modern LLMs: adjacent outliers > 0.5% of weights
        assert s[n]["frac_weights_adjacent"] > 0.005, n
    assert s["opt-6.7b"]["frac_weights_adjacent"] < 0.0004  # OPT/BERT class: < 0.04%
    assert all(s["vila-7b"]["frac_ub_with_outliers"] > s[n]["frac_ub_with_outliers"] for n in MODERN)


def test_a_shipped_profile_regenerates_byte_for_byte():
    text = (outliers_dir() / "opt-6.7b.yaml").read_text(encoding="utf-8")
    assert render_profile(shipped_profile("opt-6.7b")) == text


def test_recipes_are_data_and_match_the_shipped_profiles():
    # Every shipped profile has a recipe (model, seed, knobs) and records exactly its knobs.
    assert set(shipped_recipes()) == set(available_profiles()) == set(SHIPPED)
    assert "default" in available_recipes() and "default" not in available_profiles()
    for name in available_recipes():
        r = load_synthetic_recipe(name)
        assert r.name == name and (recipes_dir() / f"{name}.yaml").is_file()
        assert "ISCA" in r.params.calibrated_to
    for name in SHIPPED:
        r, prov = load_synthetic_recipe(name), load_outlier_profile(name).provenance
        assert (r.seed, r.params) == (prov.seed, prov.params)
        assert r.model == load_outlier_profile(name).model
    default = load_synthetic_recipe("default")
    assert default.model is None and default.seed is None
    with pytest.raises(ConfigError, match="default"):
        shipped_profile("default")  # leaves model and seed open: not a shipped profile


def test_a_bad_recipe_names_file_and_key(tmp_path):
    text = (recipes_dir() / "llama-2-7b.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "mine.yaml"
    bad.write_text(text.replace("base_rate:", "base_rat:"), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_synthetic_recipe(bad)
    assert "mine.yaml" in (e.value.file or "") and e.value.key == "params.base_rat"
    with pytest.raises(ConfigError, match="default"):
        load_synthetic_recipe("defualt")        # did-you-mean hint


def test_file_formats_live_outside_the_numerics_layer():
    import ast
    import pathlib

    import sim

    root = pathlib.Path(sim.__file__).parent
    for layer in ("config", "core", "numerics"):
        for f in (root / layer).glob("*.py"):
            tree = ast.parse(f.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                        [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(m.startswith(("sim.io", "sim.hw", "sim.workload")) for m in mods), f
    text = (root / "numerics" / "outlier_stats.py").read_text(encoding="utf-8")
    assert "safetensors" not in text.split('"""', 2)[2]  # no reader code below the docstring


# --------------------------------------------------------------------------------------------
# Shipped files and the loader
# --------------------------------------------------------------------------------------------


def test_all_shipped_profiles_load_and_fit_their_model():
    assert set(SHIPPED) <= set(available_profiles())
    for name in available_profiles():
        p = load_outlier_profile(name)
        assert p.name == name and p.origin.endswith(f"{name}.yaml")
        model = load_model(p.model)
        assert p.num_layers == model.num_layers
        shapes = op_shapes(model)
        assert p.ops() == list(shapes)
        for layer, op, s in p.items():
            assert tuple(s.shape) == shapes[op]
        prov = p.provenance
        assert prov.generator and prov.seed is not None and prov.params is not None
        assert name in prov.regenerate
        # The file is exactly what the writer makes of the loaded profile.
        assert render_profile(p) == (outliers_dir() / f"{name}.yaml").read_text(encoding="utf-8")
    assert load_outlier_profile("vila-7b").model == "llama-2-7b"
    assert "LLaMA-2-7B" in load_outlier_profile("vila-7b").provenance.notes
    p = load_outlier_profile("llama-2-7b")
    assert p is load_outlier_profile(outliers_dir() / "llama-2-7b.yaml")  # cached by file
    assert p.stats(3, "down_proj") is p.layers[3].down_proj
    with pytest.raises(ConfigError, match="down_proj"):
        p.stats(3, "down_prj")
    with pytest.raises(ConfigError, match="lm_head"):
        p.stats(-1, "lm_head")
    with pytest.raises(ConfigError) as e:
        load_outlier_profile("llama-2-7")
    assert "llama-2-7b" in str(e.value)


@pytest.fixture(scope="module")
def small_profile_dict(tiny, tmp_path_factory):
    path = write_profile(synthetic_profile(tiny, _params(), seed=1),
                         tmp_path_factory.mktemp("p") / "small.yaml")
    return yaml.safe_load(path.read_text())


def _bad(tmp_path, data, edit) -> ConfigError:
    import copy

    d = copy.deepcopy(data)
    edit(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_outlier_profile(path)
    assert "bad.yaml" in (e.value.file or "")
    return e.value


def test_schema_errors_name_file_and_key(tmp_path, small_profile_dict):
    d = small_profile_dict
    assert isinstance(load_outlier_profile(dict(d)), OutlierProfile)

    e = _bad(tmp_path, d, lambda x: x["layers"][0]["q_proj"].update(frac_ub_with_outliers=1.5))
    assert e.key == "layers.0.q_proj.frac_ub_with_outliers" and "<= 1" in e.expected

    e = _bad(tmp_path, d, lambda x: x["layers"][1]["up_proj"].update(adjacency=-0.1))
    assert e.key == "layers.1.up_proj.adjacency"

    e = _bad(tmp_path, d, lambda x: x["layers"][0]["k_proj"].update(frac_ub_with_outlier=0.1))
    assert e.key == "layers.0.k_proj.frac_ub_with_outlier" and "frac_ub_with_outliers" in str(e)

    e = _bad(tmp_path, d, lambda x: x["layers"][0].update(qproj=x["layers"][0]["q_proj"]))
    assert e.key == "layers.0.qproj" and "q_proj" in str(e)

    e = _bad(tmp_path, d, lambda x: x.update(colour="red"))
    assert e.key == "colour"

    def skew(x):
        x["layers"][1]["v_proj"]["outliers_per_ub"][1] += 0.2
    e = _bad(tmp_path, d, skew)
    assert e.key == "layers.1.v_proj.outliers_per_ub" and "sum to 1" in e.expected

    def five(x):
        x["layers"][0]["o_proj"]["outliers_per_ub"][5] = 0.0
    e = _bad(tmp_path, d, five)
    assert e.key == "layers.0.o_proj.outliers_per_ub.5"

    e = _bad(tmp_path, d, lambda x: x["layers"].pop(1))
    assert e.key == "layers" and "1" in str(e)

    def widths(x):
        x["layers"][0]["gate_proj"]["frac_rowtile_with_outliers"].pop(64)
    e = _bad(tmp_path, d, widths)
    assert e.key == "layers.0.gate_proj.frac_rowtile_with_outliers"

    e = _bad(tmp_path, d, lambda x: x["provenance"]["params"].update(base_rate=0.9))
    assert e.key == "provenance.params.base_rate"

    e = _bad(tmp_path, d, lambda x: x.update(macro=100))
    assert e.key == "macro"
