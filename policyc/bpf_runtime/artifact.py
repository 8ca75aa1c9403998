"""Open a compiled artifact directory and bring it into the kernel with its initial map contents.

The loader (attach, pins) builds on this; tests and `policyc compile --validate`
use it as it is, without attaching anything.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..compiler.artifact import FORMAT, MANIFEST, OBJECT
from ..compiler.mapdata import decode_maps_bin
from .errors import error
from .libbpf import BPFObject


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not a policyc artifact ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise error(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def fill_maps(obj, directory: Path) -> None:
    """Write maps.bin's initial entries into the loaded maps of ``obj`` (libbpf's or the bcc loader's)."""
    for name, rows in decode_maps_bin((Path(directory) / "maps.bin").read_bytes()).items():
        if rows:
            m = obj.map(name)
            for key, value in rows:
                m.update(key, value)


def open_artifact(directory: Path) -> BPFObject:
    """Load the artifact's object and fill every map from maps.bin; the caller closes the object."""
    directory = Path(directory)
    read_manifest(directory)
    obj = BPFObject.open(str(directory / OBJECT))
    try:
        obj.load()
        fill_maps(obj, directory)
    except BaseException:
        obj.close()
        raise
    return obj
