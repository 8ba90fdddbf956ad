"""``plateau-trace``: a thin click shell over ``plateau_forensics.api``; the only place that prints and exits.

Module level imports only the standard library and click, so ``--help`` never loads torch or pandas.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from enum import IntEnum
from pathlib import Path

import click

from plateau_forensics import rulesets
from plateau_forensics.errors import ConfigError, ForensicsError, RemoteUnavailable


class ExitStatus(IntEnum):
    """Documented exit codes (README "Exit codes")."""

    OK = 0
    ERROR = 1  # bad input: unreadable file, no plateau state, no metric column, ...
    USAGE = 2  # click's own: unknown option, missing argument
    FINDINGS = 3  # only with --check: at least one warning-level finding
    UNREACHABLE = 4  # a URL's object store: network failure, timeout, no credentials, access denied


class _Unreachable(click.ClickException):
    exit_code = ExitStatus.UNREACHABLE


HPARAMS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps")


EXPECT_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")

#: ``--rules`` choices: the registered rule sets (rulesets.py) and MMEngine's teaching mode.
RULES = (*rulesets.names()[:2], "mmengine", *rulesets.names()[2:])
#: The rule sets whose library has a mode 'auto'.
AUTO_MODE = ("keras", "fastai")


def _parse_expect(items: tuple[str, ...]) -> dict[str, str]:
    """``("patience=5", "factor=0.5")`` -> ``{"patience": "5", "factor": "0.5"}``; bad keys are usage errors."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in EXPECT_KEYS or not value.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE with KEY one of {', '.join(EXPECT_KEYS)}",
                                     param_hint="--expect")
        out[key] = value.strip()
    return out


def _classify(paths: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Split PATHS into (checkpoint, logs) by content: a torch file or an HF checkpoint directory is the
    checkpoint when it comes first; everything else is a log (CSV, JSON Lines, TensorBoard run)."""
    from plateau_forensics.loader import is_checkpoint_dir, is_torch_file
    from plateau_forensics.remote import is_url

    if is_url(paths[0]):  # s3://, https://, ...: by its first bytes, fetched with one range request
        from plateau_forensics.remote import is_torch_url

        return (paths[0], list(paths[1:])) if len(paths) > 1 or is_torch_url(paths[0]) else (None, list(paths))
    first = Path(paths[0])
    if not first.exists():
        raise click.ClickException(f"{first}: no such file")
    if is_checkpoint_dir(first) or is_torch_file(first):
        return paths[0], list(paths[1:])
    if len(paths) == 1 or first.is_dir():
        if first.is_dir() and not _is_log_dir(first):
            raise click.ClickException(f"{first}: a directory with neither {'scheduler.pt'} nor TensorBoard events nor MLflow runs")
        return None, list(paths)
    return paths[0], list(paths[1:])


def _is_log_dir(path: Path) -> bool:
    from plateau_forensics.mlflow_log import is_mlflow
    from plateau_forensics.tensorboard_log import is_tensorboard

    return is_tensorboard(path) or is_mlflow(path)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("paths", nargs=-1, metavar="[CKPT] [LOSSES...]")
@click.option("--scheduler", "scheduler_key", metavar="KEYPATH", help="Key path of the plateau state when there are several.")
@click.option("--loader", type=click.Choice(["builtin", "torch"]), default="builtin", show_default=True,
              help="Checkpoint reader: torch-free restricted unpickler, or torch.load(weights_only=True).")
@click.option("--metric", metavar="COLUMN", help="Log column fed to step() (default: auto-detected val loss).")
@click.option("--run", metavar="ID-OR-NAME", help="MLflow store (mlflow.db, mlruns/): the run to read, by id or name.")
@click.option("--epoch-column", metavar="COLUMN", help="Log column holding the epoch (default: auto-detected).")
@click.option("--lr-column", "lr_columns", multiple=True, metavar="COLUMN",
              help="Log column holding the lr used during each epoch; repeat per param group.")
@click.option("--lr", "lrs", type=float, multiple=True, help="Initial lr; repeat per param group.")
@click.option("--min-lr", "min_lrs", type=float, multiple=True, help="Teaching mode: min_lr; repeat per group.")
@click.option("--mode", type=click.Choice(["min", "max", "auto"]),
              help="Teaching mode: mode (default min; with --rules keras/fastai the library's own default, auto: "
                   "the direction from the metric's name, as that library decides it).")
@click.option("--factor", type=float, help="Teaching mode: factor (default 0.1).")
@click.option("--patience", type=int, help="Teaching mode: patience (default 10).")
@click.option("--threshold", type=float, help="Teaching mode: threshold (default 1e-4).")
@click.option("--threshold-mode", type=click.Choice(["rel", "abs"]), help="Teaching mode: threshold_mode (default rel).")
@click.option("--cooldown", type=int, help="Teaching mode: cooldown (default 0).")
@click.option("--eps", type=float, help="Teaching mode: eps (default 1e-8).")
@click.option("--format", "fmt", type=click.Choice(["grid", "table", "csv", "markdown", "json"]), default="grid",
              show_default=True,
              help="grid: the epoch grid with the summary, story and findings (each warning with its fix); table: "
                   "the same as a table; csv: the step table only (one row per step, floats exact); markdown: "
                   "summary, findings with fixes and the step table, to paste into a bug report; json: everything.")
@click.option("--style", default="simple", show_default=True, help="tabulate style for --format table.")
@click.option("--explain", is_flag=True, help="One line per epoch saying why it went the way it did.")
@click.option("--width", type=int, help="Grid width in characters (default: the terminal's).")
@click.option("--full-search", is_flag=True,
              help="Simulate every story even on a long log (over 5,000 rows only the plain story is checked).")
@click.option("--rules", type=click.Choice(RULES), default="torch", show_default=True,
              help="Whose plateau rules to replay a log under (no checkpoint): torch's scheduler, Keras 3's or "
                   "fastai's callback, MMEngine's ReduceOnPlateauLR or optax's contrib.reduce_on_plateau.")
@click.option("--rule-option", "rule_options", multiple=True, metavar="KEY=VALUE",
              help="--rules/--compare: an argument of that library by its own name (e.g. accumulation_size=4 for "
                   "optax, factor=10 for fastai); NAME.KEY=VALUE for one rule set of --compare. Repeatable.")
@click.option("--min-delta", type=float, help="Keras/fastai rules: the callback's min_delta (absolute threshold).")
@click.option("--compare", "compare_rules", metavar="torch,keras,...",
              help="Replay the log under two or more rule sets (of --rules, except mmengine) side by side and show "
                   "the first epoch where each diverges from the first.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also draw the trace to FILE (.png, .svg or .pdf; needs the [plot] extra).")
@click.option("--what-if", "what_ifs", multiple=True, metavar="KEY=V1,V2,...",
              help="Replay other settings over the same log (repeatable; all combinations) and show where "
                   "the lr timelines diverge, e.g. --what-if patience=2,5,10 --what-if factor=0.5.")
@click.option("--expect", "expects", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter you believe is in effect (e.g. patience=5); repeatable.")
@click.option("--check", is_flag=True, help="Exit 3 when any warning-level finding is present (for CI gates).")
@click.option("--write-state", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the scheduler state rebuilt from the log (.pt needs torch, or .json).")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=SPEC",
              help="Replay every combination of these settings over the log at once (repeatable), one row each: "
                   "reductions, final lr, epochs at each lr; e.g. --sweep patience=0..20 --sweep factor=0.1,0.5.")
@click.option("--sort", "sort_by", metavar="COLUMN",
              help="--sweep: sort the rows by COLUMN (a swept key, reductions, first_reduction, final_lr, ...); "
                   "-COLUMN sorts descending.")
@click.option("--fit", "fit_lr", is_flag=True,
              help="Find the hyperparameters that reproduce the log's lr column (no checkpoint needed); options "
                   "such as --factor fix what you know.")
@click.option("--jobs", type=click.IntRange(min=1), help="scan: worker processes (default: the CPUs available).")
@click.option("--schedule", "schedules", multiple=True, metavar="'NAME(k=v, ...)'",
              help="A torch LRScheduler, e.g. 'CosineAnnealingWarmRestarts(T_0=10, T_mult=2)': print and --plot its "
                   "lr timeline (repeat: built and stepped in order on one optimizer; with a LOSSES log, beside "
                   "the ReduceLROnPlateau replay).")
@click.option("--epochs", type=click.IntRange(min=1), help="--schedule without a log: epochs to show (default 100).")
@click.version_option(package_name="plateau-forensics")
def main(
    paths: tuple[str, ...], scheduler_key: str | None, loader: str, metric: str | None, run: str | None,
    epoch_column: str | None,
    lr_columns: tuple[str, ...], lrs: tuple[float, ...], min_lrs: tuple[float, ...], fmt: str, style: str,
    explain: bool, width: int | None, rules: str, rule_options: tuple[str, ...], min_delta: float | None,
    compare_rules: str | None,
    plot_path: Path | None, what_ifs: tuple[str, ...], expects: tuple[str, ...], check: bool,
    write_state: Path | None, sweeps: tuple[str, ...], sort_by: str | None, fit_lr: bool, jobs: int | None,
    schedules: tuple[str, ...], epochs: int | None, full_search: bool, **hparams: object,
) -> None:
    """Replay ReduceLROnPlateau over a loss log and explain every LR change.

    \b
    plateau-trace CKPT LOSSES   place the checkpoint in the log, replay, forecast
    plateau-trace CKPT L0 L1    several logs written one after another (a resume each)
    plateau-trace CKPT          the saved state and forecast (HF checkpoint-N/: with its own log)
    plateau-trace LOSSES --lr 0.1 --patience 2 --cooldown 3   teaching mode
    plateau-trace LOSSES --sweep patience=0..20 --sweep factor=0.1,0.5   every combination
    plateau-trace LOSSES --fit  the settings that reproduce the logged lr
    plateau-trace scan DIR...   every run below the folders, one row each
    plateau-trace --schedule 'CosineAnnealingWarmRestarts(T_0=10, T_mult=2)' --epochs 100   an lr timeline

    CKPT is a torch.save file (read without running pickled code) or an HF checkpoint-N/ directory.
    LOSSES is a CSV or JSON Lines log, a TensorBoard run or an MLflow store (mlflow.db, mlruns/: --run picks
    the run, --metric the key); metric, epoch and lr columns are auto-detected.

    \b
    Example:
        plateau-trace sample_checkpoints/seed000.pt sample_checkpoints/seed000.csv
    """
    given = {k: v for k, v in hparams.items() if v is not None}
    expect = _parse_expect(expects)
    if schedules or epochs is not None:
        return _schedule_command(paths, schedules, epochs=epochs, lrs=lrs, given=given, min_lrs=min_lrs, fmt=fmt,
                                 style=style, width=width, plot_path=plot_path,
                                 log_opts={"metric": metric, "epoch_column": epoch_column, "run": run})
    if not paths:
        raise click.UsageError("Missing argument '[CKPT] [LOSSES...]'.")
    if paths[0] == "scan":  # ./scan names a file of that name
        return _scan_command(paths[1:], fmt=fmt, style=style, check=check, loader=loader, jobs=jobs)
    if jobs is not None:
        raise click.UsageError("--jobs is for plateau-trace scan DIR...")
    if sweeps or sort_by or fit_lr:
        return _sweep_or_fit(paths, given=given, min_lrs=min_lrs, lrs=lrs, sweeps=sweeps, sort_by=sort_by,
                             fit_lr=fit_lr, fmt=fmt, style=style, plot_path=plot_path, check=check,
                             log_opts={"metric": metric, "epoch_column": epoch_column,
                                       "lr_columns": lr_columns or None, "run": run},
                             scheduler_key=scheduler_key, loader=loader)
    # one run is analysed and printed, then the process ends: on a long log the cyclic collector's passes over
    # millions of row objects cost about a tenth of the run (benchmarks/bench_longlog.py) and free nothing
    gc.disable()
    # nothing here multiplies matrices: without BLAS's thread pool (started when numpy is imported) the process
    # stays one thread, and a long csv/json can be rendered on two cores (fanout.can_fork)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from plateau_forensics import api, report
    from plateau_forensics.state import PlateauConfig

    try:
        if plot_path is not None:
            from plateau_forensics.plot import check_plot_path

            check_plot_path(plot_path)  # a bad suffix is a usage error before any work
        ckpt, logs = _classify(paths)
        if min_lrs:
            given["min_lr"] = min_lrs[0] if len(min_lrs) == 1 else tuple(min_lrs)
        if given.get("mode") == "auto" and not (compare_rules or rules in rulesets.RULESETS and rules != "torch"):
            raise click.UsageError(f"--mode auto is the rule of {', '.join(AUTO_MODE)} (the direction from the "
                                   f"metric's name); torch's ReduceLROnPlateau takes min or max")
        config = PlateauConfig(**{k: v for k, v in given.items() if k != "mode" or v != "auto"})  # type: ignore[arg-type]
        log_opts = {"metric": metric, "epoch_column": epoch_column, "lr_columns": lr_columns or None, "run": run}
        if rules == "mmengine" and not compare_rules:  # torch's machine from MMEngine's best (mmengine_rules)
            if ckpt is not None:
                raise click.UsageError("an MMEngine checkpoint is replayed under MMEngine's rules by itself: drop --rules")
            t = api.replay_mmengine(logs if len(logs) > 1 else logs[0], config, lr=lrs or None, expect=expect,
                                    defaults=not given, **log_opts)
            click.echo(report.render(t, "explain" if explain else fmt,  # type: ignore[arg-type]
                                     width=width or shutil.get_terminal_size((100, 24)).columns, style=style))
            if check and any(f.severity == "warning" for f in t.findings):
                click.get_current_context().exit(ExitStatus.FINDINGS)
            return
        if rules != "torch" or compare_rules:
            if ckpt is not None:
                raise click.UsageError("--rules/--compare replay a log from a fresh start under another library's "
                                       "rules (none of them saves torch's scheduler state): give the log alone")
            _rule_sets(logs if len(logs) > 1 else logs[0], rules, compare_rules, given=given,
                       options=_parse_rule_options(rule_options), min_delta=min_delta, lrs=lrs, log_opts=log_opts,
                       fmt=fmt, style=style, explain=explain, width=width, plot_path=plot_path)
            return
        if rule_options:
            raise click.UsageError("--rule-option is for --rules keras/fastai/optax or --compare")
        source = None
        if ckpt is not None:
            source = api.load_checkpoint(ckpt, scheduler_key, loader=loader)  # type: ignore[arg-type]
            if given:  # only a partial state may take hyperparameters from the command line
                source = source.with_hyperparameters(config, tuple(given))
        trace = api.trace(
            source, (logs if len(logs) > 1 else logs[0]) if logs else None, scheduler=scheduler_key, metric=metric, epoch_column=epoch_column,
            lr_columns=lr_columns or None, lr=lrs or None, config=config if given else None,
            loader=loader,  # type: ignore[arg-type]
            expect=expect, full_search=full_search, run=run,
        )
        if what_ifs:
            from plateau_forensics import whatif

            configs = whatif.expand_what_if(what_ifs, trace.config, include_base=True)
            cmp = whatif.compare(trace, configs)
            out = whatif.render_comparison(cmp, fmt if fmt in whatif.COMPARISON_FORMATS else "table", style=style)
        else:
            out = report.render_chunks(trace, "explain" if explain else fmt,  # type: ignore[arg-type]
                                       width=width or shutil.get_terminal_size((100, 24)).columns, style=style)
            if fmt not in ("csv", "json") or explain:
                out = "".join(out)  # rendered now: a rendering error is reported as one
    except ConfigError as exc:
        raise click.UsageError(" ".join(str(exc).split())) from exc
    except ModuleNotFoundError as exc:  # an optional extra (matplotlib for --plot) is not installed
        raise click.ClickException(str(exc)) from exc
    except RemoteUnavailable as exc:
        raise _Unreachable(" ".join(str(exc).split())) from exc
    except ForensicsError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    if isinstance(out, str):
        click.echo(out)  # the analysis first: a failing output file below must not hide it
    else:  # csv / json, streamed: a long trace's text is never held whole
        from plateau_forensics.progress import bar as progress_bar

        with progress_bar(len(trace), "row", "writing") as bar:
            counting = getattr(bar, "shown", True)
            for piece in out:  # written as it is: no ANSI codes to strip (click.echo would scan every piece)
                sys.stdout.write(piece)
                if counting:
                    bar.update(piece.count("\n"))
        click.echo()
    try:
        if plot_path is not None:
            (cmp.plot if what_ifs else trace.plot)(plot_path)
        if write_state is not None:
            from plateau_forensics.repair import repaired_state
            from plateau_forensics.repair import write_state as write

            state, changes, why = repaired_state(trace)
            write(state, write_state)
            what = "; ".join(changes) if changes else "no key differs from the checkpoint's"
            click.echo(f"wrote {write_state}: {why}; {what}", err=fmt == "json")
    except ModuleNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except (ForensicsError, OSError) as exc:
        text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else str(exc)
        raise click.ClickException(" ".join(text.split())) from exc
    if check and any(f.severity == "warning" for f in trace.findings):
        ctx = click.get_current_context()
        ctx.exit(ExitStatus.FINDINGS)


def _parse_rule_options(items: tuple[str, ...]) -> dict[str, str]:
    """``("accumulation_size=4",)`` -> ``{"accumulation_size": "4"}``; ``KEY`` without ``=VALUE`` is a usage error."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE (the library's own argument name)",
                                     param_hint="--rule-option")
        out[key.strip()] = value.strip()
    return out


def _rule_sets(losses: object, rules: str, compare_rules: str | None, *, given: dict[str, object],
               options: dict[str, str], min_delta: float | None, lrs: tuple[float, ...], log_opts: dict[str, object],
               fmt: str, style: str, explain: bool, width: int | None, plot_path: Path | None) -> None:
    """``--rules keras/optax/fastai`` (one replay under that library's rules) and ``--compare A,B,...``."""
    if compare_rules:
        names = rulesets.parse_names(compare_rules)
        pairs = rulesets.compare_log(names, losses, given=given, options=options, min_delta=min_delta,
                                     lr=lrs or None, **log_opts)
        click.echo(rulesets.render_compare(pairs, fmt="github" if fmt == "markdown" else style))
        return
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # a library's own warning (Keras: unknown mode)
        warnings.simplefilter("always", UserWarning)
        t = rulesets.replay_log(rules, losses, given=given, options=options, min_delta=min_delta, lr=lrs or None,
                                **log_opts)
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    if plot_path is not None and rules != "keras":
        raise click.UsageError(f"--plot draws torch's and Keras's replays; not --rules {rules}")
    cols = width or shutil.get_terminal_size((100, 24)).columns
    click.echo(rulesets.render(t, "explain" if explain else fmt, width=cols, style=style))
    if plot_path is not None:
        from plateau_forensics.plot import plot_trace

        plot_trace(t, plot_path)


def _schedule_command(paths: tuple[str, ...], schedules: tuple[str, ...], *, epochs: int | None,
                      lrs: tuple[float, ...], given: dict[str, object], min_lrs: tuple[float, ...], fmt: str,
                      style: str, width: int | None, plot_path: Path | None, log_opts: dict[str, object]) -> None:
    """``--schedule``: the lr timeline of torch schedulers alone (teaching), or beside a plateau replay of a log."""
    if not schedules:
        raise click.UsageError("--epochs needs --schedule")
    allowed = {"schedules", "epochs", "lrs", "fmt", "style", "width", "plot_path"}
    if paths:
        allowed |= {"metric", "epoch_column", "run", "min_lrs", *HPARAMS}
    extra = _used_options(allowed)
    if extra:
        raise click.UsageError(f"--schedule does not combine with {', '.join(extra)}")
    from plateau_forensics import schedules as sched

    try:
        if plot_path is not None:
            from plateau_forensics.plot import check_plot_path

            check_plot_path(plot_path)
        specs = [sched.parse_schedule(text) for text in schedules]
        lr0 = list(lrs) if lrs else [0.1]
        out = []
        if paths:
            ckpt, logs = _classify(paths)
            if ckpt is not None or epochs is not None:
                raise click.UsageError("--schedule with a log replays the log's epochs beside a fresh "
                                       "ReduceLROnPlateau: give the log alone, without --epochs")
            from plateau_forensics import report
            from plateau_forensics.losses import read_losses
            from plateau_forensics.state import PlateauConfig

            if min_lrs:
                given["min_lr"] = min_lrs[0] if len(min_lrs) == 1 else tuple(min_lrs)
            log = read_losses(logs[0], **{k: v for k, v in log_opts.items() if v is not None})
            trace = sched.replay_composed(log, PlateauConfig(**given), lrs=lr0,  # type: ignore[arg-type]
                                          with_schedulers=specs)
            timeline = trace.timeline
            assert timeline is not None
            if fmt in ("grid", "table", "markdown"):
                out.append(report.render(trace, fmt, width=width or shutil.get_terminal_size((100, 24)).columns,  # type: ignore[arg-type]
                                         style=style))
        else:
            timeline = sched.timeline(specs, epochs or 100, lr0)
        out.append(timeline.render(fmt, width=width or shutil.get_terminal_size((100, 24)).columns, style=style))
        if not lrs and fmt in ("grid", "table", "markdown"):
            out.append("note     no --lr given: the optimizer's lr is 0.1 (repeat --lr per param group)")
        click.echo("\n\n".join(out))
        if plot_path is not None:
            timeline.plot(plot_path)
    except ConfigError as exc:
        raise click.UsageError(" ".join(str(exc).split())) from exc
    except ModuleNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except RemoteUnavailable as exc:
        raise _Unreachable(" ".join(str(exc).split())) from exc
    except (ForensicsError, OSError) as exc:
        text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else str(exc)
        raise click.ClickException(" ".join(text.split())) from exc


def _used_options(allowed: set[str]) -> list[str]:
    """The options given on the command line that are not in ``allowed`` (parameter names), as flags."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    out = []
    for p in ctx.command.params:
        if p.name in allowed or p.name == "paths" or not isinstance(p, click.Option):
            continue
        if ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE:  # type: ignore[arg-type]
            out.append(p.opts[0])
    return out


def _scan_command(folders: tuple[str, ...], *, fmt: str, style: str, check: bool, loader: str,
                  jobs: int | None) -> None:
    """``plateau-trace scan DIR...``: one row per run below the folders; ``--check`` exits 3 on a warning."""
    from plateau_forensics.scan import find_runs, has_warning, render_scan, scan

    extra = _used_options({"fmt", "style", "check", "loader", "jobs"})
    if extra:
        raise click.UsageError(f"scan takes --format, --style, --check, --jobs and --loader, not {', '.join(extra)}")
    if not folders:
        raise click.UsageError("scan needs a folder: plateau-trace scan DIR...")
    skipped: list[dict[str, str]] = []
    try:
        runs = find_runs(*folders, skipped=skipped)
    except RemoteUnavailable as exc:
        raise _Unreachable(" ".join(str(exc).split())) from exc
    except ForensicsError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    from plateau_forensics.progress import bar as progress_bar

    with progress_bar(len(runs), "run") as bar:
        rows = scan(runs, jobs=jobs, loader=loader, progress=lambda n: bar.update(n - bar.n))
    click.echo(render_scan(rows, "table" if fmt == "grid" else fmt, style=style, skipped=skipped))
    if check and any(has_warning(r) for r in rows):
        click.get_current_context().exit(ExitStatus.FINDINGS)


def _sweep_or_fit(paths: tuple[str, ...], *, given: dict[str, object], min_lrs: tuple[float, ...],
                  lrs: tuple[float, ...], sweeps: tuple[str, ...], sort_by: str | None, fit_lr: bool, fmt: str,
                  style: str, plot_path: Path | None, check: bool, log_opts: dict[str, object],
                  scheduler_key: str | None, loader: str) -> None:
    """``--sweep`` (one row per combination, ``--sort``, ``--plot`` a heat map) and ``--fit``."""
    if sort_by and not sweeps:
        raise click.UsageError("--sort needs --sweep")
    if sweeps and fit_lr:
        raise click.UsageError("give either --sweep or --fit")
    allowed = {"sweeps", "sort_by", "fit_lr", "fmt", "style", "plot_path", "lrs", "min_lrs", "metric", "epoch_column",
               "lr_columns", "run", "scheduler_key", "loader", *HPARAMS} | ({"check"} if fit_lr else set())
    extra = _used_options(allowed)
    if extra:
        what = "--fit" if fit_lr else "--sweep"
        raise click.UsageError(f"either {what} or {', '.join(extra)}" if "--what-if" in extra else
                               f"{what} does not combine with {', '.join(extra)}")
    from plateau_forensics.state import PlateauConfig

    try:
        if plot_path is not None:
            from plateau_forensics.plot import check_plot_path

            check_plot_path(plot_path)
        ckpt, logs = _classify(paths)
        if min_lrs:
            given["min_lr"] = min_lrs[0] if len(min_lrs) == 1 else tuple(min_lrs)
        if fit_lr:
            if ckpt is not None:
                raise click.UsageError("--fit explains a log whose checkpoint is lost: give the log alone (a "
                                       "checkpoint saves its hyperparameters)")
            if {"min_lr", "eps"} & set(given):
                raise click.UsageError("--fit infers min_lr and eps from where the lr stops; drop --min-lr/--eps")
            if fmt not in ("grid", "table", "json"):
                raise click.UsageError("--fit prints text (--format grid/table) or --format json")
            from plateau_forensics.fit import fit

            result = fit(_logs(logs, log_opts), lrs=lrs or None, fixed=given)
            click.echo(result.render("json" if fmt == "json" else "text"))
            if check and not result.exact:
                click.get_current_context().exit(ExitStatus.FINDINGS)
            return
        from plateau_forensics.sweep import parse_sweep, sweep

        grid = parse_sweep(sweeps)
        both = sorted(set(grid) & set(given))
        if both:
            raise click.UsageError(f"{', '.join(both)}: given as an option and swept; give one")
        if ckpt is not None:
            from plateau_forensics import api

            if given:
                raise click.UsageError("with a checkpoint the saved hyperparameters are the base: sweep the "
                                       "others with --sweep")
            source = api.trace(ckpt, (logs if len(logs) > 1 else logs[0]) if logs else None,
                               scheduler=scheduler_key, lr=lrs or None, loader=loader,  # type: ignore[arg-type]
                               **log_opts)  # type: ignore[arg-type]
            result_sw = sweep(source, grid, lrs=lrs or None)
        else:
            result_sw = sweep(_logs(logs, log_opts), grid, lrs=lrs or None,
                              base=PlateauConfig(**given))  # type: ignore[arg-type]
        out = result_sw.render({"grid": "table"}.get(fmt, fmt), sort=sort_by, style=style)
    except ConfigError as exc:
        raise click.UsageError(" ".join(str(exc).split())) from exc
    except ModuleNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except RemoteUnavailable as exc:
        raise _Unreachable(" ".join(str(exc).split())) from exc
    except ForensicsError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    click.echo(out)
    if plot_path is not None:
        try:
            result_sw.plot(plot_path)
        except (ConfigError, ModuleNotFoundError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from exc
        except OSError as exc:
            raise click.ClickException(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)) from exc


def _logs(logs: list[str], log_opts: dict[str, object]) -> object:
    """One log, or several written one after another, stitched in order."""
    from plateau_forensics.losses import read_losses, stitch

    opts = {k: v for k, v in log_opts.items() if v is not None}
    if not logs:
        raise click.UsageError("give a loss log")
    return stitch([read_losses(p, **opts) for p in logs])  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    main()
