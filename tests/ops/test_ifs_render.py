"""ifs_render: numpy reference vs C++ (bit-exact) and CUDA, invariants, hand cases, bad inputs."""

import dataclasses

import numpy as np
import pytest

from ofdb_fast.ops.ifs_render import RenderConfig, ifs_render
from ofdb_fast.reference import _rng
from ofdb_fast.reference import ifs_render as ref
from ofdb_fast.testing import backend_params

N_POINTS = 3000
DEFAULT = RenderConfig(n_points=N_POINTS)
PLAIN = RenderConfig(n_points=N_POINTS, jitter=False, translate=0.0, scale=None, flips=False, blur=False)
CONFIGS = {
    "default": DEFAULT,
    "plain": PLAIN,
    "gray": dataclasses.replace(DEFAULT, color=False),
    "patch": dataclasses.replace(DEFAULT, patch=True),
    "no_blur_no_flips": dataclasses.replace(DEFAULT, blur=False, flips=False),
    "translate_only": dataclasses.replace(DEFAULT, scale=None, jitter_tries=1),
    "background": dataclasses.replace(DEFAULT, background=True),
    "background_gray_patch": dataclasses.replace(DEFAULT, background=True, color=False, patch=True),
}


def random_systems(rng, n_img, n_max, smax=1.0):
    """Contractive systems: rotation * diag(s1 >= s2) * rotation (reflections included), t ~ U(-1, 1)."""
    def rot(t):
        c, s = np.cos(t), np.sin(t)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)

    sv = np.sort(rng.uniform(0.15, smax, (n_img, n_max, 2)), axis=-1)[..., ::-1]
    flip = np.where(rng.random((n_img, n_max)) < 0.5, -1.0, 1.0)
    lin = rot(rng.uniform(-np.pi, np.pi, (n_img, n_max))) @ (sv[..., :, None] * np.eye(2))
    lin = lin @ (np.diag([1.0, 0.0]) + flip[..., None, None] * np.diag([0.0, 1.0]))
    lin = lin @ rot(rng.uniform(-np.pi, np.pi, (n_img, n_max)))
    return np.concatenate([lin, rng.uniform(-1, 1, (n_img, n_max, 2, 1))], axis=-1)


@pytest.fixture
def batch(rng):
    systems = random_systems(rng, 8, 4)
    return systems, rng.integers(2, 5, 8)


# ----------------------------------------------------------------------------- cpu == numpy
@pytest.mark.parametrize("backend", backend_params("cpu"))
@pytest.mark.parametrize("output", ["rgb", "counts"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cpu_matches_numpy(batch, name, output, backend):
    systems, n_maps = batch
    kw = dict(size=48, seed=3, config=CONFIGS[name], output=output)
    want = ifs_render(systems, n_maps, backend="numpy", **kw)
    got = ifs_render(systems, n_maps, backend=backend, **kw)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (2, 3), (64, 1)])
@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_odd_sizes_match_numpy(rng, size, backend):
    systems = random_systems(rng, 3, 3)
    for cfg in (DEFAULT, CONFIGS["background"]):
        for output in ("rgb", "counts"):
            want = ifs_render(systems, size=size, config=cfg, output=output, backend="numpy")
            got = ifs_render(systems, size=size, config=cfg, output=output, backend=backend)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_one_system_one_map_and_given_probs(rng, backend):
    one = random_systems(rng, 1, 1)
    for output in ("rgb", "counts"):
        np.testing.assert_array_equal(
            ifs_render(one, size=32, config=DEFAULT, output=output, backend=backend),
            ifs_render(one, size=32, config=DEFAULT, output=output, backend="numpy"))
    systems = random_systems(rng, 4, 3)
    n_maps = np.array([3, 2, 1, 3])
    probs = rng.random((4, 3)) * (np.arange(3)[None] < n_maps[:, None])
    probs /= probs.sum(axis=1, keepdims=True)
    kw = dict(size=40, config=DEFAULT, probs=probs, seed=11)
    np.testing.assert_array_equal(ifs_render(systems, n_maps, backend=backend, **kw),
                                  ifs_render(systems, n_maps, backend="numpy", **kw))


@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_expanding_system_stops_at_first_non_finite_point(backend):
    # x -> 2x + 1 has fixed point -1; x -> 2x then doubles |x| until it overflows (~1000 steps).
    systems = np.array([[[[2.0, 0, 1], [0, 2.0, 1]], [[2.0, 0, 0], [0, 2.0, 0]]]])
    probs = np.array([[0.5, 0.5]])
    cfg = dataclasses.replace(PLAIN, n_points=N_POINTS)
    counts = ifs_render(systems, size=16, probs=probs, config=cfg, output="counts", backend=backend)
    assert 0 < counts.sum() < N_POINTS
    np.testing.assert_array_equal(
        counts, ifs_render(systems, size=16, probs=probs, config=cfg, output="counts", backend="numpy"))


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_tight_box_total_mass_and_extremes(batch, backend):
    systems, n_maps = batch
    counts = ifs_render(systems, n_maps, size=(37, 53), config=PLAIN, output="counts", backend=backend)
    assert counts.dtype == np.int32 and counts.shape == (8, 37, 53)
    np.testing.assert_array_equal(counts.sum(axis=(1, 2)), N_POINTS)
    # The tight box maps its minimum onto row/column 0 exactly, its maximum onto size - 1 unless
    # span * ((size - 1) / span) rounds just below size - 1 (then size - 2, as in the reference).
    last_row = np.array([np.nonzero(c.sum(axis=1))[0].max() for c in counts])
    last_col = np.array([np.nonzero(c.sum(axis=0))[0].max() for c in counts])
    assert (counts[:, 0].sum(axis=1) > 0).all() and (counts[:, :, 0].sum(axis=1) > 0).all()
    assert (last_row >= 35).all() and (last_col >= 51).all()
    assert (last_row == 36).mean() >= 0.5 and (last_col == 52).mean() >= 0.5


@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_window_keeps_at_most_all_points_and_rgb_is_black_where_empty(batch, backend):
    systems, n_maps = batch
    cfg = dataclasses.replace(DEFAULT, flips=False, blur=False)
    counts = ifs_render(systems, n_maps, size=32, config=cfg, output="counts", backend=backend)
    rgb = ifs_render(systems, n_maps, size=32, config=cfg, backend=backend)
    assert (counts.sum(axis=(1, 2)) <= N_POINTS).all()
    np.testing.assert_array_equal(rgb.any(axis=-1), counts > 0)
    gray = ifs_render(systems, n_maps, size=32, config=dataclasses.replace(cfg, color=False), backend=backend)
    np.testing.assert_array_equal(gray, np.repeat(np.where(counts[..., None] > 0, 127, 0), 3, axis=-1))


@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_determinism_and_batch_independence(batch, backend):
    systems, n_maps = batch
    ids = np.array([5, 9, 2, 7, 100, 3, 8, 1])
    kw = dict(size=24, seed=7, config=DEFAULT, backend=backend)
    full = ifs_render(systems, n_maps, image_ids=ids, **kw)
    np.testing.assert_array_equal(full, ifs_render(systems, n_maps, image_ids=ids, **kw))
    for b in (0, 5):
        alone = ifs_render(systems[b:b + 1], n_maps[b:b + 1], image_ids=ids[b:b + 1], **kw)
        np.testing.assert_array_equal(alone[0], full[b])
    same = np.repeat(systems[:1], 2, axis=0)
    two = ifs_render(same, image_ids=np.array([0, 1]), **kw)
    assert not np.array_equal(two[0], two[1])
    assert not np.array_equal(full, ifs_render(systems, n_maps, image_ids=ids, **{**kw, "seed": 8}))


def test_non_contiguous_and_torch_input(batch):
    torch = pytest.importorskip("torch")
    systems, n_maps = batch
    strided = np.ascontiguousarray(systems.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    assert not strided.flags.c_contiguous
    want = ifs_render(systems, n_maps, size=16, config=DEFAULT)
    np.testing.assert_array_equal(ifs_render(strided, n_maps, size=16, config=DEFAULT), want)
    got = ifs_render(torch.from_numpy(systems).float(), torch.from_numpy(n_maps), size=16, config=DEFAULT)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and got.shape == (8, 16, 16, 3)


@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_empty_batch(backend):
    empty = np.zeros((0, 3, 2, 3))
    assert ifs_render(empty, size=(5, 7), backend=backend).shape == (0, 5, 7, 3)
    out = ifs_render(empty, size=(5, 7), output="counts", backend=backend)
    assert out.shape == (0, 5, 7) and out.dtype == np.int32


# ----------------------------------------------------------------------------- hand cases
@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_constant_maps_hand_computed(backend):
    # One constant map: every point is its fixed point -> span 0 -> all in pixel (0, 0).
    const = np.array([[[[0.0, 0, 0.3], [0, 0.0, 0.7]]]])
    counts = ifs_render(const, size=9, config=PLAIN, output="counts", backend=backend)
    assert counts[0, 0, 0] == N_POINTS and counts.sum() == N_POINTS
    # Two constant maps (0, 0) and (1, 1), p = 1/2 each: the box is [0, 1]^2, so points land on
    # (0, 0) or (H-1, W-1); map 1 is chosen iff the CHAOS draw r >= 0.5.
    two = np.array([[[[0.0, 0, 0], [0, 0.0, 0]], [[0.0, 0, 1], [0, 0.0, 1]]]])
    counts = ifs_render(two, size=(5, 6), seed=4, image_ids=np.array([12]), probs=np.array([[0.5, 0.5]]),
                        config=PLAIN, output="counts", backend=backend)
    r = _rng.u01(_rng.stream_key(4, _rng.STREAM_CHAOS, 12), np.arange(N_POINTS))
    assert counts[0, 4, 5] == (r >= 0.5).sum() and counts[0, 0, 0] == (r < 0.5).sum()


@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
def test_background_only_fills_black_pixels(batch, backend):
    systems, n_maps = batch
    cfg = dataclasses.replace(DEFAULT, blur=False)
    fg = ifs_render(systems, n_maps, size=(30, 41), config=cfg, backend=backend)
    both = ifs_render(systems, n_maps, size=(30, 41), config=dataclasses.replace(cfg, background=True),
                      backend=backend)
    hit = fg.any(axis=-1)
    np.testing.assert_array_equal(both[hit], fg[hit])
    assert both[~hit].any(axis=-1).mean() > 0.9  # the texture is (almost) never black


def test_diamond_square_hand_computed():
    # side 2 -> n = 1, g = 3: corners, one diamond centre, four square-step edge points whose
    # out-of-grid neighbours wrap (row 0's "up" is row g - 1 - h = 1).
    key = _rng.stream_key(5, _rng.STREAM_BACKGROUND, 3)
    grid = ref.diamond_square(np.array([key]), 2)[0]
    u = lambda c: float(_rng.u01(key, c))  # noqa: E731
    decay = 0.4 + 0.4 * u(ref.BG_DECAY)
    m = 0.5 * np.exp(decay * 0)
    corners = [u(ref.BG_CORNER + i) for i in range(4)]
    np.testing.assert_array_equal(grid[[0, 0, 2, 2], [0, 2, 0, 2]], corners)
    noise = lambda c: -m + 2 * m * u(ref.BG_NOISE + c)  # noqa: E731
    centre = sum(corners) / 4 + noise(0)
    assert grid[1, 1] == pytest.approx(centre, abs=1e-15)
    want_01 = (2 * centre + corners[0] + corners[1]) / 4 + noise(1)  # up = down = centre row
    want_10 = (corners[0] + corners[2] + 2 * centre) / 4 + noise(2)
    assert grid[0, 1] == pytest.approx(want_01, abs=1e-15)
    assert grid[1, 0] == pytest.approx(want_10, abs=1e-15)


def test_sigma_max_closed_form(rng):
    lin = rng.normal(size=(50, 2, 2))
    np.testing.assert_allclose(ref.sigma_max(lin), np.linalg.svd(lin, compute_uv=False)[:, 0], rtol=1e-12)


def test_blur_reference_hand_computed():
    img = np.zeros((5, 5, 3), np.uint8)
    img[2, 2] = 255
    w = np.exp(-1 / (2 * 0.8**2))
    k = np.array([w, 1, w]) / (1 + 2 * w)
    want = np.zeros((5, 5))
    want[1:4, 1:4] = np.rint(np.outer(k, k) * 255)
    np.testing.assert_array_equal(ref.blur3(img, 0.8)[..., 1], want)
    # Reflect-101 border: an impulse in a corner is mirrored onto itself (weight k1 + 2 k0 per axis
    # would be wrong; the neighbour at index -1 is index 1).
    edge = np.zeros((3, 3, 3), np.uint8)
    edge[0, 0] = 100
    np.testing.assert_array_equal(ref.blur3(edge, 0.8)[0, 0, 0], np.rint(k[1] * k[1] * 100))
    np.testing.assert_array_equal(ref.blur3(edge, 0.8)[1, 1, 0], np.rint(k[0] * k[0] * 100))


def test_hsv_lut_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    # cv2's vectorised uint8 HSV2RGB (256 pixels: no scalar tail). All 65,536 (S, V) pairs were
    # checked equal on x86-64/AVX-512 with cv2 5.0; a strided subset keeps the test fast.
    for sat in range(0, 256, 7):
        for val in range(0, 256, 11):
            hsv = np.stack([np.arange(256), np.full(256, sat), np.full(256, val)], 1).astype(np.uint8)
            np.testing.assert_array_equal(ref.hsv_lut(sat, val), cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0],
                                          err_msg=f"S={sat} V={val}")


def test_fma32_is_correctly_rounded(rng):
    from fractions import Fraction

    a, b = rng.random(200).astype(np.float32), rng.random(200).astype(np.float32)
    for x, y in zip(a, b):
        exact = Fraction(1) - Fraction(float(x)) * Fraction(float(y))
        guess = np.float32(float(exact))
        cands = [guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))]
        errs = [abs(Fraction(float(c)) - exact) for c in cands]
        best = min(errs)
        winners = [c for c, e in zip(cands, errs) if e == best]
        assert ref.fma32(-x, y, np.float32(1.0)) in winners


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs(batch):
    systems, n_maps = batch
    bad = systems.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="systems must contain only finite values"):
        ifs_render(bad)
    with pytest.raises(ValueError, match=r"systems must have shape \[B, K, 2, 3\]"):
        ifs_render(systems[..., :2])
    with pytest.raises(TypeError, match="systems must have a floating-point dtype"):
        ifs_render(systems.astype(np.int64))
    with pytest.raises(ValueError, match="n_maps must be in 1..K"):
        ifs_render(systems, np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="n_maps must have shape"):
        ifs_render(systems, np.ones(3, np.int64))
    with pytest.raises(ValueError, match="probs must sum to 1"):
        ifs_render(systems, probs=np.full((8, 4), 0.3))
    with pytest.raises(ValueError, match="probs must be non-negative and finite"):
        ifs_render(systems, probs=np.tile([1.5, -0.5, 0.0, 0.0], (8, 1)))
    with pytest.raises(ValueError, match="size"):
        ifs_render(systems, size=0)
    with pytest.raises(ValueError, match="config.n_points must be >= 1"):
        ifs_render(systems, config=RenderConfig(n_points=0))
    with pytest.raises(ValueError, match="output must be 'rgb' or 'counts'"):
        ifs_render(systems, output="png")
    with pytest.raises(ValueError, match="backend must be"):
        ifs_render(systems, backend="triton")
    with pytest.raises(ValueError, match="seed must be"):
        ifs_render(systems, seed=-1)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cuda_background_is_refused(rng):
    torch = pytest.importorskip("torch")
    dev = torch.from_numpy(random_systems(rng, 2, 3)).cuda()
    with pytest.raises(RuntimeError, match="background=True is not implemented on the cuda backend"):
        ifs_render(dev, size=16, config=CONFIGS["background"], backend="cuda")


def test_cuda_background_refused_for_an_empty_batch(monkeypatch):
    # generate's preflight renders an empty batch to surface unsupported options before any
    # file is written: the cuda backend must refuse background=True there too.
    from ofdb_fast import _dispatch

    monkeypatch.setattr(_dispatch, "resolve", lambda *args, **kwargs: "cuda")
    with pytest.raises(RuntimeError, match="background=True is not implemented on the cuda backend"):
        ifs_render(np.zeros((0, 2, 2, 3)), size=16, config=CONFIGS["background"], backend="cuda")
    empty = ifs_render(np.zeros((0, 2, 2, 3)), size=16, config=CONFIGS["background"], output="counts",
                       out=np.zeros((0, 16, 16), np.int32), backend="cuda")
    assert empty.shape == (0, 16, 16)  # counts come before the background: accepted


@pytest.mark.cuda
def test_cuda_more_images_than_grid_y(rng):
    # The rgb kernels put images on grid.y (at most 65535 per launch): a batch past that limit
    # must render every image, the ones after 65535 included. No blur: bit-exact with cpu.
    torch = pytest.importorskip("torch")
    n = 65535 + 9
    systems = random_systems(rng, n, 2)
    cfg = RenderConfig(n_points=64, blur=False)
    want = ifs_render(systems, size=6, config=cfg, backend="cpu")
    got = ifs_render(torch.from_numpy(systems).cuda(), size=6, config=cfg, backend="cuda").cpu().numpy()
    assert want[65535:].any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.cuda
def test_cuda_runs_on_the_callers_stream(rng):
    # Inputs made and results read on a side stream: the kernels must be enqueued there.
    torch = pytest.importorskip("torch")
    systems = random_systems(rng, 16, 4)
    want = ifs_render(systems, size=48, config=CONFIGS["no_blur_no_flips"], backend="cpu")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        dev = torch.from_numpy(systems).to("cuda", non_blocking=True)
        got = ifs_render(dev, size=48, config=CONFIGS["no_blur_no_flips"], backend="cuda")
        host = torch.empty(got.shape, dtype=got.dtype, pin_memory=True)
        host.copy_(got, non_blocking=True)
    side.synchronize()
    np.testing.assert_array_equal(host.numpy(), want)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["default", "plain", "patch", "gray"])
def test_cuda_matches_numpy(rng, name):
    torch = pytest.importorskip("torch")
    systems = random_systems(rng, 6, 4)
    n_maps = rng.integers(2, 5, 6)
    cfg = CONFIGS[name]
    dev = torch.from_numpy(systems).cuda()
    nm = torch.from_numpy(n_maps).cuda()
    want = ifs_render(systems, n_maps, size=(37, 53), config=cfg, output="counts", backend="numpy")
    got = ifs_render(dev, nm, size=(37, 53), config=cfg, output="counts", backend="cuda").cpu().numpy()
    np.testing.assert_array_equal(got.sum(axis=(1, 2)), want.sum(axis=(1, 2)))  # exact total mass
    assert (got != want).mean() <= 1e-4
    want = ifs_render(systems, n_maps, size=64, config=cfg, backend="numpy")
    got = ifs_render(dev, nm, size=64, config=cfg, backend="cuda").cpu().numpy()
    # Blur weights use device exp (last-ulp differences can move a rounding): rare pixels only.
    assert (got != want).any(axis=-1).mean() <= 1e-3


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_more_points_match_numpy(rng, backend):
    systems = random_systems(rng, 3, 4)
    cfg = RenderConfig(n_points=20_000)
    for output in ("rgb", "counts"):
        np.testing.assert_array_equal(ifs_render(systems, size=(96, 80), config=cfg, output=output, backend=backend),
                                      ifs_render(systems, size=(96, 80), config=cfg, output=output, backend="numpy"))


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_replayed_chain_for_huge_n_points(rng, backend):
    # Above 2**18 points per image the C++ chain is run twice instead of stored. Constant maps
    # (0, 0) and (1, 1) give a known box, so the counts are known exactly from the CHAOS draws.
    cfg = dataclasses.replace(PLAIN, n_points=2**18 + 5)
    two = np.array([[[[0.0, 0, 0], [0, 0.0, 0]], [[0.0, 0, 1], [0, 0.0, 1]]]])
    counts = ifs_render(two, size=4, probs=np.array([[0.25, 0.75]]), config=cfg, output="counts", backend=backend)
    r = _rng.u01(_rng.stream_key(0, _rng.STREAM_CHAOS, 0), np.arange(cfg.n_points))
    assert counts[0, 3, 3] == (r >= 0.25).sum() and counts[0, 0, 0] == (r < 0.25).sum()
    systems = random_systems(rng, 1, 3)
    cfg = dataclasses.replace(DEFAULT, n_points=2**18 + 5)
    counts = ifs_render(systems, size=(40, 24), config=cfg, output="counts", backend=backend)
    np.testing.assert_array_equal(
        counts, ifs_render(systems, size=(40, 24), config=cfg, output="counts", backend="numpy"))


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_many_maps_match_numpy(rng, backend):
    # K > 4 takes the C++ scalar lockstep chain instead of the AVX-512 one.
    systems = random_systems(rng, 5, 6)
    n_maps = np.array([6, 1, 5, 2, 6])
    for output in ("rgb", "counts"):
        np.testing.assert_array_equal(
            ifs_render(systems, n_maps, size=(33, 40), config=DEFAULT, output=output, backend=backend),
            ifs_render(systems, n_maps, size=(33, 40), config=DEFAULT, output=output, backend="numpy"))


def test_default_batch_exercises_blur_and_flips():
    # test_cpu_matches_numpy(default) covers blurred and unblurred, flipped and unflipped images.
    keys = _rng.stream_key(3, _rng.STREAM_AUGMENT, np.arange(8))
    blurred = _rng.u01(keys, ref.AUG_BLUR) > 0.5
    transposed = _rng.u01(keys, ref.AUG_FLIP) > 0.5
    assert 0 < blurred.sum() < 8 and 0 < transposed.sum() < 8


# ----------------------------------------------------------------------------- out=
@pytest.mark.parametrize("backend", backend_params("numpy", "cpu"))
@pytest.mark.parametrize("output", ["rgb", "counts"])
def test_out_is_written_in_place(batch, output, backend):
    # out starts as garbage: every pixel must be written, and reuse must not leak a previous image.
    systems, n_maps = batch
    kw = dict(size=(37, 53), seed=5, config=DEFAULT, output=output, backend=backend)
    want = ifs_render(systems, n_maps, **kw)
    out = np.full(want.shape, 0xAB, dtype=want.dtype)
    for seed in (9, 5):  # the second call overwrites the first call's images
        got = ifs_render(systems, n_maps, out=out, **{**kw, "seed": seed})
        assert got is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_out_torch_tensor_shares_memory(batch, backend):
    torch = pytest.importorskip("torch")
    systems, n_maps = batch
    want = ifs_render(systems, n_maps, size=32, config=DEFAULT, backend=backend)
    out = torch.zeros((8, 32, 32, 3), dtype=torch.uint8)
    got = ifs_render(torch.from_numpy(systems), torch.from_numpy(n_maps), size=32, config=DEFAULT, out=out,
                     backend=backend)
    assert got is out
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", backend_params("cuda"))
@pytest.mark.parametrize("output", ["rgb", "counts"])
def test_out_cuda(batch, output, backend):
    torch = pytest.importorskip("torch")
    systems, n_maps = (torch.from_numpy(a).cuda() for a in batch)
    kw = dict(size=40, seed=2, config=dataclasses.replace(DEFAULT, background=False), output=output, backend=backend)
    want = ifs_render(systems, n_maps, **kw)
    out = torch.full(tuple(want.shape), 7, dtype=want.dtype, device="cuda")
    assert ifs_render(systems, n_maps, out=out, **kw) is out
    assert torch.equal(out, want)


def test_out_empty_batch():
    out = np.zeros((0, 8, 8, 3), np.uint8)
    assert ifs_render(np.zeros((0, 2, 2, 3)), size=8, out=out, backend="numpy") is out


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: np.zeros((8, 32, 32, 3), np.int32), "shape .* and dtype uint8"),
        (lambda: np.zeros((8, 32, 31, 3), np.uint8), "shape"),
        (lambda: np.zeros((8, 32, 3, 32), np.uint8).transpose(0, 1, 3, 2), "C-contiguous"),
        (lambda: np.zeros((8, 32, 32, 3), np.uint8)[..., ::-1], "C-contiguous"),
    ],
)
def test_out_bad(batch, make, match):
    systems, n_maps = batch
    with pytest.raises(ValueError, match=match):
        ifs_render(systems, n_maps, size=32, config=DEFAULT, out=make(), backend="numpy")


def test_out_read_only_and_wrong_kind(batch):
    torch = pytest.importorskip("torch")
    systems, n_maps = batch
    ro = np.zeros((8, 32, 32, 3), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        ifs_render(systems, n_maps, size=32, config=DEFAULT, out=ro, backend="numpy")
    with pytest.raises(TypeError, match="same array type as systems"):
        ifs_render(systems, n_maps, size=32, config=DEFAULT, out=torch.zeros((8, 32, 32, 3), dtype=torch.uint8))
