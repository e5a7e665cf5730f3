"""The math core imports no transformers, TRL, datasets, accelerate, PEFT or wandb (issue 9)."""
import subprocess
import sys

BLOCKED = ("transformers", "trl", "datasets", "wandb", "accelerate", "peft")

SCRIPT = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch
import multidom, multidom.core, multidom.core.stats, multidom.core.sinkhorn
spec = multidom.DominanceSpec(estimator='sinkhorn', cost='logistic', options={{'reg': 0.5}})
x, y = torch.randn(1, 6, 2) + 1.0, torch.randn(1, 5, 2)
for est in multidom.ESTIMATORS:
    v = spec.replace(estimator=est, options={{}}).violation(x, y)
    assert torch.isfinite(v).all(), est
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})
assert not loaded, loaded
print('ok')
"""


def test_core_imports_no_training_stack():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
