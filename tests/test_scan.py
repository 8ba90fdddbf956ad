"""Fleet scan: runs found by each stack's layout and by content, one row each, in process and in a pool."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SAMPLES

import plateau_forensics as pf
from plateau_forensics.cli import ExitStatus, main
from plateau_forensics.scan import Run, find_runs, is_torch_checkpoint, scan, scan_run


def train_run(folder: Path, *, log_name: str = "log.csv", ckpt_name: str = "ckpt.pt", style: str = "csv",
              epochs: int = 20) -> dict:
    """A real uninterrupted run: linear model, SGD, ReduceLROnPlateau; checkpoint after the last epoch's step.

    ``style`` is ``csv``, ``jsonl`` or ``text`` (a printed log). Returns the truth recorded from the live objects.
    """
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(len(str(folder)))
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    lines = []
    for epoch in range(1, epochs + 1):
        lr = opt.param_groups[0]["lr"]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        val = float(loss.item()) * 1.01
        sched.step(val)
        if style == "csv":
            lines.append(f"{epoch},{val!r},{lr!r}")
        elif style == "jsonl":
            lines.append(json.dumps({"epoch": epoch, "val_loss": val, "lr": lr}))
        else:
            lines.append(f"Epoch {epoch}/{epochs} - loss: {val:.6f} - val_loss: {val!r} - lr: {lr!r}")
    head = "epoch,val_loss,lr\n" if style == "csv" else ""
    (folder / log_name).write_text(head + "\n".join(lines) + "\n")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epochs}, folder / ckpt_name)
    return {"last_epoch": sched.last_epoch}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """A folder tree of committed samples (copied) and fresh tiny runs, in every layout the scan knows."""
    root = tmp_path_factory.mktemp("fleet")
    plain = root / "plain"
    for name in ("seed000", "forgot_scheduler"):
        (plain / name).mkdir(parents=True)
        shutil.copy2(SAMPLES / f"{name}.pt", plain / name / f"{name}.pt")
        shutil.copy2(SAMPLES / f"{name}.csv", plain / name / f"{name}.csv")
    mixed = root / "mixed"  # two runs in one folder, paired by name
    mixed.mkdir()
    for name in ("clean", "two_groups"):
        shutil.copy2(SAMPLES / f"{name}.pt", mixed / f"{name}.pt")
        shutil.copy2(SAMPLES / f"{name}.csv", mixed / f"{name}.csv")
    shutil.copytree(SAMPLES / "lightning" / "resumed" / "csv_logs", root / "lightning" / "csv_logs")
    shutil.copytree(SAMPLES / "hf" / "epoch", root / "hf" / "output",
                    ignore=shutil.ignore_patterns("truth.json"))
    shutil.copytree(SAMPLES / "tensorboard" / "plain", root / "tb", ignore=shutil.ignore_patterns("truth.json"))
    fresh = root / "fresh"
    train_run(fresh / "csv")
    train_run(fresh / "jsonl", log_name="history.jsonl", style="jsonl")
    train_run(fresh / "printed", log_name="train.log", ckpt_name="state.dat", style="text")  # unusual names
    train_run(fresh / "nested" / "checkpoints", log_name="unused.csv")  # log one folder up, below
    (fresh / "nested" / "checkpoints" / "unused.csv").rename(fresh / "nested" / "log.csv")
    weights = fresh / "weights-only"  # a torch file without any scheduler state, next to a log
    weights.mkdir()
    torch.save(torch.nn.Linear(2, 1).state_dict(), weights / "model.pt")
    shutil.copy2(fresh / "csv" / "log.csv", weights / "log.csv")
    decoys = root / "decoys"  # names that lie: a text file called .pt, a zip that is not a torch archive
    decoys.mkdir()
    (decoys / "fake.pt").write_text("not a checkpoint\n")
    shutil.make_archive(str(decoys / "bundle"), "zip", root_dir=str(mixed))
    (decoys / "bundle.zip").rename(decoys / "bundle.ckpt")
    (decoys / "orphan.csv").write_text("epoch,val_loss\n1,0.5\n")
    return root


@pytest.fixture(scope="module")
def rows(fleet: Path) -> dict[str, dict]:
    """``scan`` over the fleet in one process, rows by path relative to the fleet."""
    return {str(Path(r["path"]).relative_to(fleet)): r for r in scan([fleet], jobs=1)}


class TestFinding:
    """Which runs are found, under which stack, with which checkpoint and logs."""

    def test_every_run_is_found(self, fleet: Path) -> None:
        """One run per layout instance; decoys and a log without a checkpoint make none (the log is listed)."""
        skipped: list[dict[str, str]] = []
        runs = {str(Path(r.path).relative_to(fleet)): r for r in find_runs(fleet, skipped=skipped)}
        assert {
            "plain/seed000": "torch", "plain/forgot_scheduler": "torch", "mixed/clean.pt": "torch",
            "mixed/two_groups.pt": "torch", "lightning/csv_logs": "lightning", "hf/output": "hf", "tb": "torch",
            "fresh/csv": "torch", "fresh/jsonl": "torch", "fresh/printed": "torch",
            "fresh/nested/checkpoints": "torch", "fresh/weights-only": "torch",
        } == {p: r.stack for p, r in runs.items()}
        assert (str(fleet / "mixed" / "clean.csv"),) == runs["mixed/clean.pt"].logs
        assert [str(fleet / "fresh" / "nested" / "log.csv")] == list(runs["fresh/nested/checkpoints"].logs)
        assert [str(fleet / "tb" / "run")] == list(runs["tb"].logs)
        lightning = runs["lightning/csv_logs"]
        assert [Path(p).parts[-2] for p in lightning.logs] == ["version_0", "version_1"]
        assert 5 == len(lightning.checkpoints)
        assert [Path(p).name for p in runs["hf/output"].checkpoints] == ["checkpoint-72", "checkpoint-160"]
        assert [str(fleet / "decoys" / "orphan.csv")] == [s["path"] for s in skipped]

    def test_checkpoints_by_content(self, fleet: Path) -> None:
        """A torch archive or legacy file is a checkpoint whatever its name; a .pt text or a plain zip is not."""
        assert is_torch_checkpoint(fleet / "fresh" / "printed" / "state.dat")
        assert is_torch_checkpoint(SAMPLES / "legacy_format.pt")
        assert not is_torch_checkpoint(fleet / "decoys" / "fake.pt")
        assert not is_torch_checkpoint(fleet / "decoys" / "bundle.ckpt")


class TestRows:
    """What each row says, against the recorded truth of the runs."""

    def test_rows_are_the_trace(self, fleet: Path, rows: dict[str, dict]) -> None:
        """Each row's verdict and warnings are those of ``pf.trace`` on the checkpoint and logs it names."""
        for path, row in rows.items():
            if row["error"] is not None:
                continue
            logs = row["logs"]
            t = pf.trace(row["checkpoint"], (logs if len(logs) > 1 else logs[0]) if logs else None)
            assert row["verdict"] == ("+".join(t.verdict.story) or "clean"), path
            assert row["warnings"] == [f.code for f in t.findings if f.severity == "warning"], path

    def test_truth_of_the_samples(self, fleet: Path, rows: dict[str, dict]) -> None:
        """The forgotten scheduler is a warning; the seed story is ambiguous; fresh uninterrupted runs are clean."""
        truth = json.loads((SAMPLES / "forgot_scheduler.truth.json").read_text())
        assert truth["resume_epoch"] is not None
        assert "scheduler-not-restored" in rows["plain/forgot_scheduler"]["warnings"]
        assert rows["plain/seed000"]["ambiguous"]
        for name in ("fresh/csv", "fresh/jsonl", "fresh/printed", "fresh/nested/checkpoints"):
            assert "clean" == rows[name]["verdict"], rows[name]
            assert [] == rows[name]["warnings"]

    def test_latest_checkpoint_is_analysed(self, rows: dict[str, dict]) -> None:
        """Lightning and HF runs are analysed at their checkpoint with the most scheduler steps."""
        hf = rows["hf/output"]
        assert hf["checkpoint"].endswith("checkpoint-160")
        steps = {p: pf.load_checkpoint(p).state.steps for p in
                 (Path(rows["lightning/csv_logs"]["path"]) / "version_1" / "checkpoints").iterdir()}
        assert steps[Path(rows["lightning/csv_logs"]["checkpoint"])] == max(steps.values())
        one = next((Path(rows["lightning/csv_logs"]["path"]) / "version_0" / "checkpoints").iterdir())
        row = scan_run(one)  # a Lightning checkpoint given alone is analysed with every version's log
        assert str(one) == row["checkpoint"]
        assert rows["lightning/csv_logs"]["logs"] == row["logs"]

    def test_errors_are_rows(self, rows: dict[str, dict]) -> None:
        """A weights-only file is not a run's checkpoint: its row says why, and nothing raises."""
        row = rows["fresh/weights-only"]
        assert row["error"] is not None and row["verdict"] is None
        assert "model.pt" in row["error"]

    def test_plain_data(self, fleet: Path, rows: dict[str, dict]) -> None:
        """A row survives JSON and a Run survives its dict, so both travel to cluster workers unchanged."""
        row = rows["mixed/two_groups.pt"]
        assert row == json.loads(json.dumps(row))
        run = find_runs(fleet / "mixed")[0]
        assert run == Run(**run.as_dict())
        again = scan_run(run.as_dict())
        assert {k: v for k, v in again.items() if k != "seconds"} == {
            k: v for k, v in rows[str(Path(run.path).relative_to(fleet))].items() if k != "seconds"}
        assert scan_run(str(fleet / "plain" / "seed000" / "seed000.pt"))["verdict"] == rows["plain/seed000"]["verdict"]


class TestCli:
    """``plateau-trace scan DIR...``."""

    def test_json_in_a_pool(self, fleet: Path, rows: dict[str, dict]) -> None:
        """Two worker processes give the same rows as one process; stderr stays silent without a terminal."""
        r = CliRunner().invoke(main, ["scan", str(fleet), "--format", "json", "--jobs", "2"])
        assert ExitStatus.OK == r.exit_code, r.output
        assert "" == r.stderr
        obj = json.loads(r.stdout)
        got = {str(Path(x["path"]).relative_to(fleet)): x for x in obj["runs"]}
        assert {p: (x["verdict"], x["warnings"]) for p, x in got.items()} == {
            p: (x["verdict"], x["warnings"]) for p, x in rows.items()}
        assert obj["summary"]["runs"] == len(rows)

    def test_check_and_csv(self, fleet: Path) -> None:
        """``--check`` exits 3 when a run has a warning; CSV has one line per run."""
        r = CliRunner().invoke(main, ["scan", str(fleet / "plain"), "--check", "--format", "csv", "--jobs", "1"])
        assert ExitStatus.FINDINGS == r.exit_code, r.output
        table = list(csv.DictReader(io.StringIO(r.stdout)))
        assert 2 == len(table)
        assert {"scheduler-not-restored"} <= set(table[0]["warnings"].split(";") + table[1]["warnings"].split(";"))
        r = CliRunner().invoke(main, ["scan", str(fleet / "fresh" / "csv"), "--check"])
        assert ExitStatus.OK == r.exit_code, r.output
        assert "clean" in r.stdout and "1 runs: 0 with warnings" in r.stdout

    def test_progress_bar_on_a_terminal(self, fleet: Path) -> None:
        """With stderr on a terminal the scan shows a progress bar there; stdout carries only the rows."""
        import fcntl
        import os
        import pty
        import struct
        import subprocess
        import sys
        import termios
        import threading

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        seen: list[bytes] = []

        def read() -> None:
            try:
                while chunk := os.read(master, 4096):
                    seen.append(chunk)
            except OSError:  # the terminal closed
                pass

        reader = threading.Thread(target=read)
        reader.start()
        out = subprocess.run([sys.executable, "-m", "plateau_forensics", "scan", str(fleet / "plain"), "--format",
                              "json", "--jobs", "1"], stdout=subprocess.PIPE, stderr=slave, check=True,
                             env={**os.environ, "PF_PROGRESS_DELAY": "0"})  # at once, however fast the machine
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
        assert 2 == json.loads(out.stdout)["summary"]["runs"]
        assert b"/2 [" in b"".join(seen) and b"run/s" in b"".join(seen)  # tqdm's bar: n/2 runs, rate

    @pytest.mark.parametrize(("args", "code", "message"), [
        (["scan", "no/such/folder"], ExitStatus.ERROR, "no such folder"),
        (["scan"], ExitStatus.USAGE, "scan needs a folder"),
        (["scan", ".", "--lr", "0.1"], ExitStatus.USAGE, "scan takes --format"),
        (["log.csv", "--jobs", "2"], ExitStatus.USAGE, "--jobs is for plateau-trace scan"),
    ], ids=["missing", "no-folder", "foreign-option", "jobs-alone"])
    def test_errors(self, args: list[str], code: int, message: str) -> None:
        """Bad scan invocations: one line on stderr, the documented exit code."""
        r = CliRunner().invoke(main, args)
        assert code == r.exit_code, r.output
        assert message in r.stderr


def test_a_recording_is_a_runs_log(tmp_path: Path) -> None:
    """A folder with a checkpoint and the ``pf.record`` file of the same real loop: the file opens with the
    recording's header line (no loss key in it), and the scan still finds it as the run's log."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    run = tmp_path / "run"
    run.mkdir()
    with pf.record(sched, opt, path=run / "plateau.jsonl"):
        for loss in [0.5, 0.4, 0.4, 0.45, 0.42, 0.3, 0.31, 0.32]:
            sched.step(loss)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, run / "ckpt.pt")
    assert (run / "plateau.jsonl").read_text().startswith('{"plateau_recording"')
    runs = find_runs(tmp_path)
    assert [Path(r.path) for r in runs] == [run]
    row = scan_run(runs[0])
    assert row["error"] is None and row["logs"] == [str(run / "plateau.jsonl")]
    t = pf.trace(run / "ckpt.pt", run / "plateau.jsonl")
    assert row["verdict"] == ("+".join(t.verdict.story) or "clean") and not row["warnings"]
