"""ViT / DINO / CLIP extractors: token grids, layer selection, truncation, local weights.

Small models with random weights (no downloads): timm ``vit_tiny_patch16_224`` (12 blocks,
192 channels), DINO ``vit_small_patch16_224`` through its alias, DINOv2 with registers, and
open_clip ``RN50`` / ``ViT-B-32`` when open_clip is installed.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from ofdb_fast.patchcore import backbones as bb
from ofdb_fast.patchcore import vit_backbones as vb
from ofdb_fast.patchcore.model import PatchCore

TINY = "timm:vit_tiny_patch16_224"


def _build(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning
        return bb.build_extractor(*args, **kwargs)


def _hooked_tokens(net, blocks, x):
    """Block outputs of a full timm/open_clip model, captured with forward hooks."""
    got = {}
    for i in blocks:
        net[i].register_forward_hook(lambda m, inp, out, i=i: got.__setitem__(i, out))
    return got


@pytest.fixture(scope="module")
def tiny_full():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


def test_token_grid_shapes_order_and_truncation():
    net = _build(TINY, ["blocks.5", "blocks.2"], "random")
    out = net(torch.zeros(2, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(2, 192, 4, 6)] * 2
    assert len(net.net.blocks) == 6  # blocks after the deepest requested one are gone
    assert isinstance(net.net.norm, torch.nn.Identity)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    default = _build(TINY, None, "random")
    assert default.blocks == [10, 11] and vb.default_layers(TINY) == ("blocks.-2", "blocks.-1")
    assert bb.default_layers(TINY) == vb.VIT_DEFAULT_LAYERS and bb.default_layers("resnet18") == bb.DEFAULT_LAYERS
    odd = _build(TINY, ["blocks.0"], "random")(torch.zeros(1, 3, 48, 80))  # H != W
    assert tuple(odd[0].shape) == (1, 192, 3, 5)


def test_checkpoint_matches_hooks_on_the_full_model(tiny_full, tmp_path):
    path = tmp_path / "vit_tiny.pth"
    torch.save(tiny_full.state_dict(), path)  # includes head.* and norm.*: ignored
    net = _build(TINY, ["blocks.11", "blocks.3"], str(path))
    got = _hooked_tokens(tiny_full.blocks, (3, 11), None)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tiny_full(x)
        out = net(x)
    for feat, i in zip(out, (11, 3)):
        want = got[i][:, 1:].transpose(1, 2).reshape(2, 192, 14, 14)  # CLS dropped, row-major grid
        torch.testing.assert_close(feat, want)


def test_registers_are_dropped():
    import timm

    torch.manual_seed(0)
    full = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0,
                             dynamic_img_size=True).eval()
    assert full.num_prefix_tokens == 5  # CLS + 4 registers
    net = _build("timm:vit_small_patch14_reg4_dinov2", ["blocks.1"], "random", seed=3)
    missing, _ = full.load_state_dict({k[len("net."):]: v for k, v in net.state_dict().items()}, strict=False)
    assert all(k.startswith(tuple(f"blocks.{i}." for i in range(2, 12)) + ("norm.",)) for k in missing)
    got = _hooked_tokens(full.blocks, (1,), None)
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        full(x)
        out = net(x)[0]
    assert tuple(out.shape) == (1, 384, 4, 5)
    torch.testing.assert_close(out, got[1][:, 5:].transpose(1, 2).reshape(1, 384, 4, 5))


def test_dino_alias_and_dino_checkpoint_layout(tmp_path):
    import timm

    assert vb.resolve_name("dino_vits16") == ("timm", "vit_small_patch16_224")
    torch.manual_seed(1)
    # The DINO release's ViT keys are timm's, without a head: such a file loads as is.
    state = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict()
    assert not any(k.startswith("head.") for k in state)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(state, path)
    net = _build("dino_vits16", ["blocks.10", "blocks.11"], str(path))
    torch.testing.assert_close(net.net.blocks[11].mlp.fc2.weight, state["blocks.11.mlp.fc2.weight"])
    out = net(torch.zeros(1, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(1, 384, 14, 14)] * 2  # ViT-S/16 at 224


def test_per_image_layer_norm():
    net = _build(TINY, ["blocks.1"], "random")
    x = torch.randn(3, 3, 64, 64)
    raw = net(x)[0]
    normed = vb.per_image_layer_norm(raw)
    flat = normed.reshape(3, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(1, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with_ln = vb.build_extractor(TINY, ["blocks.1"], "random", layer_norm=True)  # same seed, same weights
    torch.testing.assert_close(with_ln(x)[0], normed)


def test_normalization_stats():
    assert vb.normalization("open_clip:RN50") == (vb.CLIP_MEAN, vb.CLIP_STD)
    assert vb.normalization("timm:vit_base_patch16_clip_224") == (vb.CLIP_MEAN, vb.CLIP_STD)
    assert vb.normalization("dino_vitb8") == (vb.IMAGENET_MEAN, vb.IMAGENET_STD)


def test_patchcore_with_a_vit_backbone_fits_predicts_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    test = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = PatchCore(TINY, layers=None, weights="random", resize=64, imagesize=64, device="cpu",
                          pretrain_embed_dimension=96, target_embed_dimension=96, coreset_method="all", sigma=0.0)
    assert model.config["layers"] == ["blocks.-2", "blocks.-1"]
    model.fit(train)
    assert model.feature_grid == (4, 4) and tuple(model.memory_bank.shape) == (3 * 16, 96)
    scores, maps = model.predict(test)
    assert scores.shape == (2,) and maps.shape == (2, 64, 64)
    self_scores, _ = model.predict(train)
    np.testing.assert_allclose(self_scores, 0.0, atol=1e-3)  # each training patch is in the bank
    model.save(tmp_path / "m")
    loaded = PatchCore.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.predict(test)[0], scores)


def test_bad_names_layers_and_weights(tmp_path):
    with pytest.raises(ValueError, match="backbone must be one of"):
        bb.check_backbone("vit_huge")
    with pytest.raises(ValueError, match="backbone must be timm:<vit model>"):
        vb.resolve_name("timm:")
    with pytest.raises(ValueError, match="layers of timm:vit_tiny_patch16_224 must be 'blocks.N'"):
        bb.check_layers(["layer2"], TINY)
    with pytest.raises(ValueError, match="must index blocks 0..11"):
        _build(TINY, ["blocks.12"], "random")
    with pytest.raises(ValueError, match="must not repeat a block"):
        _build(TINY, ["blocks.11", "blocks.-1"], "random")
    with pytest.raises(ValueError, match="LOCAL checkpoint"):
        _build(TINY, None, "IMAGENET1K_V1")
    with pytest.raises(ValueError, match="timm cannot build"):
        _build("timm:no_such_model_xyz", None, "random")
    # A checkpoint of another width: shape mismatches are listed.
    import timm

    path = tmp_path / "small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match="do not match backbone"):
        _build(TINY, ["blocks.0"], str(path))


# ------------------------------------------------------------------------ open_clip
def test_open_clip_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(RuntimeError, match="pip install open-clip-torch"):
        _build("clip_rn50", None, "random")


def test_open_clip_resnet_grids(tmp_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip not installed (pip install open-clip-torch)")
    net = _build("clip_rn50", None, "random")  # layer2, layer3 by default
    assert net.layers == ("layer2", "layer3") and "layer4" not in net.kept
    x = torch.randn(1, 3, 224, 224)
    out = net(x)
    assert [tuple(o.shape) for o in out] == [(1, 512, 28, 28), (1, 1024, 14, 14)]
    torch.manual_seed(0)
    full = open_clip.create_model("RN50", pretrained=None)
    torch.save(full.state_dict(), tmp_path / "rn50.pt")  # full CLIP state dict: visual.* is used
    net = _build("open_clip:RN50", ["layer3"], str(tmp_path / "rn50.pt"))
    got = {}
    full.visual.eval().layer3.register_forward_hook(lambda m, i, o: got.__setitem__("l3", o))
    with torch.no_grad():
        full.visual(x)
        torch.testing.assert_close(net(x)[0], got["l3"])


def test_open_clip_vit_grids():
    open_clip = pytest.importorskip("open_clip", reason="open_clip not installed (pip install open-clip-torch)")
    net = _build("open_clip:ViT-B-32", ["blocks.1", "blocks.0"], "random")
    visual = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval()
    visual.load_state_dict({k.replace("resblocks.", "transformer.resblocks."): v
                            for k, v in net.state_dict().items()}, strict=False)
    got = _hooked_tokens(visual.transformer.resblocks, (0, 1), None)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        visual(x)
        out = net(x)
    for feat, i in zip(out, (1, 0)):
        tokens = got[i] if got[i].shape[0] == 1 else got[i].transpose(0, 1)  # NLD or LND
        torch.testing.assert_close(feat, tokens[:, 1:].transpose(1, 2).reshape(1, 768, 7, 7))
    assert tuple(net(torch.zeros(1, 3, 96, 64))[0].shape) == (1, 768, 3, 2)  # position embedding interpolated
