"""The exported surface is what we mean it to be, and nothing installs outside fastsiren."""

import os
import subprocess
import sys

import fastsiren.kernels
import fastsiren.reference

import fastsiren


def test_top_level_exports():
    assert sorted(fastsiren.__all__) == sorted([
        "BACKENDS", "Jet", "JetLayout", "SineLayer", "Siren", "convert_official_state_dict",
        "fit", "functional", "load_model", "siren", "siren_jet",
    ])
    for name in fastsiren.__all__:
        assert hasattr(fastsiren, name), name


def test_functional_and_reference_exports():
    assert sorted(fastsiren.functional.__all__) == ["siren", "siren_jet"]
    assert sorted(fastsiren.reference.__all__) == sorted([
        "Jet", "SineLayer", "Siren", "autograd_jet", "divergence", "gradient", "hessian",
        "jacobian", "laplace", "naive_jet", "siren_forward",
    ])


def test_kernels_exports():
    assert sorted(fastsiren.kernels.__all__) == sorted([
        "INPUT_PRECISIONS", "current_input_precision", "input_precision", "set_input_precision",
    ])


def test_no_top_level_kernels_or_reference_modules(tmp_path):
    # In a fresh interpreter outside the checkout (whose folders would shadow the question):
    # the install provides fastsiren.kernels and fastsiren.reference, never bare names.
    probe = (
        "import importlib.util as u; "
        "print(u.find_spec('kernels') is None, u.find_spec('reference') is None, "
        "u.find_spec('fastsiren.kernels') is not None)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


def test_every_subpackage_is_installed():
    # pyproject lists packages explicitly (kernels/ and reference/ are remapped under fastsiren),
    # so a new subpackage missing from that list would work in an editable checkout and be
    # absent from a wheel. Every folder with an __init__.py must be listed.
    import pathlib

    tomllib = __import__("pytest").importorskip("tomllib")
    root = pathlib.Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    remap = {path: name for name, path in config["package-dir"].items()}
    found = set()
    for top in remap:
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top).parts
            found.add(".".join((remap[top], *rel)))
    assert found == set(config["packages"]), "pyproject [tool.setuptools] packages out of date"


def test_import_loads_the_engine_alone():
    # The fit loop and the tasks (matplotlib, data readers) load on first use of fastsiren.fit.
    probe = (
        "import sys, fastsiren as fs; "
        "early = sorted(m for m in sys.modules if m.startswith(('fastsiren.fit', "
        "'fastsiren.tasks', 'fastsiren.cli'))); "
        "fs.fit; "
        "print(early, 'fastsiren.fit.loop' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["[]", "True"], out


def test_version_is_the_one_pyproject_declares():
    import pathlib

    tomllib = __import__("pytest").importorskip("tomllib")
    root = pathlib.Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert fastsiren.__version__ == declared


def test_the_engine_reads_the_environment_only_through_env():
    # fastsiren.env is the one list of the variables the engine and kernels read.
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    files = [*(root / "fastsiren").glob("*.py"), *(root / "fastsiren" / "hypernet").glob("*.py"),
             *(root / "kernels").glob("*.py"), *(root / "reference").glob("*.py")]
    readers = []
    for file in files:
        if file.name == "env.py" and file.parent.name == "fastsiren":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            environ = isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
            imported = isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in ("environ", "getenv") for a in node.names)
            if environ or imported:
                readers.append(f"{file.relative_to(root)}:{node.lineno}")
    assert len(files) > 20 and not readers, readers
