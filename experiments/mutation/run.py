"""Mutation testing of one multidom package with mutmut (issue 15).

Usage (from the repository root; one worker, the machine is shared):

    OMP_NUM_THREADS=1 .venv/bin/python experiments/mutation/run.py objectives

Copies the working tree (without .venv) to a scratch folder, narrows pyproject's ``[tool.mutmut]`` section to the
package's files and the tests that cover it (the table below), runs ``mutmut run`` there and prints
``mutmut results``. The copy keeps ``mutants/`` and mutmut's caches out of the repository.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {  # package -> (files to mutate, tests that exercise them, extra pytest arguments)
    "objectives": (["multidom/objectives/*"], ["tests/objectives", "tests/trainers/test_online_reward.py"], []),
    "rewards": (["reward_models/*"], ["tests/rewards"], []),
    "evaluation": (["multidom/evaluation/*"], ["tests/evaluation", "tests/app/test_evaluate_settings.py"], []),
    # the in-process trainer tests; the torchrun / spawn ones and the 24-step toy runs are left out (minutes each)
    "trainers": (["multidom/trainers/*"], ["tests/trainers"],
                 ["-m", "not slow", "--ignore", "tests/trainers/test_online_train.py"]),
    "lm": (["multidom/lm/*"], ["tests/lm"], []),
    "app": (["multidom/app/*"], ["tests/app"], ["-m", "not slow"]),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", choices=sorted(PACKAGES))
    ap.add_argument("--work", default="/tmp/multidom_mutation", help="scratch folder (one copy per package)")
    ap.add_argument("--max-children", default="1")
    ap.add_argument("-k", default="", help="extra pytest -k selection")
    ap.add_argument("--fresh", action="store_true", help="start from a new copy (drops mutmut's cached results)")
    ap.add_argument("mutants", nargs="*", help="mutant name globs to run (default: all of the package)")
    args = ap.parse_args()
    only, tests, selection = PACKAGES[args.package]
    work = Path(args.work) / args.package
    if args.fresh and work.exists():
        shutil.rmtree(work)
    if not work.exists():
        shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "mutants", "__pycache__",
                                                                   "experiments", "*.egg-info", "runs"))
    text = (ROOT / "pyproject.toml").read_text()
    extra = ["-x", "-q", "-p", "no:cacheprovider", *selection] + (["-k", args.k] if args.k else [])
    section = re.search(r"\[tool\.mutmut\].*?(?=\n\[|\Z)", text, re.S).group(0)
    narrowed = (section.rstrip() + f"\nonly_mutate = {_toml_list(only)}\n"
                + f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
                + f"pytest_add_cli_args = {_toml_list(extra)}\n")
    (work / "pyproject.toml").write_text(text.replace(section, narrowed))
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    subprocess.run([mutmut, "run", "--max-children", args.max_children, *args.mutants], cwd=work, check=False)
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    (work / "results.txt").write_text(results)
    counts = Counter(line.rsplit(": ", 1)[1].strip() for line in results.splitlines() if ": " in line)
    killed, survived = counts.get("killed", 0), counts.get("survived", 0)
    print(f"{args.package}: {dict(counts)}; score killed/(killed+survived) = {killed / max(killed + survived, 1):.1%}")
    print(f"survivors: {work / 'results.txt'}; inspect one with `cd {work} && mutmut show <name>`")


if __name__ == "__main__":
    main()
