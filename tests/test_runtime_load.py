"""policyc load / unload / status / observe on veth pairs: pins, links, rollback, crash recovery, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernelreq import require_kernel
from policyc.bpf_runtime.libbpf import link_alive
from policyc.bpf_runtime.state import read_state, state_path
from policyc.cli import main
from runtimekit import CASE3, XA, XB, XC, compile_to, loaded_name, passes, pinned_link_ids, pins, veths

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def art3(tmp_path_factory):
    require_kernel()
    return compile_to(tmp_path_factory.mktemp("pcr") / "a3", CASE3 / "policies")


def test_load_status_observe_unload(art3, capsys):
    with veths("pcr0", "pcr1") as (if0, if1), loaded_name("pcrtest-load") as name:
        assert main(["load", str(art3), "--name", name, "--attach", f"x/a={if0}", "--attach", f"x/b={if1}",
                     "--xdp", "pcr1b"]) == 0
        out = capsys.readouterr().out
        assert f"from_pod  on {if0} ingress [tcx] (x/a)" in out and "xdp_node  on pcr1b xdp     [native]" in out
        assert sorted(p.name for p in (pins(name) / "links").iterdir()) == [
            "egress-pcr0a", "egress-pcr1a", "ingress-pcr0a", "ingress-pcr1a", "xdp-pcr1b"]
        assert {p.name for p in (pins(name) / "maps").iterdir()} >= {"ipcache", "policy", "interfaces", "ct_tcp",
                                                                     "ct_any", "ct_new", "events"}
        ids = pinned_link_ids(name)
        assert len(ids) == 5 and all(link_alive(i) for i in ids)
        state = read_state(name)
        assert state.artifact == str(art3.resolve()) and len(state.attachments) == 5

        # the pinned programs enforce the artifact: b -> a:80 allowed, c -> a:80 denied (default deny)
        assert passes(name, "to_pod", XB, XA) and not passes(name, "to_pod", XC, XA)

        assert main(["status", name, "--format", "json"]) == 0
        status = json.loads(capsys.readouterr().out)
        levels = {m["name"]: (m["entries"], m["max_entries"]) for m in status["maps"]}
        assert levels["endpoints"] == (9, 4096) and levels["policy"][0] == 1
        assert levels["ct_new"][0] == 1 and levels["ct_tcp"][0] == 0  # the allowed flow, not answered yet
        rules = {r["id"]: r for r in status["rules"]}
        assert rules[1]["packets"] == 1 and rules[1]["policy"] == "x/a-from-b" and rules[0]["packets"] == 1
        assert all(a["present"] for a in status["attachments"])

        assert main(["status", "--metrics"]) == 0
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(capsys.readouterr().out) for s in family.samples}
        assert samples[("policyc_rule_packets_total", tuple(sorted({
            "name": "pcrtest-load", "rule_id": "1", "rule": "NetworkPolicy/x/a-from-b/spec.ingress[0]",
            "policy": "x/a-from-b", "direction": "ingress", "verdict": "allow"}.items())))] == 1

        assert main(["observe", name, "--verdict", "deny", "--format", "json"]) == 0
        flows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(f["source"], f["destination"], f["dport"], f["verdict"], f["reason"]) for f in flows] == [
            ("x/c", "x/a", 80, "deny", "default-deny")]
        assert main(["observe", name]) == 0  # consumed: nothing pending any more
        assert capsys.readouterr().out == ""

        assert main(["unload", name]) == 0
        assert "5 attachment(s) detached" in capsys.readouterr().out
        assert not pins(name).exists() and not state_path(name).exists()
        assert not any(link_alive(i) for i in ids)
        assert main(["unload", name]) == 0  # idempotent


def test_datapath_drops_and_event_accounting_in_status_metrics_and_observe(art3, capsys):
    """A packet no rule decides (an IPv4 header shorter than 20 bytes) is dropped with its reason: counted
    in `status` and the metrics, reported by `observe`; the event counters are there, at zero."""
    from policyc.bpf_runtime.libbpf import Program
    from policyc.bpf_runtime.testrun import SKB_CTX_BYTES, TC_ACT_SHOT, frame
    from policyc.compiler.ir import Protocol
    import ipaddress

    with loaded_name("pcrtest-drops") as name:
        assert main(["load", str(art3), "--name", name]) == 0
        good = frame(ipaddress.ip_address(XB), ipaddress.ip_address(XA), Protocol.TCP, 40000, 80)
        short = good[:14] + bytes([0x44]) + good[15:]  # IHL 4
        prog = Program.open_pinned(str(pins(name) / "progs" / "to_pod"))
        try:
            assert prog.test_run(short, ctx=bytes(SKB_CTX_BYTES)).retval == TC_ACT_SHOT
        finally:
            prog.close()
        capsys.readouterr()
        assert main(["status", name, "--format", "json"]) == 0
        datapath = json.loads(capsys.readouterr().out)["datapath"]
        assert datapath["drops"] == [{"reason": "malformed-packet", "packets": 1, "bytes": len(short)}]
        assert datapath["stats"]["events_lost"] == 0 and datapath["stats"]["events_ratelimited_drop"] == 0
        assert main(["status", name]) == 0
        assert "dropped (malformed-packet): 1 packets" in capsys.readouterr().out
        assert main(["status", name, "--metrics"]) == 0
        metrics = capsys.readouterr().out
        assert f'policyc_drop_packets_total{{name="{name}",reason="malformed-packet"}} 1' in metrics
        assert f'policyc_events_lost_total{{name="{name}"}} 0' in metrics
        assert f'policyc_events_ratelimited_total{{name="{name}",verdict="drop"}} 0' in metrics
        assert main(["observe", name, "--format", "json"]) == 0
        flows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(f["verdict"], f["direction"], f["reason"], f["destination"]) for f in flows] == [
            ("deny", "ingress", "malformed-packet", "x/a")]


def test_attach_file_and_replace_with_a_new_attachment_set(art3, tmp_path, capsys):
    with veths("pcr7", "pcr8") as (if0, if1), loaded_name("pcrtest-af") as name:
        listing = tmp_path / "attach.txt"
        listing.write_text(f"# pods on this node\nx/a={if0}   # the web pod\n\n")
        assert main(["load", str(art3), "--name", name, "--attach-file", str(listing)]) == 0
        assert {a.iface for a in read_state(name).attachments} == {if0}
        kept = pinned_link_ids(name)
        # a replace naming x/a's interface and a new one: x/a's links stay (swapped), x/b's are added
        assert main(["load", str(art3), "--name", name, "--attach", f"x/b={if1}", "--attach", f"x/a={if0}"]) == 0
        assert {(a.endpoint, a.iface, a.hook) for a in read_state(name).attachments} == {
            ("x/a", if0, "ingress"), ("x/a", if0, "egress"), ("x/b", if1, "ingress"), ("x/b", if1, "egress")}
        assert set(kept) <= set(pinned_link_ids(name))
        # and one without x/a: its links are detached after the swap
        assert main(["load", str(art3), "--name", name, "--attach", f"x/b={if1}"]) == 0
        assert {a.iface for a in read_state(name).attachments} == {if1}
        assert not any(link_alive(i) for i in kept)
        listing.write_text("x/a\n")
        assert main(["load", str(art3), "--name", name, "--attach-file", str(listing)]) == 2
        assert f"{listing}:1: 'x/a': expected NS/POD=IFACE" in capsys.readouterr().err


def test_observe_names_the_deciding_rule(art3, capsys):
    with loaded_name("pcrtest-obs") as name:
        assert main(["load", str(art3), "--name", name]) == 0
        passes(name, "to_pod", XB, XA, sport=41000)
        capsys.readouterr()
        assert main(["observe", name, "--timeout", "0.2"]) == 0  # pending flows, then 0.2 s of following
        line = capsys.readouterr().out.strip()
        assert ("x/b:41000 (ID:257) -> x/a:80 (ID:256) TCP ALLOW "
                "(ingress, x/a-from-b NetworkPolicy/x/a-from-b/spec.ingress[0])") in line


def test_failed_attach_rolls_back(art3, capsys):
    """XDP native on a bridge (no driver XDP) fails after the TC links are attached: everything is undone."""
    with veths("pcr2") as (if0,), loaded_name("pcrtest-rb") as name:
        subprocess.run(["ip", "link", "add", "pcr2d", "type", "bridge"], check=True)
        try:
            assert main(["load", str(art3), "--name", name, "--attach", f"x/a={if0}", "--xdp", "pcr2d",
                         "--xdp-mode", "native"]) == 2
            err = capsys.readouterr().err
            assert "attach xdp_node to pcr2d XDP (native)" in err and "Traceback" not in err
            assert not pins(name).exists() and read_state(name) is None
            # the TC hooks are free again: a new load attaches there without complaint
            assert main(["load", str(art3), "--name", name, "--attach", f"x/a={if0}"]) == 0
            # auto mode falls back to generic XDP where the driver has none (added by a replace)
            capsys.readouterr()
            assert main(["load", str(art3), "--name", name, "--attach", f"x/a={if0}", "--xdp", "pcr2d"]) == 0
            assert "xdp_node  on pcr2d xdp     [generic]" in capsys.readouterr().out
        finally:
            subprocess.run(["ip", "link", "del", "pcr2d"], capture_output=True)


@pytest.mark.parametrize("args, message", [
    (["--attach", "x/a=pcrnope0"], "interface 'pcrnope0' does not exist"),
    (["--attach", "x/zz=lo"], "'x/zz' is not an endpoint of the artifact"),
    (["--attach", "x/a"], "expected NS/POD=IFACE"),
    (["--node-ip", "10.0.0.300"], "not an IP address"),
])
def test_bad_requests_are_clear_errors(art3, capsys, args, message):
    with loaded_name("pcrtest-bad") as name:
        assert main(["load", str(art3), "--name", name, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not pins(name).exists()


def test_verifier_rejection_shows_the_log_tail(art3, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(art3, broken)
    (broken / "bad.c").write_text(  # from_pod reads far outside its context: the verifier must refuse it
        '#define SEC(n) __attribute__((section(n), used))\n'
        'SEC("tc") int from_pod(void *ctx) { return *(int *)((char *)ctx + 100000); }\n'
        'SEC("tc") int to_pod(void *ctx) { return 0; }\n'
        'SEC("xdp") int xdp_node(void *ctx) { return 2; }\n'
        'char LICENSE[] SEC("license") = "GPL";\n')
    subprocess.run(["clang", "-O2", "-target", "bpf", "-c", str(broken / "bad.c"), "-o",
                    str(broken / "policyc.bpf.o")], check=True)
    with loaded_name("pcrtest-ver") as name:
        assert main(["load", str(broken), "--name", name]) == 2
        err = capsys.readouterr().err
        assert "kernel rejected" in err and "verifier log (tail)" in err and "[from_pod]" in err
        assert "off=100000 disallowed" in err and "Traceback" not in err
        assert not pins(name).exists()


CRASH = """
import os, sys
from policyc.bpf_runtime import loader
def die(state):
    os._exit(9)   # the process dies after attaching and pinning, before the state file is written
loader.write_state = die
from policyc.cli import main
main(sys.argv[1:])
"""


def test_unload_after_a_crash_works_from_the_pins(art3, capsys):
    with veths("pcr3") as (if0,), loaded_name("pcrtest-crash") as name:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        done = subprocess.run([sys.executable, "-c", CRASH, "load", str(art3), "--name", name,
                               "--attach", f"x/a={if0}"], env=env, capture_output=True, text=True)
        assert done.returncode == 9
        ids = pinned_link_ids(name)
        assert len(ids) == 2 and all(link_alive(i) for i in ids) and read_state(name) is None
        assert main(["status", name]) == 2
        assert "state file is missing" in capsys.readouterr().err
        assert main(["unload", name]) == 0
        assert "2 attachment(s) detached" in capsys.readouterr().out
        assert not pins(name).exists() and not any(link_alive(i) for i in ids)


def test_clsact_mode_loads_replaces_and_unloads(art3, capsys):
    from policyc.bpf_runtime.libbpf import BPF_TC_EGRESS, tc_query
    from policyc.bpf_runtime.attach import TC_HANDLE, TC_PRIORITY
    with veths("pcr4") as (if0,), loaded_name("pcrtest-cls") as name:
        index = int(open(f"/sys/class/net/{if0}/ifindex").read())
        assert main(["load", str(art3), "--name", name, "--attach", f"x/a={if0}", "--tc-mode", "clsact"]) == 0
        first = tc_query(index, BPF_TC_EGRESS, TC_HANDLE, TC_PRIORITY)
        assert first is not None
        assert main(["load", str(art3), "--name", name, "--tc-mode", "clsact"]) == 0
        second = tc_query(index, BPF_TC_EGRESS, TC_HANDLE, TC_PRIORITY)
        assert second is not None and second != first
        assert main(["unload", name]) == 0
        assert tc_query(index, BPF_TC_EGRESS, TC_HANDLE, TC_PRIORITY) is None


def test_without_privileges_is_a_clear_error(art3):
    """Root without capabilities (setpriv drops them all) cannot load: a clear message, exit 2."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m",
                           "policyc.cli", "load", str(art3), "--name", "pcrtest-nr"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "need root (CAP_BPF" in done.stderr and "Traceback" not in done.stderr


def test_bpffs_is_mounted_when_missing(art3, tmp_path):
    """POLICYC_BPFFS points the runtime at an empty directory: load mounts bpffs there, unload cleans it."""
    root = tmp_path / "bpffs"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "POLICYC_BPFFS": str(root),
           "POLICYC_STATE_DIR": str(tmp_path / "state")}
    cli = [sys.executable, "-m", "policyc.cli"]
    try:
        done = subprocess.run([*cli, "load", str(art3), "--name", "pcrtest-fs"], env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        assert any(line.split()[1:3] == [str(root), "bpf"] for line in open("/proc/self/mounts"))
        assert (root / "policyc" / "pcrtest-fs" / "maps" / "policy").exists()
        assert (tmp_path / "state" / "pcrtest-fs.json").exists()
        assert subprocess.run([*cli, "unload", "pcrtest-fs"], env=env).returncode == 0
        assert not (root / "policyc" / "pcrtest-fs").exists()
    finally:
        subprocess.run([*cli, "unload", "pcrtest-fs"], env=env, capture_output=True)
        subprocess.run(["umount", str(root)], capture_output=True)
    bad = subprocess.run([*cli, "load", str(art3), "--name", "pcrtest-fs"], capture_output=True, text=True,
                         env={**env, "POLICYC_BPFFS": "/proc/pcr-no-bpffs"})
    assert bad.returncode == 2 and "/proc/pcr-no-bpffs" in bad.stderr and "Traceback" not in bad.stderr


def test_status_without_the_artifact_directory_is_a_clear_error(art3, tmp_path, capsys):
    gone = tmp_path / "gone"
    shutil.copytree(art3, gone)
    with loaded_name("pcrtest-gone") as name:
        assert main(["load", str(gone), "--name", name]) == 0
        shutil.rmtree(gone)
        assert main(["status", name]) == 2
        err = capsys.readouterr().err
        assert "must stay in place" in err and "Traceback" not in err
        assert main(["unload", name]) == 0 and not pins(name).exists()
