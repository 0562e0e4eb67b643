"""The package's shape: no import cycles (counting imports inside functions), config loading
without MXNet, one error tree, no private names imported across modules.

The import graph is read from the source with ast (an independent reading, not the tool the
package's contributors run), so an import inside a function counts like one at the top.
"""
import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "reid_baseline"


def _modules(package_dir, package):
    """{module name: source path} of every .py file under package_dir."""
    found = {}
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(folder, os.path.dirname(package_dir)).replace(os.sep, ".")
        for name in files:
            if name.endswith(".py"):
                module = rel if name == "__init__.py" else rel + "." + name[:-3]
                found[module] = os.path.join(folder, name)
    return found


def _imports(module, path, modules):
    """(imported module, line, private names) for every import statement of `path`, at any
    depth (module level, functions, methods), restricted to modules of the package."""
    is_package = path.endswith("__init__.py")
    parts = module.split(".")
    out = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    out.append((alias.name, node.lineno, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in modules:
                continue
            private = [a.name for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__")]
            submodules = [target + "." + a.name for a in node.names
                          if target + "." + a.name in modules]
            # "from . import x" with x a submodule uses x, not the package's own names.
            if len(submodules) < len(node.names):
                out.append((target, node.lineno, private))
            out += [(sub, node.lineno, []) for sub in submodules]
    return out


def import_graph(package_dir, package):
    """{module: set of package modules it imports anywhere in its source}."""
    modules = _modules(package_dir, package)
    return {m: {t for t, _, _ in _imports(m, p, modules) if t != m} for m, p in modules.items()}


def find_cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n    return g\n")
    (pkg / "c.py").write_text("from . import a\n")  # the submodule a, not the package
    graph = import_graph(str(pkg), "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycles(import_graph(str(pkg), "pkg")) == []


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph(os.path.join(ROOT, PACKAGE), PACKAGE))
    assert not cycles, "import cycles: %s" % "; ".join(" <-> ".join(c) for c in cycles)


def _python_files(*folders):
    for folder in folders:
        for base, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def test_no_private_name_is_imported_from_another_module():
    modules = _modules(os.path.join(ROOT, PACKAGE), PACKAGE)
    found = []
    for path in _python_files(PACKAGE, "scripts"):
        rel = os.path.relpath(path, ROOT)
        module = rel[:-3].replace(os.sep, ".")
        module = module[:-len(".__init__")] if module.endswith(".__init__") else module
        for target, line, private in _imports(module, path, modules):
            found += ["%s:%d imports %s from %s" % (rel, line, name, target) for name in private]
    assert not found, "\n".join(found)


def test_loading_a_config_imports_neither_mxnet_nor_gluoncv():
    code = ("import sys; from reid_baseline.config import load_config; "
            "load_config('configs/market1501.yml', []); "
            "print(sorted(m for m in ('mxnet', 'gluoncv') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.timeout(300)
def test_every_exception_class_of_the_package_is_a_reid_error():
    from reid_baseline.errors import ReIDError
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [m.name for m in pkgutil.walk_packages(package.__path__, PACKAGE + ".")]
    checked, wrong = 0, []
    for name in names:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # A KeyboardInterrupt subclass is a stop request (a signal), not an error.
            if cls.__module__ == name and issubclass(cls, BaseException) and not issubclass(
                    cls, KeyboardInterrupt):
                checked += 1
                if not issubclass(cls, ReIDError):
                    wrong.append("%s.%s" % (name, cls.__qualname__))
    assert checked >= 11  # the tree of errors.py at least
    assert not wrong, "exception classes outside ReIDError: %s" % ", ".join(wrong)


# The recipe's core: the config, the data, the network, training and evaluation. Everything
# else (using a trained model, launching jobs, ablation studies, environment checks) sits
# beside it and may import it; the core never imports those, not even inside a function.
CORE = ("config", "errors", "fileio", "cli", "environment", "progress", "data", "modeling", "engine",
        "evaluation")
OUTSIDE = ("inference", "launch", "ablation", "checks")
MAX_MODULE_LINES = 300
MAX_TOP_LEVEL_MODULES = 8


def _is_under(module, names):
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in names


def _outside_imports(path, module, modules):
    return ["%s:%d imports %s" % (os.path.relpath(path, ROOT), line, target)
            for target, line, _ in _imports(module, path, modules)
            if _is_under(target, OUTSIDE)]


def test_the_core_imports_nothing_outside_it():
    modules = _modules(os.path.join(ROOT, PACKAGE), PACKAGE)
    core = {m: p for m, p in modules.items() if _is_under(m, CORE)}
    assert "reid_baseline.engine.loop" in core and "reid_baseline.inference.store" not in core
    found = []
    for module, path in sorted(core.items()):
        found += _outside_imports(path, module, modules)
    # The two main command lines are the core's too.
    for script in ("train.py", "evaluate.py"):
        found += _outside_imports(os.path.join(ROOT, script), script[:-3], modules)
    assert not found, "\n".join(found)


def test_the_boundary_check_sees_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / PACKAGE
    for sub in ("engine", "inference"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "inference" / "model.py").write_text("X = 1\n")
    (pkg / "engine" / "loop.py").write_text("def f():\n    from ..inference.model import X\n")
    modules = _modules(str(pkg), PACKAGE)
    path = str(pkg / "engine" / "loop.py")
    assert [line.split(" imports ")[1] for line in
            _outside_imports(path, "reid_baseline.engine.loop", modules)] == [
        "reid_baseline.inference.model"]


def test_every_module_is_short_and_the_top_level_is_small():
    long = []
    for path in _python_files(PACKAGE):
        with open(path, encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_MODULE_LINES:
            long.append("%s: %d lines" % (os.path.relpath(path, ROOT), count))
    assert not long, "modules over %d lines: %s" % (MAX_MODULE_LINES, ", ".join(long))
    top = [n for n in os.listdir(os.path.join(ROOT, PACKAGE))
           if n.endswith(".py") and n != "__init__.py"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_the_real_loaders_never_import_the_toy_writers():
    modules = _modules(os.path.join(ROOT, PACKAGE), PACKAGE)
    loaders = {m: p for m, p in modules.items() if m.startswith(PACKAGE + ".data.datasets")}
    assert PACKAGE + ".data.datasets.msmt17" in loaders
    found = ["%s:%d imports %s" % (os.path.relpath(path, ROOT), line, target)
             for module, path in sorted(loaders.items())
             for target, line, _ in _imports(module, path, modules)
             if target.startswith(PACKAGE + ".data.toy")]
    assert not found, "\n".join(found)
