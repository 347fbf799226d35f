"""Background training jobs: each job is its own OS process group running `python -m core.train ...`.

Everything a job is lives in its run folder, so a browser reload or an app restart loses nothing
(a new JobManager on the same root sees the same jobs):

    job.json     what the manager asked for and started: module, argv, command, pid, pgid,
                 the process's create_time (to tell our pid from a reused one), times, cancel request
    status.json  state and progress, written by the job itself (core.runs.folders.write_status); the manager
                 writes `queued`, the launch, and the final state of a process that ended without
                 writing one (failed with the log tail, or cancelled when a cancel was asked)
    train.log    the process's stdout + stderr

    mgr = JobManager(root, max_concurrent=1, max_queue=4)
    mgr.submit("sst2-joint", ["--task", "sst2", "--method", "joint"])  # adds --out <root>/sst2-joint
    for job in mgr.poll(): ...          # the page calls this every second or two; cheap
    mgr.cancel("sst2-joint")            # SIGTERM to the group, SIGKILL after term_timeout -> cancelled
    mgr.logs("sst2-joint", lines=40)

Every change of job state happens under a lock (a thread lock plus flock on `<root>/.jobs.lock`), so
two managers on one root (two browser sessions, or the app and a script) never start a queued job
twice. POSIX only (process groups, signals, flock). A run folder has one writer: `submit` refuses a run
whose claim (core.runs.folders.RunClaim) another process holds, and the job's own process takes that claim
(core.runs.folders.JOB_ENV tells it which queued folder is its own), so a command line cannot write into a
queued or running job's folder either.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from core.runs.folders import (
    DEFAULT_ROOT,
    JOB_ENV,
    JOB_FILE,
    LOCK_FILE,
    LOG_FILE,
    REPO_ROOT,
    STATES,
    check_run_name,
    claim_holder,
    holds_run,
    read_object,
    read_status,
    refusal,
    replaced_name,
    run_warnings,
    staging_folder,
    write_status,
)
from core.runs.io import atomic_write_json, read_json

OUTCOMES_DIR = ".outcomes"  # <root>/.outcomes/<folder>.json: final states a run folder refused
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")

_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_CREATE_TIME_TOL_S = 1.0  # psutil create_time comes from clock ticks + boot time; same process -> same value

# Popen objects of the processes this Python process started, keyed by pid, with their create_time:
# every JobManager instance in this process (Streamlit builds new ones on reruns) can reap them and
# learn their exit codes. A manager in another process has only the pid and create_time of job.json.
_CHILDREN: dict[int, tuple[subprocess.Popen, float | None]] = {}
_THREAD_LOCK = threading.RLock()
_FLOCKS: dict[str, list] = {}  # root -> [fd, depth]
_OUTCOMES: dict[str, dict] = {}  # folder -> the final status a manager could not write there


@dataclass
class Job:
    """What the page shows about one job (a snapshot; call `poll()` again for fresh values)."""

    name: str
    state: str  # queued | running | done | failed | cancelled
    progress: float = 0.0  # 0..1
    step: int | None = None
    total_steps: int | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    error: str | None = None  # only when failed
    log_tail: str = ""
    pid: int | None = None
    message: str | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    argv: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    folder: Path | None = None
    queue_position: int | None = None  # 1 = next to start (set by poll/jobs/get)
    warnings: list[str] = field(default_factory=list)  # status.json's plain-sentence warnings

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class JobManager:
    """Start, queue, watch and cancel training processes whose state lives in run folders under `root`.

    `module` is what `python -m` runs (tests use a stand-in); `max_concurrent` processes run at once,
    at most `max_queue` more wait as `queued`; `term_timeout` is how long a cancel waits after SIGTERM
    before SIGKILL; `log_lines` is how much of train.log each `Job` view carries.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, module: str = "core.train",
                 max_concurrent: int = 1, max_queue: int = 4, cwd: str | os.PathLike = REPO_ROOT,
                 term_timeout: float = 5.0, log_lines: int = 20):
        if not _MODULE_RE.match(module):
            raise ValueError(f"invalid module {module!r}: expected a dotted Python module name")
        if int(max_concurrent) < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if int(max_queue) < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self.module = module
        self.max_concurrent = int(max_concurrent)
        self.max_queue = int(max_queue)
        self.cwd = Path(cwd)
        self.term_timeout = float(term_timeout)
        self.log_lines = int(log_lines)
        self.recover()

    # ------------------------------------------------------------------ public API

    def submit(self, name: str, argv=(), *, overwrite: bool = False) -> Job:
        """Start `python -m <module> *argv --out <root>/<name>` now, or queue it when all slots are busy.

        Refuses (ValueError) a bad run name, an argv with its own --out, an existing run folder unless
        `overwrite` (never one whose job is still queued or running), and a full queue.
        """
        check_run_name(name)
        argv = _check_argv(argv)
        folder = self.root / name
        with self._lock():
            records, n_alive = self._housekeep()
            holder = claim_holder(folder)  # the run's one writer (core.runs.folders.RunClaim), e.g. a command line
            if holder is not None:
                raise ValueError(refusal(folder, holder).replace("another --out", "another run name"))
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"{folder} exists and is not a folder; choose another run name")
            staging = staging_folder(folder)
            if (staging / JOB_FILE).exists():
                if self._state(staging) in ACTIVE_STATES:
                    raise ValueError(f"run {name!r} is being replaced ({self._state(staging)}); cancel "
                                     "that job before starting another")
                n_alive -= self._forget(staging, records)
            exists = folder.is_dir() and any(folder.iterdir())
            replace = False
            if exists:
                if not overwrite:
                    raise ValueError(f"run folder {folder} already exists; choose another name, or "
                                     "ask to overwrite it")
                mine = [j for f, j in records if f == folder]
                if mine and self._state(folder) in ACTIVE_STATES:
                    raise ValueError(f"run {name!r} is {self._state(folder)}; cancel it before "
                                     "replacing it")
                if mine and self._holds_slot(mine[0]):
                    # it wrote its final state and is exiting: give it a moment
                    _wait_dead(mine[0], 3.0)
                    if self._settle(folder, mine[0]):
                        raise ValueError(f"run {name!r} is {self._state(folder)} but its process "
                                         f"(pid {mine[0]['pid']}) is still exiting; try again shortly")
                    n_alive -= 1
                # a folder with results is replaced only once the new run has finished: the job trains
                # in the staging sibling and the trainer swaps it in (core.train --overwrite)
                replace = holds_run(folder)
            n_queued = sum(1 for f, j in records if self._is_waiting(f, j))
            start_now = n_alive < self.max_concurrent and n_queued == 0
            if not start_now and n_queued >= self.max_queue:
                raise ValueError(
                    f"the job queue is full ({n_alive} running, {n_queued} queued, at most "
                    f"{self.max_queue} may wait); wait for a job to finish or cancel one")
            for f in (folder, staging):  # outcomes of earlier jobs of this name that could not be written
                _OUTCOMES.pop(str(f), None)
                self._outcome_file(f).unlink(missing_ok=True)
            if replace:
                argv = [*argv, "--overwrite"]
                folder = staging
            elif exists:
                shutil.rmtree(folder)  # only job files (job.json, status, log): nothing of a run
            folder.mkdir(parents=True, exist_ok=True)
            now = time.time()
            job = {"name": name, "module": self.module, "argv": argv,
                   "command": self._command(self.module, argv, self._out(folder)), "cwd": str(self.cwd),
                   "submitted": now, "pid": None, "pgid": None, "create_time": None,
                   "started": None, "ended": None}
            atomic_write_json(folder / JOB_FILE, job)
            write_status(folder, "queued", submitted=now, progress=0.0,
                         message="waiting for a free slot" if not start_now else "starting")
            if start_now:
                self._start(folder, job)
            view = self._view(folder, job)
            if view.state == "queued":
                view.queue_position = n_queued + 1
            return view

    def poll(self) -> list[Job]:
        """Settle ended processes, start queued jobs in free slots, return every job (oldest first)."""
        with self._lock():
            records, _ = self._housekeep()
            views = [self._view(f, j) for f, j in records]
        # a run and the replacement training beside it share a name: show the later job only
        latest = {v.name: v for v in views}  # records are sorted oldest first
        views = [v for v in views if latest[v.name] is v]
        position = 0
        for job in views:
            if job.state == "queued":
                position += 1
                job.queue_position = position
        return views

    def jobs(self) -> list[Job]:
        """Every job under root, oldest first, with fresh state (same as `poll()`)."""
        return self.poll()

    def get(self, name: str) -> Job:
        folder = self._job_folder(name)
        for job in self.poll():
            if job.folder == folder:
                return job
        raise ValueError(f"no job named {name!r} under {self.root}")

    def logs(self, name: str, lines: int = 40) -> str:
        """The last `lines` lines of the job's train.log ('' before it starts)."""
        return _tail(self._job_folder(name) / LOG_FILE, lines)

    def cancel(self, name: str, *, wait: bool = True, timeout: float | None = None) -> Job:
        """Cancel a job: a queued one becomes cancelled; a running one gets SIGTERM on its process
        group, and SIGKILL if still alive after `timeout` (default term_timeout). The final state is
        `cancelled` (a job that already finished keeps its state). With `wait=False` it returns after
        SIGTERM and later `poll()` calls settle it (and SIGKILL it after term_timeout)."""
        folder = self._job_folder(name)
        timeout = self.term_timeout if timeout is None else float(timeout)
        with self._lock():
            job = self._load_job(folder)
            if job.get("pid") is None:
                if self._state(folder) in ACTIVE_STATES:
                    write_status(folder, "cancelled", finished=time.time(), eta_s=None,
                                 message="cancelled before it started")
                return self._view(folder, job)
            if job.get("ended") is not None:
                return self._view(folder, job)
            alive, rc = _probe(job)
            if not alive:
                self._finalize(folder, job, rc)
                return self._view(folder, job)
            if not job.get("cancel_requested"):
                job["cancel_requested"] = time.time()
                atomic_write_json(folder / JOB_FILE, job)
            _signal_group(job, signal.SIGTERM)
        if not wait:
            return self.get(name)
        _wait_dead(job, timeout)
        with self._lock():
            if not (folder / JOB_FILE).exists():  # a replacement finished and was swapped in meanwhile
                folder = self._job_folder(name)
            job = self._load_job(folder)
            if job.get("ended") is None:
                alive, rc = _probe(job)
                if alive:
                    _signal_group(job, signal.SIGKILL)
                    _wait_dead(job, 5.0)
                    alive, rc = _probe(job)
                if not alive:
                    self._finalize(folder, job, rc)
            return self._view(folder, job)

    def recover(self) -> list[Job]:
        """What a new manager does first: settle jobs whose process died while this app was away
        (failed, with the log tail, persisted), and mark `failed` any run *not* started by a manager
        whose status says running with a pid that no longer exists. Then start queued jobs."""
        with self._lock():
            self._recover_foreign_runs()
            return self.poll()

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _lock(self):
        key = str(self.root)
        with _THREAD_LOCK:
            entry = _FLOCKS.get(key)
            if entry is None:
                fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited
                fcntl.flock(fd, fcntl.LOCK_EX)
                entry = _FLOCKS[key] = [fd, 0]
            entry[1] += 1
            try:
                yield
            finally:
                entry[1] -= 1
                if entry[1] == 0:
                    del _FLOCKS[key]
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                    os.close(entry[0])

    def _job_folder(self, name: str) -> Path:
        """The folder of run `name`'s latest job: the run folder, or its staging sibling while (or after)
        a replacement of it trains there."""
        folder = self.root / check_run_name(name)
        found = [f for f in (staging_folder(folder), folder) if (f / JOB_FILE).exists()]
        if not found:
            raise ValueError(f"no job named {name!r} under {self.root}")
        return max(found, key=self._submitted)

    def _submitted(self, folder: Path) -> float:
        try:
            return float(read_json(folder / JOB_FILE).get("submitted") or 0.0)
        except (OSError, ValueError, AttributeError, TypeError):
            return 0.0

    def _out(self, folder: Path) -> Path:
        """The run folder a job writes: `folder`, or the run a staging folder replaces."""
        return self.root / (replaced_name(folder) or folder.name)

    def _forget(self, staging: Path, records: list) -> int:
        """Delete the staging folder of an ended replacement; 1 if its process still held a slot."""
        held = 0
        for f, j in records:
            if f == staging and self._holds_slot(j):
                _wait_dead(j, 3.0)
                if self._settle(f, j):
                    raise ValueError(f"the replacement of run {replaced_name(staging)!r} is still "
                                     "exiting; try again shortly")
                held = 1
        shutil.rmtree(staging, ignore_errors=True)
        records[:] = [(f, j) for f, j in records if f != staging]
        return held

    @staticmethod
    def _command(module: str, argv: list[str], folder: Path) -> list[str]:
        return [sys.executable, "-m", module, *argv, "--out", str(folder)]

    def _load_job(self, folder: Path) -> dict:
        path = folder / JOB_FILE
        if not path.exists():
            raise ValueError(f"no job named {folder.name!r} under {self.root}")
        return read_object(path)

    def _records(self) -> list[tuple[Path, dict]]:
        records = []
        with os.scandir(self.root) as it:
            for entry in it:
                if (entry.name.startswith(".") and not replaced_name(entry.name)) or not entry.is_dir():
                    continue  # hidden folders, except a replacement training beside its run
                try:
                    job = read_object(Path(entry.path) / JOB_FILE)
                except (FileNotFoundError, ValueError):
                    continue  # not a job folder (or a damaged job.json we cannot act on)
                records.append((Path(entry.path), job))
        records.sort(key=lambda r: (r[1].get("submitted") or 0.0, r[0].name))
        return records

    def _outcome_file(self, folder: Path) -> Path:
        return self.root / OUTCOMES_DIR / f"{folder.name}.json"

    def _status(self, folder: Path) -> dict:
        kept = _OUTCOMES.get(str(folder))  # a final state a manager could not write into the folder,
        if kept is None:                    # here or (after a restart) kept beside it
            try:
                kept = read_object(self._outcome_file(folder))
            except (OSError, ValueError):
                kept = None
        if kept is not None and kept.get("job_submitted") == self._submitted(folder):  # of this job
            return dict(kept)
        try:
            return read_status(folder) or {}
        except (ValueError, OSError) as e:
            return {"state": None, "status_error": str(e)}

    def _write_final(self, folder: Path, state: str, **fields) -> None:
        """write_status for a job's final state; when the folder cannot be written (read-only, full
        disk) the state is kept in this process instead, with the reason added to the error."""
        try:
            write_status(folder, state, **fields)
        except OSError as e:
            error = fields.get("error")
            fields["error"] = (f"{error}; " if error else "") + f"the run folder cannot be written ({e})"
            _OUTCOMES[str(folder)] = {**self._status(folder), **fields, "state": state, "updated": time.time(),
                                      "job_submitted": self._submitted(folder)}
            self._keep_outcome(folder)

    def _keep_outcome(self, folder: Path) -> None:
        """Save the outcome of an unwritable folder under <root>/.outcomes/ (managers started later,
        after an app restart, read it there instead of guessing 'killed')."""
        try:
            atomic_write_json(self._outcome_file(folder), _OUTCOMES[str(folder)])
        except OSError as e:
            print(f"core.runs.jobs: cannot keep the outcome of {folder}: {e}", file=sys.stderr)

    def _state(self, folder: Path) -> str | None:
        return self._status(folder).get("state")

    def _is_waiting(self, folder: Path, job: dict) -> bool:
        return job.get("pid") is None and job.get("ended") is None and self._state(folder) == "queued"

    @staticmethod
    def _holds_slot(job: dict) -> bool:
        return job.get("pid") is not None and job.get("ended") is None

    def _housekeep(self) -> tuple[list[tuple[Path, dict]], int]:
        """Settle every started job whose process ended, start queued jobs while slots are free.
        Returns (records, number of live processes)."""
        records = self._records()
        n_alive = 0
        for folder, job in records:
            try:
                if self._settle(folder, job):
                    n_alive += 1
            except OSError as e:  # one unwritable folder never stalls the others
                print(f"core.runs.jobs: cannot settle {folder}: {e}", file=sys.stderr)
        for folder, job in records:
            if n_alive >= self.max_concurrent:
                break
            if self._is_waiting(folder, job):
                try:
                    started = self._start(folder, job)
                except OSError as e:
                    print(f"core.runs.jobs: cannot start {folder}: {e}", file=sys.stderr)
                    self._write_final(folder, "failed", error=f"could not start the job: {e}",
                                      finished=time.time())
                    started = False
                if started:
                    n_alive += 1
        return records, n_alive

    def _settle(self, folder: Path, job: dict) -> bool:
        """True while the job's process lives (it holds a slot); settles it once it is gone."""
        if job.get("pid") is None:
            if job.get("ended") is None and self._state(folder) == "running":
                # The launch is done under the lock, so running without a pid means a manager died
                # between writing the launch state and recording the pid.
                job["ended"] = time.time()
                atomic_write_json(folder / JOB_FILE, job)
                write_status(folder, "failed", finished=job["ended"], eta_s=None,
                             error="the job never started: its manager stopped while launching it")
            return False
        if job.get("ended") is not None or self._status(folder).get("ended"):
            return False  # ended (noted in job.json, or in the outcome kept for an unwritable folder)
        alive, rc = _probe(job)
        if alive:
            asked = job.get("cancel_requested")
            if asked and time.time() - asked > self.term_timeout:
                _signal_group(job, signal.SIGKILL)  # ignored SIGTERM; cancel(wait=False) escalation
            return True
        self._finalize(folder, job, rc)
        return False

    def _finalize(self, folder: Path, job: dict, rc: int | None) -> None:
        """The process is gone: record it, and write the final state if the process did not."""
        now = time.time()
        job["ended"] = now
        if rc is not None:
            job["returncode"] = rc
        _CHILDREN.pop(job["pid"], None)
        status = self._status(folder)  # read after death: nothing writes it any more
        state = status.get("state")
        asked = job.get("cancel_requested")
        if asked:
            if now - asked < 60:  # just cancelled: kill leftovers of the group (data loader workers)
                _signal_group(job, signal.SIGKILL)
            failed_first = state == "failed" and (status.get("updated") or 0) < asked
            if state not in ("done", "cancelled") and not failed_first:
                self._write_final(folder, "cancelled", finished=status.get("finished") or now, eta_s=None,
                                  error=None, message="cancelled", returncode=rc)
        elif state not in FINAL_STATES:
            tail = _tail(folder / LOG_FILE, self.log_lines)
            error = f"the job process ended without reporting a result ({_exit_reason(rc)})"
            if status.get("status_error"):
                error += f"; {status['status_error']}"
            error += f"; last lines of {LOG_FILE}:\n{tail}" if tail else f"; {LOG_FILE} is empty"
            self._write_final(folder, "failed", error=error, log_tail=tail, finished=now, eta_s=None,
                              returncode=rc)
        try:
            atomic_write_json(folder / JOB_FILE, job)
        except OSError as e:
            kept = _OUTCOMES.setdefault(str(folder), {**status, "updated": now,
                                                      "job_submitted": self._submitted(folder)})
            if kept.get("state") not in FINAL_STATES:  # the process wrote done/failed, we cannot note the end
                kept.update(state="failed", finished=now, error=f"the run folder cannot be written ({e})")
            kept["ended"] = now
            self._keep_outcome(folder)

    def _start(self, folder: Path, job: dict) -> bool:
        """Launch a queued job (under the lock). Returns False when the launch itself failed."""
        now = time.time()
        module = job.get("module") or self.module
        cmd = self._command(module, list(job.get("argv") or []), self._out(folder))
        job.update(command=cmd, started=now)
        write_status(folder, "running", started=now, progress=0.0, message="starting")
        try:
            with open(folder / LOG_FILE, "ab") as log:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
                log.write(f"[core.runs.jobs {stamp}] $ {shlex.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    cmd, cwd=job.get("cwd") or self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", JOB_ENV: str(folder)})
        except OSError as e:
            job["ended"] = time.time()
            atomic_write_json(folder / JOB_FILE, job)
            write_status(folder, "failed", finished=job["ended"], error=f"could not start the job: {e}")
            return False
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = None  # already gone (and a zombie is still readable, so rarely here)
        _CHILDREN[proc.pid] = (proc, create_time)
        job.update(pid=proc.pid, pgid=proc.pid, create_time=create_time)  # new session: pgid == pid
        atomic_write_json(folder / JOB_FILE, job)
        return True

    def _view(self, folder: Path, job: dict) -> Job:
        status = self._status(folder)
        state = status.get("state")
        if state not in STATES:
            state = "running" if self._holds_slot(job) else "failed"
        now = time.time()
        started = status.get("started") or job.get("started")
        finished = None
        if state in FINAL_STATES:
            finished = status.get("finished") or job.get("ended") or status.get("updated")
        elapsed = None
        if started:
            elapsed = max(0.0, (finished or now) - started)
        error = None
        if state == "failed":
            error = status.get("error") or status.get("status_error") or "failed (no error message)"
        progress = 1.0 if state == "done" else float(status.get("progress") or 0.0)
        return Job(
            name=replaced_name(folder) or folder.name, state=state, progress=progress, step=status.get("step"),
            total_steps=status.get("total_steps"), elapsed_s=elapsed,
            eta_s=status.get("eta_s") if state == "running" else None, error=error,
            log_tail=_tail(folder / LOG_FILE, self.log_lines) if job.get("pid") else "",
            pid=job.get("pid"), message=status.get("message"), submitted=job.get("submitted"),
            started=started if job.get("pid") else None, finished=finished,
            argv=list(job.get("argv") or []), command=list(job.get("command") or []), folder=folder,
            warnings=run_warnings(status))

    def _recover_foreign_runs(self) -> None:
        with os.scandir(self.root) as it:
            folders = [Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")]
        for folder in folders:
            if (folder / JOB_FILE).exists():
                continue
            status = self._status(folder)
            pid = status.get("pid")
            if status.get("state") != "running" or not isinstance(pid, int) or psutil.pid_exists(pid):
                continue
            tail = _tail(folder / LOG_FILE, self.log_lines)
            error = f"the training process (pid {pid}) is gone but its status said running"
            error += f"; last lines of {LOG_FILE}:\n{tail}" if tail else ""
            write_status(folder, "failed", error=error, log_tail=tail, finished=time.time(),
                         eta_s=None)


# ---------------------------------------------------------------------- process helpers

def _check_argv(argv) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise ValueError("argv must be a list of arguments, e.g. ['--task', 'sst2'], not one string")
    out = []
    for a in argv:
        if not isinstance(a, (str, int, float, os.PathLike)) or isinstance(a, bool):
            raise ValueError(f"argv items must be strings, numbers or paths, got {a!r}")
        out.append(os.fspath(a) if isinstance(a, os.PathLike) else str(a))
    if any(a == "--out" or a.startswith("--out=") for a in out):
        raise ValueError("argv must not contain --out: the job manager sets it to the run folder")
    return out


def _probe(job: dict) -> tuple[bool, int | None]:
    """(alive, returncode if known) for the process recorded in job.json; a reused pid is dead."""
    pid, ct = job["pid"], job.get("create_time")
    entry = _CHILDREN.get(pid)
    if entry is not None and (ct is None or entry[1] is None or abs(entry[1] - ct) < _CREATE_TIME_TOL_S):
        rc = entry[0].poll()  # reaps our own child
        return rc is None, rc
    try:
        proc = psutil.Process(pid)
        if ct is not None and abs(proc.create_time() - ct) > _CREATE_TIME_TOL_S:
            # Another process got the pid, unless the clock was stepped (create_time is derived
            # from the boot time, which moves with the wall clock): then its command line still
            # names the run folder.
            out = (job.get("command") or [None])[-1]
            if not out or out not in proc.cmdline():
                return False, None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, _reap(pid)
        return True, None
    except psutil.NoSuchProcess:
        return False, None
    except psutil.AccessDenied:
        return True, None


def _reap(pid: int) -> int | None:
    """Reap a zombie if it is our child (started by an earlier manager in this process)."""
    try:
        wpid, wstatus = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(wstatus) if wpid == pid else None


def _wait_dead(job: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not _probe(job)[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(job: dict, sig: int) -> None:
    pgid = job.get("pgid") or job.get("pid")
    if not pgid or pgid <= 1:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_reason(rc: int | None) -> str:
    if rc is None:
        return "exit status unknown: killed, e.g. out of memory, or the machine restarted"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name}"
    return f"exited with code {rc}"


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file, read from its end (cheap on big logs)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block = min(size, max(8192, lines * 512))
            f.seek(size - block)
            data = f.read()
    except FileNotFoundError:
        return ""
    parts = data.decode("utf-8", "replace").splitlines()
    if block < size and parts:
        parts = parts[1:]  # the first line is probably cut
    return "\n".join(parts[-lines:])
