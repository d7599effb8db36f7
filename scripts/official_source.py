"""Reads definitions out of an official (PyTorch research) source file at run time, for the
fixture scripts: only the functions, classes and constants a fixture needs are parsed with
``ast`` and executed in a namespace the caller fills with their imports (the official
modules import much more, e.g. pycocotools, torchvision, pandas, than one training step
needs). Nothing of the official code is copied into this repository."""
import ast


def parse(path):
    """The ``ast.Module`` of the file ``path``."""
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _run(nodes, path, namespace):
    exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), namespace)


def load_defs(path, names, namespace):
    """Executes the top-level definitions (``def``, ``class``, ``NAME = ...``) ``names`` of
    ``path`` in ``namespace``; returns it. A missing name stops the script."""
    nodes = [n for n in parse(path).body if getattr(n, "name", None) in names
             or (isinstance(n, ast.Assign) and any(getattr(t, "id", None) in names
                                                  for t in n.targets))]
    found = {getattr(n, "name", None) for n in nodes} | {
        t.id for n in nodes if isinstance(n, ast.Assign) for t in n.targets}
    missing = set(names) - found
    if missing:
        raise SystemExit(f"{path}: no {sorted(missing)}")
    _run(nodes, path, namespace)
    return namespace


def load_methods(path, cls, names, namespace):
    """The methods ``names`` of class ``cls`` in ``path``, as plain functions (executed in a
    copy of ``namespace``)."""
    body = next(n for n in parse(path).body
                if isinstance(n, ast.ClassDef) and n.name == cls).body
    nodes = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    if {n.name for n in nodes} != set(names):
        raise SystemExit(f"{path}: {cls} lacks {sorted(set(names) - {n.name for n in nodes})}")
    ns = dict(namespace)
    _run(nodes, path, ns)
    return {name: ns[name] for name in names}
