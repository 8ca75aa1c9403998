"""A small ctypes binding of Debian's libbpf.so.1: objects, programs, maps, test runs, pins.

Why ctypes: libbpf is already on every node that runs BPF (libbpf1), it
handles ELF relocation, BTF and map creation, and a ctypes binding needs no
compiler on the node.  Only what policyc uses is bound; every failure becomes
a ``BPFError`` with the errno text, and a load failure carries the tail of
the kernel verifier's log.

Typical use::

    with BPFObject.open("policyc.bpf.o") as obj:
        obj.load()
        prog = obj.program("from_pod")
        m = obj.map("endpoints")
        m.update(key_bytes, value_bytes)
        ret = prog.test_run(packet)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

VERIFIER_LOG_BYTES = 4 << 20
LOG_TAIL_LINES = 30

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2


class BPFError(Exception):
    """A libbpf or kernel failure, with the verifier log tail when the kernel rejected a program."""

    def __init__(self, message: str, log: str = "", errno: int = 0):
        self.log = log
        self.errno = errno
        super().__init__(message + (f"\nverifier log (tail):\n{log}" if log else ""))


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf 1.x)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class _MapInfo(ctypes.Structure):
    """The leading fields of struct bpf_map_info (the kernel fills what fits)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class _LinkCreateOpts(ctypes.Structure):
    """The head of struct bpf_link_create_opts: only ``flags`` is used (XDP mode); the rest stays zero."""

    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TCHook(ctypes.Structure):
    """struct bpf_tc_hook: where a clsact (legacy TC) program hangs."""

    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TCOpts(ctypes.Structure):
    """struct bpf_tc_opts: one cls_bpf filter (handle, priority) running a program."""

    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BPFError(f"cannot load libbpf ({name}): install libbpf1 / libbpf-dev ({exc})") from None
    p, i, u32, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "bpf_object__open_file": (p, [ctypes.c_char_p, p]),
        "bpf_object__load": (i, [p]),
        "bpf_object__close": (None, [p]),
        "bpf_object__find_program_by_name": (p, [p, ctypes.c_char_p]),
        "bpf_object__find_map_by_name": (p, [p, ctypes.c_char_p]),
        "bpf_object__next_program": (p, [p, p]),
        "bpf_program__name": (ctypes.c_char_p, [p]),
        "bpf_program__section_name": (ctypes.c_char_p, [p]),
        "bpf_program__fd": (i, [p]),
        "bpf_program__set_log_buf": (i, [p, p, sz]),
        "bpf_program__set_log_level": (i, [p, u32]),
        "bpf_program__set_type": (i, [p, i]),
        "bpf_program__set_expected_attach_type": (i, [p, i]),
        "bpf_program__set_autoload": (i, [p, ctypes.c_bool]),
        "bpf_map__fd": (i, [p]),
        "bpf_map__key_size": (u32, [p]),
        "bpf_map__value_size": (u32, [p]),
        "bpf_map__max_entries": (u32, [p]),
        "bpf_map__set_max_entries": (i, [p, u32]),
        "bpf_map__type": (i, [p]),
        "bpf_map__set_pin_path": (i, [p, ctypes.c_char_p]),
        "bpf_map_update_elem": (i, [i, p, p, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (i, [i, p, p]),
        "bpf_map_delete_elem": (i, [i, p]),
        "bpf_map_get_next_key": (i, [i, p, p]),
        "bpf_prog_test_run_opts": (i, [i, ctypes.POINTER(_TestRunOpts)]),
        "bpf_obj_pin": (i, [i, ctypes.c_char_p]),
        "bpf_obj_get": (i, [ctypes.c_char_p]),
        "bpf_obj_get_info_by_fd": (i, [i, p, ctypes.POINTER(u32)]),
        "libbpf_num_possible_cpus": (i, []),
        "ring_buffer__new": (p, [i, _SAMPLE_FN, p, p]),
        "ring_buffer__poll": (i, [p, i]),
        "ring_buffer__consume": (i, [p]),
        "ring_buffer__free": (None, [p]),
        "bpf_link_create": (i, [i, i, ctypes.c_int, ctypes.POINTER(_LinkCreateOpts)]),
        "bpf_link_update": (i, [i, i, p]),
        "bpf_link_detach": (i, [i]),
        "bpf_link_get_fd_by_id": (i, [u32]),
        "bpf_tc_hook_create": (i, [ctypes.POINTER(_TCHook)]),
        "bpf_tc_attach": (i, [ctypes.POINTER(_TCHook), ctypes.POINTER(_TCOpts)]),
        "bpf_tc_detach": (i, [ctypes.POINTER(_TCHook), ctypes.POINTER(_TCOpts)]),
        "bpf_tc_query": (i, [ctypes.POINTER(_TCHook), ctypes.POINTER(_TCOpts)]),
    }
    for fname, (res, args) in sigs.items():
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    if os.environ.get("POLICYC_DEBUG") != "1":
        lib.libbpf_set_print.argtypes = [p]
        lib.libbpf_set_print(None)  # errors reach the user as BPFError; libbpf's own chatter only when debugging
    return lib


_LIB: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded library, once per process."""
    global _LIB
    if _LIB is None:
        _LIB = _load_library()
    return _LIB


def _check(ret: int, what: str) -> int:
    """libbpf 1.x returns -errno (and sets errno); turn negatives into BPFError."""
    if ret < 0:
        err = ctypes.get_errno() or -ret
        raise BPFError(f"{what}: {os.strerror(err)} (errno {err})", errno=err)
    return ret


def possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def pin_fd(fd: int, path: str) -> None:
    """Pin a program or map fd at ``path`` (on bpffs)."""
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def get_pinned(path: str) -> int:
    """An fd for a pinned object; the caller closes it with os.close."""
    return _check(lib().bpf_obj_get(path.encode()), f"open pinned {path}")


@dataclass
class Program:
    name: str
    fd: int
    owned: bool = False  # opened from a pin: close() releases the fd

    @classmethod
    def open_pinned(cls, path: str) -> "Program":
        return cls(os.path.basename(path), get_pinned(path), owned=True)

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def test_run(self, data: bytes, ctx: bytes | None = None, repeat: int = 1) -> "TestRun":
        """BPF_PROG_TEST_RUN: run the program on ``data`` (a frame from the Ethernet header on)."""
        buf_in = ctypes.create_string_buffer(data, len(data))
        buf_out = ctypes.create_string_buffer(len(data) + 256)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(buf_in, ctypes.c_void_p),
                            data_out=ctypes.cast(buf_out, ctypes.c_void_p), data_size_in=len(data),
                            data_size_out=len(buf_out), repeat=repeat)
        if ctx is not None:
            ctx_in = ctypes.create_string_buffer(ctx, len(ctx))
            ctx_out = ctypes.create_string_buffer(len(ctx))
            opts.ctx_in, opts.ctx_size_in = ctypes.cast(ctx_in, ctypes.c_void_p), len(ctx)
            opts.ctx_out, opts.ctx_size_out = ctypes.cast(ctx_out, ctypes.c_void_p), len(ctx)
        _check(lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts)), f"test run of {self.name}")
        return TestRun(opts.retval, opts.duration, buf_out.raw[:opts.data_size_out],
                       ctx_out.raw[:opts.ctx_size_out] if ctx is not None else b"")

    def pin(self, path: str) -> None:
        pin_fd(self.fd, path)


@dataclass(frozen=True)
class TestRun:
    retval: int
    duration_ns: int  # average per repetition
    data: bytes
    ctx: bytes


# Attach types (enum bpf_attach_type) and flags the loader uses; tcx needs kernel >= 6.6.
BPF_XDP, BPF_TCX_INGRESS, BPF_TCX_EGRESS = 37, 46, 47
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
BPF_TC_F_REPLACE = 1


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0, what: str = "attach") -> int:
    """A bpf_link of ``prog_fd`` on ``target`` (an ifindex); returns the link fd (pin it to keep it)."""
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags)
    return _check(lib().bpf_link_create(prog_fd, target, attach_type, ctypes.byref(opts)), what)


# Netfilter programs (kernel 6.4+), which Debian's libbpf 1.1 predates: the numbers of the kernel's uapi.
BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER, BPF_LINK_CREATE, SYS_BPF = 32, 45, 28, 321
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD = 0, 1, 2
NF_IP_PRI_NAT_DST, NF_IP_PRI_FILTER = -100, 0


def netfilter_link(prog_fd: int, family: int, hook: int, priority: int, what: str = "netfilter attach") -> int:
    """A netfilter bpf_link in the caller's network namespace (BPF_LINK_CREATE by hand: libbpf 1.1's
    bpf_link_create knows no netfilter options); returns the link fd (pin it to keep it)."""
    attr = struct.pack("IIIIIIiI", prog_fd, 0, BPF_NETFILTER, 0, family, hook, priority, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ctypes.set_errno(0)
    fd = _libc().syscall(SYS_BPF, BPF_LINK_CREATE, buf, len(attr))
    return _check(fd if fd >= 0 else -(ctypes.get_errno() or 1), what)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def link_update(link_fd: int, prog_fd: int, what: str = "link update") -> None:
    """Swap the program behind a link in one step: the hook never runs without a program."""
    _check(lib().bpf_link_update(link_fd, prog_fd, None), what)


def link_detach(link_fd: int, what: str = "link detach") -> None:
    """Detach a link from its hook even while pins or other fds still hold it."""
    _check(lib().bpf_link_detach(link_fd), what)


def _info_head(fd: int) -> list[int]:
    """The first words of bpf_{prog,link}_info: both start with type, id (a link then has prog_id)."""
    info = (ctypes.c_uint32 * 16)()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)), "object info")
    return list(info[:3])


def link_ids(link_fd: int) -> tuple[int, int]:
    """(link id, id of the program it runs)."""
    _, link_id, prog_id = _info_head(link_fd)
    return link_id, prog_id


def prog_id(prog_fd: int) -> int:
    return _info_head(prog_fd)[1]


def link_alive(link_id: int) -> bool:
    """Whether a link with this id still exists in the kernel."""
    fd = lib().bpf_link_get_fd_by_id(link_id)
    if fd < 0:
        return False
    os.close(fd)
    return True


def _tc_args(ifindex: int, point: int, handle: int, priority: int, prog_fd: int = 0, flags: int = 0):
    hook = _TCHook(sz=ctypes.sizeof(_TCHook), ifindex=ifindex, attach_point=point)
    opts = _TCOpts(sz=ctypes.sizeof(_TCOpts), prog_fd=prog_fd, flags=flags, handle=handle, priority=priority)
    return hook, opts


def tc_attach(ifindex: int, point: int, prog_fd: int, handle: int, priority: int, replace: bool = False,
              what: str = "tc attach") -> None:
    """A cls_bpf filter (direct action) on the clsact qdisc, created when missing; ``replace`` swaps in place."""
    hook, opts = _tc_args(ifindex, point, handle, priority, prog_fd, BPF_TC_F_REPLACE if replace else 0)
    ret = lib().bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and -ret != 17:  # EEXIST: the clsact qdisc is already there
        _check(ret, f"{what} (clsact qdisc)")
    _check(lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)), what)


def tc_detach(ifindex: int, point: int, handle: int, priority: int, what: str = "tc detach") -> bool:
    """Remove one cls_bpf filter; False when it was not there (already gone)."""
    hook, opts = _tc_args(ifindex, point, handle, priority)
    ret = lib().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if ret < 0 and -ret in (2, 19):  # ENOENT, ENODEV
        return False
    _check(ret, what)
    return True


def tc_query(ifindex: int, point: int, handle: int, priority: int) -> int | None:
    """The id of the program in one cls_bpf filter, None when the filter does not exist."""
    hook, opts = _tc_args(ifindex, point, handle, priority)
    if lib().bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts)) < 0:
        return None
    return opts.prog_id


@dataclass
class Map:
    """A map by fd; keys and values are raw bytes of the map's sizes (per-CPU values: one per CPU)."""

    name: str
    fd: int
    key_size: int
    value_size: int
    max_entries: int
    percpu: bool = False
    owned: bool = False  # opened from a pin: close() releases the fd

    @classmethod
    def open_pinned(cls, path: str) -> "Map":
        """A pinned map, sizes and type read from the kernel; close() it when done."""
        fd = get_pinned(path)
        try:
            m = cls.from_fd("", fd, what=path)
        except BPFError:
            os.close(fd)
            raise
        m.owned = True
        return m

    @classmethod
    def from_fd(cls, name: str, fd: int, what: str = "") -> "Map":
        """A map by an fd someone else owns (bcc), sizes and type read from the kernel."""
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"info of {what or name}")
        return cls(name or info.name.decode(), fd, info.key_size, info.value_size, info.max_entries,
                   info.type in _PERCPU_TYPES)

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def _value_bytes(self) -> int:
        """Per-CPU maps hand over one value per possible CPU, each rounded up to 8 bytes."""
        if self.percpu:
            return (self.value_size + 7) // 8 * 8 * possible_cpus()
        return self.value_size

    def percpu_values(self, key: bytes) -> list[bytes]:
        """The per-CPU values of ``key`` (empty when absent)."""
        raw = self.lookup(key)
        if raw is None:
            return []
        step = (self.value_size + 7) // 8 * 8
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]

    def _key(self, key: bytes):
        if len(key) != self.key_size:
            raise BPFError(f"map {self.name}: key of {len(key)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self._value_bytes:
            raise BPFError(f"map {self.name}: value of {len(value)} bytes, expected {self._value_bytes}")
        val = ctypes.create_string_buffer(value, len(value))
        _check(lib().bpf_map_update_elem(self.fd, self._key(key), val, flags), f"update {self.name}")

    def lookup(self, key: bytes) -> bytes | None:
        val = ctypes.create_string_buffer(self._value_bytes)
        if lib().bpf_map_lookup_elem(self.fd, self._key(key), val) < 0:
            if ctypes.get_errno() == 2:  # ENOENT
                return None
            _check(-ctypes.get_errno(), f"lookup in {self.name}")
        return val.raw

    def delete(self, key: bytes) -> bool:
        if lib().bpf_map_delete_elem(self.fd, self._key(key)) < 0:
            if ctypes.get_errno() == 2:
                return False
            _check(-ctypes.get_errno(), f"delete from {self.name}")
        return True

    def keys(self) -> list[bytes]:
        out, prev = [], None
        nxt = ctypes.create_string_buffer(self.key_size)
        while lib().bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            out.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, self.key_size)
        return out

    def pin(self, path: str) -> None:
        pin_fd(self.fd, path)


class RingBuffer:
    """A consumer of a BPF ring buffer map: ``callback(bytes)`` runs for every record polled."""

    def __init__(self, ring: Map, callback):
        def sample(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0

        self._cb = _SAMPLE_FN(sample)  # keep a reference: libbpf calls it later
        ctypes.set_errno(0)
        self._rb = lib().ring_buffer__new(ring.fd, self._cb, None, None)
        if not self._rb:
            raise BPFError(f"ring buffer on map {ring.name}: {os.strerror(ctypes.get_errno() or 22)}")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for records; returns how many were handled."""
        return _check(lib().ring_buffer__poll(self._rb, timeout_ms), "ring buffer poll")

    def consume(self) -> int:
        """Handle every record available now, without waiting."""
        return _check(lib().ring_buffer__consume(self._rb), "ring buffer consume")

    def close(self) -> None:
        if self._rb:
            lib().ring_buffer__free(self._rb)
            self._rb = None


_PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


def _type_netfilter(obj: int) -> None:
    """Programs in section "netfilter" get their type by hand: libbpf 1.1 does not know the section."""
    prog = None
    while True:
        prog = lib().bpf_object__next_program(obj, prog)
        if not prog:
            return
        if lib().bpf_program__section_name(prog) == b"netfilter":
            lib().bpf_program__set_type(prog, BPF_PROG_TYPE_NETFILTER)
            lib().bpf_program__set_expected_attach_type(prog, BPF_NETFILTER)


class BPFObject:
    """An opened (and, after load(), loaded) BPF ELF object; close() releases every fd."""

    def __init__(self, path: str, handle: int):
        self.path = path
        self._obj = handle

    @classmethod
    def open(cls, path: str) -> "BPFObject":
        ctypes.set_errno(0)
        handle = lib().bpf_object__open_file(str(path).encode(), None)
        if not handle:
            err = ctypes.get_errno()
            raise BPFError(f"cannot open BPF object {path}: {os.strerror(err) if err else 'invalid object'}")
        _type_netfilter(handle)
        return cls(str(path), handle)

    def _map_handle(self, name: str) -> int:
        handle = lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not handle:
            raise BPFError(f"{self.path}: no map named {name!r}")
        return handle

    def set_max_entries(self, name: str, n: int) -> None:
        """Resize a map before load()."""
        _check(lib().bpf_map__set_max_entries(self._map_handle(name), n), f"resize map {name}")

    def load(self) -> None:
        """Load into the kernel; on rejection, reload with the verifier log on and raise its tail."""
        ret = lib().bpf_object__load(self._obj)
        if ret >= 0:
            return
        err = ctypes.get_errno() or -ret
        log = self._verifier_log()
        raise BPFError(f"kernel rejected {self.path}: {os.strerror(err)} (errno {err})", log)

    def _verifier_log(self) -> str:
        """Open the object again with a log buffer on every program and load it to collect the log."""
        again = lib().bpf_object__open_file(self.path.encode(), None)
        if not again:
            return ""
        _type_netfilter(again)
        try:
            buffers = []
            prog = None
            while True:
                prog = lib().bpf_object__next_program(again, prog)
                if not prog:
                    break
                buf = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
                lib().bpf_program__set_log_buf(prog, buf, VERIFIER_LOG_BYTES)
                lib().bpf_program__set_log_level(prog, 1)
                buffers.append((lib().bpf_program__name(prog).decode(), buf))
            lib().bpf_object__load(again)
            parts = []
            for name, buf in buffers:
                text = buf.value.decode(errors="replace").strip()
                if text:
                    parts.append(f"[{name}]\n" + "\n".join(text.splitlines()[-LOG_TAIL_LINES:]))
            return "\n".join(parts)
        finally:
            lib().bpf_object__close(again)

    def program(self, name: str) -> Program:
        handle = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not handle:
            raise BPFError(f"{self.path}: no program named {name!r}")
        return Program(name, _check(lib().bpf_program__fd(handle), f"fd of program {name} (loaded?)"))

    def map(self, name: str) -> Map:
        handle = self._map_handle(name)
        fd = _check(lib().bpf_map__fd(handle), f"fd of map {name} (loaded?)")
        return Map(name, fd, lib().bpf_map__key_size(handle), lib().bpf_map__value_size(handle),
                   lib().bpf_map__max_entries(handle), lib().bpf_map__type(handle) in _PERCPU_TYPES)

    def close(self) -> None:
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> "BPFObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
