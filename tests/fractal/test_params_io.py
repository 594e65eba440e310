"""Parameter files: native .npz, reference .pkl layout, restricted unpickling, atomic writes."""

import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest

from ofdb_fast.fractal.ifs import IFSParams, sample_systems
from ofdb_fast.fractal.params_io import load_params, save_params, save_params_pkl


@pytest.fixture
def params():
    return sample_systems(50, min_n=2, max_n=4, beta=(3.0, 3.6), bval=0.5, seed=7)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.systems, b.systems)
    np.testing.assert_array_equal(a.n_maps, b.n_maps)
    assert a.n_maps.dtype == np.int32 and a.systems.dtype == np.float64


def test_npz_roundtrip(tmp_path, params):
    path = tmp_path / "systems.npz"
    save_params(params, path)
    loaded = load_params(path)
    _assert_same(loaded, params)
    assert loaded.hparams == params.hparams
    assert isinstance(loaded.hparams["n"], tuple) and isinstance(loaded.hparams["beta"], tuple)
    with np.load(path, allow_pickle=False) as npz:  # a plain npz, readable without ofdb_fast
        assert set(npz.files) == {"systems", "n_maps", "hparams_json"}
        assert npz["hparams_json"].dtype == np.uint8


def test_npz_roundtrip_one_system_one_map(tmp_path):
    params = sample_systems(1, min_n=1, max_n=1, beta=(1.0, 1.5))
    save_params(params, tmp_path / "one.npz")
    _assert_same(load_params(tmp_path / "one.npz"), params)


@pytest.mark.parametrize("ext", ["npz", "pkl"])
def test_refuses_overwrite_and_leaves_no_temp_files(tmp_path, params, ext):
    path = tmp_path / f"systems.{ext}"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=f"{path} already exists; pass overwrite=True"):
        save_params(params, path)
    assert path.read_bytes() == b"user data"
    save_params(params, path, overwrite=True)
    _assert_same(load_params(path), params)
    assert sorted(os.listdir(tmp_path)) == [f"systems.{ext}"]


def test_failed_write_keeps_original(tmp_path, params):
    path = tmp_path / "systems.npz"
    save_params(params, path)
    bad = IFSParams(params.systems.copy(), params.n_maps, params.hparams)
    bad.systems[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="systems must be finite"):
        save_params(bad, path, overwrite=True)
    _assert_same(load_params(path), params)
    assert os.listdir(tmp_path) == ["systems.npz"]


def test_pkl_writes_reference_layout_exactly(tmp_path, params):
    path = tmp_path / "debug.pkl"
    save_params_pkl(params, path)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert set(raw) == {"params", "hparams"}
    assert raw["hparams"] == {"num_systems": 50, "n": (2, 5), "bval": 0.5, "beta": (3.0, 3.6)}
    assert len(raw["params"]) == 50
    for i, entry in enumerate(raw["params"]):
        assert set(entry) == {"system"}
        assert type(entry["system"]) is np.ndarray and entry["system"].dtype == np.float64
        np.testing.assert_array_equal(entry["system"], params.system(i))
    loaded = load_params(path)
    _assert_same(loaded, params)  # all of n = 2..4 occur, so K = 4 again
    assert loaded.hparams["n"] == (2, 5) and loaded.hparams["rng"] == "reference"


def _reference_pickle(systems, protocol):
    payload = {"params": [{"system": s} for s in systems],
               "hparams": {"num_systems": len(systems), "n": (2, 5), "bval": 1, "beta": None,
                           "sample_fn": "sample_system"}}  # AF's extra key
    return pickle.dumps(payload, protocol=protocol)


# NumPy 2.x writers name numpy._core, 1.x writers numpy.core; at protocol >= 4 module names are
# length-prefixed inside frames, so the 1.x rename is emulated on a protocol-2 (text GLOBAL) pickle.
@pytest.mark.parametrize("protocol,core", [(2, "numpy._core"), (4, "numpy._core"), (5, "numpy._core"),
                                           (2, "numpy.core")])
def test_loads_reference_pickles(tmp_path, protocol, core):
    rng = np.random.default_rng(protocol)
    systems = [rng.uniform(-1, 1, (n, 2, 3)) for n in (3, 2, 4, 2)]
    systems[1] = np.asfortranarray(systems[1])  # non-contiguous layouts pickle differently
    data = _reference_pickle(systems, protocol)
    if core == "numpy.core":
        data = data.replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray" in data
    path = tmp_path / "ref.pkl"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from the numpy.core shim
        loaded = load_params(path)
    assert loaded.systems.shape == (4, 4, 2, 3)
    np.testing.assert_array_equal(loaded.n_maps, [3, 2, 4, 2])
    for i, s in enumerate(systems):
        np.testing.assert_array_equal(loaded.system(i), s)
        np.testing.assert_array_equal(loaded.systems[i, len(s):], 0.0)
    assert loaded.hparams["n"] == (2, 5) and loaded.hparams["sample_fn"] == "sample_system"


class _Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_malicious_pickle_before_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"params": [{"system": _Malicious(marker)}], "hparams": {}}))
    with pytest.raises(ValueError, match=r"evil.pkl: refusing to unpickle (posix|nt|os)\.system: only plain "
                                         "containers, numbers and NumPy arrays are allowed"):
        load_params(path)
    assert not marker.exists()
    # ...and the same pickle really does run its payload when unpickled naively
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_refuses_other_globals(tmp_path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(ValueError, match="refusing to unpickle builtins.eval"):
        load_params(path)


@pytest.mark.parametrize("ext", ["pkl", "npz"])
def test_corrupt_and_truncated_files(tmp_path, params, ext):
    good = tmp_path / f"good.{ext}"
    save_params(params, good)
    truncated = tmp_path / f"truncated.{ext}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / f"garbage.{ext}"
    garbage.write_bytes(b"\x00\xffnot a parameter file")
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=f"{path}: not a readable"):
            load_params(path)


def test_missing_file_and_unknown_extension(tmp_path, params):
    with pytest.raises(FileNotFoundError):
        load_params(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"params.csv: parameter files must end in .npz .* or .pkl"):
        load_params(tmp_path / "params.csv")
    with pytest.raises(ValueError, match=r"parameter files must end in .npz"):
        save_params(params, tmp_path / "params")


@pytest.mark.parametrize("payload,match", [
    ([1, 2, 3], r"expected a dict with a 'params' list .* got list"),
    ({"hparams": {}}, r"expected a dict with a 'params' list .* with keys \['hparams'\]"),
    ({"params": [np.zeros((2, 2, 3))]}, r"params\[0\] must be a dict with a 'system' array"),
    ({"params": [{"system": np.zeros((2, 3, 2))}]}, r"params\[0\]\['system'\] must have shape \(n, 2, 3\)"),
    ({"params": [{"system": np.zeros((0, 2, 3))}]}, r"must have shape \(n, 2, 3\) with n >= 1, got \(0, 2, 3\)"),
    ({"params": [{"system": np.ones((2, 2, 3))}, {"system": np.full((2, 2, 3), np.nan)}]},
     r"params\[1\]\['system'\] must be finite"),
    ({"params": [{"system": "abc"}]}, r"params\[0\]\['system'\] must be a numeric array"),
    ({"params": [], "hparams": [1]}, r"'hparams' must be a dict, got list"),
])
def test_wrong_pickle_structure(tmp_path, payload, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=match):
        load_params(path)


def test_npz_wrong_content(tmp_path, params):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"not an ofdb_fast parameter file \(missing arrays"):
        load_params(path)
    blob = np.frombuffer(b"{}", dtype=np.uint8)
    np.savez(path, systems=np.zeros((2, 3, 2, 3)), n_maps=np.array([1, 4], np.int32), hparams_json=blob)
    with pytest.raises(ValueError, match=r"n_maps must be in \[1, K = 3\]"):
        load_params(path)
    padded = np.zeros((1, 3, 2, 3))
    padded[0, 2] = 1.0
    np.savez(path, systems=padded, n_maps=np.array([2], np.int32), hparams_json=blob)
    with pytest.raises(ValueError, match="zero beyond n_maps"):
        load_params(path)
    np.savez(path, systems=np.zeros((1, 3, 2, 3)), n_maps=np.array([2], np.int32),
             hparams_json=np.frombuffer(b"\xff{", dtype=np.uint8))
    with pytest.raises(ValueError, match="hparams_json must hold UTF-8 JSON"):
        load_params(path)
    with zipfile.ZipFile(path, "w") as z:  # an object array: never unpickled
        with z.open("systems.npy", "w") as f:
            np.lib.format.write_array(f, np.array([None]), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npz parameter file"):
        load_params(path)
