"""Run folders: names, layout and the status file every writer and reader shares.

A run folder `checkpoints/<run>/` holds
    config.json        what was asked, including the exact command
    status.json        state, progress, error (atomic writes)
    metrics.jsonl      one JSON record per event (losses, learning rates, Ω, per-exit dev scores)
    cache.npz          the dev-set ExitCache (see core.engine.cache)
    model.safetensors  weights (optional)
    train.log          stdout/stderr of a background job (optional)

One writer per run folder: a process writes <run> (and its staging sibling `.<run>.replacing`) only
while it holds the run's claim (`RunClaim`: an flock on <root>/.<run>.lock, which the kernel drops
however the process ends). Claiming removes what a killed writer left behind (`leftovers`), and a run
whose status says running while its process is gone reads as `died` (`live_status`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from core.runs.io import TMP_SUFFIX, atomic_write_json, read_json, read_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]   # the checkout: core/runs/folders.py -> ../../
DEFAULT_ROOT = REPO_ROOT / "checkpoints"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
CACHE_FILE = "cache.npz"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "train.log"
JOB_FILE = "job.json"
UPLOADS_DIR = "uploads"
LOCK_FILE = ".jobs.lock"          # under the checkpoint root: the job manager's lock, also held by a swap
REPLACING_SUFFIX = ".replacing"   # <root>/.<run>.replacing: a replacement of <run> being trained
BACKUP_SUFFIX = ".old"            # <root>/.<run>.old: the old run for the moment a swap takes
CLAIM_SUFFIX = ".lock"            # <root>/.<run>.lock: flocked by the one process writing <run>
JOB_ENV = "EEL_JOB_FOLDER"        # set by core.runs.jobs for the process it starts: that job's own folder
# files a job manager writes into a fresh run folder before the training process starts: a folder
# holding only these (and dotfiles) is not a run yet
_JOB_ONLY = {JOB_FILE, STATUS_FILE, LOG_FILE, UPLOADS_DIR}

STATES = ("queued", "running", "done", "failed", "cancelled")
DIED = "died"  # what readers show for a running status whose process is gone (never written)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """Return `name` if it is a safe run-folder name; else raise ValueError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid run name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, with no path separators and no '..'"
        )
    return name


def list_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run folders under `root` (any folder with a config, status or cache file), sorted by name."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and any((p / f).exists() for f in (CONFIG_FILE, STATUS_FILE, CACHE_FILE))
    )


def write_status(folder: str | os.PathLike, state: str, **fields) -> dict:
    """Atomically replace status.json with `state` plus `fields`, keeping earlier fields not given."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; valid: {', '.join(STATES)}")
    path = Path(folder) / STATUS_FILE
    try:
        status = read_status(folder) or {}
    except ValueError:
        status = {}
    status.update(fields)
    status["state"] = state
    status["updated"] = time.time()
    atomic_write_json(path, status)
    return status


def read_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object: ValueError naming the file when it is corrupt or holds
    anything else (a list, a number, a string)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{...}}, found a {type(data).__name__}; delete "
                         "or repair the file")
    return data


def add_warnings(folder: str | os.PathLike, warnings: list[str]) -> list[str]:
    """Append plain-sentence warnings to status.json's `warnings` (kept in order, no repeats; other
    writers' warnings stay). Returns the full list."""
    try:
        status = read_status(folder) or {}
    except ValueError:
        status = {}
    current = status.get("warnings")
    current = [str(w) for w in current] if isinstance(current, list) else []
    merged = current + [str(w) for w in warnings if str(w) not in current]
    write_status(folder, status.get("state") if status.get("state") in STATES else "running", warnings=merged)
    return merged


def run_warnings(status: dict | None) -> list[str]:
    """The `warnings` of a status dict as a list of strings (empty when absent or malformed)."""
    found = (status or {}).get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def read_status(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / STATUS_FILE
    return read_object(path) if path.exists() else None


def read_config(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / CONFIG_FILE
    return read_object(path) if path.exists() else None


def read_metrics(folder: str | os.PathLike, kind: str | None = None, *, unreadable_ok: bool = False) -> list[dict]:
    """The records of a run's metrics.jsonl ([] when it has none), only those of `kind` when given. A
    corrupt line raises ValueError naming the file, unless `unreadable_ok` (a live panel polling a run
    being written), which gives [] for an unreadable file instead."""
    try:
        records = read_jsonl(Path(folder) / METRICS_FILE)
    except (ValueError, OSError):
        if not unreadable_ok:
            raise
        return []
    return records if kind is None else [r for r in records if r.get("kind") == kind]


# ---- replacing a run without losing it ---------------------------------------------------------------
def holds_run(folder: str | os.PathLike) -> bool:
    """True when `folder` holds results of a run (anything beyond what a job manager writes before the
    training process starts: job.json, status.json, train.log, uploads/)."""
    folder = Path(folder)
    try:
        names = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return folder.exists()
    return any(n not in _JOB_ONLY and not n.startswith(".") for n in names)


def staging_folder(folder: str | os.PathLike) -> Path:
    """Where a replacement of run `folder` trains: the hidden sibling <root>/.<run>.replacing."""
    folder = Path(folder)
    return folder.parent / f".{check_run_name(folder.name)}{REPLACING_SUFFIX}"


def replaced_name(staging: str | os.PathLike) -> str | None:
    """The run a staging folder replaces (`.<run>.replacing` -> `<run>`), else None."""
    name = Path(staging).name
    if name.startswith(".") and name.endswith(REPLACING_SUFFIX):
        inner = name[1:-len(REPLACING_SUFFIX)]
        try:
            return check_run_name(inner)
        except ValueError:
            return None
    return None


@contextlib.contextmanager
def root_lock(root: str | os.PathLike):
    """An exclusive flock on <root>/.jobs.lock (the lock core.runs.jobs holds while it changes job state)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def swap_in(staging: str | os.PathLike, folder: str | os.PathLike, *, lock: bool = True) -> None:
    """Replace run `folder` by the finished run in `staging`: the old folder is renamed to a hidden
    backup, the new one renamed in, then the backup deleted. Two renames under the root's lock, so a
    reader sees the old run or the new one, and a job manager never acts on a half-moved folder."""
    staging, folder = Path(staging), Path(folder)
    backup = backup_folder(folder)
    ctx = root_lock(folder.parent) if lock else contextlib.nullcontext()
    with ctx:
        if backup.exists():
            shutil.rmtree(backup)
        had_old = folder.exists()
        if had_old:
            os.rename(folder, backup)
        try:
            os.rename(staging, folder)
        except OSError:
            if had_old:
                os.rename(backup, folder)
            raise
    shutil.rmtree(backup, ignore_errors=True)


def backup_folder(folder: str | os.PathLike) -> Path:
    """Where swap_in keeps the old run for a moment: <root>/.<run>.old."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{BACKUP_SUFFIX}"


# ---- one writer per run folder -------------------------------------------------------------------------
class ClaimRefused(ValueError):
    """Another process writes the run folder, or the app's Train queue holds it (`pid` when known)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


_HELD: dict[str, list] = {}  # claim file -> [fd, depth]: the claims this process holds
_HELD_LOCK = threading.Lock()


def claim_file(folder: str | os.PathLike) -> Path:
    """The lock file of run `folder`'s claim: <root>/.<run>.lock (covers the staging sibling too)."""
    folder = Path(folder)
    return folder.parent / f".{check_run_name(folder.name)}{CLAIM_SUFFIX}"


def _claim_pid(fd: int) -> int:
    """The pid a claim's holder wrote into its lock file (0 when not written yet)."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def claim_holder(folder: str | os.PathLike) -> int | None:
    """The pid of the process holding run `folder`'s claim (0 while it has not written its pid yet; this
    process's own pid when it holds it), else None. Writes nothing."""
    path = claim_file(folder)
    with _HELD_LOCK:
        if os.path.abspath(path) in _HELD:
            return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _claim_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refusal(folder: str | os.PathLike, pid: int | None) -> str:
    """The sentence refusing a second writer of run `folder`."""
    who = f"another process (pid {pid})" if pid else "another process (its pid is not written yet)"
    return (f"run folder {folder} is being written by {who}; wait for it to finish (or stop it), or choose "
            "another --out")


def process_alive(pid: int, started: float | None = None, folder: str | os.PathLike | None = None) -> bool:
    """True while process `pid` runs (not a zombie); with `started` (its create time) a reused pid is
    dead, unless its command line names run `folder` (a stepped clock moves create times)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None and abs(proc.create_time() - float(started)) > 1.0:
            return folder is not None and any(Path(folder).name in a for a in proc.cmdline())
        return True
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, TypeError, ValueError):
        return True


def writer_fields() -> dict:
    """What a writer records in status.json so readers can tell when it died (writer_gone)."""
    return {"pid": os.getpid(), "pid_started": process_started(), "host": socket.gethostname()}


def process_started(pid: int | None = None) -> float | None:
    """The create time of process `pid` (default: this one), as process_alive compares it."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def active_job(folder: Path) -> str | None:
    """When `folder` holds a job of the app's Train queue that is queued or still running: what it is."""
    try:
        job = read_object(folder / JOB_FILE)
        status = read_status(folder) or {}
    except (FileNotFoundError, ValueError, OSError):
        return None
    state, pid = status.get("state"), job.get("pid")
    if job.get("ended") is not None or state not in ("queued", "running"):
        return None
    if pid is None:
        return "queued in the app's Train queue" if state == "queued" else "being started by the app's Train queue"
    if isinstance(pid, int) and process_alive(pid, job.get("create_time"), folder):
        return f"being trained by the app's Train queue (pid {pid})"
    return None


def own_job(folder: str | os.PathLike) -> bool:
    """True in the process a job manager started for the job of `folder` (core.runs.folders.JOB_ENV)."""
    mine = os.environ.get(JOB_ENV)
    return bool(mine) and os.path.abspath(mine) == os.path.abspath(folder)


def foreign_job(folder: str | os.PathLike) -> str | None:
    """When run `folder` (or its staging sibling) holds a queued or running job of the app's Train queue
    that is not this process: the sentence refusing to write it."""
    folder = Path(folder)
    for where in (folder, staging_folder(folder)):
        job = None if own_job(where) else active_job(where)
        if job:
            return (f"run {folder.name!r} is {job}; cancel it on the Train page or wait for it, or choose "
                    "another --out")
    return None


def check_unclaimed(folder: str | os.PathLike) -> None:
    """ClaimRefused when another process holds run `folder`'s claim or a job of the app's queue holds the
    folder: what RunClaim.acquire would refuse, asked before any work (writes nothing)."""
    holder = claim_holder(folder)
    if holder is not None and holder != os.getpid():
        raise ClaimRefused(refusal(folder, holder), holder)
    job = foreign_job(folder)
    if job:
        raise ClaimRefused(job)


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def leftovers(folder: str | os.PathLike) -> list[Path]:
    """What a writer killed part-way leaves of run `folder`: partial files of atomic writes
    (`.<file>.<random>.tmp`) in it or its staging sibling, the staging sibling of a command-line
    replacement that never finished (a job's staging folder, with job.json, is the job manager's), and a
    swap's backup `.<run>.old`. Only a claim's holder may take them for leftovers (`clean_leftovers`)."""
    folder = Path(folder)
    staging = staging_folder(folder)
    found = []
    for where in (folder, staging):
        if where == staging and where.is_dir() and not (where / JOB_FILE).exists():
            found.append(where)
            continue
        try:
            found += sorted(p for p in where.iterdir() if _is_partial(p.name) and p.is_file())
        except (FileNotFoundError, NotADirectoryError):
            pass
    if backup_folder(folder).is_dir():
        found.append(backup_folder(folder))
    return found


def clean_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove `leftovers(folder)` (call only while holding the run's claim). A backup whose run is missing
    (a swap killed between its two renames) is put back: the replacement had not finished."""
    folder = Path(folder)
    removed = []
    for path in leftovers(folder):
        if path == backup_folder(folder) and not folder.exists():
            os.rename(path, folder)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class RunClaim:
    """This process as the one writer of run `folder` and its staging sibling: an exclusive flock on
    <root>/.<run>.lock holding the holder's pid, taken by `acquire()` (non-blocking: ClaimRefused naming
    the other process) and dropped by `release()` or by the process's end, however it ends. Re-entrant
    within a process (core.app.train_form claims, then core.train inside it)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = claim_file(self.folder)
        self._key = os.path.abspath(self.path)
        self.held = False
        self.removed: list[Path] = []  # the leftovers the last acquire() removed

    def acquire(self, *, root_locked: bool = False, wait: float = 0.2) -> list[Path]:
        """Take the claim (under the root's lock unless the caller holds it, so a job manager never acts
        between the two). Refused while another process holds it, or while the folder (or its staging
        sibling) holds a queued or running job of the app that is not this process. Returns the
        leftovers it removed."""
        if self.held:
            return []
        with _HELD_LOCK:
            if self._key in _HELD:
                _HELD[self._key][1] += 1
                self.held = True
                return []
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.nullcontext() if root_locked else root_lock(self.folder.parent):
            fd = self._lock(wait)
            try:
                job = foreign_job(self.folder)
                if job:
                    raise ClaimRefused(job)
                removed = clean_leftovers(self.folder)
            except BaseException:
                self._drop(fd)
                raise
        with _HELD_LOCK:
            _HELD[self._key] = [fd, 1]
        self.held = True
        self.removed = removed
        return removed

    def _lock(self, wait: float) -> int:
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _claim_pid(fd)
                os.close(fd)
                if time.monotonic() < deadline:  # a reader's probe (claim_holder) holds it for a moment
                    time.sleep(0.02)
                    continue
                raise ClaimRefused(refusal(self.folder, pid), pid) from None
            try:  # a releasing holder unlinks the file: the one locked must still be the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd

    def _drop(self, fd: int) -> None:
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with _HELD_LOCK:
            entry = _HELD.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[self._key]
        self._drop(entry[0])

    def __enter__(self) -> "RunClaim":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- what readers show -------------------------------------------------------------------------------
def writer_gone(folder: str | os.PathLike, status: dict | None) -> str | None:
    """When `status` says running but the process that writes it is gone (killed, out of memory, the
    machine restarted): the sentence saying so, else None. The pid is status.json's, or a job's job.json's
    before the job wrote its own; a status written on another host is not judged."""
    if not isinstance(status, dict) or status.get("state") != "running":
        return None
    host = status.get("host")
    if host and host != socket.gethostname():
        return None
    pid, started = status.get("pid"), status.get("pid_started")
    if pid is None:
        try:
            job = read_object(Path(folder) / JOB_FILE)
        except (FileNotFoundError, ValueError, OSError):
            return None
        if job.get("ended") is not None:
            return None
        pid, started = job.get("pid"), job.get("create_time")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if process_alive(pid, started, folder):
        return None
    return (f"its training process (pid {pid}) is gone while its status still says running (killed, or the "
            "machine stopped)")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def live_status(folder: str | os.PathLike, status: dict | None = None) -> dict | None:
    """status.json as it stands now (`status` when already read): a run whose writer is gone reads
    state `died`, with `died` (the sentence, naming its leftovers and what removes them) and `error`."""
    if status is None:
        status = read_status(folder)
    reason = writer_gone(folder, status)
    if reason is None:
        return status
    folder = Path(folder)
    try:
        left = [f"{p.name} ({_size_text(_size(p))})" for p in leftovers(folder)]
    except OSError:
        left = []
    sentence = f"did not finish: {reason}"
    if left:
        sentence += f"; it left {', '.join(left)} behind"
    sentence += (f"; train it again with `python -m core.train ... --out {folder} --overwrite`, which removes "
                 "what is left, or delete the folder")
    return {**status, "state": DIED, "died": sentence, "error": status.get("error") or sentence}
