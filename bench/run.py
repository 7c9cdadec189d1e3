"""Benchmark domainscan against Scrapy and a bare aiohttp floor on the shared webfarm, in one command.

Usage (as root: the webfarm needs network namespaces and nginx):

    python3 bench/run.py                                # --sites 2000 --rounds 3, every contender
    python3 bench/run.py --sites 2000 --rounds 5 --scaling 20000 --json /tmp/bench.json
    python3 bench/run.py --only domainscan-pg,scrapy --concurrency 100

Contenders: domainscan-pg (local PostgreSQL over its Unix socket), domainscan-sqlite, domainscan-nostore,
scrapy and aiohttp-floor (the peers in ../shared/bench/peers). It prints the machine, domainscan's version and
startup time, a Markdown table of medians, the extraction score of one domainscan-pg output, and the
targets, each "ok" or "MISS". Exit status 1 when a run failed.

Why it is built this way:
- Every contender runs in ONE `webfarm run` namespace (the script re-runs itself there with --inside), so
  nginx, the page cache and loopback are warmed and shared alike; the order rotates each round so no
  contender always goes first. `--scaling N2` runs domainscan-pg in a second namespace on an N2-site farm.
- Peak memory is the maximum over time of the RSS summed over the whole process tree, sampled every 20 ms
  from /proc, because domainscan may use worker processes; ru_maxrss, the largest single process, is kept
  too. CPU is user+sys from wait4(): the child and every descendant it reaped. PostgreSQL's server
  processes and nginx are counted in neither.
- Databases are fresh and migrated before every run, untimed. DOMAINSCAN_* variables are removed from the
  contenders' environment and they run in a scratch folder (no stray .env), so runs are comparable.
  Bytecode is cached under /tmp/domainscan-bench/pycache (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE
  dropped), as after a pip install, without writing into the source tree; an untimed warmup of every
  contender fills it and warms nginx before round 1.
- Farms are cached in /tmp/domainscan-bench/farm-N (--rebuild to force); outputs go to .../out/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEBFARM = Path(os.environ.get("DOMAINSCAN_WEBFARM", ROOT.parent / "shared" / "webfarm"))
PEERS = WEBFARM.parent / "bench" / "peers"
WORK = Path(tempfile.gettempdir()) / "domainscan-bench"
PG_SOCKET = "/var/run/postgresql"  # 127.0.0.1:5432 is unreachable inside the farm's network namespace
PG_DB = "domainscan_bench"
PG_URL = f"postgresql://postgres@/{PG_DB}?host={PG_SOCKET}"
SQLITE_URL = f"sqlite:///{WORK / 'run.db'}"
CONTENDERS = ("domainscan-pg", "domainscan-sqlite", "domainscan-nostore", "scrapy", "aiohttp-floor")
STORE = {"domainscan-pg": ["--database-url", PG_URL], "domainscan-sqlite": ["--database-url", SQLITE_URL]}
SCAN_FLAGS = ["--tenant", "bench", "--allow-net", "127.0.0.0/8", "--fail-on", "never"]
SCAN_FLAGS += ["--format", "jsonl", "--quiet"]
PEER_SCRIPTS = {"scrapy": "scrapy_homepages.py", "aiohttp-floor": "bare_aiohttp.py"}
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


class BenchError(Exception):
    """A step the benchmark cannot do without (build, database setup)."""


@dataclass
class Run:
    """One timed run of one contender: what --json keeps and the table is computed from."""

    name: str
    round: int
    sites: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # max over time of the RSS summed over the process tree
    maxrss_mb: float  # ru_maxrss: the largest single process
    exit_code: int
    lines: int
    errors: int  # records that report an error (broken farm sites are expected to)
    output: str
    problem: str | None


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def domainscan() -> str:
    return str(Path(sys.executable).parent / "domainscan")


def ensure_venv() -> None:
    """Re-run under the venv that has domainscan: `python3` on PATH may be a bare interpreter."""
    if Path(domainscan()).exists():
        return
    for venv in (os.environ.get("VIRTUAL_ENV"), ROOT / ".venv", ROOT / "venv", ROOT.parent / "venv"):
        py = Path(venv or "/nonexistent") / "bin" / "python"
        if (py.parent / "domainscan").exists() and py.exists():
            log(f"no domainscan beside {sys.executable}; re-running with {py}")
            os.execv(py, [str(py), *sys.argv])
    sys.exit(f"bench: no domainscan beside {sys.executable}; run this with the venv's python")


def clean_env() -> dict[str, str]:
    """The contenders' environment: no DOMAINSCAN_* settings, and bytecode cached (in WORK, not in the
    source tree) as after a pip install, even where PYTHONDONTWRITEBYTECODE is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMAINSCAN_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "PYTHONPYCACHEPREFIX": str(WORK / "pycache")}


def check(cmd: list[str]) -> str:
    """Run an untimed helper command; a failure becomes a BenchError with its last line of stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=WORK, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}: exit {proc.returncode}: {last}")
    return proc.stdout


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def farm_for(sites: int, rebuild: bool) -> Path:
    """A built farm of SITES sites, reused across invocations (building 20000 sites takes a while)."""
    farm, done = WORK / f"farm-{sites}", WORK / f"farm-{sites}" / ".bench-complete"
    if not rebuild and done.exists() and count_lines(farm / "domains.txt") == sites:
        return farm
    shutil.rmtree(farm, ignore_errors=True)
    log(f"building a {sites}-site farm in {farm}")
    check([str(WEBFARM / "webfarm"), "build", str(farm), "--sites", str(sites)])
    done.touch()
    return farm


class PeakSampler(threading.Thread):
    """Keeps the peak of the RSS summed over PID and all its descendants, sampled every `interval` s.

    This kernel has no /proc/PID/task/*/children, so each sample lists /proc and reads the stat line of
    every process not yet known to be outside the tree (a process outside never moves into it), which
    keeps a sample well under a millisecond.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.outside: set[int] = set()
        self.done = threading.Event()

    def tree_rss(self) -> int:
        parent: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) not in self.outside:
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
                parent[int(entry.name)], rss[int(entry.name)] = int(fields[1]), int(fields[21])
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        total, stack, inside = 0, [self.pid], set()
        while stack:
            pid = stack.pop()
            inside.add(pid)
            total += rss.get(pid, 0)
            stack.extend(children.get(pid, ()))
        self.outside.update(parent.keys() - inside)
        return total * PAGE

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.tree_rss())
            if self.done.wait(self.interval):
                return


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def prepare(name: str) -> None:
    """Give a storing contender an empty, migrated database (untimed), so every round stores alike."""
    if name == "domainscan-pg":
        psql = ["psql", "-h", PG_SOCKET, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc"]
        check([*psql, f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"])
        check([*psql, f"CREATE DATABASE {PG_DB}"])
    elif name == "domainscan-sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            (WORK / f"run.db{suffix}").unlink(missing_ok=True)
    else:
        return
    check([domainscan(), "db", "upgrade", *STORE[name]])


def command(name: str, domains: str, concurrency: int) -> list[str]:
    if name in PEER_SCRIPTS:
        return [sys.executable, str(PEERS / PEER_SCRIPTS[name]), domains, str(concurrency)]
    store = STORE.get(name, ["--no-store"])
    return [domainscan(), "scan", "--file", domains, *store, *SCAN_FLAGS, "--concurrency", str(concurrency)]


def one_run(name: str, rnd: int, farm: Path, sites: int, concurrency: int, limit: float) -> Run:
    """Time one contender; its output must be one JSON line per domain and its exit status 0."""
    out, err = (WORK / "out" / f"{name}-{sites}-{rnd}.{ext}" for ext in ("jsonl", "stderr"))
    run = Run(name, rnd, sites, 0.0, 0.0, 0.0, 0.0, -1, 0, 0, str(out), None)
    try:
        prepare(name)
    except BenchError as e:
        run.problem = f"setup failed: {e}"
        return run
    with out.open("wb") as stdout, err.open("wb") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command(name, str(farm / "domains.txt"), concurrency),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=WORK,
            env=clean_env(),
            start_new_session=True,  # so a run past --timeout can be killed with all its children
        )
        sampler, timer = PeakSampler(proc.pid), threading.Timer(limit, kill_group, (proc.pid,))
        sampler.start()
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: its own session does not get the terminal's SIGINT
            kill_group(proc.pid)
            raise
        finally:
            run.wall_s = time.perf_counter() - start
            timer.cancel()
            sampler.done.set()
            sampler.join()
    proc.returncode = run.exit_code = os.waitstatus_to_exitcode(status)
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.peak_rss_mb, run.maxrss_mb = sampler.peak / MB, usage.ru_maxrss * 1024 / MB
    bad = 0
    for line in out.read_text(errors="replace").splitlines():
        if line.strip():
            run.lines += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            run.errors += isinstance(rec, dict) and bool(rec.get("error") or rec.get("status") == "error")
    if run.exit_code != 0:
        last = (err.read_text(errors="replace").strip().splitlines() or ["(no stderr)"])[-1]
        run.problem = (
            f"exit {run.exit_code}{' (killed after --timeout)' if run.exit_code < 0 else ''}: {last}"
        )
    elif bad or run.lines != sites:
        run.problem = f"{run.lines} output lines ({bad} not JSON) for {sites} domains, see {out}"
    return run


def warmup(farm: Path, names: list[str], concurrency: int) -> None:
    """Untimed: each contender on 100 domains (bytecode, imports), then the floor on all (nginx, page cache),
    so that whoever goes first in round 1 pays no more than the others."""
    lines = (farm / "domains.txt").read_text().splitlines(keepends=True)
    (WORK / "warmup.txt").write_text("".join(lines[:100]))
    jobs = [(name, str(WORK / "warmup.txt")) for name in names]
    for name, domains in [*jobs, ("aiohttp-floor", str(farm / "domains.txt"))]:
        with contextlib.suppress(BenchError):  # a contender that cannot run fails, with its reason, later
            prepare(name)
            check(command(name, domains, concurrency))
    log("warmed up")


def inside(args: argparse.Namespace) -> int:
    """The measuring half, run inside `webfarm run`: rounds of every contender, raw results to --raw."""
    farm = Path(args.farm)
    sites, names = count_lines(farm / "domains.txt"), args.only
    if not args.no_warmup:
        warmup(farm, names, args.concurrency)
    runs: list[Run] = []
    for rnd in range(1, args.rounds + 1):
        shift = (rnd - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            run = one_run(name, rnd, farm, sites, args.concurrency, args.timeout)
            runs.append(run)
            log(
                f"[{sites} sites, round {rnd}/{args.rounds}] {name:<18} {run.wall_s:7.2f} s "
                f"cpu {run.cpu_s:6.2f} s  peak {run.peak_rss_mb:6.1f} MB  {run.errors:>4} error records  "
                f"{run.problem or 'ok'}"
            )
    Path(args.raw).write_text(json.dumps([asdict(r) for r in runs]))
    return 0


def in_farm(farm: Path, names: list[str], rounds: int, args: argparse.Namespace) -> list[Run]:
    """Re-run this script inside the farm's namespace, so all contenders share one nginx."""
    raw = WORK / f"raw-{farm.name}.json"
    raw.unlink(missing_ok=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--inside", "--farm", str(farm), "--raw", str(raw)]
    me += ["--rounds", str(rounds), "--only", ",".join(names), "--concurrency", str(args.concurrency)]
    me += ["--timeout", str(args.timeout), *["--no-warmup"] * args.no_warmup]
    cmd = [str(WEBFARM / "webfarm"), "run", str(farm), "--", *me]
    code = subprocess.run(cmd, check=False).returncode
    if code != 0 or not raw.exists():
        raise BenchError(f"the run inside `webfarm run {farm}` failed (exit {code})")
    return [Run(**r) for r in json.loads(raw.read_text())]


def startup(flag: str, times: int) -> list[float]:
    """Wall seconds of `domainscan FLAG`, after two warmups: what a user waits for before any work."""
    cmd = [domainscan(), flag]
    for _ in range(2):
        check(cmd)
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        check(cmd)
        samples.append(time.perf_counter() - start)
    return samples


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_kb = int(meminfo[meminfo.index("MemTotal:") + 1])
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{ram_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": git.stdout.strip() or "?",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def summary(runs: list[Run], name: str) -> dict[str, float] | None:
    """Medians over the good rounds of one contender (peak memory: the worst round); None if none was good."""
    good = [r for r in runs if r.name == name and r.problem is None]
    if not good:
        return None
    wall = statistics.median(r.wall_s for r in good)
    return {
        "wall": wall,
        "rate": good[0].sites / wall,
        "cpu": statistics.median(r.cpu_s for r in good),
        "peak": max(r.peak_rss_mb for r in good),
        "maxrss": max(r.maxrss_mb for r in good),
    }


def round_ratios(runs: list[Run], a: str, b: str) -> list[float]:
    """`a`'s wall time over `b`'s in each round where both ran well. A round's runs follow each other,
    so when the machine's speed drifts (a VM's does, by tens of percent over minutes) both are moved
    alike; the ratio of the medians can pair a fast run of one with a slow run of the other."""
    walls = {(r.name, r.round): r.wall_s for r in runs if r.problem is None}
    rounds = sorted({r.round for r in runs})
    return [walls[a, n] / walls[b, n] for n in rounds if (a, n) in walls and (b, n) in walls]


def ratio(a: dict[str, float] | None, b: dict[str, float] | None, key: str = "wall") -> float | None:
    return a[key] / b[key] if a and b else None


def target(label: str, value: float | None, limit: float, unit: str = "") -> str:
    verdict = "n/a " if value is None else "ok  " if value <= limit else "MISS"
    digits = {" s": 3, " MB": 1}.get(unit, 2)  # enough that a MISS never prints as the limit itself
    shown = "-" if value is None else f"{value:.{digits}f}{unit}"
    return f"  {verdict}  {label:<50} {shown:>10}  (target <= {limit}{unit})"


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    starts: dict[str, list[float]],
    runs: list[Run],
    scaling: list[Run],
    score: str,
) -> None:
    sites = runs[0].sites if runs else args.sites
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM, Linux {info['kernel']}")
    print(f"python {info['python']}, {info['version']} (commit {info['commit']}), {info['date']}")
    print(f"farm: {sites} sites, concurrency {args.concurrency}, {args.rounds} round(s), order rotated")
    for flag, xs in starts.items():
        print(f"startup `domainscan {flag}`: median {statistics.median(xs):.3f} s, p90 {p90(xs):.3f} s")
    print()
    stats = {name: summary(runs, name) for name in args.only}
    scrapy, floor = stats.get("scrapy"), stats.get("aiohttp-floor")
    head = ["contender", "median wall s", "domains/s", "median CPU s", "peak RSS MB (tree)"]
    head += ["largest proc MB", "× Scrapy", "× floor", "failed runs"]
    rows = [head, ["---"] * len(head)]
    for name, s in stats.items():
        failed = str(sum(1 for r in runs if r.name == name and r.problem))
        if s is None:
            rows.append([name, "FAILED", *["-"] * (len(head) - 3), failed])
            continue
        cells = [fmt(s[k], f) for k, f in (("wall", ".2f"), ("rate", ".0f"), ("cpu", ".2f"), ("peak", ".1f"))]
        cells += [fmt(s["maxrss"], ".1f"), fmt(ratio(s, scrapy), ".2f"), fmt(ratio(s, floor), ".2f")]
        rows.append([name, *cells, failed])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        cells = [
            ("-" * w if c == "---" else c.ljust(w) if i == 0 else c.rjust(w))
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")
    for other in ("scrapy", "aiohttp-floor"):
        per_round = round_ratios(runs, "domainscan-pg", other)
        if per_round:
            values = " ".join(f"{x:.2f}" for x in per_round)
            middle = statistics.median(per_round)
            print(f"\ndomainscan-pg / {other}, round by round: {values} (median {middle:.2f})")
    pg, big = stats.get("domainscan-pg"), summary(scaling, "domainscan-pg")
    if scaling:
        print(f"\nscaling: {scaling[0].sites} sites, domainscan-pg ", end="")
        if big:
            print(f"median wall {big['wall']:.2f} s ({big['rate']:.0f} domains/s), ", end="")
            print(f"peak RSS {big['peak']:.1f} MB (tree)")
        else:
            print(f"FAILED: {scaling[-1].problem}")
    print(f"\nextraction score (`webfarm score FARM OUTPUT`):\n{score}")
    sqlite_vs_nostore = ratio(stats.get("domainscan-sqlite"), stats.get("domainscan-nostore"))
    version_median = statistics.median(starts["--version"]) if starts else None
    print("\ntargets:")
    print(target("domainscan-pg wall / scrapy wall", ratio(pg, scrapy), 0.5))
    print(target("domainscan-pg wall / aiohttp-floor wall", ratio(pg, floor), 2.0))
    print(target("domainscan-pg peak RSS (tree)", pg["peak"] if pg else None, 150, " MB"))
    print(target("domainscan-sqlite wall / domainscan-nostore wall", sqlite_vs_nostore, 1.3))
    print(target("startup `domainscan --version` median", version_median, 0.25, " s"))
    if scaling:
        print(target(f"peak RSS {scaling[0].sites} sites / {sites} sites", ratio(big, pg, "peak"), 1.2))
    for r in [*runs, *scaling]:
        if r.problem:
            print(f"FAILED: {r.name} round {r.round} ({r.sites} sites): {r.problem}")


def score_output(farm: Path, runs: list[Run]) -> str:
    """`webfarm score` of the last good domainscan-pg output (else of another domainscan contender)."""
    good = [r for r in reversed(runs) if r.problem is None and r.name.startswith("domainscan")]
    good.sort(key=lambda r: r.name != "domainscan-pg")
    if not good:
        return "  (no good domainscan output to score)"
    proc = subprocess.run(
        [str(WEBFARM / "webfarm"), "score", str(farm), good[0].output],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    head = f"({good[0].name}, {good[0].sites} sites, round {good[0].round})"
    return "\n".join(f"  {ln}" for ln in [head, *lines[:-1], f"{lines[-1] if lines else '?'} {head}"])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=2000, help="sites in the farm (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every contender (default 3)")
    ap.add_argument("--concurrency", type=int, default=50, help="for every contender (domainscan's default)")
    ap.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders to run")
    ap.add_argument("--scaling", type=int, metavar="N2", help="also run domainscan-pg on an N2-site farm")
    ap.add_argument("--scaling-rounds", type=int, default=1, help="rounds of the --scaling run (default 1)")
    ap.add_argument("--startup-runs", type=int, default=20, help="timed runs of --version and --help")
    ap.add_argument("--timeout", type=float, default=1800, help="kill a run after this many seconds")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached farm(s)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warmup scan")
    ap.add_argument("--json", type=Path, help="write every raw measurement here")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--farm", help=argparse.SUPPRESS)
    ap.add_argument("--raw", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in CONTENDERS]
    if unknown or not args.only:
        ap.error(f"--only takes names among {', '.join(CONTENDERS)}; got {unknown or 'none'}")
    if args.rounds < 1 or args.scaling_rounds < 1 or args.startup_runs < 1:
        ap.error("--rounds, --scaling-rounds and --startup-runs must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    ensure_venv()
    (WORK / "out").mkdir(parents=True, exist_ok=True)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0 or shutil.which("nginx") is None or not (WEBFARM / "webfarm").exists():
        sys.exit(f"bench: needs root, nginx (apt-get install nginx-light) and {WEBFARM}/webfarm")
    try:
        farm = farm_for(args.sites, args.rebuild)
        info = {**machine(), "version": check([domainscan(), "--version"]).strip()}
        log(f"timing domainscan startup ({args.startup_runs} runs each)")
        starts = {flag: startup(flag, args.startup_runs) for flag in ("--version", "--help")}
        runs = in_farm(farm, args.only, args.rounds, args)
        scaling: list[Run] = []
        if args.scaling:
            scaling = in_farm(
                farm_for(args.scaling, args.rebuild), ["domainscan-pg"], args.scaling_rounds, args
            )
    except BenchError as e:
        sys.exit(f"bench: {e}")
    score = score_output(farm, runs)
    if scaling:
        score += "\n" + score_output(farm_for(args.scaling, False), scaling).splitlines()[-1]
    report(args, info, starts, runs, scaling, score)
    if args.json:
        raw = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "startup": starts}
        raw |= {"runs": [asdict(r) for r in runs], "scaling": [asdict(r) for r in scaling], "score": score}
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
        log(f"raw measurements written to {args.json}")
    return 1 if any(r.problem for r in [*runs, *scaling]) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the running contender was killed with its children; no traceback
        log("interrupted")
        sys.exit(130)
