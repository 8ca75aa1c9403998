"""The state file and its journal: a change is one appended line, a snapshot drops the journal, a crash at any
point leaves a state that reads back as the changes made so far (no kernel needed)."""
from __future__ import annotations

import threading
import time

from policyc.bpf_runtime.attach import Attachment
from policyc.bpf_runtime.state import (State, journal_change, journal_path, name_lock, read_state, state_path,
                                       write_state)


def _att(iface: str, hook: str, endpoint: str) -> Attachment:
    return Attachment(iface, 7, hook, "from_pod", "tcx", endpoint, f"/sys/fs/bpf/policyc/n/links/{hook}-{iface}")


def _add(state: State, root, endpoint: str, iface: str | None = None) -> dict:
    before = list(state.attachments)
    rec = {"op": "add", "endpoint": endpoint, "ips": ["10.0.0.1"]}
    state.runtime.append(rec)
    if iface:
        state.attachments += [_att(iface, "ingress", endpoint), _att(iface, "egress", endpoint)]
    journal_change(state, rec, before, root)
    return rec


def test_changes_are_journalled_and_replayed(tmp_path):
    state = State("n", "/a", "sha", "/p", "tcx", 1.0, [_att("eth9", "ingress", "x/a")], ["10.1.1.1"])
    write_state(state, tmp_path)
    _add(state, tmp_path, "x/b", "veth1")
    _add(state, tmp_path, "x/c")
    before = list(state.attachments)
    state.attachments = [a for a in state.attachments if a.endpoint != "x/b"]
    state.runtime.append({"op": "remove", "endpoint": "x/b"})
    journal_change(state, state.runtime[-1], before, tmp_path)
    assert len(journal_path("n", tmp_path).read_text().splitlines()) == 3
    assert read_state("n", tmp_path) == state
    write_state(state, tmp_path)  # a snapshot holds everything: the journal goes
    assert not journal_path("n", tmp_path).exists() and read_state("n", tmp_path) == state


def test_a_crash_between_snapshot_and_journal_removal_replays_nothing_twice(tmp_path):
    state = State("n", "/a", "sha", "/p", "tcx", 1.0)
    write_state(state, tmp_path)
    _add(state, tmp_path, "x/b", "veth1")
    stale = journal_path("n", tmp_path).read_text()
    write_state(state, tmp_path)
    journal_path("n", tmp_path).write_text(stale)  # the old journal survived the crash
    assert read_state("n", tmp_path) == state and len(read_state("n", tmp_path).attachments) == 2


def test_a_torn_last_line_ends_the_replay(tmp_path):
    state = State("n", "/a", "sha", "/p", "tcx", 1.0)
    write_state(state, tmp_path)
    _add(state, tmp_path, "x/b")
    good = read_state("n", tmp_path)
    with open(journal_path("n", tmp_path), "a") as out:
        out.write('{"seq": 2, "runtime": {"op": "add", "endp')
    assert read_state("n", tmp_path) == good
    state_path("n", tmp_path).write_text("{not json")
    assert read_state("n", tmp_path) is None


def test_the_name_lock_lets_one_writer_in(tmp_path):
    inside, overlaps = [], []

    def writer(i: int) -> None:
        with name_lock("n", tmp_path):
            overlaps.append(len(inside))
            inside.append(i)
            time.sleep(0.02)
            inside.remove(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [0, 0, 0, 0]
