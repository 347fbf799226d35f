"""Many users at once: N real Streamlit sessions of Explore against one `streamlit run app.py`.

    python -m bench.bench_sessions [--sessions 1,10,30] [--seconds 40] [--interval 4] [--run NAME]
        [--knob entropy.threshold] [--json FILE]

For each N a fresh server starts (as the browser tests start it: headless, fileWatcherType none, the
bundled checkpoints/ folder), one warm-up session opens Explore on the run (so N = 1 measures a warm
server, not the first sweep), then N sessions connect to /_stcore/stream, open Explore and, for
`--seconds`, each moves one knob (a random other stop of the entropy threshold) every `--interval`
seconds on average, waiting for each rerun to end before the next move (as a person does).

The client speaks Streamlit's own websocket protocol with the protobuf classes streamlit ships, as
its frontend does: a `rerun_script` BackMsg carrying the page, the query string and the moved widget's
state; the hashes of cacheable messages it already holds (so the server sends references for them, as
to a browser); permessage-deflate as browsers negotiate it. It runs in this process; the server's CPU
(psutil on its pid and its children) is measured apart from it, and the client's own CPU is printed too.

Printed per N: errors (exception elements in the ForwardMsgs, disconnects, reruns that never ended,
runs that ended otherwise than successfully or showed another page than Explore), the time from sending a knob move to that rerun's
script_finished (median, p90, max), moves done, server CPU (share of one core over the window) and
RSS (at the start of the window and largest sampled), the client's CPU, the whole machine's CPU (all processes: other work competing with
the server shows here), and the 1-minute load average at the start and end of the
window. Goal (issue 20 row 16): no errors and p90 <= 1 s at N = 30; the median at N = 1 is the reference.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO = Path(__file__).resolve().parent.parent
GOAL_P90_S = 1.0
RERUN_TIMEOUT_S = 60.0


# ---- reading the server's messages ------------------------------------------------------------------
@dataclass
class Seen:
    """What one ForwardMsg says that the client acts on."""
    finished: int | None = None          # ForwardMsg.ScriptFinishedStatus when a run ended
    exceptions: list = field(default_factory=list)   # "Type: message" of each exception element
    knob: dict | None = None             # {"id", "options", "value"} when the watched select slider is drawn
    page_hash: str | None = None         # the page this run shows (navigation)
    wanted_hash: str | None = None       # the hash of the page the client asks for (navigation)
    query_string: str | None = None      # the address bar (page_info_changed)
    cache_hash: str | None = None        # the message's hash when the client may cache it
    ref_hash: str | None = None          # a reference to a message sent before


def read_forward(msg: ForwardMsg, knob_key: str, page: str = "explore") -> Seen:
    """The parts of one ForwardMsg a browser-like client needs. `knob_key` is the user key of the slider
    to move (a widget's id ends in '-' + its key); `page` the URL path of the page the client is on."""
    seen = Seen()
    kind = msg.WhichOneof("type")
    if kind == "script_finished":
        seen.finished = msg.script_finished
    elif kind == "navigation":
        seen.page_hash = msg.navigation.page_script_hash or None
        seen.wanted_hash = next((p.page_script_hash for p in msg.navigation.app_pages if p.url_pathname == page), None)
    elif kind == "page_info_changed":
        seen.query_string = msg.page_info_changed.query_string
    elif kind == "ref_hash":
        seen.ref_hash = msg.ref_hash
    elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
        el = msg.delta.new_element
        etype = el.WhichOneof("type")
        if etype == "exception":
            seen.exceptions.append(f"{el.exception.type}: {el.exception.message}"[:300])
        elif etype == "slider" and el.slider.id.endswith("-" + knob_key):
            s = el.slider
            index = int(s.value[0]) if s.set_value and len(s.value) else int(s.default[0]) if len(s.default) else 0
            opts = list(s.options)
            seen.knob = {"id": s.id, "options": opts, "value": opts[index] if 0 <= index < len(opts) else None}
    if msg.metadata.cacheable and msg.hash:
        seen.cache_hash = msg.hash
    return seen


def with_param(query_string: str, key: str, value: str) -> str:
    """`query_string` with `key` set to `value` (replaced where present, appended where not)."""
    pairs = [(k, v) for k, v in parse_qsl(query_string, keep_blank_values=True) if k != key]
    return urlencode([*pairs, (key, value)])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# ---- one session -----------------------------------------------------------------------------------
@dataclass
class Tally:
    moves: list = field(default_factory=list)      # seconds from a knob move to its script_finished
    opens: list = field(default_factory=list)      # seconds from connect to the first script_finished
    exceptions: list = field(default_factory=list)
    disconnects: int = 0
    timeouts: int = 0
    bad_finish: int = 0
    no_knob: int = 0
    wrong_page: int = 0

    @property
    def errors(self) -> int:
        return (len(self.exceptions) + self.disconnects + self.timeouts + self.bad_finish + self.no_knob
                + self.wrong_page)


class Session:
    """One browser tab on Explore, as far as the server can tell."""

    def __init__(self, ws_url: str, run: str, knob_key: str, tally: Tally):
        self.ws_url, self.run, self.knob_key, self.tally = ws_url, run, knob_key, tally
        self.query_string = f"run={run}"
        self.page_hash = ""                    # the page shown, as the browser keeps it
        self.shown = self.wanted = None        # this run's page and Explore's, from its navigation message
        self.knob: dict | None = None
        self.cached: dict[str, list] = {}      # hash of a cacheable message -> its exceptions
        self.ws = None

    async def _send_rerun(self, widget=None):
        self.shown = None
        back = BackMsg()
        cs = back.rerun_script
        cs.query_string = self.query_string
        cs.page_script_hash = self.page_hash
        cs.page_name = "" if self.page_hash else "explore"
        cs.cached_message_hashes.extend(self.cached)
        cs.context_info.timezone = "UTC"
        cs.context_info.locale = "en-US"
        if widget is not None:
            w = cs.widget_states.widgets.add()
            w.id = widget[0]
            w.string_array_value.data.append(widget[1])
        await self.ws.send(back.SerializeToString())

    async def _until_finished(self) -> bool:
        """Read messages until a run ends successfully; False on a timeout, disconnect or bad end."""
        deadline = time.perf_counter() + RERUN_TIMEOUT_S
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                self.tally.timeouts += 1
                return False
            try:
                data = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                self.tally.timeouts += 1
                return False
            msg = ForwardMsg()
            msg.ParseFromString(data)
            seen = read_forward(msg, self.knob_key)
            if seen.ref_hash is not None:
                self.tally.exceptions.extend(self.cached.get(seen.ref_hash, []))
            if seen.cache_hash is not None:
                self.cached[seen.cache_hash] = seen.exceptions
            self.tally.exceptions.extend(seen.exceptions)
            if seen.page_hash:
                self.page_hash = self.shown = seen.page_hash
                self.wanted = seen.wanted_hash
            if seen.query_string is not None:
                self.query_string = seen.query_string
            if seen.knob is not None:  # the browser keeps the value it sent; the stops may change
                self.knob = {**seen.knob, "value": self.knob["value"] if self.knob else seen.knob["value"]}
            if seen.finished is not None:
                if seen.finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                    if self.shown is None or self.shown != self.wanted:
                        self.tally.wrong_page += 1
                        return False
                    return True
                if seen.finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    self.tally.bad_finish += 1
                    return False

    async def open(self) -> bool:
        t0 = time.perf_counter()
        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                           open_timeout=30, ping_interval=None)
        await self._send_rerun()
        ok = await self._until_finished()
        if ok:
            self.tally.opens.append(time.perf_counter() - t0)
            if self.knob is None:
                self.tally.no_knob += 1
                return False
        return ok

    async def move(self, rng: random.Random) -> bool:
        """Move the knob to another stop and wait for the rerun to end; record the time. As the browser
        does for a widget bound to the URL, the new value also goes into the query string."""
        opts = self.knob["options"]
        choice = rng.choice([o for o in opts if o != self.knob["value"]])
        self.knob["value"] = choice
        self.query_string = with_param(self.query_string, self.knob_key, choice)
        t0 = time.perf_counter()
        await self._send_rerun((self.knob["id"], choice))
        if await self._until_finished():
            self.tally.moves.append(time.perf_counter() - t0)
            return True
        return False

    async def close(self):
        if self.ws is not None:
            await self.ws.close()


async def drive(ws_url: str, run: str, knob_key: str, n: int, seconds: float, interval: float,
                seed: int, on_window) -> Tally:
    """Open n sessions, then for `seconds` move each one's knob about every `interval` seconds."""
    tally = Tally()
    sessions = [Session(ws_url, run, knob_key, tally) for _ in range(n)]
    opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
    live = []
    for s, ok in zip(sessions, opened):
        if isinstance(ok, BaseException):
            tally.disconnects += 1
        elif ok:
            live.append(s)
    window = on_window()          # measurement starts: every session is open and idle
    end = time.perf_counter() + seconds

    async def loop(s: Session, rng: random.Random):
        await asyncio.sleep(rng.uniform(0, interval))        # stagger the first moves
        while time.perf_counter() < end:
            try:
                if not await s.move(rng):
                    return
            except websockets.ConnectionClosed:
                tally.disconnects += 1
                return
            await asyncio.sleep(rng.uniform(0.5 * interval, 1.5 * interval))

    await asyncio.gather(*(loop(s, random.Random(seed + i)) for i, s in enumerate(live)))
    window.stop()
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return tally


# ---- the server and what it costs ---------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, log: Path, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free port with EEL_CHECKPOINTS = root (as tests/conftest.py does)."""
    port = free_port()
    env = {**os.environ, "EEL_CHECKPOINTS": str(root), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_server(proc)
            raise RuntimeError(f"streamlit did not start; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Window:
    """Server CPU and RSS, client CPU and load average over one measurement window."""

    def __init__(self, server: psutil.Process):
        self.server, self.me = server, psutil.Process()
        self.t0 = time.perf_counter()
        self.cpu0, self.me0 = tree_cpu_seconds(server), self._my_cpu()
        self.load0 = os.getloadavg()[0]
        psutil.cpu_percent()                  # starts the machine-wide count
        self.rss_max = self.rss0 = tree_rss(server)
        self._task = asyncio.get_running_loop().create_task(self._sample())

    def _my_cpu(self) -> float:
        t = self.me.cpu_times()
        return t.user + t.system

    async def _sample(self):
        while True:
            await asyncio.sleep(1.0)
            self.rss_max = max(self.rss_max, tree_rss(self.server))

    def stop(self):
        self._task.cancel()
        wall = time.perf_counter() - self.t0
        self.wall = wall
        self.server_cpu = (tree_cpu_seconds(self.server) - self.cpu0) / wall
        self.client_cpu = (self._my_cpu() - self.me0) / wall
        self.load1 = os.getloadavg()[0]
        self.machine_cpu = psutil.cpu_percent() / 100   # every core, every process: others' work shows here
        self.rss_max = max(self.rss_max, tree_rss(self.server))


# ---- one N ----------------------------------------------------------------------------------------
def measure(n: int, args, root: Path, logdir: Path) -> dict:
    proc, url = start_server(root, logdir / f"server-{n}.log")
    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    server = psutil.Process(proc.pid)
    try:
        async def go():
            warm = Tally()
            s = Session(ws_url, args.run, args.knob, warm)
            if not await s.open():
                raise RuntimeError(f"the warm-up session could not open Explore on {args.run}: "
                                   f"{warm.exceptions[:3]} timeouts={warm.timeouts} knob found={s.knob is not None} "
                                   f"(server log: {logdir / f'server-{n}.log'})")
            for _ in range(3):
                await s.move(random.Random(1))
            await s.close()
            holder = {}

            def on_window():
                holder["w"] = Window(server)
                return holder["w"]

            tally = await drive(ws_url, args.run, args.knob, n, args.seconds, args.interval, args.seed, on_window)
            return warm, tally, holder["w"]

        warm, tally, win = asyncio.run(go())
    finally:
        stop_server(proc)
    return {
        "sessions": n, "errors": tally.errors, "exceptions": tally.exceptions[:5],
        "disconnects": tally.disconnects, "timeouts": tally.timeouts, "bad_finish": tally.bad_finish,
        "no_knob": tally.no_knob, "wrong_page": tally.wrong_page, "moves": len(tally.moves),
        "median_s": statistics.median(tally.moves) if tally.moves else float("nan"),
        "p90_s": percentile(tally.moves, 90), "max_s": max(tally.moves, default=float("nan")),
        "open_median_s": statistics.median(tally.opens) if tally.opens else float("nan"),
        "warm_move_s": warm.moves, "server_cpu": win.server_cpu, "client_cpu": win.client_cpu,
        "rss_mb": win.rss_max / 2**20, "rss_start_mb": win.rss0 / 2**20, "machine_cpu": win.machine_cpu, "load_start": win.load0, "load_end": win.load1, "window_s": win.wall,
    }


def print_table(rows: list[dict]):
    head = (f"{'N':>3}  {'errors':>6}  {'moves':>5}  {'median s':>8}  {'p90 s':>6}  {'max s':>6}  "
            f"{'x N=1 med':>9}  {'server CPU':>10}  {'RSS MB start/max':>16}  {'client CPU':>10}  {'machine busy':>12}  "
            f"{'load 1m start/end':>17}")
    print(head)
    print("-" * len(head))
    ref = rows[0]["median_s"] if rows and rows[0]["sessions"] == 1 else float("nan")
    for r in rows:
        print(f"{r['sessions']:>3}  {r['errors']:>6}  {r['moves']:>5}  {r['median_s']:8.3f}  {r['p90_s']:6.3f}  "
              f"{r['max_s']:6.2f}  {r['median_s'] / ref:9.2f}  {100 * r['server_cpu']:9.0f}%  {r['rss_start_mb']:7.0f}/{r['rss_mb']:<8.0f}  "
              f"{100 * r['client_cpu']:9.0f}%  {100 * r['machine_cpu']:11.0f}%  {r['load_start']:8.2f}/{r['load_end']:<8.2f}")
    for r in rows:
        if r["errors"]:
            print(f"N={r['sessions']}: {len(r['exceptions'])} exception elements shown (first 5), "
                  f"{r['disconnects']} disconnects, {r['timeouts']} reruns without an end in {RERUN_TIMEOUT_S:.0f} s, "
                  f"{r['bad_finish']} bad ends, {r['no_knob']} sessions without the knob, "
                  f"{r['wrong_page']} runs that showed another page than Explore")
            for e in r["exceptions"]:
                print("   ", e)
    last = rows[-1]
    met = last["errors"] == 0 and last["p90_s"] <= GOAL_P90_S
    print(f"\ngoal at N={last['sessions']}: no errors and p90 <= {GOAL_P90_S:g} s: {'met' if met else 'NOT met'}")
    print(f"server CPU: share of one core (this machine has {os.cpu_count()}; the server's Python runs on one at a "
          "time); machine busy: all cores, all processes (near 100% means other work competes with the server); "
          "RSS: the server and its children when the window opens (sessions open) and its largest sample; times: knob move sent -> that rerun's "
          "script_finished received")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="1,10,30", help="comma-separated session counts (default 1,10,30)")
    ap.add_argument("--seconds", type=float, default=40.0, help="measured window per count (default 40)")
    ap.add_argument("--interval", type=float, default=4.0,
                    help="mean seconds between one session's knob moves (uniform 0.5x-1.5x; default 4)")
    ap.add_argument("--run", default="rotten_tomatoes-joint", help="run folder under the checkpoint root")
    ap.add_argument("--root", default=str(REPO / "checkpoints"), help="the checkpoint root (default checkpoints/)")
    ap.add_argument("--knob", default="entropy.threshold", help="widget key of the select slider to move")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    logdir = Path(tempfile.mkdtemp(prefix="eel-sessions-"))
    print(f"run {args.run}, knob {args.knob}, {args.seconds:g} s per count, a move every ~{args.interval:g} s "
          f"per session; load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs in {logdir}",
          flush=True)
    rows = []
    for n in counts:
        rows.append(measure(n, args, Path(args.root), logdir))
        r = rows[-1]
        print(f"  N={n}: {r['moves']} moves, median {r['median_s']:.3f} s, p90 {r['p90_s']:.3f} s, "
              f"errors {r['errors']}, load {r['load_end']:.2f}", flush=True)
    print()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
