"""The module layout the house rules ask for: each CUDA module stands above its family's module, never beside it."""

import ast
import pathlib

import avicore

KERNELS = pathlib.Path(avicore.__file__).parent / "kernels"


def _relative_imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports relative to its package, at any depth (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                names.update(alias.name for alias in node.names)
            else:
                names.add(node.module.split(".")[0])
    return names


def test_no_cuda_module_imports_its_family_module():
    cuda_modules = sorted(KERNELS.glob("_*_cuda*.py"))
    assert len(cuda_modules) >= 8  # the guard must see the CUDA modules it is about
    circles = []
    for path in cuda_modules:
        family = path.stem[1:].split("_cuda")[0]  # _hmm_cuda_small.py -> hmm
        if (KERNELS / f"{family}.py").exists() and family in _relative_imports(path):
            circles.append(f"{path.name} imports {family}.py")
    assert circles == []


def test_family_modules_still_expose_the_moved_names():
    from avicore.kernels import chain, elbo, hmm, quadrature

    for module, names in ((chain, ("workspace_size", "SCALAR_WORKSPACE", "STATUS_OK", "_smoother_one")),
                          (quadrature, ("point_terms", "probit_terms", "LOG_DBL_MAX")),
                          (hmm, ("TINY", "_prepare_model", "STATUS_LOG_SPACE")),
                          (elbo, ("reduce_partials",))):
        missing = [name for name in names if not hasattr(module, name)]
        assert missing == [], module.__name__
