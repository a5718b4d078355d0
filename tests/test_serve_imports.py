"""serve runs without torch: of trainer/ it imports only the torch-free core (trainer.core.*), and torch only
in serve.torch_check (`predict --verify`, `bench --torch`), which the others import only for those flags.
Checked twice: in the source (every import statement, function-local ones included) and in a child
process that imports every serve module with torch made unimportable."""

import json
import subprocess
import sys

from helpers import REPO, env
from import_graph import all_imports, module_files

TORCH_MODULE = "serve.torch_check"
TORCH_USERS = {"serve.predict", "serve.bench"}  # the flags' commands


def is_core(target: str) -> bool:
    return target in ("trainer", "trainer.core") or target.startswith("trainer.core.")


def test_serve_source_imports_only_trainer_core_and_torch_only_in_torch_check() -> None:
    edges = all_imports(("serve",))
    assert any(edge.target.startswith("trainer.core.") for edge in edges)  # the walk saw serve's imports
    wrong = []
    for edge in edges:
        root = edge.target.split(".")[0]
        if edge.module == TORCH_MODULE and (root == "torch" or edge.target == "trainer.artifact"):
            if not edge.local:
                wrong.append(f"{edge.where}: {edge.target} at module level (torch_check imports torch when called)")
        elif root == "torch":
            wrong.append(f"{edge.where}: imports torch (only {TORCH_MODULE} may)")
        elif root == "trainer" and not is_core(edge.target):
            wrong.append(f"{edge.where}: imports {edge.target} (serve may use trainer.core only)")
        elif edge.target == TORCH_MODULE and (edge.module not in TORCH_USERS or not edge.local):
            wrong.append(f"{edge.where}: imports {TORCH_MODULE} (only {sorted(TORCH_USERS)}, inside a function)")
    assert not wrong, "\n".join(wrong)
    assert {(edge.module, edge.local) for edge in edges if edge.target == TORCH_MODULE} == {
        (user, True) for user in TORCH_USERS
    }


# torch made unimportable, then every module named on the command line imported; prints what was loaded.
CHILD = """
import importlib, json, sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")


sys.meta_path.insert(0, NoTorch())
for name in sys.argv[1:]:
    importlib.import_module(name)
try:
    import torch
except ImportError as exc:
    blocked = str(exc)
print(json.dumps({"modules": sorted(sys.modules), "blocked": blocked}))
"""


def test_every_serve_module_imports_with_torch_blocked_and_loads_only_trainer_core() -> None:
    names = sorted(name for name in module_files(("serve",)) if not name.endswith("__main__"))
    assert {"serve", "serve.http.app", "serve.http.cli", "serve.ray.data", TORCH_MODULE} <= set(names)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *names], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "blocked by the test" in report["blocked"]  # the blocker works
    loaded = report["modules"]
    assert set(names) <= set(loaded)
    assert not [name for name in loaded if name == "torch" or name.startswith("torch.")]
    trainer = [name for name in loaded if name.split(".")[0] == "trainer"]
    assert "trainer.core.preprocess" in trainer and all(is_core(name) for name in trainer), trainer
