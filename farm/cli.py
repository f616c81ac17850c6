"""The ``farm`` command. It only parses arguments and prints; the work happens in the packages it calls.

Exit codes (design): 0 every gate passed, 1 a gate failed or is missing, 2 bad input, 3 infrastructure.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from farm import __version__
from farm.cluster import cli as _cluster_cli
from farm.cluster.cli import AgentWaitOpt, CertsOpt, ClusterOpt
from farm.console import LazyConsole, escape, stderr_console, stdout_console
from farm.errors import FarmError, InputError, unnamed

if TYPE_CHECKING:  # the CLI imports heavy modules inside commands, so `farm --help` stays fast
    from rich.table import Table

    from farm.bundle import Bundle
    from farm.gates import Verdict
    from farm.pipeline import RunOutcome
    from farm.plan import Plan
    from farm.sim.fleet import Fleet
    from farm.store import Store

# -h as well as --help everywhere; sub-apps inherit it through click's context
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=True, no_args_is_help=True, context_settings=CONTEXT, rich_markup_mode=None,
    help="codec-farm: decode suites on real devices.",
)  # fmt: skip
bundle_app = typer.Typer(no_args_is_help=True, help="Pack, checksum and verify codec bundles.")
app.add_typer(bundle_app, name="bundle")

# Built on first use (farm/console.py): `farm --help` never pays for importing rich's console.
out = LazyConsole(stdout_console)
err = LazyConsole(stderr_console)


AnchorOpt = Annotated[
    list[str] | None,
    typer.Option("--anchor", help="anchor bundle for BD-rate: PATH or NAME=PATH, repeatable; the first is the "
                 "default (bd_rate.METRIC); replaces the suite's anchors"),
]  # fmt: skip
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory", envvar="FARM_INVENTORY", show_envvar=True,
        help="devices file (default: devices.yaml in the project root, see docs/cli.md)",
    ),
]  # fmt: skip
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="FARM_STORE", show_envvar=True,
        help="results database: a SQLite file (default: .farm/results.db in the project root, see docs/cli.md) "
        "or a lab's postgresql://USER@HOST/DB",
    ),
]  # fmt: skip
RepoOpt = Annotated[Path | None, typer.Option("--repo", help="git repository to tag (default: the current one)")]
SignOpt = Annotated[bool, typer.Option("--sign", help="sign the tag (git tag -s: GPG or SSH, per git config)")]


JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="write it as JSON to FILE; '-' writes to stdout (tables go to stderr)")
]

CsvOpt = Annotated[Path | None, typer.Option("--csv", help="write one row per rate point as CSV ('-': stdout)")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="write the gate verdicts as JUnit XML")]


@contextmanager
def _stdout_for(*documents: Path | None) -> Iterator[None]:
    """With ``--json -`` standard output carries the document alone, so the human output moves to stderr."""
    if not any(d is not None and str(d) == "-" for d in documents):
        yield
        return
    out.file = sys.stderr
    try:
        yield
    finally:
        out._file = None  # back to whatever sys.stdout is then (rich reads it lazily)


def _inventory(path: Path | None) -> Path:
    from farm.config.inventory import default_inventory_path

    return path or default_inventory_path()


def _store_path(store: str | None) -> str:
    """The store named by --store / FARM_STORE or the project's default: a SQLite path or a postgresql:// URL."""
    from farm.project import store_target

    return store or store_target()


def _is_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def _state_dir(store: str) -> Path:
    """Caches live beside a store file (``.farm/`` by default), so one folder holds a farm's state; with a
    PostgreSQL store, which has no folder here, in the project's ``.farm/``."""
    from farm.project import state_dir

    return Path(os.environ.get("FARM_STATE", str(state_dir() if _is_url(store) else Path(store).parent)))


class _StderrHandler(logging.Handler):
    """Logs to whatever sys.stderr is at the time (a test runner swaps it), one plain line per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{record.relativeCreated / 1000:8.3f} {self.format(record)}\n")
        except Exception:
            self.handleError(record)


def _log_devices(verbose: bool) -> None:
    """-v: the transports' DEBUG records (each device command, its exit status and time) go to stderr."""
    logger = logging.getLogger("farm")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        logger.addHandler(_StderrHandler())


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        for problem in exc.problems:
            err.print(f"error: {problem if problem.file else problem.message}", highlight=False, markup=False)
        raise typer.Exit(exc.exit_code) from None
    except FarmError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(exc.exit_code) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except sqlite3.Error as exc:  # the store translates its own; this is a net for any other SQLite use
        err.print(f"error: SQLite failed outside the store: {exc}", highlight=False, markup=False)
        raise typer.Exit(3) from None
    except Exception as exc:
        # an unexpected failure is the farm's problem, not a failed gate: never exit 1 for it
        err.print_exception(show_locals=False)
        err.print(f"error: internal failure: {type(exc).__name__}: {exc}", highlight=False, markup=False)
        raise typer.Exit(3) from None


def _open_store(path: str | None, *, readonly: bool = False, create: bool = False) -> Store:
    """Commands that only read open read-only: they work on a read-only mount and never migrate the file.

    Only ``farm run`` creates a store (``create``): for any other command a missing store is a typo in
    --store or the wrong directory, and an empty new one would show an empty history as if it were true.
    """
    from farm.store import open_store

    where = _store_path(path)
    if not create and not _is_url(where) and where != ":memory:" and not Path(where).exists():
        raise InputError(
            f"no results store at {where}: give --store or FARM_STORE, or run from the project (docs/cli.md); "
            "'farm run' creates one"
        )
    return open_store(where, readonly=readonly)


def _run_id(store: Store, given: str) -> str:
    run_id = store.resolve_run_id(given)
    if run_id is None:
        raise InputError(f"no single run matches {given!r} in {store.where}")
    return str(run_id)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="print only errors and the documents asked for (exit code says the rest)"),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also log each device command with its exit status and timing")
    ] = False,
) -> None:
    out.quiet = quiet  # set every time: one process may run several commands (tests, an embedding tool)
    _log_devices(verbose and not quiet)
    if version:
        out.print(f"codec-farm {__version__}")
        raise typer.Exit(0)


devices_app = typer.Typer(no_args_is_help=False, help="The device inventory: list, check, trust.")
app.add_typer(devices_app, name="devices")


@devices_app.callback(invoke_without_command=True)
def devices(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="connect to each device (exit 3 if any is unreachable)")
    ] = False,
    json_out: JsonOpt = None,
    usbmux: Annotated[
        bool, typer.Option("--usbmux", help="also list every iOS device usbmuxd sees (UDID, model, iOS version)")
    ] = False,
    cluster: ClusterOpt = None,
    cert_dir: CertsOpt = None,
) -> None:
    """List the inventory; with --check, connect to each device and report reachability and properties.

    iOS devices that usbmuxd sees are listed too when the inventory has an iOS device or --usbmux is given.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from farm.config.inventory import load_inventory
    from farm.report.machine import dumps, emit

    if cluster is not None:
        with _errors(), _stdout_for(json_out):
            rows = _cluster_cli.show_devices(cluster, cert_dir, out.get())
            if json_out:
                emit(json_out, dumps({"cluster": cluster, "devices": rows}))
        return
    with _errors(), _stdout_for(json_out):
        inv = load_inventory(_inventory(inventory))
        listed: list[dict[str, Any]] = []
        table = Table(title=f"devices in {_inventory(inventory)}")
        for col in ("id", "platform", "transport", "target", "tags") + (("reachable", "properties") if check else ()):
            table.add_column(col)
        unreachable = 0
        for d in inv.devices:
            row = [d.id, d.platform, d.transport.kind, d.target, ",".join(d.tags)]
            entry: dict[str, Any] = {"id": d.id, "platform": d.platform, "transport": d.transport.kind,
                                     "target": d.target, "tags": list(d.tags), "host": d.host}  # fmt: skip
            if check:
                ok, detail = _check_device(d)
                unreachable += not ok
                row += ["[green]yes[/]" if ok else "[red]no[/]", escape(detail)]
                entry |= {"reachable": ok, "detail": detail}
            table.add_row(*row)
            listed.append(entry)
        out.print(table)
        if json_out:
            emit(json_out, dumps({"inventory": str(_inventory(inventory)), "devices": listed}))
        if usbmux or any(d.platform == "ios" for d in inv.devices):
            _list_usbmux()
        if unreachable:
            raise typer.Exit(3)


def _list_usbmux() -> None:
    """iOS devices on usbmux; a missing ``ios`` extra or usbmuxd is a note, never a failure of the listing."""
    from farm.devices import ios

    try:
        found = ios.discover()
    except FarmError as exc:
        out.print(f"iOS (usbmux): {escape(str(exc))}", highlight=False)
        return
    from rich.table import Table

    table = Table(title="iOS devices on usbmux")
    for col in ("udid", "connection", "model", "iOS", "name"):
        table.add_column(col)
    for d in found:
        table.add_row(d.udid, d.connection, d.model, d.version, escape(d.name or d.error or ""))
    out.print(table)


@devices_app.command("trust")
def devices_trust(
    device_id: Annotated[str, typer.Argument(help="the SSH device whose current host key to record")],
    inventory: InventoryOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask; for scripted lab set-up")] = False,
) -> None:
    """Show an SSH board's host key fingerprint and, on explicit confirmation, record it in its known_hosts."""
    import paramiko

    from farm.config.inventory import SshTransport, load_inventory
    from farm.transports.ssh import fingerprint, known_hosts_name, scan_host_key, trust_host_key

    with _errors():
        inv = load_inventory(_inventory(inventory))
        try:
            device = inv.get(device_id)
        except KeyError:
            raise InputError(f"no device {device_id!r} in {_inventory(inventory)}") from None
        settings = device.transport
        if not isinstance(settings, SshTransport):
            raise InputError(f"device {device_id!r} uses transport {settings.kind!r}; only ssh devices have host keys")
        key = scan_host_key(settings.host, settings.port, settings.connect_timeout_s)
        known = Path(os.path.expanduser(settings.known_hosts))
        name = known_hosts_name(settings.host, settings.port)
        out.print(f"{device_id} ({name}) presents {key.get_name()} {fingerprint(key)}", highlight=False)
        for line in known.read_text(errors="replace").splitlines() if known.is_file() else []:
            fields = line.split()
            if not fields or fields[0].startswith(("#", "@")) or name not in fields[0].split(","):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except (paramiko.SSHException, ValueError, TypeError):
                entry = None
            if entry is not None:
                same = entry.key.asbytes() == key.asbytes()
                tag = " (same key)" if same else " (DIFFERENT)"
                out.print(f"{known} has {entry.key.get_name()} {fingerprint(entry.key)}{tag}", highlight=False)
        if not yes and not typer.confirm(f"Trust this key for {device_id} in {known}?", default=False):
            err.print("not trusted; nothing written")
            raise typer.Exit(1)
        trust_host_key(known, settings.host, settings.port, key)
        out.print(f"recorded {name} in {known}", highlight=False)


@devices_app.command("keygen")
def devices_keygen(
    key: Annotated[Path, typer.Option("--key", help="private key path (the .pub is written beside it)")] = Path(
        "~/.android/adbkey"
    ),
) -> None:
    """Create the RSA key the farm authenticates to Android devices with (mode 0600); never replaces one."""
    from farm.transports.adb import keygen

    with _errors():
        path = Path(os.path.expanduser(str(key)))
        created = keygen(path)
        out.print(f"{'created' if created else 'kept existing'} {path} (public key: {path}.pub)", highlight=False)


def _check_device(device: Any) -> tuple[bool, str]:
    from farm.devices.connect import connect

    try:
        dev = connect(device, _state_dir(_store_path(None)))
        try:
            props = dev.info()
        finally:
            dev.close()
    except FarmError as exc:
        return False, str(exc)
    return True, ", ".join(f"{k}={v}" for k, v in props.items() if k in {"machine", "cpus", "kernel"})


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="suite YAML, e.g. suites/smoke.yaml")],
    bundle: Annotated[Path, typer.Option("--bundle", help="bundle directory or .tar.gz")],
    anchor: AnchorOpt = None,
    devices_sel: Annotated[
        str | None, typer.Option("--devices", help="ids and tag:NAME, comma-separated (default: the suite's)")
    ] = None,
    inventory: InventoryOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    junit: JunitOpt = None,
    pushgateway: Annotated[
        str | None, typer.Option("--pushgateway", help="push the run's results to this Prometheus Pushgateway URL")
    ] = None,
    release: Annotated[
        str | None, typer.Option("--release", help="tag this VERSION if every gate passes (farm release tag)")
    ] = None,
    repo: RepoOpt = None,
    sign: SignOpt = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="run only the jobs this interrupted run lacks, then gate it whole")
    ] = None,
    lease_timeout: Annotated[
        float, typer.Option("--lease-timeout", min=0, max=86400, help="seconds to wait for a device another run holds")
    ] = 600.0,
    cluster: ClusterOpt = None,
    cert_dir: CertsOpt = None,
    agent_wait: AgentWaitOpt = 30.0,
    serial: Annotated[
        bool, typer.Option("--serial", help="encode, then decode, then score: no overlap (debugging; a bench's peer)")
    ] = False,
) -> None:
    """Run SUITE with a bundle on the selected devices and gate it. Ctrl-C stops it (exit 130); --resume finishes it."""
    from farm.plan import load_plan, parse_anchor

    with _errors(), _stdout_for(json_out, csv_out):
        if pushgateway is not None:
            from farm.metrics.push import check_url

            check_url(pushgateway)  # a typo must cost no run
        store_path = _store_path(store)
        state = _state_dir(store_path)
        repo_root = _release_preflight(release, repo, sign)
        anchors, inv = [parse_anchor(a) for a in anchor or ()], _inventory(inventory)
        plan = load_plan(suite, bundle, anchors, inv, devices_sel, state / "cache")
        db = _open_store(store, create=True)
        rid = _run_id(db, resume) if resume is not None else None
        outcome = _execute(plan, db, state, rid, lease_timeout, (cluster, cert_dir, agent_wait), serial)
        code = _print_outcome(db, outcome, plan.suite.name, _Outputs(json_out, csv_out, junit))
        code, pushed = _push(store_path, outcome.run_id, pushgateway, code)
        _say_verdict(outcome, code, pushed)
        if release is not None and repo_root is not None:
            if code != 0:
                err.print(f"release {release} not tagged: the run did not pass", highlight=False, markup=False)
            else:
                _tag(db, outcome.run_id, release, repo_root, plan.bundle, sign, state)
    raise typer.Exit(code)


def _execute(
    plan: Plan, db: Store, state: Path, rid: str | None, lease_timeout: float,
    cluster: tuple[str | None, Path | None, float], serial: bool = False,
) -> RunOutcome:  # fmt: skip
    """The run itself, on this host's threads or (``--cluster``) on the cluster's agents, with the live view."""
    from farm.interrupt import stop_on_signals
    from farm.pipeline import RunOptions, execute
    from farm.progress import LiveView
    from farm.session.cancel import Cancel

    view = LiveView(out.get(), [d.id for d in plan.devices])
    cancel = Cancel()
    with _cluster_cli.executor(*cluster) as executor:
        opts = RunOptions(
            state, cancel, [view], view.log, rid, lease_timeout, executor, pipelined=not serial, lanes=view.lane
        )
        with stop_on_signals(cancel), view:
            return execute(plan, db, opts)


class _Outputs(NamedTuple):
    json: Path | None
    csv: Path | None
    junit: Path | None


def _write_outputs(db: Store, run_id: str, suite_name: str, verdicts: list[Verdict], files: _Outputs) -> None:
    from farm.report import bd_warnings, write_csv, write_json, write_junit

    if files.json:
        write_json(files.json, db, run_id, verdicts)
    if files.csv:
        write_csv(files.csv, db, run_id)
    if files.junit:
        write_junit(files.junit, run_id, suite_name, verdicts, db, bd_warnings(db, run_id))


def _print_outcome(db: Store, outcome: RunOutcome, suite_name: str, files: _Outputs) -> int:
    from farm.report import agreement_table, bd_warnings, results_table, verdict_table

    out.print(results_table(db, outcome.run_id))
    if (agreement := agreement_table(db, outcome.run_id)) is not None:
        out.print(agreement)
    out.print(verdict_table(outcome.verdicts, f"gates of run {outcome.run_id}", bd_warnings(db, outcome.run_id)))
    s = outcome.summary
    out.print(
        f"encodes: {s['encodes']} new, {s['encodes_reused']} reused from cache · pushed "
        f"{s['pushed_bytes']} bytes in {s['pushed_files']} files ({s['staged_files_reused']} already on device)"
        f" · pulled {s['pulls']} distinct outputs ({s['pulled_bytes']} bytes)",
        highlight=False,
    )
    for device_id, why in s["devices_failed"].items():
        err.print(f"device {device_id} failed: {unnamed(device_id, why)}", highlight=False, markup=False, style="red")
    _write_outputs(db, outcome.run_id, suite_name, list(outcome.verdicts), files)
    return outcome.exit_code


def _push(store_path: str, run_id: str, pushgateway: str | None, code: int) -> tuple[int, str]:
    """Push when asked; CI asked for the metrics, so losing them is an infrastructure failure (exit 3)."""
    if pushgateway is None:
        return code, ""
    from farm.metrics.push import push_run

    try:
        key = push_run(store_path, run_id, pushgateway)
    except FarmError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return 3, ", but its results were NOT pushed"
    return code, f", pushed to {pushgateway} ({', '.join(f'{k}={v}' for k, v in key.items())})"


def _say_verdict(outcome: RunOutcome, code: int, pushed: str) -> None:
    words = {0: "[green]PASSED[/]", 1: "[red]FAILED[/]", 3: "[red]INCOMPLETE[/]", 130: "[yellow]INTERRUPTED[/]"}
    word = words.get(code, "[red]FAILED[/]")
    out.print(f"run {outcome.run_id}: {word}{escape(pushed)} (exit {code})", highlight=False)
    if outcome.status == "interrupted":
        out.print(f"finished jobs are kept and scored; complete it with: farm run ... --resume {outcome.run_id}",
                  highlight=False, markup=False)  # fmt: skip
    for v in outcome.verdicts:
        if v.verdict != "pass":  # an exempt line is said too: the board's speed was not judged
            err.print(f"gate {v.verdict}: {v.label}: {v.detail}", highlight=False, markup=False)


@app.command()
def gate(
    run_id: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
    store: StoreOpt = None,
    junit: JunitOpt = None,
) -> None:
    """Re-evaluate a stored run's gates from the store (appends a new evaluation; never rewrites)."""
    from farm.config.suite import Suite
    from farm.gates import StoreBaselines, evaluate, load_view, passing
    from farm.report import bd_warnings, verdict_table

    with _errors():
        db = _open_store(store)
        rid = _run_id(db, run_id)
        row = db.run(rid)
        assert row is not None  # _run_id just found it, and runs are never deleted
        suite = Suite.model_validate_json(row["suite_json"])
        verdicts = evaluate(suite.gates, load_view(db, rid), StoreBaselines(db))
        db.add_gate_evaluation(rid, [v.as_dict() for v in verdicts])
        out.print(verdict_table(verdicts, f"gates of run {rid}", bd_warnings(db, rid)))
        _write_outputs(db, rid, suite.name, verdicts, _Outputs(None, None, junit))
        code = 0 if all(passing(v.verdict) for v in verdicts) else 1
    raise typer.Exit(code)


@app.command()
def runs(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many runs to list")] = 20,
    json_out: JsonOpt = None,
) -> None:
    """The run history, newest first."""
    import time

    from rich.table import Table

    from farm.gates.verdict import passing
    from farm.report.machine import dumps, emit
    from farm.report.tables import not_complete_because

    with _errors(), _stdout_for(json_out):
        db = _open_store(store, readonly=True)
        history = []
        table = Table(title=f"runs in {db.where}")
        for col in ("run", "started (UTC)", "suite", "bundle", "status", "gates", "why not complete"):
            table.add_column(col)
        for r in db.runs(limit):
            verdicts = db.gate_verdicts(r["id"])
            passed = sum(1 for v in verdicts if passing(v["verdict"]))
            gates = f"{passed}/{len(verdicts)} pass" if verdicts else "-"
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started_at"]))
            why = not_complete_because(r)
            table.add_row(r["id"], started, r["suite_name"], f"{r['bundle_name']}@{r['bundle_version']}",
                          r["status"], gates, why or "")  # fmt: skip
            history.append({
                "id": r["id"], "started_at": r["started_at"], "finished_at": r["finished_at"],
                "suite": r["suite_name"], "bundle": r["bundle_name"], "bundle_version": r["bundle_version"],
                "anchor": r["anchor_name"], "status": r["status"], "gates": len(verdicts), "gates_passed": passed,
                "passed": bool(verdicts) and passed == len(verdicts), "why": why,
            })  # fmt: skip
        out.print(table)
        if json_out:
            emit(json_out, dumps({"store": db.where, "runs": history}))


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
    store: StoreOpt = None,
    json_out: JsonOpt = None,
    csv_out: CsvOpt = None,
    junit: JunitOpt = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="also write a self-contained HTML report (works offline)")
    ] = None,
) -> None:
    """Print a stored run's results and its latest gate verdicts."""
    from farm.report import agreement_table, bd_warnings, results_table, verdict_table, verdicts_from_store
    from farm.report.tables import status_line

    with _errors(), _stdout_for(json_out, csv_out):
        db = _open_store(store, readonly=True)
        rid = _run_id(db, run_id)
        verdicts = verdicts_from_store(db, rid)
        out.print(results_table(db, rid))
        if (status := status_line(db, rid)) is not None:
            out.print(status, highlight=False, markup=False)
        if len(attempts := db.attempts(rid)) > 1:
            out.print(f"run {rid} took {len(attempts)} attempts (resumed {len(attempts) - 1}x)", highlight=False)
        if (agreement := agreement_table(db, rid)) is not None:
            out.print(agreement)
        out.print(verdict_table(verdicts, f"gates of run {rid}", bd_warnings(db, rid)))
        row = db.run(rid)
        _write_outputs(db, rid, row["suite_name"] if row else "", verdicts, _Outputs(json_out, csv_out, junit))
        if html_out:
            from farm.report.html import write_html

            size = write_html(html_out, db, rid, verdicts)
            err.print(f"wrote {html_out} ({size / 1024:.0f} KiB)", highlight=False, markup=False)


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="the earlier run, A (a unique prefix is enough)")],
    run_b: Annotated[str, typer.Argument(help="the run compared against A, B")],
    store: StoreOpt = None,
    json_out: JsonOpt = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="also write a self-contained HTML page")] = None,
) -> None:
    """What changed from run A to run B per device x sequence x metric, decided as baseline gates decide."""
    from farm.report import compare as cmp
    from farm.report.machine import dumps, emit

    with _errors(), _stdout_for(json_out):
        db = _open_store(store, readonly=True)
        result = cmp.compare_runs(db, _run_id(db, run_a), _run_id(db, run_b))
        out.print(_compare_table(cmp.CHANGE_HEAD, [cmp.change_cells(c) for c in result.changes],
                                 f"run {result.run_b} (B) against run {result.run_a} (A)"))  # fmt: skip
        out.print(_compare_table(cmp.BD_HEAD, [cmp.bd_cells(x) for x in result.bd_rates],
                                 "BD-rate of B against A (negative = B needs fewer bits)"))  # fmt: skip
        out.print(f"changes: {cmp.summary(result.changes)}", highlight=False, markup=False)
        if json_out:
            emit(json_out, dumps(result.as_dict()))
        if html_out:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(cmp.render_html(db, result))


def _compare_table(head: Sequence[str], rows: list[Sequence[str]], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in head:
        table.add_column(col, overflow="fold")
    for cells in rows:
        table.add_row(*(escape(cell) for cell in cells))
    return table


@bundle_app.command("sums")
def bundle_sums(directory: Annotated[Path, typer.Argument(help="bundle directory")]) -> None:
    """Write SHA256SUMS over every file of a bundle directory."""
    from farm.bundle import write_sums

    with _errors():
        out.print(f"wrote {write_sums(directory)}")


@bundle_app.command("pack")
def bundle_pack(
    directory: Annotated[Path, typer.Argument(help="bundle directory")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the .tar.gz to write")],
) -> None:
    """Verify a bundle directory and pack it into a reproducible .tar.gz."""
    from farm.bundle import pack

    with _errors():
        b = pack(directory, output)
        out.print(f"packed {b.label} -> {output} (digest {b.digest})")


@bundle_app.command("verify")
def bundle_verify(path: Annotated[Path, typer.Argument(help="bundle directory or .tar.gz")]) -> None:
    """Check a bundle's manifest and checksums (and, for archives, that every member is safe to extract)."""
    import tempfile

    from farm.bundle import open_bundle

    with _errors(), tempfile.TemporaryDirectory() as tmp:
        b = open_bundle(path, Path(tmp))
        targets = ", ".join(sorted(b.manifest.targets))
        out.print(f"ok: {b.label} codec={b.manifest.codec} targets={targets} digest={b.digest}")


@app.command()
def serve(
    bind: Annotated[str, typer.Option("--bind", help="address to listen on (0.0.0.0 opens it to the network)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0 picks a free one)")] = 9464,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=1, max=3600, help="seconds between device health probes")
    ] = 30.0,
    inventory: InventoryOpt = None,
    store: StoreOpt = None,
) -> None:
    """Serve the stored results and live device health to Prometheus until stopped (Ctrl-C or SIGTERM)."""
    import signal
    import threading

    from farm.config.inventory import load_inventory
    from farm.metrics.server import start
    from farm.store.postgres import redact

    with _errors():
        store_path = _store_path(store)
        devices = load_inventory(_inventory(inventory)).devices
        stop = threading.Event()
        exporter = start(
            store_path, devices, _state_dir(store_path), bind=bind, port=port, period_s=poll_interval,
            log=lambda line: err.print(f"health: {line}", highlight=False, markup=False),
        )  # fmt: skip
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        out.print(
            f"serving {exporter.url} (store {redact(store_path)}; {len(devices)} device(s) probed every "
            f"{poll_interval:g}s)",
            highlight=False,
        )
        sys.stdout.flush()  # whoever started us (a supervisor, a test) learns the address now, not at exit
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            exporter.stop()


store_app = typer.Typer(no_args_is_help=True, help="The results store: upgrade it, copy one into another.")
app.add_typer(store_app, name="store")


@store_app.command("migrate")
def store_migrate(store: StoreOpt = None) -> None:
    """Bring the store to this farm's schema (adding only); a lab's PostgreSQL store is upgraded only by this."""
    from farm.store import SCHEMA_VERSION, open_store

    with _errors():
        db = open_store(_store_path(store), migrate=True)
        out.print(f"{db.where} is at store schema {SCHEMA_VERSION}", highlight=False)
        db.close()


@store_app.command("copy")
def store_copy(
    source: Annotated[Path, typer.Argument(help="the SQLite store to copy from (e.g. .farm/results.db)")],
    dest: Annotated[str, typer.Argument(help="the store to copy into, e.g. postgresql://farm@db.lab/farm")],
) -> None:
    """Copy every run (jobs, measurements, gates, releases...) into DEST, each verified by its results digest."""
    from farm.store import open_store
    from farm.store.copy import copy_store

    with _errors():
        if not source.exists():
            raise InputError(f"no results store at {source}")
        src, to = open_store(source, readonly=True), open_store(dest)
        copied = copy_store(src, to)
        for run in copied:
            state = f"{run.rows} rows copied" if run.rows else "already there, identical"
            out.print(f"{run.run_id}: {state} (results digest {run.digest[:16]})", highlight=False)
        out.print(f"{len(copied)} run(s) of {source} are in {to.where}, verified", highlight=False)


release_app = typer.Typer(no_args_is_help=True, help="Release tags bound to a run that passed every gate.")
app.add_typer(release_app, name="release")


def _release_preflight(version: str | None, repo: Path | None, sign: bool) -> Path | None:
    """--release problems (bad tag name, no repository, tag exists) are input errors found before the run."""
    from farm.release.tag import preflight

    if version is None:
        if repo is not None or sign:
            raise InputError("--repo and --sign only apply with --release VERSION")
        return None
    return preflight(version, repo or Path.cwd())


def _tag(db: Store, run_id: str, version: str, repo: Path, bundle: Bundle, sign: bool, state: Path,
         manifest: Path | None = None) -> None:  # fmt: skip
    from farm.release.tag import tag_release

    path = manifest or state / "releases" / f"{version.replace('/', '_')}.json"
    done = tag_release(db, run_id, version, repo=repo, bundle=bundle, sign=sign, manifest_out=path)
    gates = len(done.manifest["gates"]["verdicts"])
    out.print(
        f"tagged {done.tag} at {done.commit[:12]} in {repo}: {done.manifest['bundle']['name']}@"
        f"{done.manifest['bundle']['version']} (digest {done.manifest['bundle']['digest'][:16]}), run {run_id}, "
        f"{gates} gate verdicts passed; manifest {done.manifest_path}",
        highlight=False,
    )


def _run_bundle(db: Store, run_id: str, given: Path | None, state: Path) -> Bundle:
    """The bundle to check a release against: the one given, else the one the run recorded."""
    from farm.bundle import open_bundle
    from farm.release.manifest import recorded_bundle

    path = given or recorded_bundle(db, run_id)
    if path is None:
        raise InputError(f"run {run_id} does not record where its bundle was: give --bundle")
    if given is None and not path.exists():
        raise InputError(f"run {run_id}'s bundle is no longer at {path}: give --bundle")
    return open_bundle(path, state / "cache")


@release_app.command("tag")
def release_tag(
    version: Annotated[str, typer.Argument(help="the release version, used as the tag name (e.g. v2.3.0)")],
    run_id: Annotated[str, typer.Option("--run", help="the run that passed (a unique prefix is enough)")],
    repo: RepoOpt = None,
    sign: SignOpt = False,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="the bundle being released (default: where the run found it)")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="JSON manifest to write (default .farm/releases/VERSION.json)")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Tag VERSION on the repository's HEAD, only if the run is complete, passed every gate and is this bundle.

    Refusals exit 1 and name every gate that failed, is missing or is inconclusive.
    """
    with _errors():
        state = _state_dir(_store_path(store))
        root = _release_preflight(version, repo, sign)
        assert root is not None
        db = _open_store(store)
        rid = _run_id(db, run_id)
        _tag(db, rid, version, root, _run_bundle(db, rid, bundle, state), sign, state, manifest)


@release_app.command("verify")
def release_verify(
    tag: Annotated[str, typer.Argument(help="a tag made by 'farm release tag'")],
    repo: Annotated[
        Path | None, typer.Option("--repo", help="git repository that holds the tag (default: the current one)")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="the released bundle (default: where the run found it)")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Check a release tag's manifest against the store and the bundle; exit 1 naming every difference."""
    from farm.errors import Refused
    from farm.release.verify import verify_release

    with _errors():
        state = _state_dir(_store_path(store))
        db = _open_store(store)
        result = verify_release(db, repo or Path.cwd(), tag, lambda rid: _run_bundle(db, rid, bundle, state))
        if result.problems:
            raise Refused(f"release {tag} does not verify:", result.problems)
        b = result.manifest["bundle"]
        out.print(
            f"ok: {tag} is {b['name']}@{b['version']} (digest {b['digest'][:16]}), run {result.manifest['run']['id']}; "
            "stored results, "
            f"{len(result.manifest['gates']['verdicts'])} gate verdicts and the bundle match; {result.signature}",
            highlight=False,
        )


sim_app = typer.Typer(no_args_is_help=True, help="Virtual devices for development and tests (simulated sensors).")
app.add_typer(sim_app, name="sim")


def _sim_notes(fleet: Fleet) -> str:
    """What is not real about the devices just started (printed with the inventory's path)."""
    notes = []
    if fleet.boards or fleet.phones:
        notes.append("Power, battery and temperature of the SSH boards and phones are SIMULATED by a load model "
                     "(docs/sim-boards.md, docs/android.md).")  # fmt: skip
    if fleet.qemu_boards:
        notes.append("The QEMU boards' CPU is EMULATED (fps is not a hardware measurement) and they have no "
                     "power meter; `local` is listed for --devices local,qemu-1 (docs/qemu-boards.md).")  # fmt: skip
    return " ".join(notes)


def _sigterm_interrupts() -> None:
    """SIGTERM stops `farm sim up` like Ctrl-C: devices half-started (a booting qemu) are stopped, not leaked."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


@sim_app.command("up")
def sim_up(
    ssh: Annotated[
        int | None, typer.Option("--ssh", min=0, help="virtual Linux boards (real OpenSSH sshd on loopback)")
    ] = None,
    adb: Annotated[int, typer.Option("--adb", min=0, help="emulated Android phones (the farm's ADB emulator)")] = 0,
    qemu: Annotated[
        int, typer.Option("--qemu", min=0, help="emulated Debian arm64 boards (qemu-system-aarch64, TCG)")
    ] = 0,
    out_file: Annotated[Path | None, typer.Option("--out", help="devices file to write")] = None,
) -> None:
    """Start virtual devices and write an inventory for them (default .farm/sim/devices.yaml).

    With none of --ssh, --adb and --qemu, two SSH boards are started. The first --qemu builds the boards'
    disk image (minutes; cached under ~/.cache/codec-farm/qemu, see docs/qemu-boards.md).
    """
    from farm.sim.fleet import DEFAULT_STATE_DIR, start_fleet

    _sigterm_interrupts()
    with _errors():
        boards = ssh if ssh is not None else (0 if adb or qemu else 2)
        if boards + adb + qemu < 1:
            raise InputError("nothing to start: give --ssh N, --adb N and/or --qemu N with N >= 1")
        fleet = start_fleet(boards, DEFAULT_STATE_DIR, phones=adb, qemu=qemu, inventory=out_file)
        for board in fleet.boards:
            out.print(f"{board.name}: ssh {board.user}@{board.host} -p {board.port}", highlight=False)
        for vm in fleet.qemu_boards:
            boot = f"{vm.boot_s:.0f}s" if vm.boot_s is not None else "?"
            out.print(f"{vm.name}: ssh root@{vm.host} -p {vm.port}  (aarch64, EMULATED; booted in {boot})",
                      highlight=False)  # fmt: skip
        for phone in fleet.phones:
            out.print(f"{phone.name}: adb connect {phone.address}  (root {phone.root})", highlight=False)
        out.print(
            f"wrote {fleet.inventory_path}. {_sim_notes(fleet)}\n"
            f"try: farm run suites/{'smoke-cross-isa' if fleet.qemu_boards else 'smoke'}.yaml "
            "--bundle examples/bundles/av1-svt --anchor examples/bundles/hevc-x265 "
            f"--inventory {fleet.inventory_path}",
            highlight=False,
        )


@sim_app.command("image")
def sim_image() -> None:
    """Build (or find in the cache) the QEMU boards' Debian arm64 image and their ONNX Runtime disk."""
    from farm.sim.qemu.image import ensure_image
    from farm.sim.qemu.runtime import ensure_runtime

    with _errors():
        image = ensure_image(say=lambda line: out.print(line, highlight=False))
        took = f"built in {image.build_s:.0f}s" if image.build_s is not None else "cached"
        out.print(f"{image.dir} ({took}, recipe {image.digest})", highlight=False)
        runtime = ensure_runtime(say=lambda line: out.print(line, highlight=False))
        took = f"built in {runtime.build_s:.0f}s" if runtime.build_s is not None else "cached"
        out.print(f"{runtime.path} ({took}, {' '.join(runtime.packages)})", highlight=False)


@sim_app.command("down")
def sim_down() -> None:
    """Stop every virtual device started by 'farm sim up' (no process of them is left)."""
    from farm.sim.fleet import DEFAULT_STATE_DIR, stop_fleet

    with _errors():
        stopped = stop_fleet(DEFAULT_STATE_DIR)
        out.print(f"stopped {', '.join(stopped)}" if stopped else "no virtual devices were running")


_cluster_cli.register(app, _errors, out)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
