"""Scaling per dimension: each input dimension grown alone, time and peak RSS per command, growth exponents.

For every dimension of bench/gen_dims.py and every size, the case is written to a directory and each
command runs as a fresh process (bench/verify_scale.py's ``measure``: wall time, peak RSS from wait4,
killed past the time limit; a command that hit its limit is not run at larger sizes):

* ``compile``: ``policyc compile P --inventory I -o ART`` (clang included);
* ``check``: ``policyc check P --inventory I --format json --fail-on never`` (every check);
* ``diff``: ``policyc diff P P2 --inventory I --format json`` (P2: one small change);
* ``matrix``: ``policyc matrix P --inventory I --format json --ports PORT`` to /dev/null (one port: its
  output is one row per ordered pair of pods, quadratic in pods by definition);
* ``graph``: ``policyc graph P --inventory I -o json`` (the connectivity graph ``paths`` and
  ``blast-radius`` search: a place per endpoint class and per CIDR the policies name);
* ``relabel``: the node-side relabel path without the kernel: read the artifact's sources.json, rebuild
  the pods, plan the relabel of one pod to a new label set (``endpoints.plan_set``), in a fresh process.

The growth exponent of a command is the least-squares slope of log(cpu - startup) against log(size),
where cpu is the child's user + system time (the machine is shared: wall time follows the load, CPU
time much less) and startup the CPU time of ``python -m policyc.cli --help`` in the same run (the
interpreter and imports would otherwise flatten the small sizes).  1 is linear, 2 quadratic.

    PYTHONPATH=. python3 bench/scale.py --json docs/bench-scale.json            # every dimension
    PYTHONPATH=. python3 bench/scale.py --dims cidr --sizes 100,1000,10000,100000
    PYTHONPATH=. python3 bench/scale.py --report docs/bench-scale.json --plot docs/bench-scale.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_dims  # noqa: E402
from verify_scale import measure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("compile", "check", "diff", "matrix", "graph", "relabel")
SIZES = {"cidr": (100, 1000, 10000, 100000)}
DEFAULT_SIZES = (100, 1000, 10000)
MATRIX_PORT = {"cidr": "443/TCP", "rules": "1000/TCP", "ports": "1000/TCP", "portranges": "1001/TCP",
               "entities": "1001/TCP", "namespaces": "80/TCP", "labels": "80/TCP", "nodes": "8080/TCP"}


@dataclass(frozen=True)
class Run:
    dimension: str
    size: int
    command: str
    seconds: float
    peak_mb: float
    status: str   # ok, exit N, timeout, skipped
    load: float   # 1-minute load average at the start: the machine is shared
    cpu: float    # user + system seconds: what the exponents are fitted on (wall time follows the load)


def argv(command: str, d: Path, dimension: str, python: str) -> list[str]:
    pc = [python, "-m", "policyc.cli"]
    pol, inv = str(d / "policies.yaml"), str(d / "inventory.yaml")
    return {
        "compile": pc + ["compile", pol, "--inventory", inv, "-o", str(d / "artifact")],
        "check": pc + ["check", pol, "--inventory", inv, "--format", "json", "--fail-on", "never"],
        "diff": pc + ["diff", pol, str(d / "policies-changed.yaml"), "--inventory", inv, "--format", "json"],
        "matrix": pc + ["matrix", pol, "--inventory", inv, "--format", "json",
                        "--ports", MATRIX_PORT.get(dimension, "8080/TCP"), "--external", "20.0.0.77,203.0.113.7"],
        "graph": pc + ["graph", pol, "--inventory", inv, "-o", "json", "--out", str(d / "graph.json")],
        "relabel": [python, str(Path(__file__).resolve()), "--relabel", str(d / "artifact"), (d / "relabel").read_text()],
    }[command]


def relabel(artifact: Path, endpoint: str) -> None:
    """The relabel path up to the map writes: sources, current pods, the plan for a new label set."""
    from policyc.bpf_runtime.endpoints import catalog_of, plan_set
    from policyc.bpf_runtime.state import State

    manifest = json.loads((artifact / "manifest.json").read_text())
    state = State("bench", str(artifact.resolve()), "", "", "tcx", 0.0)
    cat = catalog_of(state, manifest["features"])
    plan = plan_set(cat, cat.pods[endpoint], "relabel", endpoint, None, {"app": "relabelled", "version": "v2"}, None)
    print(json.dumps({"endpoint": endpoint, "entries": len(plan.entries)}))


def exponent(points: list[tuple[int, float]], startup: float) -> float | None:
    """Least-squares slope of log(seconds - startup) on log(size); None below two usable points."""
    usable = [(math.log(n), math.log(t - startup)) for n, t in points if t - startup > 0.02]
    if len(usable) < 2:
        return None
    mx = sum(x for x, _ in usable) / len(usable)
    my = sum(y for _, y in usable) / len(usable)
    var = sum((x - mx) ** 2 for x, _ in usable)
    return sum((x - mx) * (y - my) for x, y in usable) / var if var else None


def bench_dimension(dimension: str, sizes: list[int], out: Path, commands: list[str], limit: float,
                    python: str, tree: Path = REPO, tag: str = "") -> list[Run]:
    """Every command at every size; ``tree`` is the policyc checkout that runs them (``tag`` names it)."""
    # PYTHONSAFEPATH: `python -m` would put the working directory ahead of PYTHONPATH (another tree)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    runs, stopped = [], set()
    for n in sizes:
        d = out / f"{dimension}{tag}-{n}"
        # A separate process: the children's peak RSS (wait4) starts from the forking parent's size.
        subprocess.run([python, str(Path(__file__).with_name("gen_dims.py")), dimension, str(n), str(d)],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        for command in commands:
            load = os.getloadavg()[0]
            if command in stopped or (command == "relabel" and "compile" in stopped):
                run = Run(dimension + tag, n, command, limit, 0.0, "skipped", load, 0.0)
            else:
                target = Path(os.devnull) if command == "matrix" else d / f"{command}.out"
                seconds, peak, status, cpu = measure(argv(command, d, dimension, python), limit, target,
                                                     d / f"{command}.err", env)
                run = Run(dimension + tag, n, command, round(seconds, 3), round(peak, 1), status, round(load, 2),
                          round(cpu, 3))
            if run.status in ("timeout", "skipped") or (command == "compile" and run.status != "ok"):
                stopped.add(command)
            print(f"{dimension:>14} {n:>7} {command:8} {run.seconds:9.2f} s  cpu {run.cpu:8.2f} s "
                  f"{run.peak_mb:8.1f} MiB  {run.status}  load {load:.1f}", file=sys.stderr, flush=True)
            runs.append(run)
    return runs


def startup_seconds(python: str) -> float:
    """The CPU floor every command pays: interpreter start-up and policyc's imports (median of three)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times = sorted(measure([python, "-m", "policyc.cli", "--help"], 60, Path(os.devnull), Path(os.devnull), env)[3]
                   for _ in range(3))
    return round(times[1], 3)


def markdown(data: dict) -> str:
    """Per dimension: a table of time / peak RSS per size and command, then the fitted exponents."""
    runs = [Run(**r) for r in data["runs"]]
    startup = data["startup"]
    out = [f"Start-up floor (CPU of `python -m policyc.cli --help`, subtracted before fitting): {startup:.2f} s",
           "", "Cells: wall time / CPU time (user + system) / peak RSS (1-minute load average at the start). "
           "Exponents are fitted on CPU time, which the shared machine's load distorts least.", ""]
    for dim in dict.fromkeys(r.dimension for r in runs):
        mine = [r for r in runs if r.dimension == dim]
        cmds = list(dict.fromkeys(r.command for r in mine))
        by = {(r.size, r.command): r for r in mine}
        out += [f"**{dim}**", "",
                "| size | " + " | ".join(cmds) + " |", "|---:|" + "---|" * len(cmds)]
        for n in dict.fromkeys(r.size for r in mine):
            cells = []
            for c in cmds:
                r = by.get((n, c))
                if r is None:
                    cells.append("–")
                elif r.status == "skipped":
                    cells.append("not run")
                else:
                    flag = "" if r.status == "ok" else f" ({r.status})"
                    cells.append(f"{r.seconds:.2f} s / {r.cpu:.2f} s / {r.peak_mb:.0f} MiB{flag} ({r.load:.1f})")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        exps = [exponent([(r.size, r.cpu) for r in mine if r.command == c and r.status == "ok"], startup)
                for c in cmds]
        out.append("| exponent | " + " | ".join("–" if e is None else f"**{e:.2f}**" for e in exps) + " |")
        out.append("")
    return "\n".join(out)


def plot(data: dict, path: Path) -> None:
    """One panel per dimension: CPU time against size, log-log, a line per command."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Run(**r) for r in data["runs"] if r["status"] == "ok"]
    dims = list(dict.fromkeys(r.dimension for r in runs))
    cols = 4
    rows = -(-len(dims) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for ax, dim in zip(axes.flat, dims):
        for command in COMMANDS:
            pts = sorted((r.size, r.cpu) for r in runs if r.dimension == dim and r.command == command)
            if pts:
                ax.plot(*zip(*pts), "-o", markersize=3, label=command)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(dim, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(dims):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("size of the dimension (prefixes, pods, policies, rules, ports, ...)")
    fig.supylabel("CPU time (user + system), s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default=",".join(gen_dims.GENERATORS), help="comma-separated dimensions")
    parser.add_argument("--sizes", help="comma-separated sizes for every dimension asked (default: per dimension)")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--limit", type=float, default=300, help="time limit per command run, seconds")
    parser.add_argument("--out", type=Path, default=Path("/tmp/policyc-scale"))
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the policyc checkout to measure (e.g. an older commit's worktree, for before/after)")
    parser.add_argument("--tag", default="", help="appended to the dimension names of this run, e.g. ' (before)'")
    parser.add_argument("--json", type=Path, help="write (or, with --append, extend) the results here")
    parser.add_argument("--append", action="store_true", help="keep the runs already in --json")
    parser.add_argument("--plot", type=Path, help="write a PNG of every dimension here")
    parser.add_argument("--report", type=Path, metavar="JSON", help="run nothing: print the tables of this file")
    parser.add_argument("--relabel", nargs=2, metavar=("ARTIFACT", "ENDPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv_)
    if args.relabel:
        relabel(Path(args.relabel[0]), args.relabel[1])
        return 0
    if args.report:
        data = json.loads(args.report.read_text())
    else:
        data = {"startup": startup_seconds(sys.executable), "runs": []}
        if args.append and args.json and args.json.exists():
            data["runs"] = json.loads(args.json.read_text())["runs"]
        for dim in args.dims.split(","):
            sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES.get(dim, DEFAULT_SIZES)
            name = dim + args.tag
            data["runs"] = [r for r in data["runs"] if r["dimension"] != name or r["size"] not in sizes]
            data["runs"] += [asdict(r) for r in bench_dimension(dim, sizes, args.out, args.commands.split(","),
                                                                args.limit, sys.executable, args.tree, args.tag)]
            if args.json:  # after every dimension, so that a long run leaves partial results
                args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(markdown(data))
    if args.plot:
        plot(data, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
