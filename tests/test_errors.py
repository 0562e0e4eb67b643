"""reid_baseline.errors: one-line messages, and the one form of every install hint."""
import ast
import glob
import os
import re
import runpy
import sys

import pytest

from conftest import ROOT
from reid_baseline.errors import install_hint

# Where the package prints from: the package, the scripts and the two main command lines.
SOURCES = (sorted(glob.glob(os.path.join(ROOT, "reid_baseline", "**", "*.py"), recursive=True))
           + sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py")))
           + [os.path.join(ROOT, "train.py"), os.path.join(ROOT, "evaluate.py")])


def _extras():
    """The extras setup.py declares, read by running it with setuptools.setup replaced."""
    import setuptools
    seen = {}
    real = setuptools.setup
    setuptools.setup = lambda **kwargs: seen.update(kwargs)
    try:
        runpy.run_path(os.path.join(ROOT, "setup.py"))
    finally:
        setuptools.setup = real
    return set(seen["extras_require"])


def _pip_literals(path):
    """[(line, text)] of every string literal in `path` that holds "pip install", except
    those inside errors.install_hint itself."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "install_hint":
            allowed.update(id(n) for n in ast.walk(node))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and "pip install" in node.value and id(node) not in allowed]


@pytest.mark.timeout(30)
def test_install_hint_has_the_readmes_form():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert install_hint("export") == "pip install -c constraints.txt -e '.[export]'"
    assert install_hint("cpu", "export") == "pip install -c constraints.txt -e '.[cpu,export]'"
    assert install_hint() == "pip install -c constraints.txt -e ."
    # The README's install command (quiet: -q) is the same command.
    assert install_hint("cpu").replace("pip install", "pip install -q") in readme


@pytest.mark.timeout(60)
def test_every_install_hint_comes_from_install_hint_and_names_a_real_extra():
    literals = {os.path.relpath(p, ROOT): _pip_literals(p) for p in SOURCES}
    assert {p: found for p, found in literals.items() if found} == {}
    # The checker itself finds a hand-written hint outside the function.
    assert _pip_literals(os.path.join(os.path.dirname(__file__), "test_errors.py"))
    extras, used = _extras(), set()
    for path in SOURCES:
        with open(path, encoding="utf-8") as f:
            for call in re.findall(r"install_hint\(([^)]*)\)", f.read()):
                used.update(re.findall(r"[\"'](\w+)[\"']", call))
    assert used and used <= extras, used - extras
    assert {"export", "faiss", "tensorboard", "cpu", "cu112", "cu117"} <= used


@pytest.mark.timeout(30)
def test_the_docs_install_the_package_with_the_constraints():
    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs",
                                                                              "*.md")))
    for page in pages:
        with open(page, encoding="utf-8") as f:
            text = f.read()
        assert "reid_baseline[" not in text, page
        for command in re.findall(r"pip install[^`\n]*", text):
            if " -e " in command:
                assert "-c constraints.txt -e " in command, (page, command)


def _hint_in_pip_literal():
    return "pip install faiss-cpu"  # what test_every_install_hint... must catch


@pytest.mark.timeout(60)
def test_a_missing_optional_package_names_its_extra(monkeypatch):
    from reid_baseline.engine.telemetry import tensorboard_writer_class
    from reid_baseline.errors import ConfigError
    from reid_baseline.inference.approximate import import_faiss
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError) as faiss:
        import_faiss()
    assert str(faiss.value).endswith(install_hint("faiss") + " (faiss-cpu)")
    with pytest.raises(ConfigError) as tensorboard:
        tensorboard_writer_class()
    assert str(tensorboard.value).endswith(install_hint("tensorboard"))
