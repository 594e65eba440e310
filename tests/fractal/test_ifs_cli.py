"""``ofdb-fast ifs``: flags, formats, validation, overwrite protection."""

import pickle
import re

import numpy as np
import pytest

from ofdb_fast.cli import main
from ofdb_fast.fractal.ifs import sample_systems
from ofdb_fast.fractal.params_io import load_params


@pytest.mark.parametrize("ext", ["pkl", "npz"])
def test_writes_file_matching_sampler(tmp_path, capsys, ext):
    path = tmp_path / f"systems.{ext}"
    argv = ["ifs", "--save_path", str(path), "--num_systems", "40", "--min_n", "2", "--max_n", "3",
            "--bval", "0.5", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "40 systems" in out and "systems/s" in out and str(path) in out
    loaded = load_params(path)
    expected = sample_systems(40, min_n=2, max_n=3, bval=0.5, seed=3)
    np.testing.assert_array_equal(loaded.systems, expected.systems)
    assert loaded.hparams["n"] == (2, 4) and loaded.hparams["bval"] == 0.5 and loaded.hparams["beta"] is None


def test_reference_defaults_and_pcg64(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["ifs", "--rng", "pcg64", "--seed", "1"]) == 0
    with open(tmp_path / "debug.pkl", "rb") as f:
        raw = pickle.load(f)
    assert raw["hparams"] == {"num_systems": 100, "n": (2, 5), "bval": 1.0, "beta": None}
    expected = sample_systems(100, seed=1, rng="pcg64")
    for i, entry in enumerate(raw["params"]):
        np.testing.assert_array_equal(entry["system"], expected.system(i))


def test_beta_min_and_max_both_used(tmp_path):
    # the reference overwrote beta with (beta_min, beta_min); here both bounds count
    path = tmp_path / "b.npz"
    assert main(["ifs", "--save-path", str(path), "--num-systems", "300", "--beta_min", "3.0",
                 "--beta_max", "4.0"]) == 0
    params = load_params(path)
    assert params.hparams["beta"] == (3.0, 4.0)
    sv = np.linalg.svd(params.systems[..., :2], compute_uv=False)
    mask = np.arange(4)[None, :] < params.n_maps[:, None]
    total = ((sv[..., 0] + 2 * sv[..., 1]) * mask).sum(axis=1)
    assert total.min() >= 3.0 - 1e-9 and total.max() <= 4.0 + 1e-9
    assert total.max() - total.min() > 0.5


def test_refuses_existing_file_without_overwrite(tmp_path, capsys):
    path = tmp_path / "debug.pkl"
    path.write_bytes(b"precious")
    assert main(["ifs", "--save_path", str(path)]) == 2
    assert "--save_path" in capsys.readouterr().err and path.read_bytes() == b"precious"
    assert main(["ifs", "--save_path", str(path), "--overwrite", "--num_systems", "5"]) == 0
    assert len(load_params(path)) == 5


@pytest.mark.parametrize("flags,message", [
    (["--num_systems", "0"], "--num_systems must be >= 1, got 0"),
    (["--min_n", "0"], "--min_n must be >= 1, got 0"),
    (["--min_n", "3", "--max_n", "2"], r"--max_n must be >= --min_n \(3\), got 2"),
    (["--bval", "0"], "--bval must be a finite number > 0, got 0.0"),
    (["--bval", "nan"], "--bval must be a finite number > 0, got nan"),
    (["--beta_min", "3"], "--beta_min and --beta_max must be given together, got only --beta_min"),
    (["--beta_max", "3"], "--beta_min and --beta_max must be given together, got only --beta_max"),
    (["--beta_min", "3", "--beta_max", "7"], r"--beta_max must be in \[0, 3 \* --min_n = 6\]"),
    (["--beta_min", "4", "--beta_max", "3"], r"--beta_max must be >= --beta_min \(4.0\), got 3.0"),
    (["--min_n", "1"], "--beta_min/--beta_max must be given when --min_n is 1"),
    (["--seed", "-3"], r"--seed must be in \[0, 2\*\*64\), got -3"),
    (["--save_path", "x.csv"], "--save_path must end in .pkl .* or .npz"),
    (["--save_path", "/nonexistent-dir-ofdb/x.pkl"], "--save_path directory /nonexistent-dir-ofdb does not exist"),
])
def test_bad_flags(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["ifs", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ofdb-fast ifs: error: ")
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []
