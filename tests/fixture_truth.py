"""Judge a generated fixture by what it means: the truth its generator recorded from the live scheduler
against what ``plateau_forensics`` reports on the files it wrote.

Every generator in ``sample_checkpoints/`` writes, next to its files, a truth object ``live`` (see
``sample_checkpoints/_truth.py``): each ``scheduler.step()`` with the state after it, the lr every logged
row trained with, and where each checkpoint was saved. The same judge runs on the committed fixtures and
on a fresh regeneration, so no test compares numbers that come out of training between two runs (another
CPU trains to other last bits; the meaning must not change).

This is the one module to adapt when the tool's API changes: ``view()`` reads a ``Trace``, ``EXPECTED``
says which findings each scenario must produce, ``trace_fixture()`` runs the tool as a user would.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints"


# ------------------------------------------------------------------------------------------ the truth file


def decode(value: Any) -> Any:
    """A truth file's value with the strings "inf" / "-inf" / "nan" back as floats (JSON has none)."""
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value


def read_truth(path: Path) -> dict[str, Any]:
    """A truth file (``truth.json``, ``scenario.json``, ``<sample>.truth.json``) as written."""
    return json.loads(path.read_text())


@dataclass(frozen=True)
class LiveRow:
    """One log row as the run wrote it: its position, epoch label and every group's lr it trained with."""

    index: int
    epoch: float
    lr: tuple[float, ...]


@dataclass(frozen=True)
class LiveStep:
    """One real ``scheduler.step()``: the row it read, the scheduler object, the state after it."""

    index: int
    row: int
    epoch: float
    scheduler: int
    metric: float
    lr_before: tuple[float, ...]
    last_epoch: int
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    lr: tuple[float, ...]


@dataclass(frozen=True)
class LiveCheckpoint:
    """Where a file was saved: during ``row``, before or after its step; the state of ``state_step``."""

    file: str
    row: int | None
    epoch: float | None
    saved: str
    state_step: int | None


@dataclass(frozen=True)
class Live:
    """The ``live`` object of a truth file, typed."""

    precision: str
    rows: tuple[LiveRow, ...]
    steps: tuple[LiveStep, ...]
    schedulers: tuple[Mapping[str, Any], ...]
    checkpoints: tuple[LiveCheckpoint, ...]
    raised: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, truth: Mapping[str, Any]) -> Live:
        """Read ``truth["live"]``."""
        live = decode(truth["live"])
        r, s = live["rows"], live["steps"]
        rows = tuple(LiveRow(i, e, tuple(lr))
                     for i, (e, lr) in enumerate(zip(r["epoch"], r["lr"], strict=True)))
        steps = tuple(
            LiveStep(i, row, rows[row].epoch, sched, metric, tuple(lb), le, best, nb, cd, tuple(lr))
            for i, (row, sched, metric, lb, le, best, nb, cd, lr) in enumerate(zip(
                s["row"], s["scheduler"], s["metric"], s["lr_before"], s["last_epoch"], s["best"],
                s["num_bad_epochs"], s["cooldown_counter"], s["lr"], strict=True))
        )
        checkpoints = tuple(LiveCheckpoint(c["file"], c["row"], c["epoch"], c["saved"], c["state_step"])
                            for c in live["checkpoints"])
        return cls(live["precision"], rows, steps, tuple(live["schedulers"]), checkpoints,
                   tuple(live.get("raised", ())))

    def checkpoint(self, file: str) -> LiveCheckpoint:
        """The record of the checkpoint saved as ``file``."""
        found = [c for c in self.checkpoints if c.file == file]
        assert len(found) == 1, (file, [c.file for c in self.checkpoints])
        return found[0]

    def steps_of_row(self, row: int) -> list[LiveStep]:
        """The steps that read row ``row``'s metric (one per row, or k with steps-per-row)."""
        return [s for s in self.steps if s.row == row]

    def steps_of_scheduler(self, scheduler: int) -> list[LiveStep]:
        """The steps one scheduler object took (0: the first one built, 1: run B's, ...)."""
        return [s for s in self.steps if s.scheduler == scheduler]

    def lr_changes(self, group: int = 0, rows: Sequence[LiveRow] | None = None) -> list[float]:
        """Epoch labels of rows whose lr (of ``group``) differs from the previous row's, in writing order."""
        rows = self.rows if rows is None else rows
        return [b.epoch for a, b in zip(rows, rows[1:], strict=False)
                if len(a.lr) > group and len(b.lr) > group and a.lr[group] != b.lr[group]]

    def reductions(self) -> list[LiveStep]:
        """The steps that lowered some group's lr."""
        return [s for s in self.steps if any(a < b for a, b in zip(s.lr, s.lr_before, strict=False))]

    def start(self, scheduler: int) -> Mapping[str, Any]:
        """A scheduler object's state just before its first step (``best`` inf for a fresh one)."""
        return self.schedulers[scheduler]["before"]


def f32(x: float) -> float:
    """``x`` rounded to float32 and widened back (how TensorBoard stores a scalar)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a: float, b: float, precision: str = "float64") -> bool:
    """Equal as the log can tell: bit-equal floats (NaN equals NaN), or equal after rounding to float32."""
    if precision == "float32":
        a, b = f32(a), f32(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b


def same_lrs(a: Sequence[float], b: Sequence[float], precision: str = "float64") -> bool:
    """``same`` for every group, and as many groups."""
    return len(a) == len(b) and all(same(x, y, precision) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------ what the tool says


@dataclass(frozen=True)
class ToolStep:
    """One step of the tool's trace, in torch's terms; ``steps_taken`` is ``last_epoch`` in 2.x counting."""

    epoch: float
    steps_taken: float | None
    metric: float
    best: float
    num_bad_epochs: int
    cooldown_counter: int
    lr_in: tuple[float, ...]
    lr: tuple[float, ...]
    known: bool
    lr_known: bool


@dataclass(frozen=True)
class ToolFinding:
    """One finding of the tool: its stable code, severity, epoch, message, and the causes it names.

    ``names`` is ``(code,)``, except for an ``ambiguous`` finding: the codes of the stories it cannot
    tell apart (each of them is named, none is chosen).
    """

    code: str
    severity: str
    epoch: float | None
    message: str
    names: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolView:
    """What ``pf.trace`` reports, reduced to what the truth can judge."""

    steps: tuple[ToolStep, ...]
    alignment_index: int | None
    alignment_epoch: float | None
    findings: tuple[ToolFinding, ...]
    error: str | None = None


def _names(f: Any) -> tuple[str, ...]:
    """The causes a finding names: its code, or for ``ambiguous`` every code of every story it lists."""
    if f.code != "ambiguous":
        return (f.code,)
    return tuple(dict.fromkeys(c for story in f.evidence.get("stories", ()) for c in story))


def view(t: Any) -> ToolView:
    """Read a ``plateau_forensics`` ``Trace`` (the only place that knows its attribute names)."""
    base = 0
    if t.checkpoint is not None:
        base = t.checkpoint.state.last_epoch_base  # torch <= 1.3 counted last_epoch from -1
    steps = tuple(
        ToolStep(
            epoch=s.epoch,
            steps_taken=None if s.last_epoch is None or math.isnan(s.last_epoch) else s.last_epoch - base,
            metric=s.metric, best=s.best, num_bad_epochs=s.num_bad_epochs,
            cooldown_counter=s.cooldown_counter,
            lr_in=tuple(s.lr_in), lr=tuple(s.lr), known=s.known, lr_known=s.lr_known)
        for s in t.steps)
    a = t.alignment
    findings = tuple(ToolFinding(f.code, str(f.severity), f.epoch, f.message, _names(f), dict(f.evidence))
                     for f in t.findings)
    return ToolView(steps, None if a is None else a.index, None if a is None else a.epoch, findings, t.error)


def named(t: Any, code: str) -> ToolFinding | None:
    """The finding naming cause ``code``: its own, else an ``ambiguous`` one (with that story's evidence)."""
    found = view(t).findings
    own = next((f for f in found if f.code == code), None)
    if own is not None:
        return own
    amb = next((f for f in found if code in f.names), None)
    if amb is None:
        return None
    part = amb.evidence.get("components", {}).get(code, {})
    return ToolFinding(code, amb.severity, part.get("epoch", amb.epoch), amb.message, (code,), part)


def warnings(t: Any) -> list[str]:
    """The warning-level findings of a trace, as ``[code] message`` lines."""
    return [f"[{f.code}] {f.message}" for f in view(t).findings if f.severity == WARNING]


# ------------------------------------------------------------------------------ what each scenario must say


@dataclass(frozen=True)
class Expect:
    """The findings a scenario's story must produce, and how a user would call the tool on it.

    Args:
        codes: code -> severity that must be reported.
        tolerated: warning codes that may also appear because they are true of the run, though not its point.
        undecidable: causes the inputs cannot tell apart from the scenario's own (the same files would come
            out of them): an ``ambiguous`` finding that names the expected code and only these stands for it.
        options: ``metric`` (the monitored column), ``expect`` (True: the truth's ``expected``
            hyperparameters), ``fill`` (hyperparameter names a partial state lacks, taken from the truth's
            ``setup``).
    """

    codes: Mapping[str, str] = field(default_factory=dict)
    tolerated: frozenset[str] = frozenset()
    undecidable: frozenset[str] = frozenset()
    options: Mapping[str, Any] = field(default_factory=dict)


INFO, WARNING = "info", "warning"


def _own(code: str, severity: str = WARNING, **kwargs: Any) -> Expect:
    return Expect(codes={code: severity}, **kwargs)


#: scenario -> what the tool must say. Keys are "<collection>/<scenario>", optionally ":<checkpoint file>".
EXPECTED: dict[str, Expect] = {
    # sample_checkpoints/*.pt (make_samples.py)
    "samples/seed000": _own("epoch-offset", INFO),
    "samples/clean": Expect(),
    "samples/forgot_scheduler": _own("scheduler-not-restored"),
    "samples/two_groups": _own("lr-at-floor", INFO),
    # sample_checkpoints/resumes/ (make_resumes.py): each folder's own finding
    "resumes/clean-resume": Expect(),
    "resumes/scheduler-not-restored": _own("scheduler-not-restored"),
    # a fresh optimizer reads exactly like code that sets the initial lr by hand after loading: the tool may
    # name both (an ambiguous warning), but it must name this one
    "resumes/optimizer-not-restored": _own("optimizer-not-restored",
                                           undecidable=frozenset({"lr-overwritten"})),
    "resumes/lr-overwritten": _own("lr-overwritten"),
    # partial-restore names the same cause from the resume's side (only best and last_epoch were restored)
    "resumes/partial-state": _own("partial-state", tolerated=frozenset({"partial-restore"}),
                                  options={"fill": ("patience", "factor", "cooldown")}),
    "resumes/hyperparameters-overridden": _own("hyperparameters-overridden", options={"expect": True}),
    "resumes/defaults-in-effect": _own("defaults-in-effect", INFO),
    # the 5-epoch hand ramp before the scheduler's first step is a warm-up: an lr change no plateau step made
    "resumes/epoch-offset": _own("epoch-offset", INFO, tolerated=frozenset({"external-lr-change"})),
    "resumes/steps-per-row": _own("steps-per-row"),
    "resumes/wrong-metric": _own("wrong-metric"),
    "resumes/mode-mismatch": _own("mode-mismatch", options={"metric": "val_acc"}),
    "resumes/rel-threshold-nonpositive": _own("rel-threshold-nonpositive",
                                              options={"metric": "val_log_loss"}),
    "resumes/lr-at-floor": _own("lr-at-floor", INFO),
    "resumes/external-lr-change": _own("external-lr-change"),
    "resumes/nan-metric": _own("nan-metric"),
    "resumes/min-lrs-mismatch": _own("min-lrs-mismatch"),
    "resumes/min-lrs-mismatch-scalar": _own("min-lrs-mismatch"),
    "resumes/duplicate-epochs": _own("duplicate-epochs", INFO),
    "resumes/saved-before-step": _own("saved-before-step", INFO),
    "resumes/torch-version": _own("torch-version", INFO),
    "resumes/torch-version-2.5": _own("torch-version", INFO),
    # sample_checkpoints/lightning/ (make_lightning.py)
    "lightning/plain": _own("saved-before-step", INFO),
    "lightning/resumed": Expect(codes={"saved-before-step": INFO, "resume-skipped-step": INFO}),
    "lightning/step_interval": _own("steps-per-row"),
    "lightning/missing_monitor_nonstrict": _own("scheduler-never-stepped"),
    # sample_checkpoints/tensorboard/ (make_tensorboard.py): float32 logs, clean runs
    "tensorboard/plain": Expect(),
    "tensorboard/crash_purge": Expect(),
    "tensorboard/slash_tags": Expect(),
    # sample_checkpoints/hf/ (make_hf.py): each checkpoint folder with its own log_history
    "hf/epoch": Expect(),
    "hf/eval_steps": Expect(),
    # sample_checkpoints/mmengine/ (make_mmengine.py): the checkpoint alone (its message_hub is the log). The
    # HistoryBuffer pickles getattr(HistoryBuffer, 'min'): a real hostile-globals name, tolerated
    "mmengine/plain": _own("saved-before-step", INFO, tolerated=frozenset({"hostile-globals"})),
    "mmengine/begin": _own("mmengine-window", INFO, tolerated=frozenset({"hostile-globals"})),
    # sample_checkpoints/ignite/ (make_ignite.py): the pickled bound method (getattr) and the POP opcodes of a
    # pickled object graph are real and make torch.load(weights_only=True) refuse the file: tolerated
    "ignite/plain": Expect(codes={"ignite-min-lr-dropped": INFO, "pickled-scheduler-object": INFO},
                           tolerated=frozenset({"hostile-globals", "archive-anomaly"})),
    "ignite/group_index": Expect(codes={"pickled-scheduler-object": INFO, "lr-at-floor": INFO},
                                 tolerated=frozenset({"hostile-globals", "archive-anomaly"})),
    # sample_checkpoints/accelerate/ (make_accelerate.py): 2 processes; a prepared scheduler steps once per process
    "accelerate/two_processes": Expect(codes={"steps-per-row": WARNING, "accelerate-steps-per-process": WARNING}),
    "accelerate/one_step_per_eval": Expect(),
    # sample_checkpoints/deepspeed/ (make_deepspeed.py): the checkpoint alone (its steps are its log), and the fix
    "deepspeed/batch_size_metric": _own("deepspeed-batch-size-metric"),
    "deepspeed/plateau_outside": Expect(),
    # sample_checkpoints/timm/ (make_timm.py): PlateauLRScheduler.state_dict() keeps only best and last_epoch
    # (partial-state, true of every timm file); train.py saves before lr_scheduler.step(epoch + 1, metric)
    "timm/defaults": Expect(codes={"partial-state": WARNING, "mode-mismatch": WARNING,
                                   "saved-before-step": INFO, "timm-defaults": INFO}),
    **{f"timm/{s}": Expect(codes={"partial-state": WARNING, **codes},
                           options={"fill": ("mode", "factor", "patience", "cooldown", "min_lr")})
       for s, codes in (("min_mode", {"saved-before-step": INFO}),
                        ("warmup", {"timm-warmup": INFO, "epoch-offset": INFO}),
                        ("noise", {"timm-noise": INFO, "saved-before-step": INFO}),
                        ("resumed", {"resume-skipped-step": INFO}))},
}


def expected(key: str, file: str | None = None) -> Expect:
    """The expectation for a scenario (a per-checkpoint entry ``key:file`` wins)."""
    return EXPECTED.get(f"{key}:{file}", EXPECTED[key])


# ------------------------------------------------------------------------------------------ running the tool


def trace_fixture(folder: Path, truth: Mapping[str, Any], file: str, expect: Expect) -> Any:
    """``pf.trace`` on a fixture's checkpoint and the log(s) its truth names, as a user would call it."""
    import plateau_forensics as pf

    ckpt: Any = folder / file
    options = dict(expect.options)
    kwargs: dict[str, Any] = {}
    if "metric" in options:
        kwargs["metric"] = options["metric"]
    if options.get("expect"):
        kwargs["expect"] = truth["expected"]
    if "fill" in options:
        names = tuple(options["fill"])
        setup = truth["setup"]["scheduler"]
        fill = pf.PlateauConfig(**{k: setup[k] for k in names})
        ckpt = pf.load_checkpoint(ckpt).with_hyperparameters(fill, names)
    log = truth.get("log")
    if log is None:
        losses = None  # the checkpoint's own log (HF trainer_state.json)
    elif isinstance(log, list):
        losses = [folder / p for p in log]
    else:
        losses = folder / log
    return pf.trace(ckpt, losses, **kwargs)


# ------------------------------------------------------------------------------------------ the judge


def _is_step(ts: ToolStep, ls: LiveStep, precision: str) -> bool:
    """Whether the tool's step is this real one: same row label, same step count (if known), same metric."""
    return (ts.epoch == ls.epoch and (ts.steps_taken is None or ts.steps_taken == ls.last_epoch)
            and same(ts.metric, ls.metric, precision))


def problems(t: Any, truth: Mapping[str, Any], file: str, expect: Expect) -> list[str]:
    """Every way the tool's report (a ``Trace``) on checkpoint ``file`` disagrees with the recorded truth."""
    return judge(view(t), truth, file, expect)


def judge(tv: ToolView, truth: Mapping[str, Any], file: str, expect: Expect) -> list[str]:
    """Every way a report on checkpoint ``file`` disagrees with the recorded truth (empty: none).

    Checked: each step the tool shows is a step the run took (row, count, metric), in order, with the
    recorded ``best``, ``num_bad_epochs``, ``cooldown_counter`` and every group's lr after it, and, on a
    row's first step, the lr the row trained with (where the tool says it knows them); the tool places
    the checkpoint at the step whose state the file holds, knows the state there, and shows every step
    the scheduler that wrote it took up to then; the expected findings are named at their severity
    (by their own finding or inside an ``ambiguous`` one) and no other warning is.
    """
    live = Live.of(truth)
    ck = live.checkpoint(file)
    p_ = live.precision
    out: list[str] = []
    matched: dict[int, int] = {}
    j = 0
    for p, ts in enumerate(tv.steps):
        k = next((k for k in range(j, len(live.steps)) if _is_step(ts, live.steps[k], p_)), None)
        if k is None:
            out.append(f"tool step {p} (epoch {ts.epoch}, last_epoch {ts.steps_taken}, metric {ts.metric!r}) "
                       "is no step the run took (in order)")
            continue
        matched[p], j = k, k + 1
        ls = live.steps[k]
        where = f"step {p} (epoch {ts.epoch}, last_epoch {ls.last_epoch})"
        if ts.known:
            if not same(ts.best, ls.best, p_):
                out.append(f"{where}: best {ts.best!r}, the run had {ls.best!r}")
            if (ts.num_bad_epochs, ts.cooldown_counter) != (ls.num_bad_epochs, ls.cooldown_counter):
                out.append(f"{where}: num_bad_epochs/cooldown_counter "
                           f"{ts.num_bad_epochs}/{ts.cooldown_counter}, "
                           f"the run had {ls.num_bad_epochs}/{ls.cooldown_counter}")
        if ts.lr_known:
            if not same_lrs(ts.lr, ls.lr, p_):
                out.append(f"{where}: lr after {ts.lr}, the run had {ls.lr}")
            trained = live.rows[ls.row].lr
            first = ls.index == min(s.index for s in live.steps if s.row == ls.row)
            # lr_in is "the lr the epoch trained with": one value only if nothing moved it before this step
            if first and same_lrs(trained, ls.lr_before) and not same_lrs(ts.lr_in, trained, p_):
                out.append(f"{where}: trained with lr {ts.lr_in} says the tool; the run: {trained}")
    if live.steps and not matched:
        out.append("the tool shows none of the run's steps")
    if ck.state_step is not None:
        at = tv.alignment_index
        if at is None:
            out.append(f"{file}: not placed in the log; it holds the state after step {ck.state_step} "
                       f"(epoch {live.steps[ck.state_step].epoch})")
        elif matched.get(at) != ck.state_step:
            held = live.steps[ck.state_step]
            out.append(f"{file}: placed at tool step {at} (epoch {tv.alignment_epoch}); it holds the state "
                       "after "
                       f"epoch {held.epoch}'s step (last_epoch {held.last_epoch})")
        elif not tv.steps[at].known:
            out.append(f"{file}: placed at tool step {at}, but the tool does not know the state there")
        owner = live.steps[ck.state_step].scheduler
        left_out = [s.epoch for s in live.steps[: ck.state_step + 1]
                    if s.scheduler == owner and s.index not in matched.values()]
        if left_out:
            out.append(f"{file}: the trace leaves out steps of the scheduler that wrote it: {left_out}")
    severities: dict[str, set[str]] = {}
    for f in tv.findings:
        for code in f.names:
            severities.setdefault(code, set()).add(f.severity)
    for code, severity in expect.codes.items():
        if code not in severities:
            out.append(f"finding {code} missing (found {sorted(severities)})")
        elif severity not in severities[code]:
            out.append(f"finding {code} is {sorted(severities[code])}, expected {severity}")
    allowed = set(expect.codes) | set(expect.tolerated)
    for f in tv.findings:
        if f.severity != WARNING or f.code in allowed:
            continue
        undecided = set(f.names) <= set(expect.codes) | expect.undecidable
        if f.code == "ambiguous" and expect.undecidable and undecided:
            continue  # the scenario's cause, undecided against causes no input can tell from it
        out.append(f"unexpected warning [{f.code}] {f.message}")
    return out


def assert_tool_tells_the_truth(folder: Path, truth: Mapping[str, Any], file: str, key: str) -> Any:
    """Trace ``file`` as a user would and assert the judge finds no problem; return the trace."""
    expect = expected(key, file)
    t = trace_fixture(folder, truth, file, expect)
    found = problems(t, truth, file, expect)
    assert not found, f"{key} {file}:\n  " + "\n  ".join(found)
    return t


# ------------------------------------------------------------------------------------------ regeneration


def regenerate(script: str, out: Path, timeout: float = 600) -> Path:
    """Run ``sample_checkpoints/<script> OUT`` in a fresh interpreter (the CPU pins need a new process)."""
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, str(SAMPLES / script), str(out)], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ))
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return out


class Background:
    """A generator started in the background at collection (``sample_checkpoints/<script> OUT/run ARGS``): it
    spends most of its time importing its framework, and runs beside the tests that do not need it. It is
    killed and its folder removed at exit, also when no selected test asked for it."""

    def __init__(self, script: str, *args: str) -> None:
        import atexit
        import shutil
        import tempfile

        self.script = script
        self.out = Path(tempfile.mkdtemp(prefix=f"pf-{Path(script).stem}-"))
        with open(self.out / "stderr.txt", "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(SAMPLES / script), str(self.out / "run"), *args],
                                         stdout=subprocess.DEVNULL, stderr=err)

        def cleanup() -> None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            shutil.rmtree(self.out, ignore_errors=True)

        atexit.register(cleanup)

    def result(self, timeout: float = 300) -> Path:
        """The generated folder, once the generator finished (a test failure naming its stderr if it failed,
        or did not finish within ``timeout`` seconds)."""
        import pytest

        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.script} did not finish in {timeout:g} s")
        assert self.proc.returncode == 0, (self.out / "stderr.txt").read_text()[-4000:]
        return self.out / "run"


def json_view(d: Mapping[str, Any]) -> ToolView:
    """``plateau-trace --format json``'s report in the judge's terms (the lr before a step is the lr after the
    previous one; the first step's is the replay's initial lrs)."""
    steps = []
    before = tuple(d["alignment"]["initial_lrs"] or ())
    for s in d["steps"]:
        lr = tuple(s["lr"])
        steps.append(ToolStep(epoch=s["epoch"], steps_taken=s["last_epoch"], metric=s["metric"],
                              best=s["best"], num_bad_epochs=s["num_bad_epochs"],
                              cooldown_counter=s["cooldown_counter"], lr_in=before, lr=lr, known=True,
                              lr_known=None not in lr))
        before = lr
    epoch = d["alignment"]["epoch"]
    index = next((i for i, s in enumerate(d["steps"]) if s["epoch"] == epoch), None)
    findings = tuple(
        ToolFinding(f["code"], f["severity"], f["epoch"], f["message"],
                    (f["code"],) if f["code"] != "ambiguous" else tuple(dict.fromkeys(
                        c for story in f["evidence"].get("stories", ()) for c in story)), f["evidence"])
        for f in d["findings"])
    return ToolView(tuple(steps), index, epoch, findings)


def spy_on_opens(monkeypatch: Any, forbidden: Collection[str]) -> list[str]:
    """Record the base name of every file opened from Python (``open``, ``io.open``, ``os.open``) in the
    returned list; opening a file whose base name is in ``forbidden`` fails the test."""
    import builtins
    import io

    names: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def check(file: Any) -> None:
        if isinstance(file, (str, bytes, os.PathLike)):
            name = os.path.basename(os.fsdecode(file))
            names.append(name)
            if name in forbidden:
                raise AssertionError(f"{file} was opened")

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        check(file)
        return real_open(file, *args, **kwargs)

    def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        check(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    return names
