from __future__ import annotations

import inspect

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
