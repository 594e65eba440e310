"""Backbones: truncation, layer outputs, weights from checkpoints, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from ofdb_fast.patchcore import backbones as bb


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(3)
    return torchvision.models.resnet18(weights=None).state_dict()


def _quiet_random(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bb.build_extractor(*args, **kwargs)


def test_truncated_after_last_layer_and_matches_full_forward():
    net = _quiet_random("resnet18", ("layer2", "layer3"), "random", seed=1)
    names = [n for n, _ in net.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert not any(k.startswith(("layer4", "fc")) for k in net.state_dict())
    # The same weights in a full torchvision model give the same layer outputs (hooks).
    full = torchvision.models.resnet18(weights=None).eval()
    full.load_state_dict(net.state_dict(), strict=False)
    got = {}
    full.layer2.register_forward_hook(lambda m, i, o: got.__setitem__("layer2", o))
    full.layer3.register_forward_hook(lambda m, i, o: got.__setitem__("layer3", o))
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        full(x)
        out = net(x)
    torch.testing.assert_close(out[0], got["layer2"])
    torch.testing.assert_close(out[1], got["layer3"])
    assert [tuple(o.shape) for o in out] == [(2, 128, 5, 7), (2, 256, 3, 4)]
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_layer_order_kept_and_channels():
    net = _quiet_random("resnet18", ["layer3", "layer1"], "random")
    out = net(torch.zeros(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == bb.layer_channels("resnet18", ["layer3", "layer1"]) == [256, 64]
    assert bb.layer_channels("wide_resnet50_2", bb.DEFAULT_LAYERS) == [512, 1024]
    assert bb.check_layers("layer2,layer3") == ("layer2", "layer3")


def test_random_weights_warn_loudly_and_are_seeded(capsys):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a = bb.build_extractor("resnet18", ["layer1"], "random", seed=5)
    assert "RANDOM weights" in capsys.readouterr().err
    b = _quiet_random("resnet18", ["layer1"], None, seed=5)
    c = _quiet_random("resnet18", ["layer1"], None, seed=6)
    torch.testing.assert_close(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize("fmt", ["plain.pt", "wrapped_state_dict.pth", "wrapped_model_ddp.pth", "st.safetensors"])
def test_checkpoint_formats(tmp_path, resnet18_state, fmt):
    state = dict(resnet18_state)
    state["fc.weight"] = torch.zeros(7, 512)  # another head size: ignored (dropped module)
    state["fc.bias"] = torch.zeros(7)
    path = tmp_path / fmt
    if fmt.startswith("plain"):
        torch.save(state, path)
    elif fmt.startswith("wrapped_state_dict"):
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif fmt.startswith("wrapped_model_ddp"):
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    net = bb.build_extractor("resnet18", ["layer2"], str(path))
    torch.testing.assert_close(net.layer2[0].conv1.weight, resnet18_state["layer2.0.conv1.weight"])
    torch.testing.assert_close(net.bn1.running_mean, resnet18_state["bn1.running_mean"])


def test_checkpoint_of_another_architecture(tmp_path, resnet18_state):
    path = tmp_path / "r18.pt"
    torch.save(resnet18_state, path)
    with pytest.raises(ValueError, match=r"do not match backbone 'resnet50'.*(missing keys|shape mismatches)"):
        bb.build_extractor("resnet50", ["layer2"], str(path))
    state = dict(resnet18_state)
    state["head.proj.weight"] = torch.zeros(3)
    del state["layer1.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: layer1\.0\.conv1\.weight; unexpected keys: head\.proj"):
        bb.build_extractor("resnet18", ["layer2"], str(path))


def test_checkpoint_not_a_state_dict(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(ValueError, match="must hold a state_dict"):
        bb.build_extractor("resnet18", ["layer2"], str(path))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        bb.build_extractor("resnet18", ["layer2"], str(tmp_path / "junk.safetensors"))
    with pytest.raises(OSError, match="does not exist"):
        bb.build_extractor("resnet18", ["layer2"], str(tmp_path / "missing.pth"))


class Evil:
    """An arbitrary picklable object: weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "obj": Evil()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        bb.build_extractor("resnet18", ["layer2"], str(path))


def test_torchvision_name_without_network_is_explained(monkeypatch, tmp_path):
    import urllib.error

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network, raising=False)
    with pytest.raises(RuntimeError, match=r"no internet access.*--weights /path/to/resnet18-"):
        bb.build_extractor("resnet18", ["layer2"], "IMAGENET1K_V1")


def test_bad_names():
    with pytest.raises(ValueError, match="backbone must be one of"):
        bb.build_extractor("vgg16", ["layer2"], "random")
    with pytest.raises(ValueError, match=r"layers must be names from .*\['layer5'\]"):
        bb.build_extractor("resnet18", ["layer2", "layer5"], "random")
    with pytest.raises(ValueError, match="layers must not repeat"):
        bb.check_layers(["layer2", "layer2"])
    with pytest.raises(ValueError, match="at least one"):
        bb.check_layers([])
    with pytest.raises(ValueError, match=r"weights must be a torchvision weights name of resnet18 .*IMAGENET1K_V1"):
        bb.build_extractor("resnet18", ["layer2"], "IMAGENET9K")
