"""The scenario matrix of issue 9: its truth is what the live runs did; the tool's verdicts meet the targets.

The generator (``scenarios/make_matrix.py --quick``) runs in two subprocesses (it trains, and Lightning/HF
warn by design) into one temporary folder per test session: every plain-torch story, position and log-style
value with one log style per cell position (the full matrix, about twice the cells, is
``benchmarks/confusion.py``'s), and the quick Lightning and HF cells. The truth tests read the written files
independently (``torch.load(weights_only=True)``, the csv and json modules, regular expressions for the text
logs) and replay every recorded step with a real ReduceLROnPlateau. The target tests score the tool with
``scenarios/score.py``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scenarios"))

import score  # noqa: E402 - scenarios/ is put on the path above

GENERATOR = ROOT / "scenarios" / "make_matrix.py"
SPEC_STORIES = {
    "scheduler-not-restored",
    "optimizer-not-restored",
    "lr-overwritten",
    "saved-before-step",
    "resume-skipped-step",
    "steps-per-row",
    "wrong-metric",
    "lr-logged-after-step",
    "log-starts-mid-run",
    "weights-only-resume",
    "duplicate-epochs",
    "logs-out-of-order",
    "external-lr-change",
}
def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``--quick`` matrix: plain torch in one process, Lightning then HF in another (in parallel)."""
    out = tmp_path_factory.mktemp("matrix")
    jobs = [[sys.executable, str(GENERATOR), str(out / "torch-run"), "--stack", "torch", "--quick"]]
    if _has("lightning") and _has("transformers"):
        jobs.append(
            [
                sys.executable,
                str(GENERATOR),
                str(out / "frameworks-run"),
                "--stack",
                "lightning,hf",
                "--quick",
            ]
        )
    procs = [subprocess.Popen(j, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in jobs]
    for p, j in zip(procs, jobs, strict=True):
        stdout, stderr = p.communicate()
        assert p.returncode == 0, f"{' '.join(j)} failed:\n{stdout}\n{stderr[-4000:]}"
    return out


@pytest.fixture(scope="session")
def cells(matrix: Path) -> list[tuple[Path, dict]]:
    """(folder, truth) of every cell."""
    return [(f, score.load_truth(f)) for f in score.cell_folders(matrix)]


@pytest.fixture(scope="session")
def scores(cells: list[tuple[Path, dict]]) -> list[score.CellScore]:
    """The tool's score on every cell."""
    return [score.score_cell(f) for f, _ in cells]


def _f(v: object) -> object:
    return float(v) if v in ("inf", "-inf", "nan") else v


# ------------------------------------------------------------------------------------ coverage


def test_matrix_covers_every_story_axis_and_stack(cells: list[tuple[Path, dict]], matrix: Path) -> None:
    """Every story code of the spec, every checkpoint position and every log-style value has cells."""
    truths = [t for _, t in cells]
    assert set().union(*(t["stories"] for t in truths)) == SPEC_STORIES
    assert {t["checkpoint_position"] for t in truths} == {"early", "after-reduction", "in-cooldown", "final"}
    torch_cells = [t for t in truths if t["stack"] == "torch"]
    styles = [t["log_style"] for t in torch_cells]
    assert {s["float"] for s in styles} == {"repr", ".4f", ".6f"}
    assert {s["lr"] for s in styles} == {"before", "after", None}
    assert {s["epoch_base"] for s in styles} == {0, 1}
    assert {s["format"] for s in styles} == {"csv", "jsonl", "text"}
    assert {s["text"] for s in styles} == {None, "epoch-of", "kv", "keras"}
    assert {s["files"] for s in styles} == {"one", "per-process"}
    assert {s["given"] for s in styles} == {"all", "last", "overwritten", "reversed"}
    pairs = [
        {"saved-before-step", "optimizer-not-restored"},
        {"scheduler-not-restored", "optimizer-not-restored"},
        {"scheduler-not-restored", "log-starts-mid-run"},
        {"duplicate-epochs", "scheduler-not-restored"},
        {"lr-logged-after-step", "scheduler-not-restored"},
    ]
    for pair in pairs:
        assert any(pair <= set(t["stories"]) for t in torch_cells), pair
    assert any("steps-per-row" in t["stories"] and len(t["processes"]) > 1 for t in torch_cells)
    if _has("lightning") and _has("transformers"):
        assert {t["stack"] for t in truths} == {"torch", "lightning", "hf"}


# ------------------------------------------------------------------------------------ truth


def _checkpoint_state(folder: Path, t: dict) -> tuple[dict, list[float]]:
    """(plateau state dict, optimizer lrs) of the cell's checkpoint, by torch.load(weights_only=True)."""
    path = folder / t["checkpoint"]
    if t["stack"] == "hf":
        sched = torch.load(path / "scheduler.pt", weights_only=True)
        opt = torch.load(path / "optimizer.pt", weights_only=True)
        return sched, [g["lr"] for g in opt["param_groups"]]
    ck = torch.load(path, weights_only=True)
    if t["stack"] == "lightning":
        return ck["lr_schedulers"][0], [g["lr"] for g in ck["optimizer_states"][0]["param_groups"]]
    sched = next(ck[k] for k in ("scheduler", "lr_scheduler", "scheduler_state_dict") if k in ck)
    opt = next(ck[k] for k in ("optimizer", "optimizer_state_dict") if k in ck)
    return sched, [g["lr"] for g in opt["param_groups"]]


def test_checkpoint_holds_the_recorded_state(cells: list[tuple[Path, dict]]) -> None:
    """Each checkpoint's saved scheduler state is the live state after truth's checkpoint_at step."""
    for folder, t in cells:
        sched, opt_lr = _checkpoint_state(folder, t)
        hi = t["checkpoint_at"]["history_index"]
        assert hi is not None, folder
        live = t["history"][hi]["state_after"]
        for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert sched[key] == _f(live[key]), (folder, key)
        assert opt_lr == t["checkpoint_at"]["optimizer_lr"], folder


def _replay(t: dict, state: dict | None, steps: list[dict]) -> list[tuple[dict, list[float]]]:
    """A real ReduceLROnPlateau stepped over ``steps``' metrics, each from that step's recorded lr."""
    cfg = t["scheduler"]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in t["initial_lr"]]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, t["initial_lr"], strict=True)])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **cfg)
    if state is not None:
        for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            setattr(sched, key, _f(state[key]))
    out = []
    for h in steps:
        for g, lr in zip(opt.param_groups, h["lr_before"], strict=True):
            g["lr"] = lr
        sched.step(_f(h["metric"]))
        out.append(
            (
                {k: getattr(sched, k) for k in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")},
                [g["lr"] for g in opt.param_groups],
            )
        )
    return out


def test_every_recorded_step_replays_with_real_torch(cells: list[tuple[Path, dict]]) -> None:
    """Replaying each process's recorded metrics from its start state reproduces every recorded step."""
    seen = set()
    for folder, t in cells:
        key = json.dumps(t["history"])
        if key in seen:
            continue
        seen.add(key)
        hist = t["history"]
        for p in t["processes"]:
            steps = [h for h in hist if h["process"] == p["index"]]
            src = p.get("resumed_from_history_index")
            start = hist[src]["state_after"] if p["scheduler"] == "restored" else None
            assert p["scheduler"] == "fresh" or src is not None, (folder, p)
            for h, (state, lrs) in zip(steps, _replay(t, start, steps), strict=True):
                assert state == {k: _f(v) for k, v in h["state_after"].items()}, (folder, h)
                assert lrs == h["lr_after"], (folder, h)


def test_rows_carry_the_live_lr_and_print_it(cells: list[tuple[Path, dict]]) -> None:
    """Each row's lr_used is the optimizer's lr before the first step that ran in its epoch, and its printed lr
    stands for it. (A Lightning row's steps are those that read its value: with interval='step' the first of
    them runs after the stale steps of that epoch, which read the row before.)"""
    for folder, t in cells:
        style = t["log_style"]
        for r in t["rows"]:
            if r["steps"]:
                first = r["steps"][0]
                if t["stack"] == "lightning":
                    first = min(i for i, h in enumerate(t["history"])
                                if h["process"] == r["process"] and h["epoch"] == r["epoch"])
                assert t["history"][first]["lr_before"] == r["lr_used"], (folder, r["epoch"])
                assert {t["history"][i]["process"] for i in r["steps"]} == {r["process"]}, folder
            tok = r["logged"].get("lr", r["logged"].get("learning_rate"))
            if style["lr"] is None:
                assert tok is None, folder
                continue
            if tok is None:  # HF: no training log entry since the previous evaluation
                assert t["stack"] == "hf", folder
                continue
            live = (r["lr_used"] if style["lr"] == "before" else r["lr_end"])[0]
            if style["lr_float"] == "repr":
                assert float(tok) == live, (folder, r["epoch"], tok, live)
            else:  # %g or Keras' .4f/.4e: the printed text rounds the live lr
                assert math.isclose(float(tok), live, rel_tol=0.05), (folder, r["epoch"], tok, live)


_TEXT = {
    "epoch-of": re.compile(r"^Epoch (\d+)/\d+ - loss: \S+ - val_loss: (\S+)"),
    "kv": re.compile(r"^epoch (\d+): train_loss=\S+ val_loss=(\S+)"),
}


def _read_log(path: Path, style: dict, stack: str) -> list[tuple[float, str]]:
    """(epoch, printed val_loss) of every validation row of one log file, read without the package."""
    text = path.read_text(encoding="utf-8")
    if stack == "lightning":
        return [
            (float(r["epoch"]), r["val_loss"]) for r in csv.DictReader(text.splitlines()) if r["val_loss"]
        ]
    if stack == "hf":
        entries = [json.loads(line) for line in text.splitlines()]
        return [(e["epoch"], repr(e["eval_loss"])) for e in entries if "eval_loss" in e]
    if style["format"] == "csv":
        return [(float(r["epoch"]), r["val_loss"]) for r in csv.DictReader(text.splitlines())]
    if style["format"] == "jsonl":  # the printed token, not the parsed float
        return [
            (float(m.group(1)), m.group(2))
            for m in re.finditer(r'"epoch": (\d+), .*?"val_loss": ([^,}]+)', text)
        ]
    if style["text"] == "keras":
        out, epoch = [], None
        for line in text.splitlines():
            if m := re.match(r"^Epoch (\d+)/\d+$", line):
                epoch = float(m.group(1))
            elif m := re.search(r" - val_loss: (\S+)", line):
                out.append((epoch, m.group(1)))
        return out
    return [
        (float(m.group(1)), m.group(2))
        for line in text.splitlines()
        if (m := _TEXT[style["text"]].match(line))
    ]


def test_logs_read_back_as_the_truth_rows(cells: list[tuple[Path, dict]]) -> None:
    """The given logs, read independently in the given order, hold truth's rows (epoch, printed val_loss)."""
    for folder, t in cells:
        style = t["log_style"]
        if not t["logs"]:  # HF: the checkpoint's own trainer_state.json log_history
            state = json.loads((folder / t["checkpoint"] / "trainer_state.json").read_text())
            read = [(e["epoch"], repr(e["eval_loss"])) for e in state["log_history"] if "eval_loss" in e]
        else:
            read = [row for name in t["logs"] for row in _read_log(folder / name, style, t["stack"])]
        want = [
            (float(r["epoch"]), r["logged"].get("val_loss", r["logged"].get("eval_loss"))) for r in t["rows"]
        ]
        assert read == want, folder


def test_each_story_shows_in_the_cells_inputs(cells: list[tuple[Path, dict]]) -> None:
    """Spot checks that the stories came out: a forgotten scheduler changes what the user has, and so on."""
    for folder, t in cells:
        stories, hist = set(t["stories"]), t["history"]
        given = [r for r in t["rows"] if not r["superseded"]]
        if "scheduler-not-restored" in stories:  # a restored scheduler would have shown something else
            p = next(p for p in t["processes"] if p["scheduler"] == "fresh" and p["resumed_from"])
            idx = [i for i, h in enumerate(hist) if h["process"] == p["index"]]
            restored = _replay(
                t, hist[p["resumed_from_history_index"]]["state_after"], [hist[i] for i in idx]
            )
            lr_rows = {(r["process"], r["epoch"]) for r in given} if t["log_style"]["lr"] else set()
            differs_in_log = any(
                (hist[i]["process"], hist[i]["epoch"]) in lr_rows and lrs != hist[i]["lr_after"]
                for i, (_, lrs) in zip(idx, restored, strict=True)
            )
            hi = t["checkpoint_at"]["history_index"]
            differs_in_ckpt = hi in idx and restored[idx.index(hi)][0] != {
                k: _f(v) for k, v in hist[hi]["state_after"].items()
            }
            assert differs_in_log or differs_in_ckpt, folder
        if "saved-before-step" in stories:
            ck = t["checkpoint_at"]
            assert not ck["after_step"] and any(
                h["process"] == ck["process"] and h["epoch"] == ck["epoch"]
                for h in hist[ck["history_index"] + 1 :]
            ), folder
        if "optimizer-not-restored" in stories:
            p = next(p for p in t["processes"] if p["optimizer"] == "fresh" and p["resumed_from"])
            assert hist[p["resumed_from_history_index"]]["lr_after"] != t["initial_lr"], folder
        if "lr-logged-after-step" in stories:
            assert any(r["lr_end"] != r["lr_used"] for r in given), folder
        if "steps-per-row" in stories:
            assert any(len(r["steps"]) > 1 for r in given), folder


# ------------------------------------------------------------------------------------ the scorer


@pytest.mark.parametrize(
    ("true", "expected", "story", "alternatives", "verdict"),
    [
        ([], [], (), (), "right"),
        (["scheduler-not-restored"], [], ("scheduler-not-restored",), (), "right"),
        (
            ["lr-overwritten"],
            [["optimizer-not-restored"]],
            ("lr-overwritten",),
            (("optimizer-not-restored",),),
            "right",
        ),
        (
            ["lr-overwritten"],
            [["optimizer-not-restored"]],
            ("optimizer-not-restored",),
            (("lr-overwritten",),),
            "right",
        ),
        (
            ["lr-overwritten"],
            [["optimizer-not-restored"]],
            ("optimizer-not-restored",),
            (("lr-overwritten",), ("scheduler-not-restored",)),
            "ambiguous-ok",
        ),
        (
            ["scheduler-not-restored"],
            [["resume-skipped-step", "scheduler-not-restored"]],
            ("resume-skipped-step", "scheduler-not-restored"),
            (("scheduler-not-restored",),),
            "right",
        ),
        (["lr-overwritten"], [], ("lr-overwritten",), (("optimizer-not-restored",),), "ambiguous-ok"),
        (["lr-overwritten"], [], ("optimizer-not-restored",), (("lr-overwritten",),), "ambiguous-ok"),
        (["lr-overwritten"], [], ("optimizer-not-restored",), (), "wrong"),
        ([], [], ("scheduler-not-restored",), (), "wrong"),
        (["wrong-metric"], [], ("steps-per-row",), (("external-lr-change",),), "missed"),
        (["wrong-metric"], [], None, (), "missed"),
    ],
    ids=[
        "clean",
        "confident-right",
        "declared-ambiguity",
        "declared-twin-first",
        "declared-twin-first-with-another",
        "declared-superset-first",
        "ambiguous-with-truth-first",
        "ambiguous-with-truth-second",
        "confident-other",
        "false-story-on-clean",
        "ambiguous-without-truth",
        "no-verdict",
    ],
)
def test_classify_follows_the_spec(
    true: list, expected: list, story: tuple | None, alternatives: tuple, verdict: str
) -> None:
    """The scorer's classes are the spec's: right, ambiguous-ok, wrong, missed."""
    truth = {"stories": true, "expected_ambiguous_with": expected}
    assert score.classify(truth, story, alternatives) == verdict


def test_a_trace_without_verdict_counts_as_missed() -> None:
    """A trace object without the verdict API is "no verdict" (missed), not a scorer crash."""
    assert score.verdict_of(object()) == (None, (), None)
    assert score.verdict_of(None) == (None, (), None)


def test_scoring_every_cell_runs(scores: list[score.CellScore], cells: list[tuple[Path, dict]]) -> None:
    """Every cell gets a verdict class and a step-check result, whatever the tool does today."""
    assert len(scores) == len(cells)
    assert {s.verdict for s in scores} <= set(score.CLASSES)
    assert all(s.tool_error is None or not s.tool_error.startswith("crash") for s in scores), [
        s.cell + ": " + s.tool_error for s in scores if s.tool_error and s.tool_error.startswith("crash")
    ][:5]


# ------------------------------------------------------------------------------------ the targets


def test_right_story_on_at_least_95_percent_of_the_matrix(scores: list[score.CellScore]) -> None:
    """The tool names the true story (or a declared-indistinguishable ambiguity) on >= 95% of the cells."""
    right = sum(s.verdict == "right" for s in scores)
    assert right >= 0.95 * len(scores), score.counts(scores)


def test_no_false_alarm_on_a_clean_run(scores: list[score.CellScore]) -> None:
    """No warning-level finding on a cell whose stories are all benign (clean, or about the inputs only)."""
    alarms = [f"{s.cell}: {s.extra_warnings}" for s in scores if s.false_alarm]
    assert not alarms, alarms[:10]


def test_no_confident_wrong_story(scores: list[score.CellScore]) -> None:
    """A verdict that misses the true story is only ever "ambiguous", never a confident other story."""
    wrong = [f"{s.cell}: {s.story}" for s in scores if s.verdict == "wrong"]
    assert not wrong, wrong[:10]


def test_every_step_after_the_checkpoint_is_exact_where_determinable(scores: list[score.CellScore]) -> None:
    """After the checkpoint, every value the tool shows is right, and it shows every determinable one."""
    bad = [
        f"{s.cell}: {s.steps.note or (s.steps.mismatches + s.steps.unknown_but_determinable)[:2]}"
        for s in scores
        if not s.steps.ok
    ]
    assert not bad, bad[:10]
