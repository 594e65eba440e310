"""bench/results_tool.py: markdown tables, the >10% regression check, merging the parts of one run."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "bench" / "results_tool.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("results_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(medians: dict[str, float]) -> dict:
    return {
        "datetime": "2026-11-25T12:00:00",
        "commit_info": {"id": "abcdef1234567890", "dirty": False},
        "machine_info": {"node": "ci", "python_version": "3.11", "cpu": {"brand_raw": "test cpu"}},
        "benchmarks": [
            {
                "group": "op|small",
                "name": f"test_op[{p}]",
                "fullname": f"bench/bench_op.py::test_op[{p}]",
                "params": {"provider": p},
                "stats": {"median": m},
                "extra_info": {"device": "cpu", "images_per_s": 1.0 / m},
            }
            for p, m in medians.items()
        ],
    }


def test_markdown_has_ratios_against_baselines(tool):
    text = tool.markdown(_result({"numpy": 1.0, "cpu": 0.05}))
    assert "## op|small" in text
    row = next(line for line in text.splitlines() if line.startswith("| cpu "))
    assert "50 ms" in row and "20.0" in row  # 1.0 s / 0.05 s
    assert "abcdef123456" in text


def test_compare_flags_only_regressions_over_threshold(tool, tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_result({"numpy": 1.0, "cpu": 0.10})))
    new.write_text(json.dumps(_result({"numpy": 1.05, "cpu": 0.12})))
    assert tool.main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "test_op[cpu]" in out
    assert "1 regression(s)" in out
    new.write_text(json.dumps(_result({"numpy": 1.05, "cpu": 0.105})))
    assert tool.main(["compare", str(old), str(new)]) == 0


def test_bad_file_is_a_clear_error(tool, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="not a pytest-benchmark JSON"):
        tool.main(["markdown", str(bad)])


def test_ratios_use_rates_when_providers_time_different_amounts_of_work(tool):
    data = _result({"reference": 0.8, "cpu": 0.4})  # 8 images vs 64 images
    data["benchmarks"][0]["extra_info"]["images_per_s"] = 10.0
    data["benchmarks"][1]["extra_info"]["images_per_s"] = 160.0
    text = tool.markdown(data)
    row = next(line for line in text.splitlines() if line.startswith("| cpu "))
    assert row.rstrip().endswith("16.0 |")  # 160 / 10 images/s, not 0.8 / 0.4 s
    assert "Speed-ups computed from images/s." in text


def test_merge_joins_parts_and_refuses_duplicates(tool, tmp_path, capsys):
    small, paper = _result({"numpy": 1.0, "cpu": 0.05}), _result({"cuda": 0.01})
    paper["benchmarks"][0]["group"] = "op|paper"
    paper["benchmarks"][0]["fullname"] = "bench/bench_op.py::test_op[cuda-paper]"
    parts = []
    for name, data in (("small", small), ("paper", paper)):
        parts.append(tmp_path / f"{name}.json")
        parts[-1].write_text(json.dumps(data))
    out = tmp_path / "all.json"
    assert tool.main(["merge", str(out), *map(str, parts), "--commit", "f00ba12", "--device", "NVIDIA H100"]) == 0
    merged = json.loads(out.read_text())
    assert [b["name"] for b in merged["benchmarks"]] == ["test_op[numpy]", "test_op[cpu]", "test_op[cuda]"]
    assert merged["benchmarks"][2]["fullname"].endswith("[cuda-paper]")
    text = tool.markdown(merged)
    assert "- device: NVIDIA H100" in text and "- commit: f00ba12" in text
    assert "## op|small" in text and "## op|paper" in text
    with pytest.raises(SystemExit, match=r"test_op\[numpy\] appears in more than one part"):
        tool.main(["merge", str(out), str(parts[0]), str(parts[0])])
    paper["commit_info"]["id"] = "0123456"
    parts[1].write_text(json.dumps(paper))
    with pytest.raises(SystemExit, match="different commits"):
        tool.main(["merge", str(out), *map(str, parts)])
