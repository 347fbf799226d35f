"""core.runs.jobs with real processes (tests/job_probe.py stands in for core.train): the lifecycle, and the
failures a job page must not hide (a killed job shown as running, a cancel shown as an error, a stale
status file from a dead process, a full queue)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.runs import jobs as jobs_mod
from core.runs.folders import JOB_FILE, LOG_FILE, read_status, write_status
from core.runs.jobs import Job, JobManager

REPO = Path(__file__).resolve().parent.parent
PROBE = "tests.job_probe"


def wait_for(pred, timeout=10.0, every=0.03):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def finished(mgr, name, timeout=10.0) -> Job:
    """The job's view once it reached a final state AND its process exited (a job writes its final
    state just before it exits, so its last log lines may land a moment later)."""
    wait_for(lambda: (j := mgr.get(name)).state in ("done", "failed", "cancelled") and gone(j.pid),
             timeout=timeout)
    return mgr.get(name)


@pytest.fixture
def make_manager(tmp_path):
    made = []

    def make(**kw):
        kw.setdefault("module", PROBE)
        kw.setdefault("term_timeout", 1.0)
        mgr = JobManager(tmp_path / "runs", **kw)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:  # leave no process behind, whatever the test did
        for job in mgr.poll():
            if job.active:
                mgr.cancel(job.name, timeout=0.2)


def state_of(mgr, name):
    return mgr.get(name).state


def test_job_runs_to_done_and_records_itself(make_manager):
    mgr = make_manager()
    job = mgr.submit("ok-run", ["--steps", 3, "--sleep", "0.02"])
    assert isinstance(job, Job) and job.state == "running" and job.pid
    done = finished(mgr, "ok-run")
    assert done.state == "done"
    assert done.progress == 1.0 and done.step == 3 and done.total_steps == 3 and done.error is None
    assert done.elapsed_s is not None and done.elapsed_s >= 0 and done.eta_s is None
    assert "probe: done" in done.log_tail and "probe: done" in mgr.logs("ok-run")
    rec = json.loads((mgr.root / "ok-run" / JOB_FILE).read_text())
    assert rec["pid"] == rec["pgid"] == done.pid and rec["create_time"] and rec["started"] >= rec["submitted"]
    assert rec["argv"] == ["--steps", "3", "--sleep", "0.02"]
    assert rec["command"][1:3] == ["-m", PROBE] and rec["command"][-2:] == ["--out", str(mgr.root / "ok-run")]
    assert rec["returncode"] == 0
    with pytest.raises(psutil.NoSuchProcess):  # reaped, not left a zombie
        psutil.Process(done.pid)


def test_killed_process_is_failed_with_log_tail_not_running(make_manager):
    mgr = make_manager()
    mgr.submit("killed", ["--steps", 1000, "--sleep", "0.02"])
    job = wait_for(lambda: (j := mgr.get("killed")).step and j.step >= 2 and j)
    assert job.state == "running"
    os.kill(job.pid, signal.SIGKILL)  # as the OOM killer would
    job = wait_for(lambda: (j := mgr.get("killed")).state != "running" and j)
    assert job.state == "failed"
    assert "SIGKILL" in job.error and "probe: step 2" in job.error
    status = read_status(mgr.root / "killed")  # persisted, so a reload still sees it
    assert status["state"] == "failed" and "SIGKILL" in status["error"] and "probe: step" in status["log_tail"]
    # a new manager (app restart) agrees
    assert JobManager(mgr.root, module=PROBE).get("killed").state == "failed"


def test_manager_without_the_popen_reaps_its_dead_child(make_manager):
    # a new manager in the same process (Streamlit rerun) that lost the Popen has only the pid
    mgr = make_manager()
    job = mgr.submit("orphan", ["--steps", 1000, "--sleep", "0.02"])
    wait_for(lambda: mgr.get("orphan").step)
    jobs_mod._CHILDREN.pop(job.pid)
    os.kill(job.pid, signal.SIGKILL)
    wait_for(lambda: psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE)  # our unreaped child
    job = mgr.get("orphan")
    assert job.state == "failed" and "killed by SIGKILL" in job.error
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(job.pid)


def test_cancel_running_job_is_cancelled_not_an_error(make_manager):
    mgr = make_manager()
    job = mgr.submit("to-cancel", ["--steps", 1000, "--sleep", "0.02"])
    wait_for(lambda: mgr.get("to-cancel").step)
    job = mgr.cancel("to-cancel")
    assert job.state == "cancelled" and job.error is None
    assert gone(job.pid)
    assert read_status(mgr.root / "to-cancel")["state"] == "cancelled"
    assert "got SIGTERM" in mgr.logs("to-cancel")


def test_cancel_escalates_to_sigkill_and_still_reads_cancelled(make_manager):
    mgr = make_manager(term_timeout=0.3)
    job = mgr.submit("stubborn", ["--mode", "hang", "--sleep", "0.02"])
    wait_for(lambda: mgr.get("stubborn").step)
    t0 = time.monotonic()
    job = mgr.cancel("stubborn")
    assert time.monotonic() - t0 < 3
    assert job.state == "cancelled" and job.error is None and gone(job.pid)
    status = read_status(mgr.root / "stubborn")
    assert status["state"] == "cancelled" and status["returncode"] == -signal.SIGKILL


def test_cancel_without_wait_is_settled_by_poll(make_manager):
    mgr = make_manager(term_timeout=0.3)
    mgr.submit("stubborn2", ["--mode", "hang", "--sleep", "0.02"])
    wait_for(lambda: mgr.get("stubborn2").step)
    job = mgr.cancel("stubborn2", wait=False)
    assert job.state == "running"  # SIGTERM ignored so far
    job = wait_for(lambda: (j := mgr.get("stubborn2")).state != "running" and j, timeout=5)
    assert job.state == "cancelled" and gone(job.pid)


def test_queue_second_job_waits_then_starts_when_first_finishes(make_manager):
    mgr = make_manager(max_concurrent=1)
    a = mgr.submit("first", ["--steps", 5, "--sleep", "0.05"])
    b = mgr.submit("second", ["--steps", 1, "--sleep", "0.01"])
    assert a.state == "running" and b.state == "queued" and b.pid is None and b.queue_position == 1
    assert read_status(mgr.root / "second")["state"] == "queued"
    assert not (mgr.root / "second" / LOG_FILE).exists()
    assert state_of(mgr, "second") == "queued"  # still waiting while the first runs
    assert mgr.get("second").queue_position == 1
    wait_for(lambda: state_of(mgr, "second") == "done")
    first, second = mgr.get("first"), mgr.get("second")
    assert first.state == "done"
    assert second.started >= first.finished - 0.5  # started only once the slot was free
    assert [j.name for j in mgr.jobs()] == ["first", "second"]


def test_two_slots_run_together(make_manager):
    mgr = make_manager(max_concurrent=2)
    a = mgr.submit("a", ["--steps", 100, "--sleep", "0.02"])
    b = mgr.submit("b", ["--steps", 100, "--sleep", "0.02"])
    c = mgr.submit("c", ["--steps", 1])
    assert (a.state, b.state, c.state) == ("running", "running", "queued")


def test_full_queue_is_refused_with_a_message(make_manager):
    mgr = make_manager(max_concurrent=1, max_queue=1)
    mgr.submit("r1", ["--steps", 1000, "--sleep", "0.02"])
    mgr.submit("r2", ["--steps", 1])
    with pytest.raises(ValueError, match="queue is full"):
        mgr.submit("r3", ["--steps", 1])
    assert not (mgr.root / "r3").exists()


def test_cancel_queued_job_never_starts(make_manager):
    mgr = make_manager(max_concurrent=1)
    mgr.submit("busy", ["--steps", 4, "--sleep", "0.03"])
    mgr.submit("waiting", ["--steps", 1])
    job = mgr.cancel("waiting")
    assert job.state == "cancelled" and job.error is None and job.pid is None
    wait_for(lambda: state_of(mgr, "busy") == "done")
    mgr.poll()
    job = mgr.get("waiting")
    assert job.state == "cancelled" and job.pid is None
    assert not (mgr.root / "waiting" / LOG_FILE).exists()


def test_job_that_raised_shows_its_error(make_manager):
    mgr = make_manager()
    mgr.submit("raiser", ["--mode", "raise", "--steps", 1, "--sleep", "0.01"])
    job = wait_for(lambda: (j := mgr.get("raiser")).state == "failed" and j)
    assert job.error == "RuntimeError: probe failure: boom at step 1"
    assert "Traceback" in mgr.logs("raiser")


def test_process_that_exits_without_status_is_failed_with_code_and_log(make_manager):
    mgr = make_manager()
    mgr.submit("silent", ["--mode", "exit", "--exit-code", 3, "--steps", 1, "--sleep", "0.01"])
    job = wait_for(lambda: (j := mgr.get("silent")).state != "running" and j)
    assert job.state == "failed"
    assert "exited with code 3" in job.error and "without a final status" in job.error


def _dead_pid() -> tuple[int, float]:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    ct = psutil.Process(p.pid).create_time()
    p.wait()
    return p.pid, ct


def _stale_job(root: Path, name: str, pid: int, create_time: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    now = time.time()
    (folder / JOB_FILE).write_text(json.dumps({
        "name": name, "module": PROBE, "argv": [], "submitted": now - 60, "started": now - 59,
        "pid": pid, "pgid": pid, "create_time": create_time, "ended": None}))
    write_status(folder, "running", pid=pid, started=now - 59, progress=0.4, step=4, total_steps=10)
    (folder / LOG_FILE).write_text("loading\nstep 4 loss 0.7\n")
    return folder


def test_stale_running_status_of_dead_process_is_recovered_as_failed_on_start(tmp_path):
    root = tmp_path / "runs"
    pid, ct = _dead_pid()
    folder = _stale_job(root, "stale", pid, ct)
    mgr = JobManager(root, module=PROBE)  # manager start recovers, before any poll
    status = read_status(folder)
    assert status["state"] == "failed" and "step 4 loss 0.7" in status["error"]
    job = mgr.get("stale")
    assert job.state == "failed" and job.eta_s is None and "step 4 loss 0.7" in job.log_tail


def test_reused_pid_is_not_mistaken_for_the_job(tmp_path):
    root = tmp_path / "runs"
    me = psutil.Process()  # a live pid, but not the process that job.json recorded
    folder = _stale_job(root, "reused", me.pid, me.create_time() - 1000.0)  # same pid, other process
    assert JobManager(root, module=PROBE).get("reused").state == "failed"
    assert read_status(folder)["state"] == "failed"


def test_clock_step_does_not_kill_a_live_job(make_manager):
    # create_time moves with a stepped wall clock; the command line still names the run folder
    mgr = make_manager()
    job = mgr.submit("steady", ["--steps", 1000, "--sleep", "0.02"])
    jobs_mod._CHILDREN.pop(job.pid)
    path = mgr.root / "steady" / JOB_FILE
    rec = json.loads(path.read_text())
    rec["create_time"] -= 1000.0
    path.write_text(json.dumps(rec))
    assert mgr.get("steady").state == "running"
    assert mgr.cancel("steady").state == "cancelled" and gone(job.pid)


def test_stale_run_without_job_file_is_recovered(tmp_path):
    root = tmp_path / "runs"
    pid, _ = _dead_pid()
    (root / "cli-run").mkdir(parents=True)
    write_status(root / "cli-run", "running", pid=pid)
    live = root / "live-run"
    live.mkdir()
    write_status(live, "running", pid=os.getpid())
    JobManager(root, module=PROBE)
    assert read_status(root / "cli-run")["state"] == "failed"
    assert read_status(live)["state"] == "running"  # its process exists: left alone


def test_job_survives_app_restart_and_can_be_cancelled_by_a_new_manager(tmp_path, make_manager):
    root = tmp_path / "runs"
    code = ("import sys; from core.runs.jobs import JobManager; "
            f"print(JobManager(sys.argv[1], module={PROBE!r}).submit('bg', ['--steps', '1000', "
            "'--sleep', '0.02']).pid)")
    out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=20)
    pid = int(out.stdout.strip())
    assert pid not in jobs_mod._CHILDREN  # that app is gone; this one only has job.json
    mgr = make_manager()
    job = wait_for(lambda: (j := mgr.get("bg")).step and j)
    assert job.state == "running" and job.pid == pid
    job = mgr.cancel("bg")
    assert job.state == "cancelled" and gone(pid)


def test_bad_names_and_arguments_are_refused(make_manager, tmp_path):
    mgr = make_manager()
    for bad in ["../escape", "a/b", "", ".hidden", "x" * 101, "/abs", "a..b"]:
        with pytest.raises(ValueError, match="invalid run name"):
            mgr.submit(bad, ["--steps", 1])
    assert not (tmp_path / "escape").exists() and list(mgr.root.iterdir()) == [mgr.root / ".jobs.lock"]
    with pytest.raises(ValueError, match="--out"):
        mgr.submit("ok", ["--out", "/tmp/elsewhere"])
    with pytest.raises(ValueError, match="list of arguments"):
        mgr.submit("ok", "--steps 1")
    with pytest.raises(ValueError, match="no job named"):
        mgr.cancel("nothing-here")
    with pytest.raises(ValueError, match="invalid module"):
        JobManager(tmp_path / "r2", module="core.train; rm -rf /")


def test_existing_run_folder_is_not_overwritten_unless_asked(make_manager):
    mgr = make_manager()
    mgr.submit("again", ["--steps", 1, "--sleep", "0.01"])
    wait_for(lambda: state_of(mgr, "again") == "done")
    (mgr.root / "again" / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="already exists"):
        mgr.submit("again", ["--steps", 1])
    assert (mgr.root / "again" / "keep.txt").exists()
    mgr.submit("again", ["--steps", 100, "--sleep", "0.02"], overwrite=True)
    assert (mgr.root / "again" / "keep.txt").exists()  # the old run stays until the new one is done
    with pytest.raises(ValueError, match="cancel"):  # never replace a live job
        mgr.submit("again", ["--steps", 1], overwrite=True)
    # a folder that is not a job (e.g. a run trained from the command line) is protected too
    (mgr.root / "cli").mkdir()
    (mgr.root / "cli" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already exists"):
        mgr.submit("cli", ["--steps", 1])


def test_logs_returns_the_last_lines(make_manager):
    mgr = make_manager()
    mgr.submit("talky", ["--steps", 6, "--sleep", "0.01"])
    assert finished(mgr, "talky").state == "done"
    assert mgr.logs("talky", lines=2).splitlines() == ["probe: step 6", "probe: done"]
    assert mgr.logs("talky", lines=0) == ""


def test_a_replacement_keeps_the_old_run_until_it_finishes(make_manager):
    """Replace = train beside the run, swap in on success; a cancelled or failed replacement leaves the
    old run's files byte for byte, and the job list shows the replacement under the run's name."""
    mgr = make_manager()
    mgr.submit("keep", ["--steps", 1, "--sleep", "0.01"])
    finished(mgr, "keep")
    run = mgr.root / "keep"
    (run / "cache.npz").write_bytes(b"old results")
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    for argv, cancel in ((["--steps", 200, "--sleep", "0.02"], True), (["--steps", 2, "--mode", "raise"], False)):
        job = mgr.submit("keep", argv, overwrite=True)
        assert job.name == "keep" and job.state == "running"
        assert [j.name for j in mgr.poll()] == ["keep"]
        if cancel:
            wait_for(lambda: mgr.get("keep").step)
            mgr.cancel("keep")
        end = finished(mgr, "keep")
        assert end.state == ("cancelled" if cancel else "failed")
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before
        assert read_status(run)["state"] == "done"

    job = mgr.submit("keep", ["--steps", 2, "--sleep", "0.01"], overwrite=True)
    end = finished(mgr, "keep")
    assert end.state == "done" and end.folder == run
    assert not (run / "cache.npz").exists() and read_status(run)["state"] == "done"
    assert sorted(p.name for p in mgr.root.iterdir()) == [".jobs.lock", "keep"]
