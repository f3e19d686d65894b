"""Mutation testing for audiocpc: plant one small bug at a time and see whether a test fails.

    python benchmarks/mutation.py                                   # every target module
    python benchmarks/mutation.py --modules models/loss.py data/cache.py --max-mutants 25
    python benchmarks/mutation.py --list                            # the mutants, nothing run

Each mutant is one change found with `ast` in one target module: a comparison flipped
(`<` -> `>=`, `==` -> `!=`, `in` -> `not in`, ...), `+`/`-` and `*`/`/` swapped (also in
`+=` and friends), `and`/`or` swapped, a `not` dropped, a number off by one, `True`/`False`
swapped, a `return X` replaced by `return None`, a call statement removed (`clip_grad_norm_(...)`,
`optimizer.zero_grad()`), one keyword argument dropped (`mask=...`), or the first two
positional arguments of a call swapped. The mutated module is written into a private copy of
`src/` under a temporary folder; the module's tests (MODULE_TESTS below, the fast lane:
`-m "not slow" -x`) run with PYTHONPATH pointing at that copy. The repository's own source is
never written, so killing this script cannot leave a mutated tree behind.

A mutant is *killed* when the tests fail or run past their limit (5x the unmutated run's time,
at least `--timeout`: an infinite loop is a caught bug), and *survives* when they pass. Score = killed / (killed + survived); a second score leaves out
the survivors listed in EQUIVALENT_MUTANTS (reviewed: no input tells them apart). Mutants
that do not compile or that `ast.unparse` renders identical to the original are not counted.
Not part of CI: one mutant costs a full run of its module's tests.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

REPO = Path(__file__).resolve().parents[1]

# module (relative to src/audiocpc) -> the fast tests that exercise it (pytest arguments: files,
# node ids, -k). Kept narrow on purpose: every mutant reruns them, so each list is what is worth
# paying for per mutant. The training runs of tests/models (resume, README encoder, label-aware
# training: 15-200 s each on 2 cores) are left out of the model modules' lists. Each list runs
# in its order under -x, so the direct unit tests come first and the files that train or scan
# folders last: a killed mutant stops at its first failure (at load 6, the corpus list took
# 505 s in full, and a mutant the gap test kills waited for test_data_path's training first).
_QUICK_MODEL_TESTS = ("-k", "not resumes_exactly and not readme_custom_encoder and not learns_every_step")
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "models/loss.py": ("tests/models/test_loss.py", "tests/models/test_loss_weights.py",
                       "tests/models/test_from_parts.py"),
    "models/negatives.py": ("tests/models/test_loss.py", "tests/models/test_model_family.py",
                            *_QUICK_MODEL_TESTS),
    "models/similarity.py": ("tests/models/test_similarities.py", "tests/models/test_loss.py",
                             "tests/models/test_from_parts.py",
                             "tests/models/test_model_family.py", *_QUICK_MODEL_TESTS),
    "models/context.py": ("tests/models/test_causality.py", "tests/models/test_from_parts.py",
                          "tests/models/test_hidden_states.py",
                          "tests/models/test_model_family.py", *_QUICK_MODEL_TESTS),
    "models/layers.py": ("tests/models/test_causality.py", "tests/models/test_norm_and_pooling.py",
                         "tests/models/test_from_parts.py", "tests/models/test_model_family.py",
                         *_QUICK_MODEL_TESTS),
    "models/encoders.py": ("tests/models/test_encoders.py", "tests/models/test_conv_paths.py",
                           "tests/models/test_from_parts.py", "tests/models/test_model_family.py",
                           *_QUICK_MODEL_TESTS),
    "models/predictors.py": ("tests/models/test_causality.py", "tests/models/test_from_parts.py",
                             "tests/models/test_model_family.py", *_QUICK_MODEL_TESTS),
    "models/logmel.py": ("tests/models/test_logmel.py", "tests/models/test_model_family.py", "tests/models/test_hidden_states.py",
                         "tests/models/test_from_parts.py", *_QUICK_MODEL_TESTS),
    "models/augment.py": ("tests/models/test_model_family.py", "tests/presets/test_config_limits.py",
                          *_QUICK_MODEL_TESTS),
    "models/hidden.py": ("tests/models/test_hidden_states.py", "tests/models/test_model_family.py",
                         *_QUICK_MODEL_TESTS),
    "models/cpc.py": ("tests/models/test_loss.py", "tests/models/test_from_parts.py",
                      "tests/models/test_hidden_states.py", "tests/models/test_model_family.py",
                      *_QUICK_MODEL_TESTS),
    "data/corpus.py": ("tests/data/test_corpus.py", "tests/data/test_join.py",
                       "tests/data/test_workers.py", "tests/data/test_audio.py",
                       "tests/evaluation/test_crop_seeding.py", "tests/data/test_data_path.py",
                       "tests/data/test_bad_inputs.py::test_decoded_copy_removed_during_training_is_decoded_again"),
    "data/cache.py": ("tests/data/test_cache_integrity.py", "tests/data/test_cache_key.py",
                      "tests/data/test_scale_limits.py", "tests/data/test_data_path.py"),
    "evaluation/embed.py": ("tests/evaluation/test_embed.py", "tests/evaluation/test_pooling.py",
                            "tests/evaluation/test_embed_sharing.py",
                            "tests/evaluation/test_crop_seeding.py",
                            "tests/evaluation/test_embed_ranks.py",  # its fast lane: fake ranks
                            "tests/experiments/test_run_options.py::test_faster_crops_hint_only_when_slow"),
    "evaluation/probe.py": ("tests/evaluation/test_probe.py", "tests/evaluation/test_classify_errors.py",
                            "tests/evaluation/test_probe_early_stopping.py"),
    "evaluation/classify.py": ("tests/evaluation/test_classify.py", "tests/evaluation/test_probe.py",
                               "tests/evaluation/test_classify_errors.py",
                               "tests/evaluation/test_probe_early_stopping.py"),
}

# A mutant's tests may take this many times the unmutated run's time before they count as stuck
# (killed). 3x was too little on this project's shared 2 cores: at load 8-10 a surviving
# embed.py mutant's tests took 77-80 s against a 27 s baseline, and were scored as timeouts.
TIME_FACTOR = 5.0

_FLIPPED_COMPARISON: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_SWAPPED_ARITHMETIC: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
}
_SYMBOL = {ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!=",
           ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
           ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
           ast.And: "and", ast.Or: "or"}


@dataclass(frozen=True)
class Mutant:
    module: str        # relative to src/audiocpc, e.g. "models/loss.py"
    node_index: int    # position of the mutated node in ast.walk order of the parsed module
    kind: str          # the operator, e.g. "compare", "drop-call"
    variant: int       # which of the kind's alternatives at that node (e.g. which keyword)
    line: int
    description: str
    source_line: str = ""   # the text of the mutated line, stripped (how EQUIVALENT_MUTANTS name it)

    @property
    def where(self) -> str:
        return f"src/audiocpc/{self.module}:{self.line}"


@dataclass(frozen=True)
class Equivalent:
    """A mutant reviewed and found to behave like the original for every input. Named by its
    line's text rather than its number, so an edit elsewhere in the module keeps the entry."""
    module: str
    source_line: str   # the mutated line, stripped, exactly as in the source
    description: str   # the mutation, exactly as the tool prints it
    reason: str        # one line: why no input can tell the two apart

    def matches(self, mutant: Mutant) -> bool:
        return (mutant.module, mutant.source_line, mutant.description) == (
            self.module, self.source_line, self.description)


# Reviewed equivalents. Only a mutant that NO input can tell apart from the original goes
# here, never one that is merely hard to test. The report counts them apart: the raw score
# (killed / all) and the score without them (killed / (all - listed equivalents that survived)).
# A listed mutant that is killed after all is flagged for removal.
_TRANSPOSE_SAME = "transpose(1, 0) is transpose(0, 1): the same two dimensions swapped"
_CAUSAL_HINT = ("the explicit causal mask is passed beside it; is_causal only tells torch the mask is "
                "causal (outputs equal bit for bit, train and eval, checked by hand)")
_F1_SYMMETRIC = ("per-class F1 = 2TP / (2TP + FP + FN) is symmetric in truth and prediction, and with "
                 "labels= fixed so is its macro mean")
EQUIVALENT_MUTANTS: tuple[Equivalent, ...] = (
    Equivalent("models/similarity.py", "return predictions @ bank.transpose(0, 1)",
               "first two arguments of `bank.transpose(...)` swapped", _TRANSPOSE_SAME),
    Equivalent("models/similarity.py",
               "return F.normalize(predictions, dim=-1) @ F.normalize(bank, dim=-1).transpose(0, 1) / "
               "self.temperature",
               "first two arguments of `F.normalize(bank, dim=-1).transpose(...)` swapped", _TRANSPOSE_SAME),
    Equivalent("models/similarity.py", "return (predictions @ self.weight) @ bank.transpose(0, 1)",
               "first two arguments of `bank.transpose(...)` swapped", _TRANSPOSE_SAME),
    Equivalent("models/context.py",
               "x = self.blocks(self.dropout(x), mask=causal_mask(z.shape[1], z.device), is_causal=True)",
               "`is_causal=` dropped from `self.blocks(...)`", _CAUSAL_HINT),
    Equivalent("models/context.py",
               "position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)",
               "`dtype=` dropped from `torch.arange(...)`",
               "int64 positions times the float32 frequencies promote to float32: the same values "
               "(integers are exact in float32 up to 2**24 steps)"),
    Equivalent("models/context.py",
               "div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)",
               "`dtype=` dropped from `torch.arange(...)`",
               "int64 even indices times a Python float give float32 (the default dtype): the same values"),
    Equivalent("models/context.py", "x = block(x, src_mask=mask, is_causal=True)",
               "`is_causal=` dropped from `block(...)`", _CAUSAL_HINT),
    Equivalent("models/context.py", "x = block(x, src_mask=mask, is_causal=True)",
               "`True` -> `False`", _CAUSAL_HINT + "; False is what dropping is_causal= gives"),
    Equivalent("models/predictors.py",
               "x = self.block(c, src_mask=causal_mask(length, c.device), is_causal=True)",
               "`True` -> `False`", _CAUSAL_HINT + "; False is what dropping is_causal= gives"),
    Equivalent("models/predictors.py",
               "x = self.block(c, src_mask=causal_mask(length, c.device), is_causal=True)",
               "`is_causal=` dropped from `self.block(...)`", _CAUSAL_HINT),
    Equivalent("models/encoders.py", "sample_rate: int = 16000,", "`16000` -> `16001`",
               "the 1-D conv encoder accepts the sample rate the factory wires to every encoder, "
               "and uses it for nothing"),
    Equivalent("models/logmel.py", "if self.smoothing > 1:  # moving average along time, edges repeated",
               "`1` -> `2`", "smoothing is checked to be odd in __init__: 1 skips either way, 3 and up smooth "
               "either way"),
    Equivalent("models/hidden.py", "hop = max(1, round(samples / max(x.shape[1], 1)))",
               "first two arguments of `max(...)` swapped", "max of two ints is symmetric"),
    Equivalent("models/augment.py",
               "starts = torch.randint(0, max(samples - self.mask_samples, 0) + 1,",
               "first two arguments of `max(...)` swapped", "max of two ints is symmetric"),
    Equivalent("models/loss.py",
               "labels = torch.full((flat.shape[0],), POSITIVE_INDEX, dtype=torch.long, device=logits.device)",
               "`dtype=` dropped from `torch.full(...)`",
               "torch.full infers torch.long from the int fill value POSITIVE_INDEX"),
    Equivalent("models/negatives.py", "rank = torch.minimum(rank, pool_size.unsqueeze(-1) - 1)",
               "first two arguments of `torch.minimum(...)` swapped",
               "an elementwise minimum of two int64 tensors of one shape is symmetric"),
    Equivalent("models/negatives.py",
               "alone = ~allowed.any(dim=1)  # no other label in this batch: fall back to the other sequences",
               "`dim=` dropped from `allowed.any(...)`",
               "a sequence meets no other label only when every label of the batch is equal, so each row's "
               "any equals the batch's (broadcast by torch.where)"),
    Equivalent("data/corpus.py", "self.limit = max(limit, 1)", "first two arguments of `max(...)` swapped",
               "max of two ints is symmetric"),
    Equivalent("data/corpus.py", "loader = DataLoader(_StepStream(sampler, start, stop), batch_size=None,",
               "`persistent_workers=` dropped from `DataLoader(...)`",
               "False is DataLoader's default for persistent_workers"),
    Equivalent("data/cache.py",
               "FINITE_CHECK_BLOCK = 1 << 20  # samples per block: the check never loads a whole file",
               "`20` -> `21`", "the block size of the finiteness check: every block is checked either way, "
               "only the memory bound doubles"),
    Equivalent("evaluation/embed.py",
               "WINDOW_QUANTUM = 64  # shared window encoding pads its batches to a multiple of this",
               "`64` -> `65`", "a padding size: the padded windows are never gathered, only batch shapes change"),
    Equivalent("evaluation/probe.py",
               '"macro_f1": float(f1_score(y, predicted, labels=ids, average="macro", zero_division=0)),',
               "first two arguments of `f1_score(...)` swapped", _F1_SYMMETRIC),
    Equivalent("evaluation/probe.py",
               '"file_macro_f1": float(f1_score(file_y, file_predicted, labels=ids, average="macro",',
               "first two arguments of `f1_score(...)` swapped", _F1_SYMMETRIC),
)


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """Nodes no mutation may touch: annotations, docstrings, f-strings, `__all__`, and the
    `if TYPE_CHECKING:` blocks (changing them changes no behaviour a test could see)."""
    skipped: set[int] = set()

    def skip_subtree(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip_subtree(node.returns)
            for arg in [*node.args.args, *node.args.posonlyargs, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    skip_subtree(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            skip_subtree(node.annotation)
        elif (isinstance(node, ast.JoinedStr)
              or (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
              or (isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))):
            skip_subtree(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip_subtree(body[0])
    return skipped


def _alternatives(node: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(kind, variant, description) of each mutation that applies at this node."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _FLIPPED_COMPARISON:
                new = _FLIPPED_COMPARISON[type(op)]
                yield "compare", i, f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[new]}`"
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAPPED_ARITHMETIC:
        new_op = _SWAPPED_ARITHMETIC[type(node.op)]
        yield "arithmetic", 0, f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new_op]}`"
    elif isinstance(node, ast.BoolOp):
        new_bool = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield "boolean", 0, f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new_bool]}`"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield "unary", 0, f"`{'not ' if isinstance(node.op, ast.Not) else '-'}` dropped"
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "constant", 0, f"`{node.value}` -> `{not node.value}`"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield "constant", 0, f"`{node.value!r}` -> `{node.value + 1!r}`"
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return", 0, f"`return {_short(node.value)}` -> `return None`"
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "drop-call", 0, f"`{_short(node.value)}` removed"
    if isinstance(node, ast.Call):
        for i, keyword in enumerate(node.keywords):
            if keyword.arg is not None:
                yield "drop-keyword", i, f"`{keyword.arg}=` dropped from `{_short(node.func)}(...)`"
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) >= 2 and len(positional) == len(node.args):
            yield "swap-args", 0, f"first two arguments of `{_short(node.func)}(...)` swapped"


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _apply(tree: ast.Module, node_index: int, kind: str, variant: int) -> ast.Module:
    """A copy of the tree with one mutation applied (the node found again by walk order)."""
    tree = copy.deepcopy(tree)
    node = list(ast.walk(tree))[node_index]
    if kind == "compare":
        assert isinstance(node, ast.Compare)
        node.ops[variant] = _FLIPPED_COMPARISON[type(node.ops[variant])]()
    elif kind == "arithmetic":
        assert isinstance(node, (ast.BinOp, ast.AugAssign))
        node.op = _SWAPPED_ARITHMETIC[type(node.op)]()
    elif kind == "boolean":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "unary":
        assert isinstance(node, ast.UnaryOp)
        _replace(tree, node, node.operand)
    elif kind == "constant":
        assert isinstance(node, ast.Constant)
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif kind == "return":
        assert isinstance(node, ast.Return)
        node.value = ast.Constant(value=None)
    elif kind == "drop-call":
        _replace(tree, node, ast.Pass())
    elif kind == "drop-keyword":
        assert isinstance(node, ast.Call)
        del node.keywords[variant]
    elif kind == "swap-args":
        assert isinstance(node, ast.Call)
        node.args[0], node.args[1] = node.args[1], node.args[0]
    else:
        raise ValueError(f"unknown mutation kind {kind!r}")
    return ast.fix_missing_locations(tree)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(item is old for item in value):
                value[next(i for i, item in enumerate(value) if item is old)] = new
                return
    raise ValueError("node not found in its tree")


def _apply_in_place(tree: ast.Module, node: ast.AST, kind: str, variant: int) -> Callable[[], None]:
    """Apply one mutation to the tree itself; returns the function that undoes it. Listing the
    mutants this way, rather than with a deep copy per mutant (`_apply`), takes seconds instead
    of ~12 minutes for evaluation/embed.py's ~700 mutants; the mutated text is the same."""
    if kind == "compare":
        assert isinstance(node, ast.Compare)
        old_op = node.ops[variant]
        node.ops[variant] = _FLIPPED_COMPARISON[type(old_op)]()
        return lambda: node.ops.__setitem__(variant, old_op)
    if kind in ("arithmetic", "boolean"):
        assert isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp))
        old_operator = node.op
        if isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        else:
            node.op = _SWAPPED_ARITHMETIC[type(node.op)]()
        return lambda: setattr(node, "op", old_operator)
    if kind == "unary":
        assert isinstance(node, ast.UnaryOp)
        _replace(tree, node, node.operand)
        return lambda: _replace(tree, node.operand, node)
    if kind == "constant":
        assert isinstance(node, ast.Constant)
        old_value = node.value
        node.value = (not old_value) if type(old_value) is bool else old_value + 1
        return lambda: setattr(node, "value", old_value)
    if kind == "return":
        assert isinstance(node, ast.Return)
        old_returned = node.value
        node.value = ast.Constant(value=None)
        return lambda: setattr(node, "value", old_returned)
    if kind == "drop-call":
        placeholder = ast.Pass()
        _replace(tree, node, placeholder)
        return lambda: _replace(tree, placeholder, node)
    if kind == "drop-keyword":
        assert isinstance(node, ast.Call)
        dropped = node.keywords.pop(variant)
        return lambda: node.keywords.insert(variant, dropped)
    if kind == "swap-args":
        assert isinstance(node, ast.Call)
        node.args[0], node.args[1] = node.args[1], node.args[0]

        def swap_back() -> None:
            node.args[0], node.args[1] = node.args[1], node.args[0]
        return swap_back
    raise ValueError(f"unknown mutation kind {kind!r}")


def find_mutants(source: str, module: str) -> list[Mutant]:
    """Every mutant of one module's source, in source order."""
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree)
    original = ast.unparse(tree)
    lines = source.splitlines()
    mutants = []
    for index, node in enumerate(list(ast.walk(tree))):   # listed first: the loop edits the tree
        if id(node) in skipped:
            continue
        for kind, variant, description in _alternatives(node):
            undo = _apply_in_place(tree, node, kind, variant)
            try:
                mutated = ast.unparse(tree)
            finally:
                undo()
            if mutated == original:
                continue
            try:
                compile(mutated, module, "exec")
            except SyntaxError:
                continue
            line = getattr(node, "lineno", 0)
            text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            mutants.append(Mutant(module, index, kind, variant, line, description, text))
    return sorted(mutants, key=lambda m: (m.line, m.node_index, m.kind, m.variant))


def sample_mutants(mutants: Sequence[Mutant], max_mutants: int | None, seed: int) -> list[Mutant]:
    """At most max_mutants of one module's mutants, the same ones for the same seed and source."""
    if max_mutants is None or len(mutants) <= max_mutants:
        return list(mutants)
    module = mutants[0].module
    chosen = random.Random(f"{seed}:{module}").sample(list(mutants), max_mutants)
    return sorted(chosen, key=lambda m: (m.line, m.node_index, m.kind, m.variant))


def mutated_source(source: str, mutant: Mutant) -> str:
    return ast.unparse(_apply(ast.parse(source), mutant.node_index, mutant.kind, mutant.variant)) + "\n"


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    status: str      # "killed", "timeout" (counted as killed) or "survived"
    seconds: float


def _run_tests(src_copy: Path, tests: Sequence[str], timeout: float, repo: Path) -> tuple[str, str]:
    """Run the tests against a copy of the sources: ("passed"|"failed"|"timeout", output tail)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src_copy), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1")  # no stale .pyc of a mutant can outlive it
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
               "--no-header", *tests]
    # its own session, so a timeout can end the whole group (torch worker processes included)
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return "timeout", output[-2000:]
    return ("passed" if process.returncode == 0 else "failed"), output[-2000:]


def _check_copy_is_imported(src_copy: Path, package: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src_copy), os.environ.get("PYTHONPATH", "")]))
    found = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(src_copy.resolve()):
        sys.exit(f"mutation.py: the tests would import {package} from {found}, not from the mutated copy "
                 f"in {src_copy}; uninstall that copy or put it after PYTHONPATH")


def only_lines(mutants: Sequence[Mutant], lines: Sequence[str]) -> list[Mutant]:
    """The mutants on the given lines ("module.py:LINE", the module relative to src/<package>
    or with the "src/<package>/" prefix the report prints): to rerun a report's survivors."""
    wanted = {line.split("/", 2)[-1] if line.startswith("src/") else line for line in lines}
    return [m for m in mutants if f"{m.module}:{m.line}" in wanted]


def run(modules: Sequence[str], *, max_mutants: int | None, jobs: int, timeout: float, seed: int,
        src: Path, package: str, module_tests: dict[str, tuple[str, ...]], repo: Path,
        log: bool = True, only: Sequence[str] = ()) -> list[Outcome]:
    """Mutation-test each module against its tests; returns every outcome (also printed)."""
    package_dir = src / package
    plan: list[Mutant] = []
    for module in modules:
        mutants = sample_mutants(find_mutants((package_dir / module).read_text(), module), max_mutants, seed)
        if only:
            mutants = only_lines(mutants, only)
        plan.extend(mutants)
        if log:
            print(f"{module}: {len(mutants)} mutants", flush=True)

    with tempfile.TemporaryDirectory(prefix="audiocpc-mutation-") as tmp:
        copies: Queue[Path] = Queue()
        for worker in range(max(1, jobs)):
            copy_root = Path(tmp) / f"worker{worker}"
            shutil.copytree(src, copy_root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            copies.put(copy_root)
        first = copies.get()
        _check_copy_is_imported(first, package)
        # The unmutated tests must pass, or every mutant would count as killed. Their time sets
        # each group's limit: a mutant may take TIME_FACTOR x as long (a loaded machine varies)
        # before it counts as stuck, and never less than --timeout.
        limits: dict[tuple[str, ...], float] = {}
        for tests in dict.fromkeys(module_tests[module] for module in modules):
            started = time.monotonic()
            status, output = _run_tests(first, tests, 10 * timeout, repo)
            if status != "passed":
                sys.exit(f"mutation.py: {' '.join(tests)} do not pass on the unmutated source "
                         f"({status}); fix them first:\n{output}")
            limits[tests] = max(timeout, TIME_FACTOR * (time.monotonic() - started))
            if log:
                print(f"baseline {time.monotonic() - started:5.1f}s  {' '.join(tests)}", flush=True)
        copies.put(first)

        def test_one(mutant: Mutant) -> Outcome:
            copy_root = copies.get()
            target = copy_root / package / mutant.module
            original = target.read_text()
            started = time.monotonic()
            try:
                target.write_text(mutated_source(original, mutant))
                tests = module_tests[mutant.module]
                status, _ = _run_tests(copy_root, tests, limits[tests], repo)
            finally:
                target.write_text(original)
                copies.put(copy_root)
            outcome = Outcome(mutant, {"passed": "survived", "failed": "killed"}.get(status, status),
                              time.monotonic() - started)
            finished.append(outcome)   # here, not from pool.map: a mutant that ends after Ctrl-C counts too
            if log:
                print(f"  {outcome.status:8s} {outcome.seconds:5.1f}s  {mutant.where}  {mutant.description}",
                      flush=True)
            return outcome

        finished: list[Outcome] = []
        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            for _ in pool.map(test_one, plan):
                pass
        except KeyboardInterrupt:  # Ctrl-C: the score of what finished (the copies go with tmp)
            pool.shutdown(wait=True, cancel_futures=True)
            if log:
                print(f"interrupted: {len(finished)} of {len(plan)} mutants tested")
        else:
            pool.shutdown(wait=True)
        outcomes = sorted(finished, key=lambda outcome: plan.index(outcome.mutant))
    if log:
        print(report(outcomes, modules))
    return outcomes


def equivalent_of(mutant: Mutant, equivalents: Sequence[Equivalent] = EQUIVALENT_MUTANTS
                  ) -> Equivalent | None:
    """The reviewed entry that documents this mutant as equivalent, if any."""
    return next((e for e in equivalents if e.matches(mutant)), None)


def report(outcomes: Sequence[Outcome], modules: Sequence[str],
           equivalents: Sequence[Equivalent] = EQUIVALENT_MUTANTS) -> str:
    """The score per module (raw, and without the documented equivalents) and the surviving
    mutants, as Markdown."""
    lines = ["", "| module | mutants | killed | survived | documented equivalent | score | "
             "score without equivalents |", "|---|---|---|---|---|---|---|"]

    def percent(part: int, whole: int) -> str:
        return f"{100 * part / whole:.0f} %" if whole else "-"

    def is_equivalent(outcome: Outcome) -> bool:
        return outcome.status == "survived" and equivalent_of(outcome.mutant, equivalents) is not None

    totals = [0, 0, 0]   # mutants, killed, documented equivalents
    for module in modules:
        mine = [o for o in outcomes if o.mutant.module == module]
        killed = sum(o.status != "survived" for o in mine)
        same = sum(is_equivalent(o) for o in mine)
        for i, n in enumerate((len(mine), killed, same)):
            totals[i] += n
        lines.append(f"| `{module}` | {len(mine)} | {killed} | {len(mine) - killed - same} | {same} | "
                     f"{percent(killed, len(mine))} | {percent(killed, len(mine) - same)} |")
    total, total_killed, total_same = totals
    if total:
        lines.append(f"| all | {total} | {total_killed} | {total - total_killed - total_same} | "
                     f"{total_same} | {percent(total_killed, total)} | "
                     f"{percent(total_killed, total - total_same)} |")
    survivors = [o for o in outcomes if o.status == "survived" and not is_equivalent(o)]
    lines += ["", f"Surviving mutants ({len(survivors)}):" if survivors else "No surviving mutants."]
    lines += [f"- {o.mutant.where}: {o.mutant.description}" for o in survivors]
    timeouts = [o for o in outcomes if o.status == "timeout"]
    if timeouts:   # counted as killed; on a loaded machine a slow survivor can land here too
        lines += ["", f"Timed out, counted as killed ({len(timeouts)}; rerun them with --only "
                  "and a larger --timeout if the machine was loaded):"]
        lines += [f"- {o.mutant.where}: {o.mutant.description}" for o in timeouts]
    same_outcomes = [o for o in outcomes if is_equivalent(o)]
    if same_outcomes:
        lines += ["", f"Documented equivalents that survived ({len(same_outcomes)}, EQUIVALENT_MUTANTS):"]
        lines += [f"- {o.mutant.where}: {o.mutant.description} ({equivalent_of(o.mutant, equivalents).reason})"
                  for o in same_outcomes]   # type: ignore[union-attr]
    wrongly_listed = [o for o in outcomes if o.status != "survived" and equivalent_of(o.mutant, equivalents)]
    if wrongly_listed:
        lines += ["", "Listed as equivalent but KILLED (a test tells them apart: remove them from "
                  "EQUIVALENT_MUTANTS):"]
        lines += [f"- {o.mutant.where}: {o.mutant.description}" for o in wrongly_listed]
    return "\n".join(lines)


def stale_equivalents(src: Path, package: str,
                      equivalents: Sequence[Equivalent] = EQUIVALENT_MUTANTS) -> list[Equivalent]:
    """Entries that match no mutant of the current source (the line changed): review them."""
    found: dict[str, list[Mutant]] = {}
    stale = []
    for entry in equivalents:
        if entry.module not in found:
            path = src / package / entry.module
            found[entry.module] = find_mutants(path.read_text(), entry.module) if path.exists() else []
        if not any(entry.matches(m) for m in found[entry.module]):
            stale.append(entry)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(MODULE_TESTS),
                        help="modules relative to src/audiocpc (default: all targets: %(default)s)")
    parser.add_argument("--max-mutants", type=int, default=None,
                        help="at most N mutants per module, sampled with a fixed seed (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="least seconds per mutant's test run, else 5x the unmutated run's; "
                             "longer counts as killed (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-mutants sample")
    parser.add_argument("--only", nargs="+", default=[], metavar="MODULE:LINE",
                        help="only the (sampled) mutants on these lines, e.g. the survivors of an "
                             "earlier report: src/audiocpc/models/loss.py:46")
    parser.add_argument("--list", action="store_true", help="print the mutants and run nothing")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULE_TESTS]
    if unknown:
        parser.error(f"--modules: no test mapping for {', '.join(unknown)}; "
                     f"add it to MODULE_TESTS in benchmarks/mutation.py or pick from {', '.join(MODULE_TESTS)}")
    if args.list:
        for module in args.modules:
            for mutant in find_mutants((REPO / "src" / "audiocpc" / module).read_text(), module):
                mark = "  (documented equivalent)" if equivalent_of(mutant) else ""
                print(f"{mutant.where}  {mutant.kind:12s}  {mutant.description}{mark}")
        return 0
    # only the modules being run: listing every mutant of the others costs a minute per run
    for entry in stale_equivalents(REPO / "src", "audiocpc",
                                   [e for e in EQUIVALENT_MUTANTS if e.module in args.modules]):
        print(f"mutation.py: EQUIVALENT_MUTANTS entry matches no mutant any more, review it: "
              f"{entry.module}: {entry.source_line!r}: {entry.description}", file=sys.stderr)
    outcomes = run(args.modules, max_mutants=args.max_mutants, jobs=args.jobs, timeout=args.timeout,
                   seed=args.seed, src=REPO / "src", package="audiocpc", module_tests=MODULE_TESTS, repo=REPO,
                   only=args.only)
    return 0 if outcomes else 1


if __name__ == "__main__":
    sys.exit(main())
