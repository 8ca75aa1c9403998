"""Atomic replace: a new artifact takes over a loaded name with no unfiltered and no wrongly dropped window.

Order (docs/runtime.md):
1. build the new object completely (maps filled, host addresses set, runtime pods carried over, every
   pod hook's interface bound to its pod) and pin it under ``next/``;
2. carry over the conntrack entries the new policy still allows (conntrack.py);
3. swap the program of every attachment in one step each (bpf_link_update, or tc replace); nf_node's
   netfilter link cannot swap (the kernel has no update for it): a new one is attached beside it,
   under ``next/links/``, and the old one detached after the swap;
4. carry over the entries the old programs created meanwhile, then
5. move the new pins into place and drop the old ones.
Until step 5 any failure puts the old programs back and removes ``next/``.
Every hook always runs either the complete old or the complete new policy.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace as dc_replace
from pathlib import Path

from . import bpffs
from .artifact import read_manifest
from .attach import Attachment, detach, ifindex, update
from .bindings import bind, object_maps
from .conntrack import migrate, reset_side_effects
from .endpoints import carry_over, current_pods
from .errors import error
from .hooks import attach_all
from .hostaddrs import node_addresses
from .loaded import manifest_of, open_program
from .objects import Undo, build
from .request import LoadResult, Request
from .state import State, manifest_sha256, read_state, write_state


def replace(req: Request, artifact: Path, pins: Path, start: float) -> LoadResult:
    old = read_state(req.name)
    if old is None:
        raise error(f"{pins} exists but its state file is missing (a crashed load?): "
                     f"run `policyc unload {req.name}` first")
    if old.tc_mode != req.tc_mode:
        raise error(f"{req.name} is attached with --tc-mode {old.tc_mode}; replace with the same mode "
                     "or unload first")
    nxt = pins / "next"
    bpffs.remove_tree(nxt)  # left over from a replace that crashed before step 5
    undo = Undo()
    try:
        node_ips = node_addresses(artifact, req.node_ips or tuple(old.node_ips))
        obj = build(artifact, nxt, node_ips, undo, req.compiler)
        # runtime endpoint changes the new artifact does not override, in its maps before anything runs it
        new = State(req.name, str(artifact), manifest_sha256(artifact), str(nxt), req.tc_mode, time.time(),
                    [], node_ips)
        features = read_manifest(artifact)["features"]
        carried = carry_over(old, new, features)
        staying, leaving = _split(old, req, set(carried))
        _bind(obj, features, new, staying, req)
        old_features = manifest_of(old)["features"]
        seen: set = set()
        kept, dropped = migrate(pins, old_features, obj, features, seen)
        reset_side_effects(obj)
        for a in staying:
            previous = open_program(pins, a.program)
            undo.add(previous.close)
            update(Path(a.pin), obj.program(a.program))
            undo.add(update, Path(a.pin), previous)
        (nxt / "links").mkdir()
        added = attach_all(obj, req, pins / "links", undo, features,
                           frozenset((a.iface, a.hook) for a in staying), netfilter_links=nxt / "links")
        more, lost = migrate(pins, old_features, obj, features, seen)  # connections opened between steps 2 and 3
    except BaseException:
        undo.run()
        raise
    for a in leaving:
        detach(Path(a.pin))
    added = [_settle(a, pins / "links") for a in added]
    _promote(pins, nxt, artifact)
    state = dc_replace(new, pin_dir=str(pins), attachments=staying + added)
    write_state(state)
    obj.close()
    return LoadResult(state, True, time.monotonic() - start, kept + more, dropped + lost)


def _bind(obj, features: dict, new: State, staying: list[Attachment], req: Request) -> None:
    """Bind every pod hook that will run the new programs to its pod, in the new maps, before any does.

    A hook whose pod the new artifact does not know stays unbound: the new programs drop its packets."""
    pods = current_pods(new)
    hooked = {(a.endpoint, a.ifindex) for a in staying if a.hook in ("ingress", "egress")}
    hooked |= {(endpoint, ifindex(iface)) for endpoint, iface in req.attach}
    maps = object_maps(obj)
    for endpoint, index in sorted(hooked):
        if endpoint in pods:
            bind(maps, features, index, pods[endpoint][0])


def _settle(a: Attachment, links: Path) -> Attachment:
    """A new nf_node link, pinned under next/links/ beside the old one's pin, moved to links/."""
    if a.hook != "netfilter":
        return a
    pin = links / Path(a.pin).name
    os.rename(a.pin, pin)
    return dc_replace(a, pin=str(pin))


def _split(old: State, req: Request, carried: set[str]) -> tuple[list[Attachment], list[Attachment]]:
    """The old attachments that stay (their programs are swapped) and those to detach after the swap.

    Without --attach/--xdp all stay; with them, those requested stay, plus the hooks of pods carried
    over from run time (`endpoint add --attach`), which no --attach can name. nf_node never stays:
    the kernel cannot swap a netfilter link's program, so the new one is attached beside it (both
    run for that moment: a new connection to a Service then passes only if both policies allow it).
    """
    requested = {(i, h) for _, i in req.attach for h in ("ingress", "egress")}
    requested |= {(req.xdp, "xdp")} if req.xdp else set()
    keep_all = not req.attach and not req.xdp
    owner = dict((iface, endpoint) for endpoint, iface in req.attach)
    stays = lambda a: a.hook != "netfilter" and (  # noqa: E731
        keep_all or (a.iface, a.hook) in requested or a.endpoint in carried)
    return ([dc_replace(a, endpoint=owner.get(a.iface, a.endpoint)) for a in old.attachments if stays(a)],
            [a for a in old.attachments if not stays(a)])


def _promote(pins: Path, nxt: Path, artifact: Path) -> None:
    """Move next/maps and next/progs into place and drop the old pins (the links already run the new programs)."""
    retired = pins / "retired"
    bpffs.remove_tree(retired)
    retired.mkdir()
    for sub in ("maps", "progs"):
        os.rename(pins / sub, retired / sub)
        os.rename(nxt / sub, pins / sub)
    (pins / "artifact").unlink(missing_ok=True)
    os.symlink(str(artifact), pins / "artifact")
    bpffs.remove_tree(retired)
    bpffs.remove_tree(nxt)

