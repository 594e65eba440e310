"""Multi-fractal composition: draws, resize, blur, compositing, backend agreement."""

import sys
import types

import numpy as np
import pytest

from ofdb_fast.fractal import multi
from ofdb_fast.fractal.ifs import sample_systems
from ofdb_fast.testing import backend_params


@pytest.fixture(scope="module")
def params():
    return sample_systems(30, seed=5)


class _FakeRender:
    """Stands in for ofdb_fast.ops.ifs_render: object id -> a recognisable image."""

    def __init__(self):
        self.calls = []

    def RenderConfig(self, **kwargs):  # noqa: N802 (mirrors the dataclass)
        return types.SimpleNamespace(**kwargs)

    def ifs_render(self, systems, n_maps, *, size, seed, image_ids, config, backend):
        self.calls.append(dict(systems=systems, n_maps=n_maps, size=size, seed=seed, image_ids=image_ids,
                               config=config, backend=backend))
        out = np.zeros((len(image_ids), size, size, 3), np.uint8)
        for i, oid in enumerate(image_ids):
            out[i, 1:-1, 1:-1] = (oid % 251) + 1  # non-zero object on a black border
        return out


@pytest.fixture
def fake(monkeypatch):
    render = _FakeRender()
    module = types.ModuleType("ofdb_fast.ops.ifs_render")
    module.RenderConfig, module.ifs_render = render.RenderConfig, render.ifs_render
    monkeypatch.setitem(sys.modules, "ofdb_fast.ops.ifs_render", module)
    return render


def test_resize_hand_computed():
    img = np.array([[[0], [100]]], np.uint8)
    np.testing.assert_array_equal(multi.resize_bilinear(img, 1, 4)[0, :, 0], [0, 25, 75, 100])
    np.testing.assert_array_equal(multi.resize_bilinear(img, 2, 1)[:, 0, 0], [50, 50])
    same = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(multi.resize_bilinear(same, 37, 53), same)


@pytest.mark.parametrize("shape,out", [((128, 128), (40, 40)), ((64, 64), (300, 300)), ((37, 53), (53, 37))])
def test_resize_matches_torch_and_cv2_geometry(shape, out):
    torch = pytest.importorskip("torch")
    img = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    ours = multi.resize_bilinear(img, *out)
    t = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(t, size=out, mode="bilinear", align_corners=False)
    ref = np.clip(np.rint(ref[0].permute(1, 2, 0).numpy()), 0, 255)
    # torch forms its weights in another order: last-ulp differences flip .5 ties (measured on x86-64:
    # max 1, mismatch ratio 6.3e-4 over 15 random cases)
    assert np.abs(ours.astype(int) - ref).max() <= 1 and np.mean(ours != ref) < 1e-3
    cv2 = pytest.importorskip("cv2")
    ref_cv = cv2.resize(img, (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
    # cv2 uses 11-bit fixed-point weights (measured worst case 1 over 15 random cases)
    assert np.abs(ours.astype(int) - ref_cv).max() <= 1


def test_blur_constant_and_against_cv2():
    np.testing.assert_array_equal(multi.blur3(np.full((5, 7, 3), 200, np.uint8), 0.7), 200)
    one = np.full((1, 1, 3), 9, np.uint8)
    np.testing.assert_array_equal(multi.blur3(one, 0.9), one)
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for sigma in (0.5, 0.77, 1.0):
        ref = cv2.GaussianBlur(img, (3, 3), sigma, borderType=cv2.BORDER_REFLECT_101)
        # cv2 uses fixed point on uint8 (measured worst case 1 over sigma 0.5..1)
        assert np.abs(multi.blur3(img, sigma).astype(int) - ref).max() <= 1


def test_blur_reflect101_hand_computed():
    img = np.zeros((1, 3, 1), np.uint8)
    img[0, 0, 0] = 100
    w = np.exp(-1 / (2 * 0.8**2))
    k0, k1 = w / (2 * w + 1), 1 / (2 * w + 1)
    # column 0: k1*100 + 2*k0*x[1] (reflect-101 neighbour is column 1 on both sides) = k1*100;
    # column 1: k0*100; vertical pass on one row uses the row itself (k0 + k1 + k0 = 1).
    expected = np.rint(np.array([k1 * 100, k0 * 100, 0.0]))
    np.testing.assert_array_equal(multi.blur3(img, 0.8)[0, :, 0], expected)


def test_plan_draws_are_in_range_and_per_image():
    blocks = [np.arange(3), np.arange(10, 30), np.array([7])]
    plans = multi.plan_multi(blocks, np.array([0, 1, 2]), size=100, seed=3)
    assert len(plans[0]) <= 3 and len(plans[2]) == 1
    for block, plan in zip(blocks, plans):
        for system, s, x, y in plan:
            assert system in block
            assert int(0.15 * 100) <= s <= int(0.6 * 100)
            assert -(s // 2) <= x < 100 - s // 2 and -(s // 2) <= y < 100 - s // 2
    # an image's plan depends on its id only, not on its position in the batch
    assert multi.plan_multi([blocks[1]], np.array([1]), size=100, seed=3) == [plans[1]]
    many = multi.plan_multi([np.arange(100)] * 700, np.arange(700), size=64, seed=0)
    counts = np.bincount([len(p) for p in many], minlength=11)
    assert counts[:4].sum() == 0 and np.all(counts[4:] > 60)  # uniform on 4..10: 100 each expected
    systems = [o[0] for p in many for o in p]
    assert len(set(systems)) > 95  # with replacement over the whole block


def test_composition_with_fake_renderer(fake, params):
    blocks = [np.arange(0, 10), np.arange(10, 20)]
    ids = np.array([4, 9])
    out = multi.render_multi_fractals(params, blocks, ids, size=64, seed=1, backend="numpy", n_points=50)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    (call,) = fake.calls
    assert call["size"] == 32 and call["seed"] == 1 and call["backend"] == "numpy"
    cfg = call["config"]
    assert (cfg.n_points, cfg.patch, cfg.blur, cfg.translate, cfg.scale) == (50, True, False, 0.0, None)
    plans = multi.plan_multi(blocks, ids, size=64, seed=1)
    expected_ids = [i * multi.OBJECT_SLOTS + j for i, p in zip(ids, plans) for j in range(len(p))]
    np.testing.assert_array_equal(call["image_ids"], expected_ids)
    chosen = [o[0] for p in plans for o in p]
    np.testing.assert_array_equal(call["systems"], params.systems[chosen])
    np.testing.assert_array_equal(call["n_maps"], params.n_maps[chosen])
    # recompose by hand: later objects win where they are non-zero; then the blur draw
    for b in range(2):
        canvas = np.zeros((64, 64, 3), np.uint8)
        for j, (_, s, x, y) in enumerate(plans[b]):
            obj = fake.ifs_render(None, None, size=32, seed=1, image_ids=[ids[b] * 16 + j], config=None,
                                  backend=None)[0]
            obj = multi.resize_bilinear(obj, s, s)
            for r in range(s):
                for c in range(s):
                    if 0 <= y + r < 64 and 0 <= x + c < 64 and obj[r, c].any():
                        canvas[y + r, x + c] = obj[r, c]
        key = multi._rng.stream_key(1, multi._rng.STREAM_MULTI, int(ids[b]))
        if multi._rng.u01(key, 41) > 0.5:
            canvas = multi.blur3(canvas, float(multi._rng.uniform(key, 42, 0.5, 1.0)))
        np.testing.assert_array_equal(out[b], canvas)


def test_batch_independence_with_fake_renderer(fake, params, monkeypatch):
    monkeypatch.setattr(multi, "_IMAGES_PER_CALL", 2)
    blocks = [np.arange(i, i + 5) for i in range(7)]
    full = multi.render_multi_fractals(params, blocks, np.arange(7), size=48, n_points=10)
    assert len(fake.calls) == 4
    part = multi.render_multi_fractals(params, blocks[5:], np.arange(5, 7), size=48, n_points=10)
    np.testing.assert_array_equal(part, full[5:])
    assert any(full[i].any() for i in range(7))


def test_empty_batch(fake, params):
    assert multi.render_multi_fractals(params, [], np.zeros(0, np.int64), size=16).shape == (0, 16, 16, 3)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"params": "x"}, TypeError, "params must be an IFSParams"),
    ({"image_ids": np.array([0.5, 1.0])}, TypeError, "image_ids must be a 1-D integer array"),
    ({"image_ids": np.array([-1, 0])}, ValueError, r"image_ids must be in \[0, 2\*\*63 / 16\)"),
    ({"class_blocks": [np.arange(3)]}, ValueError, r"class_blocks must have one block per image \(2\), got 1"),
    ({"class_blocks": [np.arange(3), np.array([], np.int64)]}, ValueError, r"class_blocks\[1\] must be a non-empty"),
    ({"class_blocks": [np.arange(3), np.array([29, 30])]}, ValueError,
     r"class_blocks\[1\] must index systems in \[0, 30\)"),
    ({"size": 1}, ValueError, "size must be an integer >= 2"),
    ({"n_points": 0}, ValueError, "n_points must be an integer >= 1"),
])
def test_bad_inputs(fake, params, kwargs, exc, match):
    args = {"params": params, "class_blocks": [np.arange(3), np.arange(3, 6)], "image_ids": np.arange(2),
            **kwargs}
    with pytest.raises(exc, match=match):
        multi.render_multi_fractals(args.pop("params"), args.pop("class_blocks"), args.pop("image_ids"), **args)


def test_blur_is_single_fractal_blur():
    # the multi canvas blur is the render op's blur: one implementation, not a copy to keep in sync
    from ofdb_fast.reference.ifs_render import blur3

    assert multi.blur3 is blur3


@pytest.mark.parametrize("backend", backend_params("cpu", "cuda"))
def test_backends_agree_with_numpy(params, backend):
    blocks = [np.arange(0, 6), np.arange(6, 12), np.arange(12, 13)]
    ids = np.array([0, 17, 3])
    ref = multi.render_multi_fractals(params, blocks, ids, size=64, seed=2, backend="numpy", n_points=300)
    out = multi.render_multi_fractals(params, blocks, ids, size=64, seed=2, backend=backend, n_points=300)
    assert ref.any(axis=-1).mean() > 0.01  # something was drawn
    if backend == "cpu":
        np.testing.assert_array_equal(out, ref)
    else:  # CUDA may fuse multiply-adds: mismatch ratio (STYLE.md default)
        assert np.mean(out != ref) <= 1e-4
