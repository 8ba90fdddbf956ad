"""MLflow stores as a log source: the sqlite store (mlflow.db) and the file store (mlruns/), written by the
real MLflow client (make_mlflow.py) and judged by the truth it recorded, plus hostile stores.

Each run's truth holds what the generator logged, what MLflow's own client read back, and (``plain``) the live
scheduler record. Tests on the fixtures run on the committed files and on a fresh regeneration alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixture_truth import SAMPLES, Expect, decode, problems, read_truth, regenerate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plateau_forensics as pf
from plateau_forensics import mlflow_log
from plateau_forensics.cli import main
from plateau_forensics.errors import LossLogError

ML = SAMPLES / "mlflow"
# MLflow 3.17's sqlite store uses a loader option SQLAlchemy 2.1 deprecates (its code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
STORES = ("sqlite", "file")
RUNS = ("plain", "messy")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``make_mlflow.py`` run on this machine (the real MLflow client, both stores)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("torch")
    return regenerate("make_mlflow.py", tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def folder(request: pytest.FixtureRequest) -> Path:
    """The committed fixtures, then a regeneration: every test using it holds for both."""
    return ML if request.param == "committed" else request.getfixturevalue("regenerated")


def truth(folder: Path) -> dict[str, Any]:
    return read_truth(folder / "truth.json")


def store(folder: Path, kind: str) -> Path:
    return folder / truth(folder)["stores"][kind]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Any) -> str:
    """The CLI's stderr for a refused input: exit 1, a single ``Error:`` line, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert not isinstance(result.exception, (AssertionError, TypeError, KeyError)) or isinstance(
        result.exception, SystemExit), result.exception
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def same_values(a: list[float], b: list[float]) -> bool:
    """Equal floats, NaN equal to NaN."""
    if len(a) != len(b):
        return False
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ the fixture


def test_regenerated_layout_is_the_committed_one(regenerated: Path) -> None:
    """make_mlflow.py writes the committed files: one db, a file store of one experiment with two runs."""
    def shape(root: Path) -> list[str]:
        def part(x: str) -> str:  # run ids and experiment ids are new in every regeneration
            if re.fullmatch(r"[0-9a-f]{32}", x):
                return "<run>"
            return "<exp>" if re.fullmatch(r"\d{6,}", x) else x

        # files only: git keeps no empty folder (mlruns/.trash, a run's artifacts/ and params/)
        files = [p.relative_to(root).parts for p in root.rglob("*") if p.is_file()]
        return sorted({"/".join(map(part, f)) for f in files})

    assert shape(regenerated) == shape(ML)
    assert {p.name for p in ML.iterdir()} == {"mlflow.db", "mlruns", "plain_epoch15.pt", "truth.json"}


def test_fixture_stays_small() -> None:
    """The MLflow fixture stays under 1.3 MB (the sqlite store's schema alone is ~1 MB of MLflow's tables)."""
    assert sum(p.stat().st_size for p in ML.rglob("*") if p.is_file()) < 1_300_000


def test_mlflow_itself_reads_the_committed_stores(tmp_path: Path) -> None:
    """MLflow's own client reads back, from copies of the committed stores, what truth.json says it logged."""
    pytest.importorskip("mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    shutil.copytree(ML, tmp_path / "ml")
    t = truth(ML)
    clients = {"sqlite": MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"),
               "file": MlflowClient(tracking_uri=(tmp_path / "ml" / "mlruns").as_uri())}
    for name in RUNS:
        run = t["runs"][name]
        for kind, client in clients.items():
            for key, pairs in run["logged"].items():
                history = client.get_metric_history(run["run_ids"][kind], key)
                assert [m.step for m in history] == [s for s, _ in pairs]
                assert same_values([m.value for m in history], [decode(v) for _, v in pairs])


# ------------------------------------------------------------------------------ read_losses


def logged(t: dict[str, Any], name: str, key: str) -> tuple[list[int], list[float]]:
    pairs = t["runs"][name]["logged"][key]
    return [s for s, _ in pairs], [decode(v) for _, v in pairs]


@pytest.mark.parametrize("kind", STORES)
def test_plain_run_reads_as_logged(folder: Path, kind: str) -> None:
    """The plain run: one entry per logged val_loss, labelled by step, with the lr and train_loss keys."""
    t = truth(folder)
    log = pf.read_losses(store(folder, kind), run="plain")
    steps, values = logged(t, "plain", "val_loss")
    assert (log.metric_column, log.epoch_column, log.lr_columns) == ("val_loss", "step", ("lr",))
    assert list(log.epochs) == steps and list(log.metrics) == values
    assert [row[0] for row in log.lrs] == logged(t, "plain", "lr")[1]
    assert list(log.columns["train_loss"]) == logged(t, "plain", "train_loss")[1]
    assert log.anomalies == ()
    assert log.source == str(store(folder, kind))


@pytest.mark.parametrize("kind", STORES)
def test_messy_run_reports_every_anomaly(folder: Path, kind: str) -> None:
    """NaN, a step logged twice, a missing step and lr per batch are all reported; no value is dropped."""
    t = truth(folder)
    m = t["messy"]
    log = pf.read_losses(store(folder, kind), run="messy")
    steps, values = logged(t, "messy", "val_loss")
    assert list(log.epochs) == steps and same_values(list(log.metrics), values)
    assert steps.count(m["twice_epoch"]) == 2 and m["unlogged_epoch"] not in steps
    by_kind = {a.kind: a for a in log.anomalies}
    assert set(by_kind) >= {"non-finite-metric", "duplicate-epochs", "mlflow-duplicate-step",
                            "mlflow-step-gap", "mlflow-different-steps"}
    nan_rows = [i for i, v in enumerate(log.metrics) if math.isnan(v)]
    assert list(by_kind["non-finite-metric"].rows) == nan_rows and [log.epochs[i] for i in nan_rows] == [
        m["nan_epoch"]]
    assert by_kind["duplicate-epochs"].epochs == (m["twice_epoch"],) * 2
    assert f"steps {m['twice_epoch']};" in by_kind["mlflow-duplicate-step"].message
    assert f"{m['unlogged_epoch'] - 1} to {m['unlogged_epoch'] + 1}" in by_kind["mlflow-step-gap"].message
    lr_steps = len(t["runs"]["messy"]["logged"]["lr"])
    assert lr_steps == t["epochs"] * m["batches_per_epoch"]
    different = [a.message for a in log.anomalies if a.kind == "mlflow-different-steps"]
    said = f"'lr' is logged at {lr_steps} steps and 'val_loss' at {len(set(steps))}"
    assert any(said in x for x in different)


@pytest.mark.parametrize("kind", STORES)
def test_run_by_id_is_run_by_name(folder: Path, kind: str) -> None:
    """A run chosen by its id reads exactly like the same run chosen by its name."""
    t = truth(folder)
    for name in RUNS:
        by_id = pf.read_losses(store(folder, kind), run=t["runs"][name]["run_ids"][kind])
        by_name = pf.read_losses(store(folder, kind), run=name)
        assert by_id.epochs == by_name.epochs and by_id.lrs == by_name.lrs
        assert same_values(list(by_id.metrics), list(by_name.metrics))


def test_file_store_reads_from_store_experiment_or_run_folder(folder: Path) -> None:
    """mlruns/, mlruns/<exp>/ and mlruns/<exp>/<run>/ give the same log (a run folder needs no --run)."""
    t = truth(folder)
    rid = t["runs"]["plain"]["run_ids"]["file"]
    (run_dir,) = [p for p in store(folder, "file").glob(f"*/{rid}")]
    whole = pf.read_losses(store(folder, "file"), run="plain")
    for path, run in ((run_dir.parent, "plain"), (run_dir, None)):
        log = pf.read_losses(path, run=run)
        assert (log.epochs, log.metrics, log.lrs) == (whole.epochs, whole.metrics, whole.lrs)


def test_metric_option_picks_the_key(folder: Path) -> None:
    """``metric=`` feeds another key to the replay (train_loss here)."""
    log = pf.read_losses(store(folder, "sqlite"), run="plain", metric="train_loss")
    assert log.metric_column == "train_loss" and list(log.metrics) == logged(truth(folder), "plain",
                                                                              "train_loss")[1]


# ------------------------------------------------------------------------------ trace and CLI


@pytest.mark.parametrize("kind", STORES)
def test_tool_tells_the_recorded_truth(folder: Path, kind: str) -> None:
    """pf.trace(checkpoint, store, run=...) places, replays and explains the plain run as it happened."""
    t = truth(folder)
    run = t["runs"]["plain"]
    file = run["checkpoint"]["file"]
    trace = pf.trace(folder / file, store(folder, kind), run="plain")
    assert problems(trace, run, file, Expect()) == []


@pytest.mark.parametrize("kind", STORES)
def test_cli_checkpoint_and_store(folder: Path, kind: str) -> None:
    """``plateau-trace CKPT mlflow.db --run plain`` places the checkpoint at the epoch it was saved after."""
    t = truth(folder)
    run = t["runs"]["plain"]
    r = invoke(folder / run["checkpoint"]["file"], store(folder, kind), "--run", "plain", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    saved = run["checkpoint"]["scheduler"]["last_epoch"]
    assert out["alignment"]["epoch"] == saved and out["alignment"]["scheduler_step"] == saved
    assert out["log"] == {"source": str(store(folder, kind)), "metric_column": "val_loss",
                          "epoch_column": "step", "lr_columns": ["lr"]}
    assert [f for f in out["findings"] if f["severity"] == "warning"] == []


def test_cli_store_alone_with_run_first(folder: Path) -> None:
    """``plateau-trace --run messy mlruns/`` reads the store alone (teaching mode) and shows its anomalies."""
    r = invoke("--run", "messy", store(folder, "file"), "--format", "json")
    assert r.exit_code == 0, r.output
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert {"mlflow-duplicate-step", "mlflow-step-gap", "mlflow-different-steps", "nan-metric"} <= codes


@pytest.mark.parametrize("kind", STORES)
def test_several_runs_without_run_is_one_line_listing(folder: Path, kind: str) -> None:
    """Two runs and no --run: exit 1 with one line naming both runs (name and id) and the option."""
    t = truth(folder)
    err = one_line_error(invoke(store(folder, kind)))
    assert "2 runs:" in err and "--run" in err
    for name in RUNS:
        assert f"'{name}' ({t['runs'][name]['run_ids'][kind]}" in err


def test_unknown_run_lists_the_runs(folder: Path) -> None:
    """A run that is not there: exit 1, the runs listed."""
    err = one_line_error(invoke(store(folder, "sqlite"), "--run", "nope"))
    assert "no run with id or name 'nope'" in err and "'plain'" in err and "'messy'" in err


# ------------------------------------------------------------------------------ the real client as oracle


@pytest.fixture(scope="module")
def live_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One sqlite and one file store written by the real MLflow client (a new run per example)."""
    pytest.importorskip("mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("live")
    out: dict[str, Any] = {"root": root}
    shutil.copyfile(ML / "mlflow.db", root / "mlflow.db")  # MLflow's schema made: no migrations to run
    for kind, uri, path in (("sqlite", f"sqlite:///{root / 'mlflow.db'}", root / "mlflow.db"),
                            ("file", (root / "mlruns").as_uri(), root / "mlruns")):
        client = MlflowClient(tracking_uri=uri)
        out[kind] = (client, client.create_experiment("h"), path)
    return out


POINT = st.tuples(st.sampled_from(["val_loss", "lr"]),
                  st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                            st.sampled_from([0.5, 1.0, float("nan"), float("inf"), -1.7976931348623157e308])),
                  st.integers(0, 6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=st.lists(POINT, min_size=1, max_size=12).filter(lambda ps: any(p[0] == "val_loss" for p in ps)))
def test_reader_equals_mlflows_own_history(live_stores: dict[str, Any], points: list[Any]) -> None:
    """For random points (NaN, inf, repeated and missing steps), the log's entries are MLflow's val_loss
    history (steps and values, in MLflow's order, inf as inf) and the lr at each entry is the lr MLflow logged
    at that step."""
    from mlflow.entities import Metric

    for kind in STORES:
        client, exp, path = live_stores[kind]
        rid = client.create_run(exp).info.run_id
        client.log_batch(rid, metrics=[Metric(k, v, 1000 + i, s) for i, (k, v, s) in enumerate(points)])
        log = pf.read_losses(path, run=rid)
        hist = client.get_metric_history(rid, "val_loss")
        # the sqlite store keeps inf as +-float max; MLflow reads that back as is, the tool as inf (reported)
        # (the file store writes repr text: a logged float max stays float max there)
        def seen(v: float, kind: str = kind) -> float:
            return math.copysign(math.inf, v) if kind == "sqlite" and abs(v) == mlflow_log.DBL_MAX else v

        clamp = [seen(m.value) for m in hist]
        assert list(log.epochs) == [m.step for m in hist], kind
        assert same_values(list(log.metrics), clamp), kind
        lr_at: dict[int, list[float]] = {}
        for m in client.get_metric_history(rid, "lr"):
            lr_at.setdefault(m.step, []).append(m.value)
        for i, step in enumerate(log.epochs):
            k = list(log.epochs[:i]).count(step)
            want = lr_at.get(step, [])
            if log.lrs is not None and k < len(want):
                assert same_values([log.lrs[i][0]], [seen(want[k])]), (kind, i)
        steps = [m.step for m in hist]
        if len(set(steps)) < len(steps):
            assert any(a.kind == "mlflow-duplicate-step" for a in log.anomalies)
        if any(math.isnan(v) for v in log.metrics):
            assert any(a.kind == "non-finite-metric" for a in log.anomalies)


# ------------------------------------------------------------------------------ hostile stores


def copy_db(tmp_path: Path) -> Path:
    dst = tmp_path / "copy.db"
    shutil.copyfile(ML / "mlflow.db", dst)
    return dst


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_reading_never_writes_the_database() -> None:
    """Reading, tracing and refusing (no --run) leave the committed db's bytes and mtime as they were, and
    create no journal beside it."""
    db = ML / "mlflow.db"
    before, listing = digest(db), sorted(os.listdir(ML))
    pf.read_losses(db, run="messy")
    pf.trace(ML / "plain_epoch15.pt", db, run="plain")
    invoke(db)
    assert digest(db) == before and sorted(os.listdir(ML)) == listing


def test_a_write_through_the_reader_is_refused(tmp_path: Path) -> None:
    """The reader's connection is read-only: a write on it fails (what a hostile schema would need)."""
    db = copy_db(tmp_path)
    con = mlflow_log._connect(db)
    with pytest.raises(sqlite3.OperationalError):
        con.execute("DELETE FROM metrics")
    con.close()


def test_not_a_sqlite_file_with_run(tmp_path: Path) -> None:
    """--run on a file that is no MLflow store: one line saying so."""
    p = tmp_path / "mlflow.db"
    p.write_text("epoch,val_loss\n1,0.5\n")
    assert "--run selects a run of an MLflow store" in one_line_error(invoke(p, "--run", "x"))


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    """SQLite's header followed by garbage: one line, not a traceback."""
    p = tmp_path / "runs.db"
    p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    assert "not a readable SQLite database" in one_line_error(invoke(p))


def test_db_without_metrics_table(tmp_path: Path) -> None:
    """An SQLite database that is not MLflow's: one line naming its tables."""
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE notes(x)")
    con.commit()
    con.close()
    err = one_line_error(invoke(p))
    assert "without MLflow's metrics" in err and "notes" in err


@pytest.mark.parametrize("update, expected", [
    ("UPDATE metrics SET value = zeroblob(20000000) WHERE key = 'val_loss' AND step = 3",
     "a value of type blob"),
    ("UPDATE metrics SET key = 'val_loss' || hex(zeroblob(600000)) WHERE key = 'train_loss' AND step = 3",
     "a metric key of 1,200,008 characters"),
    ("UPDATE metrics SET step = 'three' WHERE key = 'val_loss' AND step = 3", "a step of type text"),
], ids=["huge-blob-value", "huge-key", "text-step"])
def test_hostile_cells(tmp_path: Path, update: str, expected: str) -> None:
    """A 20 MB blob where a value should be, a 1.2 MB key, a text step: one line naming the problem."""
    db = copy_db(tmp_path)
    con = sqlite3.connect(db)
    con.execute(update)
    con.commit()
    con.close()
    assert expected in one_line_error(invoke(db, "--run", "plain"))


def test_locked_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer holding an exclusive lock: after LOCK_TIMEOUT, one line saying the database is locked."""
    db = copy_db(tmp_path)
    monkeypatch.setattr(mlflow_log, "LOCK_TIMEOUT", 0.2)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        assert "the database is locked" in one_line_error(invoke(db, "--run", "plain"))
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_symlink_loop_in_mlruns(tmp_path: Path) -> None:
    """A symlink loop in the store, or among a run's metric files: one line naming it, no hang."""
    shutil.copytree(ML / "mlruns", tmp_path / "mlruns", symlinks=True)
    os.symlink("loop", tmp_path / "mlruns" / "loop")
    assert "a symlink loop" in one_line_error(invoke(tmp_path / "mlruns", "--run", "plain"))
    os.unlink(tmp_path / "mlruns" / "loop")
    rid = truth(ML)["runs"]["plain"]["run_ids"]["file"]
    (metrics,) = (tmp_path / "mlruns").glob(f"*/{rid}/metrics")
    os.symlink("spin", metrics / "spin")
    err = one_line_error(invoke(tmp_path / "mlruns", "--run", "plain"))
    assert "a symlink loop" in err and err.split(":")[1].strip().endswith("metrics/spin")
    assert pf.read_losses(tmp_path / "mlruns", run="messy").metric_column == "val_loss"  # the other run reads


def test_bad_metric_line_and_fifo(tmp_path: Path) -> None:
    """A metric file line that is not 'timestamp value step', and a FIFO as a metric: one line each."""
    t = truth(ML)
    shutil.copytree(ML / "mlruns", tmp_path / "mlruns")
    rid = t["runs"]["plain"]["run_ids"]["file"]
    (metrics,) = (tmp_path / "mlruns").glob(f"*/{rid}/metrics")
    with open(metrics / "val_loss", "a") as f:
        f.write("1700000000000 0.5 three\n")
    assert "is not 'timestamp value step'" in one_line_error(invoke(tmp_path / "mlruns", "--run", "plain"))
    os.unlink(metrics / "val_loss")
    os.mkfifo(metrics / "val_loss")
    assert "not a regular file" in one_line_error(invoke(tmp_path / "mlruns", "--run", "plain"))


def test_shared_name_needs_the_id(tmp_path: Path) -> None:
    """Two runs of one name: one line listing both ids; the id then selects one."""
    db = copy_db(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET name = 'plain'")
    con.commit()
    con.close()
    assert "2 runs are named 'plain'" in one_line_error(invoke(db, "--run", "plain"))
    rid = truth(ML)["runs"]["messy"]["run_ids"]["sqlite"]
    assert pf.read_losses(db, run=rid).epochs == tuple(logged(truth(ML), "messy", "val_loss")[0])


def test_float_max_is_mlflows_inf(tmp_path: Path) -> None:
    """±1.797e308 (the sqlite store's ±inf) is read as inf and reported; is_nan wins over the value."""
    db = copy_db(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE metrics SET value = 1.7976931348623157e308 WHERE key = 'val_loss' AND step = 3 "
                "AND run_uuid = (SELECT run_uuid FROM runs WHERE name = 'plain')")
    con.execute("UPDATE metrics SET value = 7.5, is_nan = 1 WHERE key = 'val_loss' AND step = 4 "
                "AND run_uuid = (SELECT run_uuid FROM runs WHERE name = 'plain')")
    con.commit()
    con.close()
    log = pf.read_losses(db, run="plain")
    assert log.metrics[log.epochs.index(3)] == math.inf and math.isnan(log.metrics[log.epochs.index(4)])
    assert any(a.kind == "mlflow-inf" and "'val_loss' at step 3" in a.message for a in log.anomalies)


def test_run_on_a_csv_is_refused() -> None:
    """--run names an MLflow run: given with a CSV log it is an error, not ignored."""
    with pytest.raises(LossLogError, match="--run selects a run"):
        pf.read_losses(SAMPLES / "clean.csv", run="plain")


def test_import_pulls_in_neither_sqlite3_nor_mlflow() -> None:
    """``import plateau_forensics`` and the CLI module load neither sqlite3, mlflow nor the MLflow reader."""
    code = ("import sys, plateau_forensics, plateau_forensics.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlite3', '_sqlite3', 'mlflow') "
            "or m == 'plateau_forensics.mlflow_log'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_deleted_runs_are_left_out_unless_named_by_id(tmp_path: Path) -> None:
    """A deleted run neither counts among the runs nor matches a name; its id still selects it."""
    db = copy_db(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE name = 'messy'")
    con.commit()
    con.close()
    t = truth(ML)
    assert pf.read_losses(db).epochs == tuple(logged(t, "plain", "val_loss")[0])  # the one run left
    assert "no run with id or name 'messy'" in one_line_error(invoke(db, "--run", "messy"))
    rid = t["runs"]["messy"]["run_ids"]["sqlite"]
    assert pf.read_losses(db, run=rid).epochs == tuple(logged(t, "messy", "val_loss")[0])
