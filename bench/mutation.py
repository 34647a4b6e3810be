"""Mutation testing of the bot's core (``bot/domain/``, ``bot/store/``, ``bot/delivery.py``):
mutmut changes the code one small edit at a time and runs the tests that cover the edited
function; a mutant that no test notices "survived". Hand-run, never in CI:

    pip install -r bench/requirements.txt
    python -m bench.mutation            # everything, from scratch (about 40 minutes on 2 cores)
    python -m bench.mutation --resume   # keep earlier results: only changed functions again

What is mutated and which tests run is in ``[tool.mutmut]`` of ``pyproject.toml``; how to read
the results is in ``docs/testing.md``. mutmut works in a copy of the project, ``mutants/``
(ignored by git); ``mutmut show NAME`` prints one mutant's diff, ``mutmut browse`` them all.

This wrapper runs ``mutmut run`` with one worker process (``--children``), times it, and
prints, per module, how many mutants were killed by a test, rejected by mypy --strict, timed
out, survived or were not covered by any test, then every mutant that was not killed, with
its diff (``--json PATH`` writes the same as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: mutmut's exit codes (``mutmut.stats.status_by_exit_code``) as the columns printed here.
STATUS = {
    1: "killed",
    3: "killed",
    37: "mypy",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    0: "survived",
    5: "no tests",
    33: "no tests",
}
COLUMNS = ("killed", "mypy", "timeout", "survived", "no tests", "other", "not run")
DETECTED = ("killed", "mypy", "timeout")


def results(root: Path) -> dict[str, dict[str, str]]:
    """Per source file, each mutant's status (read from mutmut's ``.meta`` files)."""
    found: dict[str, dict[str, str]] = {}
    for meta in sorted((root / "mutants").glob("bot/**/*.py.meta")):
        source = str(meta.relative_to(root / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found[source] = {
            name: "not run" if code is None else STATUS.get(code, "other")
            for name, code in codes.items()
        }
    return found


def diff(name: str, source: str) -> str:
    """The mutant's change: the lines it removes (``-``) and adds (``+``)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # a bench dependency

    os.chdir(ROOT)
    return "\n".join(
        line
        for line in get_diff_for_mutant(name, path=source).splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    )


def mutmut_command() -> str:
    script = Path(sys.executable).with_name("mutmut")
    return str(script) if script.exists() else "mutmut"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--resume", action="store_true", help="keep the results in mutants/")
    parser.add_argument("--report-only", action="store_true", help="print the last results")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if shutil.which(mutmut_command()) is None:
        print("mutmut is not installed: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    elapsed = None
    if not args.report_only:
        if not args.resume:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        started = time.monotonic()
        # mutmut runs "mypy" (type_check_command) from PATH: this interpreter's, first
        bin_dir = str(Path(sys.executable).parent)
        env = os.environ | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        run = subprocess.run(
            [mutmut_command(), "run", "--max-children", str(args.children)],
            cwd=ROOT,
            env=env,
            check=False,
        )
        elapsed = time.monotonic() - started
        if run.returncode != 0:
            print(f"mutmut run exited with {run.returncode}", file=sys.stderr)
            return run.returncode
    found = results(ROOT)
    if not found:
        print("no results in mutants/: run python -m bench.mutation first", file=sys.stderr)
        return 2

    print()
    print(f"{'module':34}" + "".join(f"{c:>10}" for c in COLUMNS))
    totals: Counter[str] = Counter()
    for source, statuses in found.items():
        counts = Counter(statuses.values())
        totals.update(counts)
        print(f"{source:34}" + "".join(f"{counts[c]:>10}" for c in COLUMNS))
    print(f"{'all':34}" + "".join(f"{totals[c]:>10}" for c in COLUMNS))
    total = sum(totals.values())
    detected = sum(totals[c] for c in DETECTED)
    print(f"\nscore: {detected}/{total} detected ({100 * detected / max(total, 1):.1f} %)")
    if elapsed is not None:
        print(f"mutmut run took {elapsed / 60:.1f} minutes with {args.children} worker(s)")

    undetected = {
        source: {n: s for n, s in statuses.items() if s not in DETECTED}
        for source, statuses in found.items()
    }
    for source, statuses in undetected.items():
        for name, status in sorted(statuses.items()):
            print(f"\n{status}: {name}\n{diff(name, source)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": elapsed,
                    "totals": dict(totals),
                    "mutants": found,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
