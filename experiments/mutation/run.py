"""Mutation testing of one multidom package with mutmut (issue 15).

Usage (from the repository root; one worker, the machine is shared):

    OMP_NUM_THREADS=1 .venv/bin/python experiments/mutation/run.py objectives

Copies the working tree (without .venv) to a scratch folder, narrows pyproject's ``[tool.mutmut]`` section to the
package's files and the tests that cover it (the table below), runs ``mutmut run`` there and prints
``mutmut results``. The copy keeps ``mutants/`` and mutmut's caches out of the repository.
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {  # package -> (files to mutate, tests that exercise them, extra pytest arguments)
    "objectives": (["multidom/objectives/*"], ["tests/objectives", "tests/trainers/test_online_reward.py"], []),
    # the entry-point test installs a plug-in distribution, which does not resolve from mutmut's copy
    "rewards": (["reward_models/*"], ["tests/rewards"],
                ["-m", "not slow", "--deselect",
                 "tests/rewards/test_reward_registry.py::test_entry_point_plugin_from_installed_distribution"]),
    "evaluation": (["multidom/evaluation/*"], ["tests/evaluation", "tests/app/test_evaluate_settings.py"], []),
    # the in-process trainer tests; the torchrun / spawn ones and the 24-step toy runs are left out (minutes each)
    "trainers": (["multidom/trainers/*"], [f"tests/trainers/test_{name}.py" for name in (
        "online_reward", "online_behaviour", "offline_behaviour", "aot_behaviour", "aot_errors", "aot_trainer",
        "aot_training", "baseline_cache", "global_batch", "trainer_contracts")], []),
    "lm": (["multidom/lm/*"], ["tests/lm"], []),
    "app": (["multidom/app/*"], ["tests/app"], ["-m", "not slow"]),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def _status(mutmut: str, work: Path) -> dict[str, str]:
    """``{mutant: status}`` from ``mutmut results --all true``."""
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    return {n.strip(): s.strip() for n, s in (line.rsplit(": ", 1) for line in out.splitlines() if ": " in line)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", choices=sorted(PACKAGES))
    ap.add_argument("--work", default="/tmp/multidom_mutation", help="scratch folder (one copy per package)")
    ap.add_argument("--max-children", default="1")
    ap.add_argument("-k", default="", help="extra pytest -k selection")
    ap.add_argument("--fresh", action="store_true", help="start from a new copy (drops mutmut's cached results)")
    ap.add_argument("--sample", type=int, default=0,
                    help="run a seeded random sample of this many mutants (with tests) instead of all of them")
    ap.add_argument("--seed", type=int, default=0)
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
    names = list(args.mutants)
    if args.sample:  # generate the mutants and the coverage stats only (a glob that matches none), then sample
        subprocess.run([mutmut, "run", "--max-children", args.max_children, "none-such*"], cwd=work, check=False)
        status = _status(mutmut, work)
        covered = sorted(n for n, s in status.items() if s != "no tests")
        names = random.Random(args.seed).sample(covered, min(args.sample, len(covered)))
        (work / "sample.txt").write_text("".join(n + "\n" for n in names))
    subprocess.run([mutmut, "run", "--max-children", args.max_children, *names], cwd=work, check=False)
    status = _status(mutmut, work)
    (work / "results.txt").write_text("".join(f"{n}: {s}\n" for n, s in sorted(status.items())))
    if args.sample:
        status = {n: status[n] for n in names}
    counts = Counter(status.values())
    killed, survived = counts.get("killed", 0), counts.get("survived", 0)
    print(f"{args.package}: {dict(counts)}; score killed/(killed+survived) = {killed / max(killed + survived, 1):.1%}")
    print(f"survivors: {work / 'results.txt'}; inspect one with `cd {work} && mutmut show <name>`")


if __name__ == "__main__":
    main()
