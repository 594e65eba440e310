"""BatchNorm adaptation (``bn_adapt``): AdaBN statistics, determinism, model save/load, CLI flag."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from ofdb_fast.patchcore import backbones as bb
from ofdb_fast.patchcore.model import CONFIG_FILE, PatchCore

KW = dict(backbone="resnet18", layers=("layer1", "layer2"), weights="random", resize=48, imagesize=48,
          device="cpu", batch_size=3, pretrain_embed_dimension=64, target_embed_dimension=64)


def _extractor(seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random-weights warning
        return bb.build_extractor("resnet18", ("layer1", "layer2"), "random", seed=seed)


def _model(**kw) -> PatchCore:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return PatchCore(**{**KW, **kw})


def _bns(net):
    return [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _buffers(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    # Not zero-mean/unit-variance on purpose: the identity statistics of a fresh init are wrong for it.
    return 0.7 * torch.randn((9, 3, 37, 53), generator=g) + 0.4


def test_first_layer_stats_are_the_population_stats(images):
    net = _extractor()
    info = bb.adapt_batchnorm(net, [images])
    assert info == {"n_images": 9, "n_layers": len(_bns(net)), "n_chunks": 1}
    with torch.no_grad():
        x = net.conv1(images).double()
    mean = x.mean((0, 2, 3))
    var = x.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(net.bn1.running_mean, mean.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.bn1.running_var, var.float(), rtol=1e-5, atol=1e-6)
    assert int(net.bn1.num_batches_tracked) == 1


def test_one_chunk_equals_torch_train_mode_population_stats(images):
    # Oracle: PyTorch's own BatchNorm in train mode, momentum None (cumulative average), one batch.
    ours, ref = _extractor(2), _extractor(2)
    bb.adapt_batchnorm(ours, [images])
    for _, m in _bns(ref):
        m.reset_running_stats()
        m.momentum = None
    ref.train()
    with torch.no_grad():
        ref(images)
    for k, v in _buffers(ref).items():
        # float64 sums vs PyTorch's float32 ones: measured worst deviation 2.4e-7 (relative 1.2e-7).
        torch.testing.assert_close(_buffers(ours)[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_every_layer_normalises_its_input_in_eval_mode(images):
    # No oracle needed: in eval mode, each adapted BatchNorm's output on the same images has
    # per-channel mean ~beta and variance ~gamma^2. Not exact: eval mode divides by the unbiased
    # running variance where the adaptation pass used the biased batch one (n/(n-1), n = 315
    # positions at layer2) and this compounds over 10 layers; measured over init seeds 1-3 the
    # worst deviations are 0.0094 (mean, outputs of std ~1) and 1.1% (variance), against mean
    # offsets of about 2.5 before the adaptation.
    net = _extractor(1)
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.double()))
             for n, m in _bns(net)]
    with torch.no_grad():
        net(images)
        before = max(float((outs[n].mean((0, 2, 3)) - m.bias).abs().max()) for n, m in _bns(net))
        bb.adapt_batchnorm(net, [images])
        net(images)
    for h in hooks:
        h.remove()
    assert not net.training
    assert before > 1.0  # the identity statistics of a fresh init do not normalise these images
    for n, m in _bns(net):
        o = outs[n]
        torch.testing.assert_close(o.mean((0, 2, 3)), m.bias.double(), rtol=0, atol=0.02, msg=n)
        torch.testing.assert_close(o.var((0, 2, 3)), m.weight.double() ** 2, rtol=0.03, atol=0, msg=n)


def test_deterministic_and_independent_of_incoming_batches(images):
    a, b, c = _extractor(), _extractor(), _extractor()
    params = {k: v.clone() for k, v in a.named_parameters()}
    bb.adapt_batchnorm(a, [images])
    bb.adapt_batchnorm(b, [images[:2], images[2:7], images[7:]])  # regrouped into the same chunk
    bb.adapt_batchnorm(c, [images])
    for k, v in _buffers(a).items():
        assert torch.equal(v, _buffers(b)[k]), k
        assert torch.equal(v, _buffers(c)[k]), k
    for k, v in a.named_parameters():  # affine weights and convolutions untouched
        assert torch.equal(v, params[k]) and not v.requires_grad
    # Momentum is restored (a later train() use of the module behaves as before).
    assert all(m.momentum == 0.1 for _, m in _bns(a))


def test_small_chunks_pool_the_chunk_statistics(images):
    one, many = _extractor(), _extractor()
    bb.adapt_batchnorm(one, [images])
    info = bb.adapt_batchnorm(many, [images], chunk=4)
    assert info["n_chunks"] == 3  # 4 + 4 + 1
    # The first BatchNorm sees the raw convolution: pooling over chunks is exact there.
    torch.testing.assert_close(many.bn1.running_mean, one.bn1.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(many.bn1.running_var, one.bn1.running_var, rtol=1e-5, atol=1e-6)
    # Deeper layers see inputs normalised per chunk: close to, not equal to, the one-chunk stats.
    assert not torch.equal(many.layer2[0].bn1.running_var, one.layer2[0].bn1.running_var)


def test_bad_inputs(images):
    with pytest.raises(ValueError, match="bn_adapt needs at least one image"):
        bb.adapt_batchnorm(_extractor(), [])
    with pytest.raises(ValueError, match="bn_adapt needs a backbone with BatchNorm layers"):
        bb.adapt_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm(4)), [images])
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        bb.adapt_batchnorm(_extractor(), [images], chunk=0)
    with pytest.raises(TypeError, match="bn_adapt must be a bool"):
        _model(bn_adapt=1)


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(1)
    return (0.5 * rng.standard_normal((7, 3, 48, 48)) + 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def adapted(train):
    return _model(bn_adapt=True).fit(train)


def test_model_fit_adapts_and_changes_the_features(train, adapted):
    plain = _model().fit(train)
    assert adapted.config["bn_adapt"] is True and plain.config["bn_adapt"] is False
    assert adapted.fit_info["bn_adapt"]["n_images"] == 7
    assert adapted.fit_info["bn_adapt"]["n_chunks"] == 1
    # Same init (seed), different BatchNorm buffers, same parameters.
    assert not torch.equal(adapted.extractor.bn1.running_mean, plain.extractor.bn1.running_mean)
    for (k, v), (_, w) in zip(adapted.extractor.named_parameters(), plain.extractor.named_parameters()):
        assert torch.equal(v, w), k
    assert not torch.equal(adapted.memory_bank, plain.memory_bank)
    # Deterministic: the same fit again gives the same buffers and bank.
    again = _model(bn_adapt=True).fit(train)
    for k, v in _buffers(adapted.extractor).items():
        assert torch.equal(v, _buffers(again.extractor)[k]), k
    assert torch.equal(again.memory_bank, adapted.memory_bank)
    # Only the fit images are used: predicting does not touch the statistics.
    before = _buffers(adapted.extractor)
    adapted.predict(train[:2] + 1.0)
    for k, v in _buffers(adapted.extractor).items():
        assert torch.equal(v, before[k]), k


def test_save_load_predicts_the_same(train, adapted, tmp_path):
    out = adapted.save(tmp_path / "m")
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["config"]["bn_adapt"] is True and meta["backbone_saved"] is True
    loaded = PatchCore.load(out, device="cpu")
    assert loaded.config["bn_adapt"] is True
    for k, v in _buffers(adapted.extractor).items():
        assert torch.equal(v, _buffers(loaded.extractor)[k]), k
    test = train[:3] + np.float32(0.2)
    s0, m0 = adapted.predict(test)
    s1, m1 = loaded.predict(test)
    np.testing.assert_array_equal(s0, s1)
    np.testing.assert_array_equal(m0, m1)


def test_adapted_backbone_saved_even_for_named_weights(adapted, tmp_path):
    import copy

    from safetensors.torch import load_file

    # Weights given by a torchvision name are normally reloaded by name; adapted statistics exist
    # nowhere else, so the backbone is saved and a file without it is refused.
    model = copy.copy(adapted)
    model.config = {**adapted.config, "weights": "IMAGENET1K_V1"}
    out = model.save(tmp_path / "tv")
    keys = list(load_file(str(out / "model.safetensors")))
    assert "backbone.bn1.running_mean" in keys
    meta = json.loads((out / CONFIG_FILE).read_text())
    meta["backbone_saved"] = False
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    from safetensors.torch import save_file

    save_file({"memory_bank": adapted.memory_bank.contiguous()}, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match="must contain the backbone.*BatchNorm statistics were adapted"):
        PatchCore.load(out, device="cpu")


def test_models_saved_before_the_option_load_without_it(train, tmp_path):
    out = _model().fit(train[:2]).save(tmp_path / "old")
    meta = json.loads((out / CONFIG_FILE).read_text())
    del meta["config"]["bn_adapt"]
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    assert PatchCore.load(out, device="cpu").config["bn_adapt"] is False


def test_cli_flag_reaches_the_model():
    import argparse

    from ofdb_fast.patchcore import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    base = ["patchcore", "fit", "--data", "d", "--out", "o", "--device", "cpu"]
    assert cli._model_kwargs(parser.parse_args(base))["bn_adapt"] is False
    assert cli._model_kwargs(parser.parse_args(base + ["--bn-adapt"]))["bn_adapt"] is True
