"""Build the real-audio classification tasks.

    .venv/bin/python benchmarks/tasks/build.py --out results/tasks [--only NAME ...]

Each task goes to ``<out>/<name>/`` as ``audio/**/*.wav`` (16 kHz mono PCM16),
``manifest.csv`` (file,label,group,split) and ``task.json``.  Nothing is
installed here: a task whose source is missing is skipped, and the exact
install command is printed.  From Python: ``build_task("drum_kits", out_dir)``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:  # imported as benchmarks.tasks.build
    from .common import MissingSource, TaskSpec, build
    from .sources import TASKS
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import MissingSource, TaskSpec, build
    from sources import TASKS


def build_task(name: str, out_dir: Path | str) -> dict:
    """Build task ``name`` into ``out_dir`` (the task's own folder); return task.json.

    Raises :class:`MissingSource` (with the install command) if its packages are absent.
    """
    return build(TASKS[name], Path(out_dir))


def missing_install_lines(specs: list[TaskSpec]) -> list[str]:
    return sorted({r.install for s in specs for r in s.missing()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/tasks"))
    parser.add_argument("--only", nargs="*", choices=sorted(TASKS), help="build just these tasks")
    parser.add_argument("--all", action="store_true", help="also build the opt-in tasks")
    parser.add_argument("--check", action="store_true", help="only report missing sources")
    args = parser.parse_args(argv)

    names = args.only or [n for n, s in TASKS.items() if s.default or args.all]
    specs = [TASKS[n] for n in names]
    lines = missing_install_lines(specs)
    if lines:
        print("missing sources; to get them run:")
        for line in lines:
            print(f"  {line}")
    if args.check:
        return 1 if lines else 0
    built = 0
    for spec in specs:
        if spec.missing():
            print(f"[skip] {spec.name}: source missing")
            continue
        t0 = time.time()
        try:
            info = build(spec, args.out / spec.name)
        except MissingSource as exc:
            print(f"[skip] {spec.name}: {exc}")
            continue
        built += 1
        print(f"[ok] {spec.name}: {info['num_classes']} classes, files {info['files']}, "
              f"groups {info['num_groups']}, {info['total_seconds'] / 60:.1f} min, {time.time() - t0:.0f} s")
    return 0 if built else 1


if __name__ == "__main__":
    sys.exit(main())
