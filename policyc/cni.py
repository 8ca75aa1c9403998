"""policyc-cni: a chained CNI plugin (spec 1.0.0) that registers each pod with the node agent before its
network is handed to the container runtime (docs/agent.md).

It runs after the plugin that plugs the pod in (ptp, bridge, ...): from ``prevResult`` it takes the
host side of the pod's veth and the pod's addresses, from ``CNI_ARGS`` the pod's namespace and name,
and asks the agent to write the pod's identity and attach its hooks; ADD returns only when they are in
force, so the pod's first packet meets its policy.  No agent, no ADD: the pod would run unfiltered
(fail closed, error 11 "try again later").  DEL always succeeds when there is nothing left to undo,
agent or not.  Errors are the spec's JSON on stdout with its codes, and one line on stderr.

Standard library only (and the agent client): it starts on every pod start.  ``python -m policyc.cni
install DIR`` writes it as one executable file (a zipapp) into a CNI bin directory.
"""
from __future__ import annotations

import json
import os
import sys

from .agent.client import AgentError, AgentUnavailable, Client, socket_path

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
# spec error codes; 100+ are policyc's own
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, BAD_ENV, IO_FAILURE, DECODE, BAD_CONFIG, TRY_AGAIN = \
    1, 2, 3, 4, 5, 6, 7, 11
REFUSED, DUPLICATE, CHECK_FAILED = 100, 101, 102
AGENT_CODES = {"bad-request": BAD_CONFIG, "bad-prev-result": BAD_CONFIG, "not-ready": TRY_AGAIN,
               "duplicate": DUPLICATE, "unknown-container": UNKNOWN_CONTAINER, "check-failed": CHECK_FAILED,
               "address-in-use": REFUSED, "second-interface": REFUSED, "refused": REFUSED}
TIMEOUT = 30.0
PYTHON = "/usr/bin/python3"


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def cni_args(text: str) -> dict[str, str]:
    """``K=V;K=V`` (CNI_ARGS) as a dict; a pair without ``=`` is an error naming the variable."""
    out = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise PluginError(BAD_ENV, "invalid CNI_ARGS", f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def pod_of(args: dict[str, str]) -> str:
    missing = [k for k in ("K8S_POD_NAMESPACE", "K8S_POD_NAME") if not args.get(k)]
    if missing:
        raise PluginError(BAD_ENV, "CNI_ARGS lacks the pod", f"CNI_ARGS has no {' or '.join(missing)}: "
                          "policyc-cni needs the pod's namespace and name (a Kubernetes container runtime sets them)")
    return f"{args['K8S_POD_NAMESPACE']}/{args['K8S_POD_NAME']}"


def pod_addresses(prev: dict, netns: str, ifname: str) -> tuple[list[dict], list[str]]:
    """(interfaces, the pod's addresses) from prevResult; the addresses of the container's interface."""
    if not isinstance(prev, dict):
        raise PluginError(BAD_CONFIG, "no prevResult", "policyc-cni is a chained plugin: put it after the plugin "
                          "that creates the pod's interface (ptp, bridge, ...) in a conflist")
    interfaces, ips = prev.get("interfaces", []), prev.get("ips", [])
    if not isinstance(interfaces, list) or not isinstance(ips, list) \
            or not all(isinstance(i, dict) for i in interfaces + ips):
        raise PluginError(DECODE, "invalid prevResult", "prevResult: interfaces and ips must be lists of objects")
    inside = {n for n, i in enumerate(interfaces) if i.get("sandbox") and (i.get("name") == ifname
                                                                            or i.get("sandbox") == netns)}
    chosen = [ip for ip in ips if ip.get("interface") is None or ip.get("interface") in inside]
    addresses = [str(ip.get("address", "")).split("/", 1)[0] for ip in chosen]
    if not addresses or not all(addresses):
        raise PluginError(BAD_CONFIG, "prevResult has no address for the pod",
                          f"prevResult ips {json.dumps(ips)} give no address on {ifname} in {netns}")
    return interfaces, addresses


def _require(env: dict, *names: str) -> None:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise PluginError(BAD_ENV, "missing environment variables", f"{', '.join(missing)} must be set")


def _call(client: Client, path: str, body: dict) -> dict:
    try:
        return client.call("POST", path, body, timeout=TIMEOUT)
    except AgentError as exc:
        raise PluginError(AGENT_CODES.get(exc.code, REFUSED), f"policyc agent: {exc.code}", exc.message) from None


def handle(env: dict, stdin: str) -> dict | None:
    """One invocation: the result to print (None: print nothing), or PluginError."""
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise PluginError(BAD_ENV, "invalid CNI_COMMAND", f"CNI_COMMAND={command!r}: ADD, DEL, CHECK or VERSION")
    try:
        conf = json.loads(stdin or "{}")
    except ValueError as exc:
        raise PluginError(DECODE, "cannot decode the network configuration", str(exc)) from None
    if not isinstance(conf, dict):
        raise PluginError(DECODE, "cannot decode the network configuration", "stdin is not a JSON object")
    version = str(conf.get("cniVersion", "1.0.0"))
    if command == "VERSION":
        return {"cniVersion": version, "supportedVersions": SUPPORTED}
    if version not in SUPPORTED:
        raise PluginError(INCOMPATIBLE, "incompatible CNI version",
                          f"cniVersion {version}; policyc-cni supports {', '.join(SUPPORTED)}")
    if command == "CHECK" and version in ("0.3.0", "0.3.1"):  # CHECK came with 0.4.0 (as libcni's skel says)
        raise PluginError(INCOMPATIBLE, "config version does not allow CHECK", f"cniVersion {version} < 0.4.0")
    _require(env, "CNI_CONTAINERID", "CNI_IFNAME", *(("CNI_NETNS",) if command != "DEL" else ()))
    client = Client(str(conf.get("agentSocket") or socket_path()), timeout=TIMEOUT)
    body = {"container_id": env["CNI_CONTAINERID"], "ifname": env["CNI_IFNAME"], "netns": env.get("CNI_NETNS", "")}
    if command == "DEL":  # nothing of the container left to undo, or no agent to undo it: success either way
        try:
            _call(client, "/v1/cni/del", body)
        except AgentUnavailable:
            pass
        return None
    args = cni_args(env.get("CNI_ARGS", ""))
    interfaces, ips = pod_addresses(conf.get("prevResult"), env["CNI_NETNS"], env["CNI_IFNAME"])
    body.update(pod=pod_of(args), interfaces=interfaces, ips=ips)
    try:
        _call(client, "/v1/cni/add" if command == "ADD" else "/v1/cni/check", body)
    except AgentUnavailable as exc:
        raise PluginError(TRY_AGAIN, "policyc agent unreachable", f"{exc}: the pod's policy cannot be put in "
                          "force, so its network is not handed over (start the agent: policyc agent)") from None
    return {**conf["prevResult"], "cniVersion": version} if command == "ADD" else None


def main() -> int:
    if sys.argv[1:2] == ["install"]:  # install BIN_DIR [--chain CONF_DIR] [--socket PATH] [--python PATH]
        from pathlib import Path  # here only: every pod start pays for what the plugin imports
        opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        install(Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/opt/cni/bin"), opts.get("--python", PYTHON))
        if "--chain" in opts:
            print(chain(Path(opts["--chain"]), opts.get("--socket", socket_path())))
        return 0
    env = dict(os.environ)
    try:
        stdin = "" if env.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty() else sys.stdin.read()
    except OSError as exc:
        return _fail(PluginError(IO_FAILURE, "cannot read the network configuration", str(exc)), "1.0.0")
    try:
        result = handle(env, stdin)
    except PluginError as exc:
        try:
            version = str(json.loads(stdin).get("cniVersion", "1.0.0"))
        except (ValueError, AttributeError):
            version = "1.0.0"
        return _fail(exc, version)
    if result is not None:
        print(json.dumps(result))
    return 0


def _fail(exc: PluginError, version: str) -> int:
    print(json.dumps({"cniVersion": version, "code": exc.code, "msg": exc.msg, "details": exc.details}))
    print(f"policyc-cni: {exc.msg}: {exc.details}", file=sys.stderr)
    return 1


def install(directory, python: str = PYTHON) -> None:
    """Write ``directory/policyc-cni``: this module and the agent client in one executable zipapp, run by
    the node's ``python`` (3.10 or later) isolated (-I: no user site, no environment), which starts fastest.

    Beside each source goes its bytecode, compiled here (unchecked-hash pyc: a zip cannot cache it at run
    time, and compiling costs as much as the rest of a start); an interpreter of another version ignores
    it for its magic number and compiles the source."""
    import py_compile
    import tempfile
    import zipfile
    from pathlib import Path

    package = Path(__file__).resolve().parent
    target = directory / "policyc-cni"
    tmp = directory / ".policyc-cni.tmp"
    directory.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out, tempfile.TemporaryDirectory() as work:
        out.write(f"#!{python} -I\n".encode())
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("__main__.py", "import sys\nfrom policyc.cni import main\nsys.exit(main())\n")
            zf.writestr("policyc/__init__.py", "")
            zf.writestr("policyc/agent/__init__.py", "")
            for rel in ("cni.py", "agent/client.py"):
                zf.write(package / rel, f"policyc/{rel}")
                pyc = Path(work) / rel.replace("/", "_")
                py_compile.compile(str(package / rel), str(pyc), dfile=f"policyc/{rel}", doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                zf.write(pyc, f"policyc/{rel}c")
    tmp.chmod(0o755)
    os.replace(tmp, target)  # atomic: a runtime never executes a half-written plugin
    print(f"installed {target}")


def chain(conf_dir, socket: str) -> str:
    """Append policyc-cni to the network configuration the runtime uses (the first .conflist by name in
    ``conf_dir``, as containerd and CRI-O pick it), unless it is there; written atomically."""
    lists = sorted(p for p in conf_dir.glob("*.conflist") if not p.name.startswith("."))
    if not lists:
        raise SystemExit(f"policyc-cni: no .conflist in {conf_dir}: install the cluster's CNI first "
                         "(a single-plugin .conf cannot be chained)")
    path = lists[0]
    conf = json.loads(path.read_text())
    if any(p.get("type") == "policyc-cni" for p in conf.get("plugins", [])):
        return f"{path}: policyc-cni is chained already"
    conf["plugins"].append({"type": "policyc-cni", "agentSocket": socket})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(conf, indent=2) + "\n")
    os.replace(tmp, path)
    return f"{path}: policyc-cni chained after {', '.join(p.get('type', '?') for p in conf['plugins'][:-1])}"


if __name__ == "__main__":
    sys.exit(main())
