"""Verification at scale: policyc matrix/check/diff against network-config-analyzer (NCA), same run.

For each size, bench/gen_cluster.py writes a Kubernetes NetworkPolicy cluster (and its one-port change);
every tool run is a fresh subprocess with a time limit, timed on the wall clock, its peak RSS read from
wait4()'s rusage of that very child.  Afterwards the connectivity of the two tools is compared pair by
pair on the ports the policies use (plus two addresses outside the cluster), and every disagreement is
listed.

    python3 bench/verify_scale.py --nca /tmp/ncaenv/bin/nca --sizes 100,500,1000,5000 --limit 600 \\
        --out /tmp/verify-scale --json results.json            # both tools, k8s inputs
    python3 bench/verify_scale.py --flavour cilium --json cilium.json   # policyc alone, Cilium inputs
    python3 bench/verify_scale.py --report results.json cilium.json --plot docs/bench-verify.png

Install NCA in its own venv (``python3 -m venv /tmp/ncaenv && /tmp/ncaenv/bin/pip install
network-config-analyzer==2.1.0``) and pass its ``nca`` by path: putting that venv first on PATH would
also make ``python3`` the venv's, which lacks policyc's dependencies.  The plot needs matplotlib
(``pip install -e '.[bench]'``).  docs/benchmarks.md has the commands and results of the last runs.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PORTS = ("53/UDP", "53/TCP", "443/TCP", "5432/TCP", "5672/TCP", "6379/TCP", "8080/TCP", "8081/TCP",
         "9090/TCP", "9105/TCP", "9111/TCP")
EXTERNALS = ("203.0.113.7", "10.1.2.3")


@dataclass(frozen=True)
class Run:
    flavour: str
    size: int
    policies: int
    tool: str
    task: str
    seconds: float
    peak_mb: float
    status: str  # ok, exit N, timeout, skipped (timed out at a smaller size)
    load: float = 0.0  # 1-minute load average when the run started: the machine is shared (noise)
    cpu: float = 0.0   # user + system seconds of the child (0: not recorded)

    @property
    def shown(self) -> str:
        if self.status in ("timeout", "skipped"):
            return f"> {self.seconds:.0f}"
        return f"{self.seconds:.2f}" + ("" if self.status == "ok" else f" ({self.status})")


def measure(cmd: list[str], limit: float, stdout: Path, stderr: Path,
            env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS MiB, status, CPU seconds) of one fresh child; killed with its group past
    ``limit``.  CPU time (user + system) is the figure a shared, loaded machine distorts least."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
        status = None
        while True:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            elapsed = time.monotonic() - start
            if pid:
                status = "ok" if os.waitstatus_to_exitcode(code) == 0 else \
                    f"exit {os.waitstatus_to_exitcode(code)}"
                break
            if elapsed > limit:
                os.killpg(proc.pid, signal.SIGKILL)
                _, code, usage = os.wait4(proc.pid, 0)
                status = "timeout"
                break
            time.sleep(0.02)
        proc.returncode = 0  # reaped above; keeps Popen from waiting again
    return elapsed, usage.ru_maxrss / 1024, status, usage.ru_utime + usage.ru_stime


def commands(d: Path, nca: list[str], python: str) -> dict[tuple[str, str], tuple[list[str], str]]:
    """(tool, task) -> (argv, output file name) on cluster directory ``d``."""
    pol, chg, inv = str(d / "policies"), str(d / "policies-changed"), str(d / "inventory.yaml")
    # --return_0: NCA's exit code counts failed queries (a diff found is not an error here).
    lists = ["--pod_list", str(d / "pods.yaml"), "--ns_list", str(d / "namespaces.yaml"), "--return_0"]
    pc = [python, "-m", "policyc.cli"]
    return {
        ("policyc", "matrix"): (pc + ["matrix", pol, "--inventory", inv, "--format", "json",
                                      "--ports", ",".join(PORTS), "--external", ",".join(EXTERNALS)], "matrix.json"),
        ("policyc", "check"): (pc + ["check", pol, "--format", "json", "--fail-on", "never"], "check.json"),
        ("policyc", "check --inventory"): (pc + ["check", pol, "--inventory", inv, "--format", "json",
                                                 "--fail-on", "never"], "check-inv.json"),
        ("policyc", "diff"): (pc + ["diff", pol, chg, "--format", "json"], "diff.json"),
        ("policyc", "diff --inventory"): (pc + ["diff", pol, chg, "--inventory", inv, "--format", "json"],
                                          "diff-inv.json"),
        ("nca", "connectivity"): (nca + ["--connectivity", pol, *lists, "-o", "txt_no_fw_rules",
                                         "-f", str(d / "nca-conn.txt")], "nca-conn.log"),
        ("nca", "semantic_diff"): (nca + ["--semantic_diff", chg, "--base_np_list", pol, *lists,
                                          "-o", "txt", "-f", str(d / "nca-diff.txt")], "nca-diff.log"),
        ("nca", "sanity"): (nca + ["--sanity", pol, *lists], "nca-sanity.log"),
    }


# ---- connectivity agreement ----

def parse_nca_conn(text: str) -> set[tuple[str, int]] | None:
    """NCA's connection set as {(protocol, port)}; None stands for every connection."""
    text = text.strip()
    if text == "All connections":
        return None
    if text == "No connections":
        return set()
    out: set[tuple[str, int]] = set()
    for group in re.findall(r"\{([^}]*)\}", text):
        fields = dict(f.split(":", 1) for f in re.split(r",(?=[a-z_]+:)", group))
        unknown = set(fields) - {"protocols", "dst_ports"}
        if unknown:
            raise ValueError(f"NCA connection {text!r}: unexpected fields {sorted(unknown)}")
        protocols = [p.strip() for p in fields["protocols"].split(",")]
        wanted = [(p.split("/")[1], int(p.split("/")[0])) for p in PORTS]
        for proto, port in wanted:
            if proto not in protocols:
                continue
            if "dst_ports" not in fields or any(_in_range(port, r) for r in fields["dst_ports"].split(",")):
                out.add((proto, port))
    return out


def _in_range(port: int, text: str) -> bool:
    first, _, last = text.strip().partition("-")
    return int(first) <= port <= int(last or first)


def _nca_endpoint(text: str):
    """``ns/pod[Pod]`` -> "ns/pod"; an address range or CIDR -> (first, last) addresses."""
    text = text.strip()
    if text.endswith("]"):
        return text[:text.rindex("[")]
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return net[0], net[-1]
    first, _, last = text.partition("-")
    return ipaddress.ip_address(first), ipaddress.ip_address(last or first)


def load_nca(path: Path) -> dict[tuple[str, str], set | None]:
    """(from, to) -> allowed connections, addresses resolved to EXTERNALS."""
    out: dict[tuple[str, str], set | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if " => " not in line:
            continue
        pair, _, conn = line.partition(" : ")
        src, _, dst = pair.partition(" => ")
        conns = parse_nca_conn(conn)
        for a in _names(_nca_endpoint(src)):
            for b in _names(_nca_endpoint(dst)):
                prev = out.get((a, b), set())
                out[(a, b)] = None if prev is None or conns is None else prev | conns
    return out


def _names(ep) -> list[str]:
    if isinstance(ep, str):
        return [ep]
    first, last = ep
    return [e for e in EXTERNALS if ipaddress.ip_address(e).version == first.version
            and first <= ipaddress.ip_address(e) <= last]


def compare(matrix_json: Path, nca_txt: Path) -> tuple[int, list[dict]]:
    """(pairs × ports compared, disagreements) between policyc's matrix and NCA's connectivity."""
    nca = load_nca(nca_txt)
    compared, disagree = 0, []
    with open(matrix_json, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip().rstrip(",")
            if not line.startswith('{"from"'):
                continue
            row = json.loads(line)
            if row["from"] in EXTERNALS and row["to"] in EXTERNALS:
                continue  # no cluster endpoint: NCA reports no address-to-address connectivity
            conns = nca.get((row["from"], row["to"]), set())
            nca_allows = conns is None or (row["protocol"], row["port"]) in conns
            compared += 1
            if nca_allows != (row["verdict"] == "allow"):
                disagree.append({**row, "nca": "allow" if nca_allows else "deny"})
    return compared, disagree


# ---- driver ----

def bench_size(size: int, policies: int, out: Path, nca: list[str], limits: dict[str, float], python: str,
               tasks: set[str] | None, flavour: str, timed_out: set) -> tuple[list[Run], dict]:
    """Every (tool, task) once on a fresh cluster; one that hit its limit at a smaller size is not rerun."""
    d = out / f"c{size}-{flavour}"
    gen_cluster.generate(d, size, policies, flavour, changed=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    todo = commands(d, nca, python)
    for (tool, task), (cmd, name) in todo.items():
        if (tasks and f"{tool} {task}" not in tasks) or (tool == "nca" and flavour != "k8s"):
            continue
        limit = limits.get(task, limits["default"])
        if (tool, task) in timed_out:
            run = Run(flavour, size, policies, tool, task, limit, 0.0, "skipped", os.getloadavg()[0])
        else:
            # The matrix is timed without the disk: its output (gigabytes at 5000 pods) goes to /dev/null.
            output = Path(os.devnull) if task == "matrix" else d / name
            load = os.getloadavg()[0]
            seconds, peak, status, cpu = measure(cmd, limit, output, (d / name).with_suffix(".err"), env)
            run = Run(flavour, size, policies, tool, task, round(seconds, 3), round(peak, 1), status, load,
                      round(cpu, 2))
        if run.status in ("timeout", "skipped"):
            timed_out.add((tool, task))
        print(f"{size:>6} pods {policies:>6} pol  {tool:8} {task:18} {run.shown:>10} s {run.peak_mb:9.1f} MiB"
              f"  cpu {run.cpu:.1f} s  load {run.load:.1f}",
              file=sys.stderr, flush=True)
        runs.append(run)
    agreement: dict = {}
    done = {(r.tool, r.task) for r in runs if r.status == "ok"}
    if {("policyc", "matrix"), ("nca", "connectivity")} <= done:
        cmd, _ = todo[("policyc", "matrix")]
        with open(d / "matrix.json", "wb") as fh:
            subprocess.run(cmd, stdout=fh, env=env, check=True)
        compared, disagree = compare(d / "matrix.json", d / "nca-conn.txt")
        agreement = {"size": size, "compared": compared, "disagreements": disagree}
        print(f"{size:>6} pods: {compared} verdicts compared, {len(disagree)} disagreements", file=sys.stderr)
        (d / "matrix.json").unlink()  # up to gigabytes
    return runs, agreement


FAMILY = {"matrix": 0, "connectivity": 0, "check": 1, "check --inventory": 1, "sanity": 1,
          "diff": 2, "diff --inventory": 2, "semantic_diff": 2}


def plot(runs: list[Run], path: Path) -> None:
    """Time and peak memory against pods, log-log; comparable tasks share a colour, NCA dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    shades = (("#1f77b4", "#0b3d91", "#6baed6", "#08306b"), ("#2ca02c", "#145a14", "#74c476", "#00441b"),
              ("#d62728", "#7f0f0f", "#fc9272", "#67000d"))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
    series = dict.fromkeys((r.flavour, r.tool, r.task) for r in runs)
    for n, (flavour, tool, task) in enumerate(series):
        pts = [r for r in runs if (r.flavour, r.tool, r.task) == (flavour, tool, task)]
        style = {"nca": "--s", "policyc": "-o"}[tool] if flavour == "k8s" else ":^"
        family = shades[FAMILY[task]]
        colour = family[sum(1 for _, _, k in list(series)[:n] if FAMILY[k] == FAMILY[task]) % len(family)]
        label = f"{tool} {task}" + ("" if flavour == "k8s" else f" ({flavour})")
        ax_t.plot([r.size for r in pts], [r.seconds for r in pts], style, color=colour, label=label)
        limited = [r for r in pts if r.status in ("timeout", "skipped")]
        ax_t.plot([r.size for r in limited], [r.seconds for r in limited], "x", color=colour, markersize=12)
        measured = [r for r in pts if r.status == "ok"]
        ax_m.plot([r.size for r in measured], [r.peak_mb for r in measured], style, color=colour, label=label)
    for ax, ylabel in ((ax_t, "wall time, s  (x: stopped at the time limit)"), (ax_m, "peak RSS, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted({r.size for r in runs}))
        ax.set_xlabel("pods (policies = pods)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7, loc="upper left")
    fig.suptitle("Verification scale: policyc vs network-config-analyzer 2.1.0 (same machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


RATIOS = (("matrix", "connectivity"), ("diff --inventory", "semantic_diff"), ("diff", "semantic_diff"),
          ("check --inventory", "sanity"), ("check", "sanity"))


def markdown(runs: list[Run], agreements: list[dict]) -> str:
    """The tables of docs/benchmarks.md: time and peak memory per size, NCA / policyc ratios, agreement."""
    def cell(r: Run | None) -> str:
        if r is None:
            return "–"
        if r.status == "skipped":
            return f"> {r.seconds:.0f} s (not run)"
        cpu = f", cpu {r.cpu:.1f} s" if r.cpu else ""
        return f"{r.shown} s / {r.peak_mb:.0f} MiB" + (f" (load {r.load:.1f}{cpu})" if r.load else "")

    out = []
    for flavour in dict.fromkeys(r.flavour for r in runs):
        mine = [r for r in runs if r.flavour == flavour]
        cols = list(dict.fromkeys((r.tool, r.task) for r in mine))
        by = {(r.size, r.tool, r.task): r for r in mine}
        sizes = list(dict.fromkeys(r.size for r in mine))
        out += [f"**{flavour}** inputs: wall time / peak RSS (1-minute load average at start)", "",
                "| pods / policies | " + " | ".join(f"{t} {k}" for t, k in cols) + " |",
                "|---|" + "---|" * len(cols)]
        policies = {r.size: r.policies for r in mine}  # a size need not have run every task
        out += [f"| {n} / {policies[n]} | " + " | ".join(cell(by.get((n, t, k))) for t, k in cols)
                + " |" for n in sizes]
        out.append("")
        if any(r.tool == "nca" for r in mine):
            out += ["NCA time / policyc time (> : NCA stopped at its limit, so at least this):", "",
                    "| pods | " + " | ".join(f"{b} / {a}" for a, b in RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
            for n in sizes:
                cells = []
                for a, b in RATIOS:
                    pa, nb = by.get((n, "policyc", a)), by.get((n, "nca", b))
                    if not pa or not nb or pa.status != "ok":
                        cells.append("–")
                    else:
                        cpu = f" (CPU {nb.cpu / pa.cpu:.0f}×)" if nb.cpu and pa.cpu and nb.status == "ok" else ""
                        cells.append(("> " if nb.status != "ok" else "") + f"{nb.seconds / pa.seconds:.0f}×{cpu}")
                out.append(f"| {n} | " + " | ".join(cells) + " |")
            out.append("")
    for a in agreements:
        out.append(f"- {a['size']} pods: {a['compared']} verdicts compared, {len(a['disagreements'])} disagreements")
        out += [f"  - {d}" for d in a["disagreements"][:20]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,5000", help="pod counts (policies = pods)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/verify-scale"))
    parser.add_argument("--nca", default="nca", help="the NCA command (e.g. 'python3 -m nca')")
    parser.add_argument("--limit", type=float, default=600, help="time limit per tool run, seconds")
    parser.add_argument("--sanity-limit", type=float, default=300, help="time limit for NCA --sanity")
    parser.add_argument("--flavour", choices=("k8s", "cilium"), default="k8s",
                        help="cilium: CNP/CCNP inputs, policyc only (NCA reads Kubernetes NetworkPolicy only)")
    parser.add_argument("--tasks", help="comma-separated 'tool task' subset, e.g. 'policyc matrix,nca connectivity'")
    parser.add_argument("--json", type=Path, help="write the runs and the agreement here")
    parser.add_argument("--plot", type=Path, help="write a PNG of time and memory against pods here")
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: print the markdown tables of these --json files (and --plot them)")
    args = parser.parse_args(argv)
    if args.report:  # tables file by file; the plot takes a later file's run over an earlier one's
        latest: dict[tuple, Run] = {}
        for f in args.report:
            data = json.loads(f.read_text())
            runs = [Run(**r) for r in data["runs"]]
            print(f"`{f.name}`\n\n" + markdown(runs, data["agreement"]) + "\n")
            latest.update({(r.flavour, r.size, r.tool, r.task): r for r in runs})
        if args.plot:
            plot(list(latest.values()), args.plot)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    limits = {"default": args.limit, "sanity": args.sanity_limit}
    tasks = set(t.strip() for t in args.tasks.split(",")) if args.tasks else None
    runs, agreements, timed_out = [], [], set()
    for size in (int(s) for s in args.sizes.split(",")):
        r, a = bench_size(size, size, args.out, args.nca.split(), limits, sys.executable, tasks, args.flavour,
                          timed_out)
        runs += r
        if a:
            agreements.append(a)
        if args.json:  # after every size, so that a long run leaves partial results
            args.json.write_text(json.dumps({"runs": [asdict(x) for x in runs], "agreement": agreements},
                                            indent=1) + "\n")
    if args.plot:
        plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
