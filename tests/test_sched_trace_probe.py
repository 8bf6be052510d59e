"""deploy/gpu-kit/probes/sched_trace: the scheduler probe patches SGLang's modules on import, logs one JSON line per
decision, and never raises into the server (a first version truth-tested an empty tensor and killed the boot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = Path(__file__).resolve().parents[1] / "deploy" / "gpu-kit" / "probes" / "sched_trace"

FAKE_POLICY = '''
class Alloc:
    def swa_available_size(self): return 5
    def full_available_size(self): return 9
class Tree:
    def swa_evictable_size(self): return 1
    def full_evictable_size(self): raise RuntimeError("a pool the probe cannot read")
class Tensorish:
    def __len__(self): return 0
    def __bool__(self): raise RuntimeError("Boolean value of Tensor with no values is ambiguous")
class PrefillAdder:
    def __init__(self):
        self.token_to_kv_pool_allocator, self.tree_cache = Alloc(), Tree()
        self.can_run_list, self.new_chunked_req, self.rem_chunk_tokens = [], None, 100
    @property
    def rem_swa_tokens(self): return 6
    def add_chunked_req(self, req): return req
    def add_one_req(self, req, has_chunked_req, truncation_align_size):
        self.can_run_list.append(req); self.new_chunked_req = req; return "CONTINUE"
'''

DRIVER = '''
import sglang.srt.managers.schedule_policy as sp
class Req:
    rid = "r1"; origin_input_ids = [1] * 10; output_ids = [2]; prefix_indices = sp.Tensorish()
adder = sp.PrefillAdder()
assert adder.add_one_req(Req(), has_chunked_req=False, truncation_align_size=None) == "CONTINUE"
req = Req()
assert adder.add_chunked_req(req) is req
print("served")
'''


def test_the_probe_logs_decisions_and_never_raises_into_the_server(tmp_path: Path) -> None:
    managers = tmp_path / "sglang" / "srt" / "managers"
    managers.mkdir(parents=True)
    for package in (tmp_path / "sglang", tmp_path / "sglang" / "srt", managers):
        (package / "__init__.py").write_text("")
    (managers / "schedule_policy.py").write_text(textwrap.dedent(FAKE_POLICY))
    trace = tmp_path / "trace.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{PROBE}{os.pathsep}{tmp_path}", "SGLANG_SCHED_TRACE": str(trace)}
    run = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "served" in run.stdout, run.stderr
    (written,) = tmp_path.glob("trace.jsonl.*")  # one file per process
    events = [json.loads(line) for line in written.read_text().splitlines()]
    assert [e["event"] for e in events] == ["round", "one", "chunked"]
    one = events[1]
    assert one["req"]["rid"] == "r1" and one["req"]["prefix"] == 0 and one["admitted"] and one["chunked"]
    assert one["before"]["swa_free"] == 5 and one["before"]["full_evictable"] is None  # unreadable: null
    assert events[2]["still_chunked"] is True


def test_without_the_variable_the_probe_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SGLANG_SCHED_TRACE"}
    env["PYTHONPATH"] = str(PROBE)
    code = "import sys; print(any(type(f).__name__ == '_PatchAfterImport' for f in sys.meta_path))"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr
