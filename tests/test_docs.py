from __future__ import annotations

import doctest
import inspect
from pathlib import Path

import samprompt


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    missing = []
    for name in samprompt.__all__:
        if name == "__version__":
            continue
        doc = inspect.getdoc(getattr(samprompt, name)) or ""
        if ">>>" not in doc:
            missing.append(name)
    assert not missing, f"public names without a runnable example in their docstring: {missing}"


def test_the_guides_examples_run() -> None:
    """Every ``>>>`` example in docs/ runs and prints what the page says."""
    pages = [
        p
        for p in Path(__file__).parents[1].joinpath("docs").rglob("*.rst")
        if ">>>" in p.read_text()
    ]
    assert pages, "no page with an example found"
    for page in pages:
        result = doctest.testfile(str(page), module_relative=False, report=False)
        assert result.failed == 0 and result.attempted > 0, page
