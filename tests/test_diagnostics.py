"""Bad input of every kind: `policyc validate` (and the other commands) answer with
file:line:column, the field path and what is wrong, exit 2, and never a traceback.

Each table entry is one distinct bad input; the expected position is where a
reader should look (the offending key or value), checked exactly.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyc.cli import main
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.source import MAX_ALIAS_EXPANSION, MAX_DEPTH, parse_text

ROOT = Path(__file__).resolve().parents[1]

CNP = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
  namespace: x
spec:
  endpointSelector:
    matchLabels:
      app: a
"""
CCNP = """\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: c
spec:
"""
KNP = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: k
  namespace: x
spec:
"""


def cnp(body: str) -> str:
    """A CNP whose spec continues with ``body`` (indented two spaces); spec starts at line 6, body at 10."""
    return CNP + textwrap.indent(textwrap.dedent(body), "  ")


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def write(tmp_path: Path, text: str | bytes, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def assert_diag(output: str, file: Path | str, line: int, col: int, field: str, message: str) -> None:
    where = f"{file}:{line}:{col}: error:" + (f" {field}:" if field else "")
    hits = [x for x in output.splitlines() if x.startswith(where)]
    assert hits, f"no diagnostic at {where!r} in:\n{output}"
    assert any(message in x for x in hits), f"{message!r} not in {hits}"


# (id, file text, line, column, field path, message)
CASES = [
    ("malformed-yaml", "kind: [a, b\nname: x\n", 2, 5, "", "malformed YAML: did not find expected ',' or ']'"),
    ("tab-indent", "kind: x\n\tname: y\n", 2, 1, "", "malformed YAML: found a tab character that violates indentation"),
    ("not-a-mapping", "- apiVersion: v1\n- kind: Pod\n", 1, 1, "",
     "a document must be a mapping (a Kubernetes object), not a list"),
    ("scalar-document", "just a string\n", 1, 1, "", "a document must be a mapping (a Kubernetes object), not a string"),
    ("missing-kind", "apiVersion: v1\nmetadata: {name: x}\n", 1, 1, "", "not a Kubernetes object: missing kind"),
    ("kind-not-string", "apiVersion: cilium.io/v2\nkind: [CiliumNetworkPolicy]\n", 2, 1, "kind",
     "kind must be a string, not a list"),
    ("unknown-api-version", CNP.replace("cilium.io/v2", "cilium.io/v1"), 1, 1, "apiVersion",
     "unknown apiVersion 'cilium.io/v1' for CiliumNetworkPolicy: expected cilium.io/v2"),
    ("unknown-policy-kind", CNP.replace("kind: CiliumNetworkPolicy", "kind: CiliumNetworkPolicies"), 2, 1, "kind",
     "unknown policy kind 'CiliumNetworkPolicies' for cilium.io/v2; did you mean 'CiliumNetworkPolicy'?"),
    ("missing-name", CNP.replace("  name: p\n", "") + "  ingress: [{}]\n", 3, 1, "metadata", "missing metadata.name"),
    ("name-not-string", CNP.replace("name: p", "name: [p]") + "  ingress: [{}]\n", 4, 3, "metadata.name",
     "metadata.name must be a string, not a list"),
    ("neither-spec", CNP.split("spec:")[0], 1, 1, "", "policy has neither spec nor specs (R1.1)"),
    ("both-selectors", CCNP + "  endpointSelector: {}\n  nodeSelector: {}\n  ingress: [{}]\n", 5, 1, "spec",
     "needs exactly one of endpointSelector or nodeSelector, found both"),
    ("neither-selector", CCNP + "  ingress: [{}]\n", 5, 1, "spec",
     "needs exactly one of endpointSelector or nodeSelector, found neither"),
    ("node-selector-in-cnp", CNP.replace("endpointSelector", "nodeSelector") + "  ingress: [{}]\n", 7, 3,
     "spec.nodeSelector", "nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy (R1.1b)"),
    ("operator-case", cnp("""\
        ingress:
        - fromEndpoints:
          - matchExpressions:
            - {key: app, operator: in, values: [b]}
        """), 13, 20, "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
     "invalid operator 'in': expected In, NotIn, Exists or DoesNotExist; did you mean 'In'? "
     "(operators are case-sensitive)"),
    ("operator-unknown", cnp("""\
        ingress:
        - fromEndpoints:
          - matchExpressions:
            - {key: app, operator: Equals, values: [b]}
        """), 13, 20, "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
     "invalid operator 'Equals'"),
    ("in-without-values", cnp("""\
        egress:
        - toEndpoints:
          - matchExpressions:
            - key: app
              operator: In
        """), 13, 9, "spec.egress[0].toEndpoints[0].matchExpressions[0].values", "operator In needs at least one value"),
    ("exists-with-values", cnp("""\
        egress:
        - toEndpoints:
          - matchExpressions:
            - key: app
              operator: Exists
              values: [a]
        """), 15, 9, "spec.egress[0].toEndpoints[0].matchExpressions[0].values", "operator Exists takes no values"),
    ("label-value-number", CNP.replace("app: a", "version: 2") + "  ingress: [{}]\n", 9, 7,
     "spec.endpointSelector.matchLabels.version", "label value must be a string, not a number"),
    ("label-value-space", cnp("""\
        ingress:
        - fromEndpoints:
          - matchExpressions:
            - {key: app, operator: NotIn, values: [ok, "not ok"]}
        """), 13, 50, "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values[1]",
     "'not ok' is not a valid label value"),
    ("invalid-cidr", cnp("""\
        egress:
        - toCIDR: [10.0.0.300/8]
        """), 11, 14, "spec.egress[0].toCIDR[0]", "invalid CIDR '10.0.0.300/8'"),
    ("cidrset-bare-ip", cnp("""\
        egress:
        - toCIDRSet:
          - cidr: 10.1.2.3
        """), 12, 7, "spec.egress[0].toCIDRSet[0].cidr", "'10.1.2.3' is not in prefix notation"),
    ("except-outside", cnp("""\
        ingress:
        - fromCIDRSet:
          - cidr: 10.0.0.0/8
            except: [10.0.0.0/16, 192.168.0.0/16]
        """), 13, 29, "spec.ingress[0].fromCIDRSet[0].except[1]",
     "except 192.168.0.0/16 is outside its CIDR 10.0.0.0/8"),
    ("except-family", cnp("""\
        ingress:
        - fromCIDRSet:
          - cidr: 10.0.0.0/8
            except: ["fd00::/64"]
        """), 13, 16, "spec.ingress[0].fromCIDRSet[0].except[0]", "is not the same address family as 10.0.0.0/8"),
    ("port-out-of-range", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: "80"
            - port: "99999"
        """), 14, 9, "spec.ingress[0].toPorts[0].ports[1].port", "port 99999 is out of range 0-65535"),
    ("port-bad-name", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: web_server
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port",
     "port 'web_server' is neither a number 0-65535 nor a valid port name"),
    ("port-list", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: [80]
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port", "port must be a number or a port name, not a list"),
    ("port-unquoted", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: 80
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port",
     'port 80 is a number: quote it ("80"), the API server rejects a number here'),
    ("port-float", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: 80.5
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port",
     "port must be a number or a port name, not a fractional number"),
    ("port-missing", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - protocol: TCP
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port", "port is required (R1.16)"),
    ("knp-end-port-below-port", KNP + "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 8080, endPort: 80}\n",
     10, 20, "spec.ingress[0].ports[0].endPort", "endPort 80 is less than port 8080"),
    ("port-bad-octal", cnp("""\
        ingress:
        - toPorts:
          - ports:
            - port: "080"
        """), 13, 9, "spec.ingress[0].toPorts[0].ports[0].port",
     "port '080' is not a valid octal number (Cilium reads a leading 0 as octal)"),
    ("unknown-protocol", cnp("""\
        egress:
        - toPorts:
          - ports:
            - {port: "53", protocol: DNS}
        """), 13, 22, "spec.egress[0].toPorts[0].ports[0].protocol",
     "unknown protocol 'DNS': expected one of TCP, UDP, SCTP, ANY"),
    ("knp-lowercase-protocol", KNP + "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, protocol: tcp}\n",
     10, 18, "spec.ingress[0].ports[0].protocol", "unknown protocol 'tcp': expected one of TCP, UDP, SCTP"),
    ("knp-port-string", KNP + "  podSelector: {}\n  ingress:\n  - ports:\n    - port: \"80\"\n", 10, 7,
     "spec.ingress[0].ports[0].port", "port '80' is a string: write the number unquoted"),
    ("knp-missing-pod-selector", KNP + "  ingress: [{}]\n", 6, 1, "spec", "missing field 'podSelector'"),
    ("l7-in-deny", cnp("""\
        ingressDeny:
        - toPorts:
          - ports: [{port: "80"}]
            rules:
              http: [{method: GET}]
        """), 13, 7, "spec.ingressDeny[0].toPorts[0].rules",
     "L7 rules are not allowed in a deny rule: deny works on L3/L4 only (R4.3)"),
    ("fqdn-in-deny", cnp("""\
        egressDeny:
        - toFQDNs: [{matchName: a.com}]
        """), 11, 5, "spec.egressDeny[0].toFQDNs", "toFQDNs is not allowed in a deny rule (R4.3)"),
    ("dns-on-ingress", cnp("""\
        ingress:
        - toPorts:
          - ports: [{port: "53", protocol: UDP}]
            rules:
              dns: [{matchPattern: "*"}]
        """), 14, 9, "spec.ingress[0].toPorts[0].rules.dns", "DNS rules are only allowed on egress (R1.12)"),
    ("http-on-udp", cnp("""\
        ingress:
        - toPorts:
          - ports: [{port: "80", protocol: UDP}]
            rules:
              http: [{}]
        """), 13, 7, "spec.ingress[0].toPorts[0].rules",
     "HTTP rules need every port of the port rule to have protocol TCP (R1.19)"),
    ("l7-port-zero", cnp("""\
        ingress:
        - toPorts:
          - ports: [{port: "0", protocol: TCP}]
            rules:
              http: [{}]
        """), 13, 7, "spec.ingress[0].toPorts[0].rules", "L7 rules cannot be combined with port 0 (R1.20)"),
    ("unknown-field-suggestion", cnp("""\
        ingress:
        - fromEndpoint:
          - matchLabels: {app: b}
        """), 11, 5, "spec.ingress[0].fromEndpoint", "unknown field 'fromEndpoint'; did you mean 'fromEndpoints'?"),
    ("unknown-port-field", cnp("""\
        ingress:
        - toPorts:
          - ports: [{port: "80", proto: TCP}]
        """), 12, 28, "spec.ingress[0].toPorts[0].ports[0].proto", "unknown field 'proto'; did you mean 'protocol'?"),
    ("unknown-field-no-suggestion", cnp("""\
        ingress:
        - zzz: 1
        """), 11, 5, "spec.ingress[0].zzz", "unknown field 'zzz'"),
    ("unsupported-to-services", cnp("""\
        egress:
        - toServices:
          - k8sService: {serviceName: db, namespace: x}
        """), 11, 5, "spec.egress[0].toServices", "unsupported field 'toServices'"),
    ("two-peer-kinds", cnp("""\
        ingress:
        - fromEndpoints: [{}]
          fromCIDR: [10.0.0.0/8]
        """), 11, 5, "spec.ingress[0]", "combining fromEndpoints and fromCIDR in one rule is not supported"),
    ("icmps-and-ports", cnp("""\
        ingress:
        - toPorts: [{ports: [{port: "80"}]}]
          icmps: [{fields: [{type: 8}]}]
        """), 11, 5, "spec.ingress[0]", "icmps and toPorts cannot be combined in one rule (R1.8)"),
    ("icmp-type-family", cnp("""\
        ingress:
        - icmps:
          - fields: [{family: IPv4, type: PacketTooBig}]
        """), 12, 31, "spec.ingress[0].icmps[0].fields[0].type", "invalid IPv4 ICMP type 'PacketTooBig'"),
    ("unknown-entity", cnp("""\
        egress:
        - toEntities: [wrld]
        """), 11, 18, "spec.egress[0].toEntities[0]", "unknown entity 'wrld'; did you mean 'world'?"),
    ("two-l7-families", cnp("""\
        egress:
        - toPorts:
          - ports: [{port: "53", protocol: TCP}]
            rules:
              http: [{}]
              dns: [{matchName: a.com}]
        """), 13, 7, "spec.egress[0].toPorts[0].rules", "only one L7 family per port rule, found http, dns (R1.22)"),
    ("ingress-not-list", cnp("ingress: {fromEndpoints: []}\n"), 10, 3, "spec.ingress", "must be a list, not a mapping"),
    ("duplicate-key", cnp("ingress: []\ningress: [{}]\n"), 11, 3, "spec.ingress", "duplicate key 'ingress'"),
    ("merge-key", CNP + "  <<: {ingress: []}\n", 10, 3, "spec", "YAML merge keys (<<) are not supported"),
    ("bad-int-tag", cnp("ingress:\n- toPorts: [{ports: [{port: !!int eighty}]}]\n"), 11, 31,
     "spec.ingress[0].toPorts[0].ports[0].port", "'eighty' is not a valid int"),
    ("undefined-alias", cnp("ingress: *nothing\n"), 10, 12, "spec.ingress", "alias *nothing names no complete anchor"),
    ("complex-key", CNP + "  ? [a, b]\n  : 1\n", 10, 5, "spec", "mapping keys must be plain strings"),
]


@pytest.mark.parametrize("text,line,col,field,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_policy(tmp_path, capsys, text, line, col, field, message):
    path = write(tmp_path, text)
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2, out
    assert_diag(out, path, line, col, field, message)
    assert "invalid: " in out


def test_cases_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 35
    assert len({c[1] for c in CASES}) == len(CASES)


def test_json_format_carries_position(tmp_path, capsys):
    path = write(tmp_path, CASES[[c[0] for c in CASES].index("port-out-of-range")][1])
    rc, out = run_cli(capsys, "validate", "--format", "json", str(path))
    import json
    data = json.loads(out)
    assert rc == 2 and data["valid"] is False
    (diag,) = data["diagnostics"]
    assert (diag["file"], diag["line"], diag["column"], diag["field"]) == (
        str(path), 14, 9, "spec.ingress[0].toPorts[0].ports[1].port")


def test_top_level_unknown_field_is_a_warning(tmp_path, capsys):
    """The API server prunes unknown top-level fields; the policy means the same, so exit 0."""
    path = write(tmp_path, CNP.replace("spec:", "description: allow a\nspec:") + "  ingress: [{}]\n")
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 0, out
    assert f"{path}:6:1: warning: description: unknown top-level field 'description'" in out
    assert "description belongs in the rule (spec.description)" in out


@pytest.mark.parametrize("command", [
    ("validate", "{new}"), ("check", "{new}"),
    ("compile", "{new}", "--inventory", "{inv}", "--output-dir", "{tmp}/out"),
    ("query", "{new}", "--inventory", "{inv}", "--from", "203.0.113.7", "--to", "x/a", "--port", "80/TCP"),
    ("matrix", "{new}", "--inventory", "{inv}"), ("diff", "{old}", "{new}", "--no-new-access"),
    ("diff", "{new}", "{old}", "--no-new-access")])
def test_duplicate_policy_name_is_an_error(tmp_path, capsys, command):
    """Two files defining one kind/namespace/name are one object to the API server: the one
    applied last wins (R1.3b). Keeping both modelled a cluster that cannot exist: the deny of the
    first file decided verdicts and PC004 compared the union of both with itself."""
    deny = CNP + "  ingressDeny: [{fromEntities: [world]}]\n  ingress: [{fromEntities: [all]}]\n"
    write(tmp_path, deny, "old/a.yaml")
    write(tmp_path, deny, "new/a.yaml")
    write(tmp_path, CNP + "  ingress: [{fromEntities: [all]}]\n", "new/b.yaml")
    inv = write(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\n"
                "status: {podIP: 10.0.0.1}\n", "inv.yaml")
    old, new = tmp_path / "old", tmp_path / "new"
    argv = [a.format(old=old, new=new, tmp=tmp_path, inv=inv) for a in command]
    rc, out = run_cli(capsys, *argv)
    assert rc == 2, out
    assert (f"{new}/b.yaml:4:3: error: metadata.name: CiliumNetworkPolicy x/p is defined twice "
            f"(first at {new}/a.yaml:4:3)") in out
    assert "Traceback" not in out


# ---------------------------------------------------------------- files

def test_empty_file(tmp_path, capsys):
    for name, text in (("empty.yaml", ""), ("comments.yaml", "# nothing\n---\n---\n")):
        path = write(tmp_path, text, name)
        rc, out = run_cli(capsys, "validate", str(path))
        assert rc == 2 and f"{path}: error: empty file: no YAML or JSON document in it" in out, out


def test_empty_file_in_a_directory_is_a_warning(tmp_path, capsys):
    """kubectl skips an empty file found in a directory; only one named on the command line is an error."""
    write(tmp_path, CNP + "  ingress: [{}]\n", "pol/a.yaml")
    empty = write(tmp_path, "# placeholder\n", "pol/b.yaml")
    rc, out = run_cli(capsys, "validate", str(tmp_path / "pol"))
    assert rc == 0 and f"{empty}: warning: empty file: no YAML or JSON document in it" in out, out
    assert "valid: 1 policies" in out


def test_stray_document_separators_are_not_objects(tmp_path, capsys):
    """`---` before, between and after objects (common in kubectl output) is no empty object."""
    doc = CNP + "  ingress: [{}]\n"
    path = write(tmp_path, "---\n" + doc + "---\n---\n" + doc.replace("name: p", "name: q") + "---\n")
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 0 and "valid: 2 policies" in out, out


def test_binary_garbage(tmp_path, capsys):
    path = write(tmp_path, bytes(range(256)) * 8, "blob.yaml")
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2 and f"{path}: error: binary file (contains NUL bytes), not YAML or JSON" in out


def test_non_utf8(tmp_path, capsys):
    path = write(tmp_path, CNP.encode() + b"  description: caf\xe9\n", "latin1.yaml")
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2 and f"{path}:10:1: error: file is not valid UTF-8" in out, out


def test_control_characters(tmp_path, capsys):
    path = write(tmp_path, "kind: \x07bell\n")
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2 and f"{path}:1:7: error: malformed YAML: character U+0007 is not allowed" in out, out


def test_json_errors(tmp_path, capsys):
    bad = write(tmp_path, '{"apiVersion": "cilium.io/v2",\n "kind": "CiliumNetworkPolicy"\n "spec": {}}\n', "a.json")
    rc, out = run_cli(capsys, "validate", str(bad))
    assert rc == 2
    assert f"{bad}:3:2: error: malformed JSON: did not find expected ',' or '}}'" in out, out
    semantic = write(tmp_path, '{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",\n'
                               ' "metadata": {"name": "p", "namespace": "x"},\n'
                               ' "spec": {"endpointSelector": {},\n'
                               '          "egress": [{"toPorts": [{"ports": [{"port": "70000"}]}]}]}}\n', "b.json")
    rc, out = run_cli(capsys, "validate", str(semantic))
    assert rc == 2
    assert_diag(out, semantic, 4, 47, "spec.egress[0].toPorts[0].ports[0].port", "port 70000 is out of range")


def test_multi_document_error_in_second_document(tmp_path, capsys):
    good = CNP + "  ingress: [{}]\n"
    bad = cnp("egress:\n- toCIDR: [not-a-cidr]\n").replace("name: p", "name: q")
    path = write(tmp_path, good + "---\n" + bad)
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2
    assert_diag(out, path, 11 + 11, 14, "spec.egress[0].toCIDR[0]", "invalid CIDR 'not-a-cidr'")


def test_list_with_bad_item(tmp_path, capsys):
    """kind: List — the path names the item, lines are those of the file."""
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}} for i in range(3)]
    items.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                  "metadata": {"name": "p", "namespace": "x"},
                  "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["planet"]}]}})
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)
    path = write(tmp_path, text)
    rc, out = run_cli(capsys, "validate", str(path))
    line = text.splitlines().index("      - planet") + 1
    assert rc == 2
    assert_diag(out, path, line, 9, "items[3].spec.ingress[0].fromEntities[0]", "unknown entity 'planet'")


def test_directory_with_one_bad_file(tmp_path, capsys):
    """Every file is read: the malformed one and the invalid one are both reported, the good ones count."""
    good = CNP + "  ingress: [{}]\n"
    write(tmp_path, good, "pol/a.yaml")
    write(tmp_path, good.replace("name: p", "name: q"), "pol/sub/b.yml")
    write(tmp_path, "not: [yaml\n", "pol/sub/c.json")
    invalid = write(tmp_path, good.replace("name: p", "name: r").replace("ingress: [{}]", "ingress: 7"),
                    "pol/d.yaml")
    write(tmp_path, "this is no policy: [", "pol/notes.txt")  # not a policy file name: not read
    rc, out = run_cli(capsys, "validate", str(tmp_path / "pol"))
    assert rc == 2
    assert f"{tmp_path / 'pol/sub/c.json'}:2:1: error: malformed JSON" in out
    assert_diag(out, invalid, 10, 3, "spec.ingress", "must be a list, not a number")
    assert "notes.txt" not in out
    assert "invalid: 2 error(s)" in out


def test_unreadable_file(tmp_path):
    """Root reads anything, so the check runs in a subprocess without the capabilities that allow it."""
    path = write(tmp_path, CNP + "  ingress: [{}]\n")
    path.chmod(0)
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    proc = subprocess.run([*drop, sys.executable, "-m", "policyc.cli", "validate", str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: error: cannot read: Permission denied" in proc.stderr + proc.stdout


def test_missing_file(tmp_path, capsys):
    rc, out = run_cli(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert rc == 2 and f"{tmp_path / 'nope.yaml'}: error: no such file or directory" in out


# ---------------------------------------------------------------- resource limits

def alias_bomb(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_refused_with_bounded_memory(tmp_path, capsys):
    """Billion laughs: 9^10 values if expanded; refused after MAX_ALIAS_EXPANSION, in little memory."""
    text = alias_bomb()
    tracemalloc.start()
    try:
        with pytest.raises(PolicycError) as err:
            parse_text(text, "bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"peak {peak} bytes"
    (diag,) = err.value.diagnostics
    assert "YAML aliases expand to too many values (an alias bomb?): refused" in diag.message
    assert diag.line == 6  # the first alias whose expansion crosses the budget
    path = write(tmp_path, text)
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2 and f"{path}:6:" in out


def test_aliases_within_budget_are_read(tmp_path, capsys):
    """Ordinary anchors (shared selectors) still work and keep the alias's position."""
    text = CNP.replace("  endpointSelector:", "  endpointSelector: &sel") + textwrap.indent(
        "ingress:\n- fromEndpoints: [*sel]\n  toPorts: [{ports: [{port: '80'}]}]\n", "  ")
    path = write(tmp_path, text)
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 0, out
    assert MAX_ALIAS_EXPANSION >= 1000


@pytest.mark.parametrize("shape", ["flow", "block"])
def test_deep_nesting_refused_in_a_subprocess(tmp_path, shape):
    """100 000 nested brackets crashed libyaml's recursive composer (SIGSEGV): run where a crash shows."""
    if shape == "flow":
        text = "spec: " + "[" * 100_000 + "]" * 100_000 + "\n"
        line, col = 1, 7 + MAX_DEPTH - 1
    else:
        text = "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 50)) + "  " * (MAX_DEPTH + 50) + "v: 1\n"
        line, col = MAX_DEPTH + 1, 2 * MAX_DEPTH + 1
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "policyc.cli", "validate", str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert "Traceback" not in proc.stderr
    assert f"{path}:{line}:{col}: error:" in proc.stdout + proc.stderr
    assert f"document nests deeper than {MAX_DEPTH} levels" in proc.stdout + proc.stderr


def test_ten_megabyte_file(tmp_path, capsys):
    """A 10 MB List (kubectl output sized) is read to the end: the one error in its last item is found."""
    chunk = "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c%d}\n  data: {k: %s}\n"
    parts = ["apiVersion: v1\nkind: List\nitems:\n"]
    size, i = 0, 0
    while size < 10 * 1024 * 1024:
        parts.append(chunk % (i, "x" * 200))
        size += len(parts[-1])
        i += 1
    lines = sum(p.count("\n") for p in parts)
    parts.append("- apiVersion: cilium.io/v2\n  kind: CiliumNetworkPolicy\n  metadata: {name: p, namespace: x}\n"
                 "  spec:\n    endpointSelector: {}\n    egress: [{toCIDR: [300.0.0.0/8]}]\n")
    path = write(tmp_path, "".join(parts))
    rc, out = run_cli(capsys, "validate", str(path))
    assert rc == 2
    assert_diag(out, path, lines + 6, 24, f"items[{i}].spec.egress[0].toCIDR[0]", "invalid CIDR '300.0.0.0/8'")


# ---------------------------------------------------------------- other commands

INVENTORY = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: x, labels: {team: a}}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: a}}
  spec:
    containers:
    - name: c
      ports: [{name: http, containerPort: 80}]
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: x, labels: {app: b}}
  status: {podIP: 10.0.0.2}
"""


@pytest.fixture
def policy_and_inventory(tmp_path):
    return (str(write(tmp_path, CNP + "  ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]\n")),
            str(write(tmp_path, INVENTORY, "inv.yaml")))


@pytest.mark.parametrize("argv,message", [
    (["query", "--from", "x/b", "--to", "x/a", "--port", "80/HTTP"],
     "error: invalid port '80/HTTP': expected PORT/PROTOCOL such as 80/TCP, 53/UDP or 8/ICMP"),
    (["query", "--from", "x/b", "--to", "x/a", "--port", "65536/TCP"],
     "error: invalid port '65536/TCP': port 0-65535 and protocol TCP, UDP, SCTP, ICMP or ICMPv6"),
    (["query", "--from", "x/b", "--to", "x/a", "--port", "80/ANY"],
     "error: invalid port '80/ANY': port 0-65535"),
    (["query", "--from", "x/zz", "--to", "x/a", "--port", "80/TCP"],
     "error: unknown endpoint 'x/zz': expected namespace/pod, a node name or an IP address (known: x/a, x/b"),
    (["query", "--from", "app=nothing", "--to", "x/a", "--port", "80/TCP"],
     "error: --from: selector 'app=nothing' matches no pod of the inventory"),
    (["query", "--from", "app in (", "--to", "x/a", "--port", "80/TCP"],
     "error: --from: invalid label selector 'app in ('"),
    (["matrix", "--ports", "80/TCP,,eighty"], "error: invalid port 'eighty'"),
    (["matrix", "--ports", "80/TCP;81/TCP"], "error: invalid port '80/TCP;81/TCP'"),
    (["matrix", "--external", "1.2.3.4,example.com"], "error: --external: unknown endpoint 'example.com': expected namespace/pod, a node name or an IP address"),
])
def test_cli_argument_errors(capsys, policy_and_inventory, argv, message):
    policy, inventory = policy_and_inventory
    rc, out = run_cli(capsys, argv[0], policy, "--inventory", inventory, *argv[1:])
    assert rc == 2 and message in out, out


@pytest.mark.parametrize("edit,line,col,field,message", [
    (("namespace: x, labels: {app: b}", "labels: {app: b}"), 17, 3, "items[2].metadata",
     "pod 'b' without metadata.namespace"),
    (("podIP: 10.0.0.2", "podIP: 10.0.0.256"), 18, 12, "items[2].status.podIP", "invalid pod IP '10.0.0.256'"),
    (("podIP: 10.0.0.2", "podIPs: [{ip: fd00::1}, {ip: zz}]"), 18, 37, "items[2].status.podIPs[1].ip",
     "invalid pod IP 'zz'"),
    (("labels: {app: b}", "labels: [app, b]"), 17, 37, "items[2].metadata.labels", "must be a mapping, not list"),
    (("{name: b, namespace: x, labels: {app: b}}", "[b]"), 17, 3, "items[2].metadata",
     "must be a mapping, not list"),
    (("containerPort: 80", "containerPort: http"), 13, 15, "items[1].spec.containers[0].ports[0]",
     "container port needs a containerPort 1-65535 and protocol TCP, UDP or SCTP"),
    (("name: x, labels: {team: a}", "labels: {team: a}"), 6, 3, "items[0].metadata", "namespace without metadata.name"),
    (("items:\n", "items: 3\n"), 3, 1, "items", "must be a list, not int"),
    (("name: b, namespace: x", "name: a, namespace: x"), 17, 14, "items[2].metadata.name",
     "pod x/a is defined twice (first at "),
])
def test_inventory_errors(tmp_path, capsys, policy_and_inventory, edit, line, col, field, message):
    policy, _ = policy_and_inventory
    assert edit[0] in INVENTORY
    text = INVENTORY.replace(edit[0], edit[1])
    if edit[0] == "items:\n":
        text = text.split("items: 3\n")[0] + "items: 3\n"
    inventory = write(tmp_path, text, "bad-inv.yaml")
    rc, out = run_cli(capsys, "matrix", policy, "--inventory", str(inventory))
    assert rc == 2
    assert_diag(out, inventory, line, col, field, message)


def test_inventory_file_errors(tmp_path, capsys, policy_and_inventory):
    policy, _ = policy_and_inventory
    rc, out = run_cli(capsys, "query", policy, "--inventory", str(tmp_path / "missing.yaml"),
                      "--from", "x/b", "--to", "x/a", "--port", "80")
    assert rc == 2 and f"{tmp_path / 'missing.yaml'}: error: no such file or directory" in out
    bad = write(tmp_path, "items: [\n", "broken.yaml")
    rc, out = run_cli(capsys, "matrix", policy, "--inventory", str(bad))
    assert rc == 2 and f"{bad}:2:1: error: malformed YAML" in out


@pytest.mark.parametrize("argv", [
    ["validate", "{dir}/missing.yaml"],
    ["validate", "{dir}/bad.yaml"],
    ["matrix", "{dir}/good.yaml", "--inventory", "{dir}/bad-inv.yaml"],
    ["query", "{dir}/good.yaml", "--inventory", "{dir}/inv.yaml", "--from", "x/b", "--to", "x/a", "--port", "x"],
])
def test_real_process_exit_2_without_traceback(tmp_path, argv):
    write(tmp_path, cnp("egress:\n- toPorts: [{ports: [{port: '1', endPort: 99999}]}]\n"), "bad.yaml")
    write(tmp_path, CNP + "  ingress: [{}]\n", "good.yaml")
    write(tmp_path, INVENTORY, "inv.yaml")
    write(tmp_path, INVENTORY.replace("podIP: 10.0.0.1", "podIP: 10.0.0"), "bad-inv.yaml")
    proc = subprocess.run([sys.executable, "-m", "policyc.cli", *(a.format(dir=tmp_path) for a in argv)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "error:" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- fuzzing

VALID = CNP + textwrap.indent(textwrap.dedent("""\
    ingress:
    - fromEndpoints:
      - matchLabels: {app: b}
        matchExpressions: [{key: tier, operator: In, values: [a, b]}]
      toPorts:
      - ports: [{port: "80", protocol: TCP}, {port: http, protocol: TCP}]
        rules: {http: [{method: GET, path: /x}]}
    - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
      icmps: [{fields: [{family: IPv4, type: 8}]}]
    egress:
    - toFQDNs: [{matchName: a.com}]
    - toEndpoints: [{}]
      toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
    egressDeny:
    - toEntities: [world]
      toPorts: [{ports: [{port: "25", endPort: 30}]}]
    enableDefaultDeny: {ingress: true}
    """), "  ") + """\
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
specs:
- nodeSelector: {matchLabels: {a: b}}
  ingress: [{fromNodes: [{matchLabels: {x: y}}]}, {fromEntities: [cluster]}]
- endpointSelector: {}
  egress: [{toCIDR: [1.2.3.4, 10.0.0.0/8]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: k, namespace: y}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: x}}
      podSelector: {matchExpressions: [{key: a, operator: Exists}]}
    - ipBlock: {cidr: 1.0.0.0/8, except: [1.1.0.0/16]}
    ports: [{port: 80, endPort: 90}, {port: http, protocol: UDP}]
  egress:
  - to: [{podSelector: {}}]
"""

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 70000), st.floats(allow_nan=False),
                     st.text(max_size=12), st.sampled_from(["In", "ANY", "tcp", "80", "0", "http", "10.0.0.0/8",
                                                            "::/0", "world", "*", "Exists", "a.com", "GET"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)


def _paths(value, path=()):
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, path + (key,))


def _validate_text(data: bytes | str) -> tuple[int, str, str]:
    """validate in-process on a fresh file; returns (exit status, output, file name)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(["validate", str(path)])
        return rc, out.getvalue(), str(path)


def _assert_clean(rc: int, out: str, name: str) -> None:
    assert rc in (0, 2), out
    if rc == 2:
        assert any(line.startswith(name) and " error: " in line for line in out.splitlines()), out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_policies(data):
    """Replace, add or delete anything in valid policies: 0 or 2 with a diagnostic naming the file, never 3."""
    docs = list(yaml.safe_load_all(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        doc = data.draw(st.sampled_from(docs))
        path = data.draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["ingres", "toPort", "x", "rules", "port", "except"]))] = \
                data.draw(_values)
        else:
            parent[path[-1]] = data.draw(_values)
    _assert_clean(*_validate_text(yaml.safe_dump_all(docs)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(blob):
    _assert_clean(*_validate_text(blob))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?\n\t 0.~")), max_size=80))
def test_fuzz_yaml_punctuation(text):
    """Text made of YAML's special characters: anchors, tags, flow and block syntax in odd orders."""
    _assert_clean(*_validate_text(text))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["apiVersion", "kind", "metadata", "spec", "specs", "items"]), _values,
                       max_size=5))
def test_fuzz_random_objects(obj):
    """Objects whose envelope fields hold anything at all."""
    _assert_clean(*_validate_text(yaml.safe_dump(obj)))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy", "List"]), _values)
def test_fuzz_policy_kinds_with_random_specs(kind, spec):
    api = "networking.k8s.io/v1" if kind == "NetworkPolicy" else "v1" if kind == "List" else "cilium.io/v2"
    obj = {"apiVersion": api, "kind": kind, "metadata": {"name": "n", "namespace": "x"},
           ("items" if kind == "List" else "spec"): spec}
    _assert_clean(*_validate_text(yaml.safe_dump(obj)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_inventories(data):
    """Inventories with anything replaced or deleted: matrix answers 0 or 2 (naming the file), never 3."""
    import tempfile
    inv = yaml.safe_load(INVENTORY)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(inv) if p]))
        parent = inv
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_values)
    with tempfile.TemporaryDirectory() as tmp:
        policy, inventory = Path(tmp) / "p.yaml", Path(tmp) / "inv.yaml"
        policy.write_text(CNP + "  ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]\n")
        inventory.write_text(yaml.safe_dump(inv))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(["matrix", str(policy), "--inventory", str(inventory), "--format", "csv"])
    _assert_clean(rc, out.getvalue(), str(inventory))


def test_error_flood_stops_after_the_cap(tmp_path, capsys):
    """A List of thousands of wrong items reports the first MAX_ERRORS and says it stopped, not a million lines."""
    from policyc.compiler.frontend import MAX_ERRORS

    items = "".join(f"- {n}\n" for n in range(MAX_ERRORS * 5))
    path = write(tmp_path, f"apiVersion: v1\nkind: List\nitems:\n{items}")
    code, out = run_cli(capsys, "validate", str(path))
    assert code == 2
    lines = [line for line in out.splitlines() if ": error:" in line]
    assert len(lines) == MAX_ERRORS + 1
    assert lines[0].startswith(f"{path}:4:3: error: items[0]")
    assert lines[-1] == f"{path}:{MAX_ERRORS + 4}:3: error: items[{MAX_ERRORS}]: stopping after {MAX_ERRORS} errors; fix these and run again"
