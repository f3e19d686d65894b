"""benchmarks/mutation.py on a toy package: a well-tested function's mutants are killed, a
weakly tested one's survive, and the source tree it mutates is never written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

MUTATION_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "mutation.py"


def _load_tool():
    return load_benchmark("mutation")


TOY = '''"""A toy module."""


def total(a: int, b: int) -> int:
    return a + b


def is_big(x: int) -> bool:
    return x > 10
'''

# total() is pinned exactly; is_big() only far from its threshold, so `10 -> 11` survives
TOY_TEST = '''from toy.arith import is_big, total


def test_total():
    assert total(2, 3) == 5
    assert total(7, 1) == 8


def test_is_big_far_from_the_threshold():
    assert is_big(100)
    assert not is_big(0)
'''


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow  # runs pytest once per mutant
def test_mutants_of_the_tested_code_are_killed_and_the_weak_test_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = _load_tool()
    (tmp_path / "src" / "toy").mkdir(parents=True)
    (tmp_path / "src" / "toy" / "__init__.py").write_text("")
    (tmp_path / "src" / "toy" / "arith.py").write_text(TOY)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_arith.py").write_text(TOY_TEST)
    before = _tree_digest(tmp_path / "src")

    outcomes = tool.run(["arith.py"], max_mutants=None, jobs=2, timeout=60, seed=0, src=tmp_path / "src",
                        package="toy", module_tests={"arith.py": ("tests/test_arith.py",)}, repo=tmp_path)

    by_description = {(o.mutant.line, o.mutant.description): o.status for o in outcomes}
    assert by_description[(5, "`+` -> `-`")] == "killed"
    assert by_description[(9, "`>` -> `<=`")] == "killed"
    assert by_description[(5, "`return a + b` -> `return None`")] == "killed"
    assert by_description[(9, "`10` -> `11`")] == "survived"
    assert {o.status for o in outcomes if o.mutant.line == 5} == {"killed"}
    printed = capsys.readouterr().out
    assert "src/audiocpc/arith.py:9: `10` -> `11`" in printed or "arith.py:9: `10` -> `11`" in printed
    assert _tree_digest(tmp_path / "src") == before   # the original was never written


@pytest.mark.slow
def test_a_mutant_stuck_in_a_loop_counts_as_killed_by_the_timeout(tmp_path: Path) -> None:
    tool = _load_tool()
    (tmp_path / "src" / "toy").mkdir(parents=True)
    (tmp_path / "src" / "toy" / "__init__.py").write_text("")
    (tmp_path / "src" / "toy" / "loop.py").write_text(
        "def countdown(n):\n    while n > 0:\n        n -= 1\n    return n\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_loop.py").write_text(
        "from toy.loop import countdown\n\ndef test_countdown():\n    assert countdown(3) == 0\n")

    outcomes = tool.run(["loop.py"], max_mutants=None, jobs=1, timeout=3, seed=0, src=tmp_path / "src",
                        package="toy", module_tests={"loop.py": ("tests/test_loop.py",)}, repo=tmp_path,
                        log=False)

    status = {o.mutant.description: o.status for o in outcomes}
    assert status["`-` -> `+`"] == "timeout"      # n += 1: the loop never ends
    assert "survived" not in status.values()


def test_max_mutants_samples_the_same_mutants_every_time_and_each_one_compiles() -> None:
    tool = _load_tool()
    source = "def f(a, b):\n" + "".join(f"    a = a + {i} * b\n" for i in range(20)) + "    return a\n"
    mutants = tool.find_mutants(source, "toy.py")
    assert len(mutants) == 20 * 3 + 1   # per line `+`, `*` and the constant; `return a` -> None
    sample = tool.sample_mutants(mutants, 10, seed=0)
    assert len(sample) == 10 and len(set(sample)) == 10
    assert sample == tool.sample_mutants(mutants, 10, seed=0)
    assert sample != tool.sample_mutants(mutants, 10, seed=1)
    assert tool.sample_mutants(mutants, 1000, seed=0) == mutants
    for mutant in mutants:
        mutated = tool.mutated_source(source, mutant)
        compile(mutated, "toy.py", "exec")
        assert mutated.strip() != source.strip()


def test_listing_in_place_finds_the_mutants_a_deep_copy_per_mutant_finds() -> None:
    """find_mutants mutates one tree and undoes each change (seconds, not minutes, for
    embed.py); the list must be the one applying each mutation to a fresh copy gives."""
    import ast

    tool = _load_tool()
    source = (Path(__file__).resolve().parents[2] / "src" / "audiocpc" / "models" / "loss.py").read_text()
    tree = ast.parse(source)
    original, skipped = ast.unparse(tree), tool._skipped_nodes(tree)
    expected = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped:
            continue
        for kind, variant, description in tool._alternatives(node):
            mutated = ast.unparse(tool._apply(tree, index, kind, variant))
            if mutated != original:
                expected.append((getattr(node, "lineno", 0), index, kind, variant, description))
    found = tool.find_mutants(source, "models/loss.py")
    assert sorted(expected) == [(m.line, m.node_index, m.kind, m.variant, m.description) for m in found]
    assert len(found) > 40 and tool.find_mutants(source, "models/loss.py") == found   # the tree was restored


def test_documented_equivalents_are_scored_apart_and_a_killed_one_is_flagged() -> None:
    tool = _load_tool()
    source = "def f(a, b):\n    return a.transpose(0, 1) + b\n"
    mutants = {m.description: m for m in tool.find_mutants(source, "toy.py")}
    swap = mutants["first two arguments of `a.transpose(...)` swapped"]
    plus = mutants["`+` -> `-`"]
    assert swap.source_line == "return a.transpose(0, 1) + b"
    listed = (tool.Equivalent("toy.py", "return a.transpose(0, 1) + b",
                              "first two arguments of `a.transpose(...)` swapped", "the same swap"),
              tool.Equivalent("toy.py", "return a.transpose(0, 1) + b", "`+` -> `-`", "wrongly listed"))
    outcomes = [tool.Outcome(swap, "survived", 1.0), tool.Outcome(plus, "killed", 1.0),
                tool.Outcome(mutants["`0` -> `1`"], "survived", 1.0)]

    text = tool.report(outcomes, ["toy.py"], listed)

    # 3 mutants, 1 killed, 1 a documented equivalent: raw 33 %, without equivalents 1 / 2
    assert "| `toy.py` | 3 | 1 | 1 | 1 | 33 % | 50 % |" in text
    survivors = text.split("Surviving mutants (1):")[1].split("Documented equivalents")[0]
    assert "`0` -> `1`" in survivors and "transpose" not in survivors
    assert "(the same swap)" in text.split("Documented equivalents that survived (1")[1]
    assert "`+` -> `-`" in text.split("Listed as equivalent but KILLED")[1]


@pytest.mark.slow  # lists every mutant of five modules: ~80 s on 2 cores
def test_every_documented_equivalent_still_names_a_mutant_of_the_source() -> None:
    tool = _load_tool()
    src = MUTATION_PY.parents[1] / "src"
    assert tool.stale_equivalents(src, "audiocpc") == []
    for entry in tool.EQUIVALENT_MUTANTS:
        assert entry.module in tool.MODULE_TESTS and entry.reason.strip(), entry
    moved = tool.Equivalent("models/loss.py", "no such line", "`+` -> `-`", "stale")
    assert tool.stale_equivalents(src, "audiocpc", (moved,)) == [moved]


def test_only_keeps_the_mutants_of_the_named_lines_and_the_report_lists_timeouts() -> None:
    tool = _load_tool()
    source = "def f(a, b):\n    a = a + 1\n    return a * b\n"
    mutants = tool.find_mutants(source, "toy.py")
    kept = tool.only_lines(mutants, ["src/audiocpc/toy.py:3", "other.py:2"])
    assert kept and {m.line for m in kept} == {3}
    assert tool.only_lines(mutants, ["toy.py:2"]) == [m for m in mutants if m.line == 2]
    text = tool.report([tool.Outcome(kept[0], "timeout", 9.0)], ["toy.py"], ())
    assert "| `toy.py` | 1 | 1 | 0 | 0 | 100 % | 100 % |" in text
    assert f"{kept[0].where}: {kept[0].description}" in text.split("Timed out, counted as killed (1")[1]
