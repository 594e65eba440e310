"""``ofdb-fast generate``: mapping, layout, determinism, resume, sharding, refusals, formats.

Runs are tiny (32 px, 500-1000 points, a handful of classes) so the file stays fast.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from ofdb_fast.cli import main
from ofdb_fast.fractal import dataset
from ofdb_fast.fractal.dataset import GenerateOptions, class_system_index, generate

SMALL = ["--size", "32", "--n_points", "600", "--num_systems", "20", "--num_class", "4", "--per_class", "3",
         "--no_progress", "--workers", "2", "--batch_size", "5"]


def _run(tmp, *extra, capsys=None):
    code = main(["generate", "--dataset_dir", str(tmp), *SMALL, *extra])
    return code


def _tree(root) -> dict[str, bytes]:
    """Every file below ``root`` by relative path -> bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# ------------------------------------------------------------------------ mapping
def test_mapping_reproduces_the_float_floor_division_quirk():
    labels, systems = class_system_index(1000, 1, 50_000)
    assert systems[:6].tolist() == [0, 49, 99, 149, 199, 249]  # not 0, 50, 100, ...
    assert systems[-1] == 49949
    np.testing.assert_array_equal(labels, np.arange(1000))


@pytest.mark.parametrize("c, p, s", [(1000, 1, 50_000), (1000, 100, 50_000), (999, 37, 12_345), (7, 3, 20), (4, 3, 5),
                                     (3, 5, 100), (10, 10, 7), (1, 1, 1)])
def test_mapping_matches_python_scalar_formula(c, p, s):
    labels, systems = class_system_index(c, p, s)
    expected = [int(i // (c * p / s)) for i in range(c * p)]
    assert systems.tolist() == expected
    assert labels.tolist() == [i // p for i in range(c * p)]
    assert systems.max() < s


def test_units_partition_is_contiguous_and_complete():
    for n_units in (0, 1, 7, 10):
        for n in (1, 3, 4):
            parts = [list(dataset.units_for_machine(n_units, (i, n))) for i in range(n)]
            assert sum(parts, []) == list(range(n_units))


def test_subset_sampling_equals_sampling_all():
    # gaps below and above dataset._MERGE_GAP: merged ranges and separate calls
    opts = GenerateOptions(num_systems=500, seed=5, min_n=3, max_n=4, bval=0.5)
    from ofdb_fast.fractal.ifs import sample_systems

    idx = np.array([0, 7, 29, 200, 201, 499], np.int64)
    sub = dataset._sample_subset(idx, opts)
    full = sample_systems(500, seed=5, min_n=3, max_n=4, bval=0.5, rng="counter")
    np.testing.assert_array_equal(sub.systems, full.systems[idx])
    np.testing.assert_array_equal(sub.n_maps, full.n_maps[idx])


# ------------------------------------------------------------------------- layout
def test_png_layout_and_pixels_match_ifs_render(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _run(out) == 0
    assert "wrote 12 images in" in capsys.readouterr().out
    tree = _tree(out)
    expected = {"ofdb_manifest.json"} | {f"{i // 3}/image_{i}.png" for i in range(12)}
    assert set(tree) == expected
    # Image i is ifs_render(system int(i // (12 / 20)), seed, image_ids=[i]).
    from ofdb_fast.fractal.ifs import sample_systems
    from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render

    params = sample_systems(20, seed=0, rng="counter")
    _, systems = class_system_index(4, 3, 20)
    ids = np.array([0, 5, 11])
    ref = ifs_render(params.systems[systems[ids]], params.n_maps[systems[ids]], size=(32, 32), seed=0,
                     image_ids=ids, config=RenderConfig(n_points=600), backend="numpy")
    for j, i in enumerate(ids):
        np.testing.assert_array_equal(_decode(tree[f"{i // 3}/image_{i}.png"]), ref[j])
    manifest = json.loads(tree["ofdb_manifest.json"])
    assert manifest["content"]["seed"] == 0 and manifest["content"]["size"] == 32
    assert manifest["counts"] == {"images": 12, "classes": 4, "units": 12}


def test_file_index_is_zero_padded_to_per_class_width(tmp_path):
    opts = GenerateOptions(dataset_dir=str(tmp_path / "ds"), num_systems=3, num_class=1, per_class=12, size=8,
                           n_points=50, progress=False)
    generate(opts)
    assert sorted(os.listdir(tmp_path / "ds" / "0")) == [f"image_{i:02d}.png" for i in range(12)]


# -------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    assert _run(tmp_path / "a", "--batch_size", "2", "--workers", "1") == 0
    assert _run(tmp_path / "b") == 0  # other batching and worker count: same bytes
    assert _run(tmp_path / "c", "--seed", "1") == 0
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert set(a) == set(c)
    assert all(a[k] != c[k] for k in a if k.endswith(".png"))


# ------------------------------------------------------------------------- resume
def test_resume_after_interruption_gives_identical_output(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run(full) == 0
    shutil.copytree(full, part)
    os.remove(part / "1" / "image_4.png")
    os.remove(part / "3" / "image_11.png")
    shutil.rmtree(part / "2")
    (part / "0" / ".image_1.png.tmp-4242").write_bytes(b"partial")  # a write cut short
    os.remove(part / "0" / "image_1.png")
    capsys.readouterr()
    assert _run(part, "--resume") == 0
    assert "wrote 6 images" in capsys.readouterr().out
    assert _tree(part) == _tree(full)


def test_resume_skips_everything_when_complete(tmp_path, capsys):
    assert _run(tmp_path / "ds") == 0
    capsys.readouterr()
    assert _run(tmp_path / "ds", "--resume") == 0
    assert "wrote 0 images" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["tar", "npz"])
def test_resume_shards(tmp_path, fmt):
    full, part = tmp_path / "full", tmp_path / "part"
    args = ("--format", fmt, "--shard_size", "5")
    assert _run(full, *args) == 0
    assert sorted(os.listdir(full)) == ["ofdb_manifest.json"] + [f"shard-{k:06d}.{fmt}" for k in range(3)]
    shutil.copytree(full, part)
    os.remove(part / f"shard-000001.{fmt}")
    (part / f".shard-000001.{fmt}.tmp-77").write_bytes(b"half a shard")
    assert _run(part, *args, "--resume") == 0
    assert _tree(part) == _tree(full)


def test_resume_refuses_changed_settings(tmp_path, capsys):
    assert _run(tmp_path / "ds") == 0
    capsys.readouterr()
    assert _run(tmp_path / "ds", "--resume", "--size", "16") == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "size 32 (now 16)" in err


def test_resume_refuses_directory_without_manifest(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    assert _run(tmp_path / "ds", "--resume") == 2
    assert "has no ofdb_manifest.json" in capsys.readouterr().err


# ----------------------------------------------------------------------- sharding
@pytest.mark.parametrize("fmt", ["png", "tar", "npz"])
def test_shard_union_equals_single_machine(tmp_path, fmt):
    args = ("--format", fmt, "--shard_size", "4")
    assert _run(tmp_path / "single", *args) == 0
    union = {}
    parts = []
    for i in range(3):
        assert _run(tmp_path / f"m{i}", *args, "--shard", f"{i}/3") == 0
        tree = _tree(tmp_path / f"m{i}")
        parts.append(set(tree) - {"ofdb_manifest.json"})
        for name, data in tree.items():
            assert union.setdefault(name, data) == data
    assert union == _tree(tmp_path / "single")
    assert all(parts) and sum(len(p) for p in parts) == len(set().union(*parts))  # disjoint, none empty


# --------------------------------------------------------------- refusals / overwrite
def test_non_empty_dir_refused(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("user data")
    assert _run(tmp_path / "ds") == 2
    assert f"--dataset_dir {tmp_path / 'ds'} is not empty" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "ds")) == ["keep.txt"]


def test_overwrite_replaces_own_output(tmp_path):
    assert _run(tmp_path / "ds", "--seed", "3") == 0
    (tmp_path / "ds" / "1" / ".image_9.png.tmp-1").write_bytes(b"x")
    assert _run(tmp_path / "ds", "--overwrite", "--format", "tar", "--shard_size", "6") == 0
    assert _run(tmp_path / "ref", "--format", "tar", "--shard_size", "6") == 0
    assert _tree(tmp_path / "ds") == _tree(tmp_path / "ref")


def test_overwrite_refuses_foreign_files(tmp_path, capsys):
    assert _run(tmp_path / "ds") == 0
    (tmp_path / "ds" / "2" / "notes.txt").write_text("user data")
    before = _tree(tmp_path / "ds")
    assert _run(tmp_path / "ds", "--overwrite") == 2
    assert "did not write; refusing to delete anything" in capsys.readouterr().err
    assert _tree(tmp_path / "ds") == before


def test_unwritable_dataset_dir_fails_cleanly(tmp_path, capsys):
    # Tests run as root, where chmod does not block writes: put the directory below a regular
    # file instead. This proves the error path and that nothing is created; it does not
    # exercise a permission-denied directory.
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    assert _run(blocker / "sub") == 2
    assert f"--dataset_dir {blocker / 'sub'}: cannot create the directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_render_errors_surface_before_any_file(tmp_path, capsys):
    assert _run(tmp_path / "ds", "--n_points", str(1 << 28)) == 2  # above ifs_render's MAX_POINTS
    assert "n_points" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_unavailable_backend_is_a_clear_error(tmp_path, capsys):
    from ofdb_fast._dispatch import unavailable_reason

    if unavailable_reason("cuda") is None:
        pytest.skip("cuda is available here: this test checks the error raised where it is not")
    assert _run(tmp_path / "ds", "--backend", "cuda") == 2
    assert "backend 'cuda' is not available" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_dataset_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_bytes(b"x")
    assert _run(tmp_path / "f") == 2
    assert "cannot create the directory" in capsys.readouterr().err
    assert (tmp_path / "f").read_bytes() == b"x"


def test_write_failure_mid_run_leaves_no_partial_files(tmp_path, monkeypatch, capsys):
    from ofdb_fast.fractal import writers

    real = writers.encode_png
    calls = []

    def flaky(image, level=1, *a):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real(image, level, *a)

    monkeypatch.setattr(writers, "encode_png", flaky)
    assert _run(tmp_path / "ds", "--format", "tar", "--shard_size", "5") == 2
    assert "No space left" in capsys.readouterr().err
    names = os.listdir(tmp_path / "ds")
    assert not any(writers.is_temp_name(n) for n in names)
    assert "shard-000001.tar" not in names
    monkeypatch.setattr(writers, "encode_png", real)
    assert _run(tmp_path / "ds", "--format", "tar", "--shard_size", "5", "--resume") == 0
    assert _run(tmp_path / "ref", "--format", "tar", "--shard_size", "5") == 0
    assert _tree(tmp_path / "ds") == _tree(tmp_path / "ref")


# ------------------------------------------------------------------------ formats
def test_tar_and_npz_hold_the_png_images(tmp_path):
    assert _run(tmp_path / "png") == 0
    assert _run(tmp_path / "tar", "--format", "tar", "--shard_size", "5") == 0
    assert _run(tmp_path / "npz", "--format", "npz", "--shard_size", "5") == 0
    pngs = _tree(tmp_path / "png")
    with tarfile.open(tmp_path / "tar" / "shard-000002.tar") as tar:
        assert tar.getnames() == ["000000010.png", "000000010.cls", "000000011.png", "000000011.cls"]
        assert tar.extractfile("000000011.png").read() == pngs["3/image_11.png"]
        assert tar.extractfile("000000011.cls").read() == b"3"
    with np.load(tmp_path / "npz" / "shard-000001.npz") as data:
        assert data["images"].shape == (5, 32, 32, 3)
        assert data["indices"].tolist() == [5, 6, 7, 8, 9]
        assert data["labels"].tolist() == [1, 2, 2, 2, 3]
        for j, i in enumerate(range(5, 10)):
            np.testing.assert_array_equal(data["images"][j], _decode(pngs[f"{i // 3}/image_{i}.png"]))


# ---------------------------------------------------------------------- param file
@pytest.mark.parametrize("ext", ["npz", "pkl"])
def test_param_file_equals_sampled_systems(tmp_path, ext):
    from ofdb_fast.fractal import params_io
    from ofdb_fast.fractal.ifs import sample_systems

    save = params_io.save_params if ext == "npz" else params_io.save_params_pkl
    # 25 systems: the run uses the first 20, as the reference's params[:num_systems]
    save(sample_systems(25, seed=0, rng="counter"), str(tmp_path / f"p.{ext}"))
    assert _run(tmp_path / "a") == 0
    assert _run(tmp_path / "b", "--param_file", str(tmp_path / f"p.{ext}")) == 0
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a if k.endswith(".png"))


def test_param_file_with_too_few_systems(tmp_path, capsys):
    from ofdb_fast.fractal.ifs import sample_systems
    from ofdb_fast.fractal.params_io import save_params

    path = str(tmp_path / "p.npz")
    save_params(sample_systems(10, seed=0, rng="counter"), path)
    assert _run(tmp_path / "ds", "--param_file", path) == 2
    err = capsys.readouterr().err
    assert f"--param_file {path} holds 10 systems but --num_systems is 20" in err


# -------------------------------------------------------------------------- multi
def test_multi_fractals_small(tmp_path):
    args = ("--dataset_type", "multi-fractals", "--size", "32", "--n_points", "300")
    assert _run(tmp_path / "a", *args) == 0
    assert _run(tmp_path / "b", *args, "--shard", "1/2") == 0
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(a) == 13 and all(a[k] == v for k, v in b.items())
    assert _decode(a["0/image_0.png"]).shape == (32, 32, 3)


# ---------------------------------------------------------------------- bad flags
@pytest.mark.parametrize(
    "extra, match",
    [
        (["--size", "0"], "--size must be an integer >= 1, got 0"),
        (["--per_class", "0"], "--per_class must be an integer >= 1, got 0"),
        (["--num_class", "-1"], "--num_class must be an integer >= 1"),
        (["--n_points", "0"], "--n_points must be an integer >= 1"),
        (["--shard", "3/3"], "--shard I/N must satisfy 0 <= I < N, got '3/3'"),
        (["--shard", "a/b"], "--shard must look like I/N"),
        (["--format", "jpg"], "--format must be one of png, tar, npz, got 'jpg'"),
        (["--dataset_type", "mandelbulbs"], "--dataset_type must be one of fractals, multi-fractals"),
        (["--backend", "tpu"], "--backend must be one of auto, numpy, cpu, cuda"),
        (["--png_level", "10"], "--png_level must be in 0..9, got 10"),
        (["--max_n", "1"], r"--max_n must be >= --min_n \(2\), got 1"),
        (["--min_n", "1"], "--min_n must be >= 2"),
        (["--bval", "0"], "--bval must be a finite number > 0"),
        (["--seed", "-1"], r"--seed must be in \[0, 2\*\*64\)"),
        (["--resume", "--overwrite"], "--resume and --overwrite cannot be used together"),
        (["--param_file", "/nonexistent/p.pkl"], "--param_file /nonexistent/p.pkl does not exist"),
        (["--dataset_type", "multi-fractals", "--background"], "not supported with --dataset_type multi-fractals"),
        (["--dataset_type", "multi-fractals", "--backend", "cuda"], "--backend cuda is not supported with"),
        (["--dataset_type", "multi-fractals", "--num_systems", "3"], r"--num_systems \(3\) must be >= --num_class"),
    ],
)
def test_bad_flags(tmp_path, capsys, extra, match):
    import re

    assert _run(tmp_path / "ds", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("ofdb-fast generate: error: ")
    assert re.search(match, err), err
    assert not (tmp_path / "ds").exists()


@pytest.mark.cuda
def test_cuda_backend_matches_cpu(tmp_path):
    assert _run(tmp_path / "cpu", "--backend", "cpu") == 0
    assert _run(tmp_path / "cuda", "--backend", "cuda") == 0
    a, b = _tree(tmp_path / "cpu"), _tree(tmp_path / "cuda")
    assert a.keys() == b.keys()
    pngs = [k for k in a if k.endswith(".png")]
    differing = sum(int((_decode(a[k]) != _decode(b[k])).any(axis=-1).sum()) for k in pngs)
    # CUDA may fuse multiply-adds in the chaos game (STYLE.md): rare boundary pixels may move.
    assert differing <= 1e-3 * len(pngs) * 32 * 32
    assert json.loads(b["ofdb_manifest.json"])["content"]["render_numerics"] == "cuda"


@pytest.mark.cuda
def test_cuda_background_refused_before_any_file(tmp_path, capsys):
    # The preflight renders an empty batch; the cuda backend refuses background=True there.
    assert _run(tmp_path / "ds", "--backend", "cuda", "--background") == 2
    assert "background=True is not implemented on the cuda backend" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
