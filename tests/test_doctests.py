"""Every docstring example in the package runs and prints what it shows (the examples are
documentation; this keeps them true). Examples that need data, a GPU or files outside the test
are marked ``# doctest: +SKIP`` where they stand."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ofdb_fast

MODULES = sorted(m.name for m in pkgutil.walk_packages(ofdb_fast.__path__, "ofdb_fast.") if m.name != "ofdb_fast.__main__")


def test_modules_found():
    assert "ofdb_fast.patchcore.metrics" in MODULES and "ofdb_fast.ops.knn_score" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, capsys):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test)
    failed, _ = runner.summarize(verbose=False)
    report = capsys.readouterr().out
    assert failed == 0, report
