"""The public API: every name in ``segml.__all__`` resolves, and ``import segml`` stays cheap."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import segml


@pytest.mark.parametrize("name", segml.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(segml, name)
    assert not inspect.ismodule(value), f"segml.{name} is a module, not the public {name}"
    assert name in dir(segml)


def test_public_names_resolve_after_their_modules_are_imported() -> None:
    # Importing a submodule sets it as an attribute of the package: a public name that is
    # also a submodule's name would then resolve to the module.
    for module in set(segml._EXPORTS.values()):
        importlib.import_module(module)
    for name in segml.__all__:
        assert not inspect.ismodule(getattr(segml, name)), name


def test_import_segml_does_not_import_its_dependencies() -> None:
    code = "import sys, segml; print(sorted({'mlflow', 'sklearn', 'optuna'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
