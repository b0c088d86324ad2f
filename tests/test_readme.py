"""The README's Python examples run as written, so they cannot rot."""
from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, monkeypatch):
    from convcore import _backend

    monkeypatch.setenv("CONVCORE_BACKEND", "cpu")
    # get_backend() caches the environment's choice: forget it afterwards, or every later
    # test in the session would run on 'cpu' instead of 'auto'.
    monkeypatch.setattr(_backend, "_default_backend", None)
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3
