"""The README's Python example runs as written, and its two commands are the ones CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_python_example_runs_and_gives_dominance():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["scores"].values.shape == (2, 2)
    assert 0.0 <= float(scope["eps"]) < 0.1  # the policy cloud is shifted up by 0.3 on every attribute
    grad = scope["w"].grad
    assert grad.shape == (64, 8) and grad.abs().sum() > 0
    boot = scope["boot"]
    assert boot.low[0, 1] <= boot.eps[0, 1] <= boot.high[0, 1] < 0.5


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = commands[1]
    assert "pytest" in test_command
    pytest_part = test_command.split("&&")[-1].strip()
    assert pytest_part in (ROOT / ".ci" / "run").read_text()
