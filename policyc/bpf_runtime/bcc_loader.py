"""The bcc path: compile the artifact's generated C on the node with bcc instead of loading policyc.bpf.o.

For operators who want the node to build what it runs (docs/deploy.md, "bcc"). The node then needs
python3-bpfcc (bcc >= 0.23, for ring buffers) and kernel headers of the running kernel:
``/lib/modules/$(uname -r)/build`` (Debian: linux-headers-$(uname -r)), a tree named by
``BCC_KERNEL_SOURCE``, or a kernel built with CONFIG_IKHEADERS.

The source is the artifact's own ``policyc.bpf.c`` (its sha256 checked against the manifest), put
into bcc's dialect by ``bcc_source``: bcc brings its own helper declarations and declares maps
with its table macros, and its rewriter only knows map operations written as ``table.op(...)``.
Everything after compiling is shared with the libbpf path: the same map initializers from
maps.bin, the same pins, links, atomic replace and state (``policyc load --compiler bcc``).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

from .artifact import fill_maps, read_manifest
from .errors import error
from .libbpf import Map, Program

SOURCE = "policyc.bpf.c"
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"  # where python3-bpfcc puts the bcc module
# bcc's table macro per map type of the generated C; ring buffers have a macro of their own.
_TABLE_TYPES = {"HASH": "hash", "LRU_HASH": "lru_hash", "LPM_TRIE": "lpm_trie", "ARRAY": "array",
                "PERCPU_ARRAY": "percpu_array", "PERCPU_HASH": "percpu_hash"}
_MAP_DECL = re.compile(r'struct \{\n(?P<body>.*?)\n\} (?P<name>\w+) SEC\("\.maps"\);', re.S)
_LEFTOVER = re.compile(r'(?<!BCC_)SEC\(|bpf_map_\w+_elem\(&|bpf_ringbuf_\w+\(|#include <bpf/')
PAGE_SIZE = 4096



def _field(body: str, name: str) -> str | None:
    m = re.search(rf"__(?:uint|type)\({name}, ([^)]+)\)", body)
    return m.group(1).strip() if m else None


def _table(match: re.Match) -> str:
    """One libbpf map declaration (BTF style) as the bcc table macro of the same map."""
    body, name = match.group("body"), match.group("name")
    kind = (_field(body, "type") or "").removeprefix("BPF_MAP_TYPE_")
    size = int(_field(body, "max_entries") or 0)
    if kind == "RINGBUF":
        return f"BPF_RINGBUF_OUTPUT({name}, {max(1, size // PAGE_SIZE)});"
    if kind not in _TABLE_TYPES:
        raise error(f"bcc loader: map {name} has type {kind or '?'}, which it cannot declare")
    return (f'BPF_F_TABLE("{_TABLE_TYPES[kind]}", {_field(body, "key")}, {_field(body, "value")}, '
            f'{name}, {size}, {_field(body, "map_flags") or 0});')


def bcc_source(c_text: str) -> str:
    """The generated C in bcc's dialect; an error if it uses a construct this translation does not know."""
    rings = [m.group("name") for m in _MAP_DECL.finditer(c_text) if "BPF_MAP_TYPE_RINGBUF" in m.group("body")]
    out = re.sub(r"#include <bpf/bpf_(helpers|endian)\.h>\n", "", c_text)  # bcc's helpers.h has both
    out = out.replace('SEC("license")', 'BCC_SEC("license")')
    out = re.sub(r'^SEC\("(tc|xdp)"\)\n', "", out, flags=re.M)  # bcc makes every function a program
    out = _MAP_DECL.sub(_table, out)
    out = re.sub(r"bpf_map_lookup_elem\(&(\w+), ", r"\1.lookup(", out)
    out = re.sub(r"bpf_map_delete_elem\(&(\w+), ", r"\1.delete(", out)
    out = re.sub(r"bpf_map_update_elem\(&(\w+), ([^,()]+), ([^,()]+), BPF_ANY\)", r"\1.update(\2, \3)", out)
    out = re.sub(r"bpf_ringbuf_reserve\(&(\w+), ([^,]+), 0\)", r"\1.ringbuf_reserve(\2)", out)
    if len(rings) == 1:
        out = re.sub(r"bpf_ringbuf_(submit|discard)\(", rf"{rings[0]}.ringbuf_\1(", out)
    left = _LEFTOVER.search(out)
    if left:
        line = out.count("\n", 0, left.start()) + 1
        raise error(f"bcc loader: the generated C uses {left.group(0)!r} (line {line} after translation), "
                     "which it cannot translate to bcc; load the artifact with the libbpf loader")
    return out


def headers_dir() -> str | None:
    """Where bcc will find kernel headers, or None (bcc would fail with a less helpful message)."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return env if Path(env, "include/linux/kconfig.h").is_file() else None
    modules = Path("/lib/modules") / os.uname().release
    for sub in ("build", "source"):
        if Path(modules, sub, "include/linux/kconfig.h").is_file():
            return str(modules / sub)
    if Path("/sys/kernel/kheaders.tar.xz").is_file():
        return "/sys/kernel/kheaders.tar.xz"
    return None


def import_bcc():
    """The bcc module; Debian's python3-bpfcc installs it for the system Python only."""
    try:
        import bcc
    except ImportError:
        if Path(DEBIAN_DIST_PACKAGES, "bcc").is_dir() and DEBIAN_DIST_PACKAGES not in sys.path:
            sys.path.append(DEBIAN_DIST_PACKAGES)  # last: it never shadows this interpreter's packages
        try:
            import bcc
        except ImportError:
            raise error("the bcc loader needs bcc's Python module: apt-get install python3-bpfcc") from None
    return bcc


@contextlib.contextmanager
def stderr_captured():
    """Capture file descriptor 2 (clang and libbcc write there from C++): the text is in the
    yielded list after the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read())


class BccObject:
    """The compiled module in the shape the loader uses from libbpf's objects: maps and programs by name."""

    PROGRAM_TYPES = {"from_pod": "SCHED_CLS", "to_pod": "SCHED_CLS", "xdp_node": "XDP"}

    def __init__(self, module, programs: dict[str, Program]):
        self._module = module
        self._programs = programs
        self._maps: dict[str, Map] = {}

    def program(self, name: str) -> Program:
        return self._programs[name]

    def map(self, name: str) -> Map:
        if name not in self._maps:
            self._maps[name] = Map.from_fd(name, self._module.get_table(name.encode()).map_fd)
        return self._maps[name]

    def close(self) -> None:
        """Release bcc's fds; pinned maps and programs stay in the kernel."""
        if self._module is not None:
            self._module.cleanup()
            self._module = None


def compile_and_load(directory: Path) -> BccObject:
    """Compile ``directory``'s policyc.bpf.c with bcc, load its programs and fill its maps from maps.bin."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    path = directory / SOURCE
    try:
        c_text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    want = manifest.get("files", {}).get(SOURCE)
    if want != hashlib.sha256(c_text.encode()).hexdigest():
        raise error(f"{path}: sha256 differs from {directory / 'manifest.json'}: the artifact was changed")
    if manifest.get("features", {}).get("services"):
        raise error(f"{directory}: the artifact decides Services with nf_node, a netfilter program that reads "
                    "conntrack with CO-RE, which bcc cannot build: load it with the libbpf loader")
    source = bcc_source(c_text)
    if headers_dir() is None:
        raise error(f"the bcc loader needs kernel headers of the running kernel ({os.uname().release}): "
                     f"install them so /lib/modules/{os.uname().release}/build exists "
                     "(Debian: apt-get install linux-headers-$(uname -r)), set BCC_KERNEL_SOURCE to a "
                     "kernel header tree, or use a kernel with CONFIG_IKHEADERS")
    bcc = import_bcc()
    with stderr_captured() as messages:
        try:
            module = bcc.BPF(text=source.encode(), cflags=["-Wno-unused-function"])
        except Exception as exc:  # bcc raises a bare Exception; clang's diagnostics went to fd 2
            module, failure = None, exc
    if module is None:
        tail = "\n".join("".join(messages).strip().splitlines()[-12:])
        raise error(f"bcc could not compile {path}: {failure}" + (f"\n{tail}" if tail else ""))
    programs = {}
    try:
        for name, kind in BccObject.PROGRAM_TYPES.items():
            try:
                fn = module.load_func(name.encode(), getattr(bcc.BPF, kind))
            except Exception as exc:  # the verifier log is in the message
                raise error(f"the kernel rejected {name} compiled by bcc: {str(exc)[-2000:]}") from None
            programs[name] = Program(name, fn.fd)
        obj = BccObject(module, programs)
        fill_maps(obj, directory)
    except BaseException:
        module.cleanup()
        raise
    return obj
