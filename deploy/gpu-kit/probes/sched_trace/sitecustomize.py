"""A diagnostic probe: trace SGLang's SWA admission accounting, one JSON line per decision.

Not part of the product. Put this directory on the server's PYTHONPATH and set SGLANG_SCHED_TRACE to a file
path (footprint_grid.py: `--server-env PYTHONPATH=deploy/gpu-kit/probes/sched_trace --server-env
SGLANG_SCHED_TRACE=/tmp/trace.jsonl`). Every process that imports SGLang's scheduler modules then appends,
to that file plus its pid:

- `round`: a PrefillAdder was built (the SWA free / evictable / offsets it starts from);
- `chunked` / `one`: add_chunked_req / add_one_req, before and after (what it admitted, the room it saw);
- `extend` / `decode`: a batch was prepared (its allocations done);
- `retract`: retract_decode, before and after;
- `insert`: the radix cache's cache_unfinished_req / cache_finished_req, before and after;
- `result`: a batch's results were processed.

Written to find out which accounting leaves a real 0.5.17 server one token more SWA room than the simulator in
a retraction storm (docs/real-gpu/first-pass.md). Uses getattr throughout: a release that renamed something
logs nulls rather than failing the server.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import itertools
import json
import os
import sys

_PATH = os.environ.get("SGLANG_SCHED_TRACE")
_COUNTER = itertools.count()
_OUT = None


def _emit(event: str, fields) -> None:
    """Write one line; `fields` is called here, so nothing the probe reads can raise into the server."""
    global _OUT
    try:
        if _OUT is None:
            _OUT = open(f"{_PATH}.{os.getpid()}", "a", buffering=1, encoding="utf-8")
        _OUT.write(json.dumps({"n": next(_COUNTER), "event": event, **fields()}, default=str) + "\n")
    except Exception as exc:  # noqa: BLE001 - a probe never breaks the server
        try:
            _OUT.write(json.dumps({"event": "probe_error", "of": event, "error": repr(exc)}) + "\n")
        except Exception:  # noqa: BLE001
            pass


def _safe(read):
    """Run `read()`; None if it raises (the probe reads state it does not own)."""
    try:
        return read()
    except Exception:  # noqa: BLE001
        return None


def _call(obj, name):
    try:
        return getattr(obj, name)()
    except Exception:  # noqa: BLE001 - a probe never breaks the server
        return None


def _state(alloc, tree) -> dict:
    return {
        "swa_free": _call(alloc, "swa_available_size"),
        "full_free": _call(alloc, "full_available_size"),
        "swa_evictable": _call(tree, "swa_evictable_size"),
        "full_evictable": _call(tree, "full_evictable_size"),
    }


def _req(req) -> dict:
    rng = getattr(req, "extend_range", None)
    return {
        "rid": str(getattr(req, "rid", ""))[:12],
        "prompt": _safe(lambda: len(req.origin_input_ids)),
        "out": _safe(lambda: len(req.output_ids)),
        "prefix": _safe(lambda: len(req.prefix_indices)),  # a tensor: never truth-test it
        "extend": _safe(lambda: [rng.start, rng.end]),
        "chunks_in_flight": getattr(req, "inflight_middle_chunks", None),
        "protected": getattr(req, "cache_protected_len", None),
    }


def _adder_state(adder) -> dict:
    out = _state(adder.token_to_kv_pool_allocator, adder.tree_cache)
    for name in ("rem_swa_tokens", "rem_total_tokens", "cur_rem_tokens"):
        try:
            out[name] = getattr(adder, name)
        except Exception:  # noqa: BLE001
            out[name] = None
    out["rem_chunk"] = getattr(adder, "rem_chunk_tokens", None)
    out["swa_offset"] = getattr(adder, "rem_swa_token_offset", None)
    return out


def _patch_schedule_policy(module) -> None:
    cls = module.PrefillAdder
    init, chunked, one = cls.__init__, cls.add_chunked_req, cls.add_one_req

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        running = getattr(self, "running_batch", None)
        _emit("round", lambda: {"running": _safe(lambda: len(running.reqs)), **_adder_state(self)})

    @functools.wraps(chunked)
    def add_chunked_req(self, req):
        before = _safe(lambda: _adder_state(self))
        result = chunked(self, req)
        _emit("chunked", lambda: {"req": _req(req), "before": before, "after": _adder_state(self),
                                  "still_chunked": result is not None,
                                  "admitted": any(r is req for r in self.can_run_list)})
        return result

    @functools.wraps(one)
    def add_one_req(self, req, *args, **kwargs):
        before = _safe(lambda: _adder_state(self))
        result = one(self, req, *args, **kwargs)
        _emit("one", lambda: {"req": _req(req), "before": before, "after": _adder_state(self), "result": str(result),
                              "admitted": any(r is req for r in self.can_run_list),
                              "chunked": self.new_chunked_req is req})
        return result

    cls.__init__, cls.add_chunked_req, cls.add_one_req = __init__, add_chunked_req, add_one_req


def _patch_schedule_batch(module) -> None:
    cls = module.ScheduleBatch
    retract, extend, decode = cls.retract_decode, cls.prepare_for_extend, cls.prepare_for_decode

    @functools.wraps(retract)
    def retract_decode(self, *args, **kwargs):
        before = _safe(lambda: _state(self.token_to_kv_pool_allocator, self.tree_cache))
        out = retract(self, *args, **kwargs)
        _emit("retract", lambda: {"before": before, "after": _state(self.token_to_kv_pool_allocator, self.tree_cache),
                                  "retracted": [_req(r) for r in out[0]], "kept": len(self.reqs)})
        return out

    @functools.wraps(extend)
    def prepare_for_extend(self, *args, **kwargs):
        out = extend(self, *args, **kwargs)
        _emit("extend", lambda: {"reqs": [_req(r) for r in self.reqs],
                                 "chunked": None if self.chunked_req is None else _req(self.chunked_req),
                                 **_state(self.token_to_kv_pool_allocator, self.tree_cache)})
        return out

    @functools.wraps(decode)
    def prepare_for_decode(self, *args, **kwargs):
        out = decode(self, *args, **kwargs)
        _emit("decode", lambda: {"bs": len(self.reqs), "forward_iter": getattr(self, "forward_iter", None),
                                 **_state(self.token_to_kv_pool_allocator, self.tree_cache)})
        return out

    cls.retract_decode, cls.prepare_for_extend, cls.prepare_for_decode = retract_decode, prepare_for_extend, prepare_for_decode


def _patch_radix(module) -> None:
    cls = module.UnifiedRadixCache
    for name in ("cache_unfinished_req", "cache_finished_req"):
        original = getattr(cls, name)

        def wrapped(self, req, *args, _original=original, _name=name, **kwargs):
            before = _safe(lambda: _state(self.token_to_kv_pool_allocator, self))
            out = _original(self, req, *args, **kwargs)
            _emit("insert", lambda: {"kind": _name, "args": [str(a) for a in args],
                                     "kwargs": {k: str(v) for k, v in kwargs.items()}, "req": _req(req),
                                     "before": before, "after": _state(self.token_to_kv_pool_allocator, self)})
            return out

        setattr(cls, name, functools.wraps(original)(wrapped))


def _patch_scheduler(module) -> None:
    cls = module.Scheduler
    process = cls.process_batch_result

    @functools.wraps(process)
    def process_batch_result(self, batch, result, *args, **kwargs):
        out = process(self, batch, result, *args, **kwargs)
        _emit("result", lambda: {"mode": getattr(getattr(batch, "forward_mode", None), "name", None),
                                 "bs": _safe(lambda: len(batch.reqs)),
                                 **_state(self.token_to_kv_pool_allocator, self.tree_cache)})
        return out

    cls.process_batch_result = process_batch_result


_PATCHES = {
    "sglang.srt.managers.schedule_policy": _patch_schedule_policy,
    "sglang.srt.managers.schedule_batch": _patch_schedule_batch,
    "sglang.srt.mem_cache.unified_radix_cache": _patch_radix,
    "sglang.srt.managers.scheduler": _patch_scheduler,
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader, patch = spec.loader, _PATCHES[name]
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            try:
                patch(module)
            except Exception as exc:  # noqa: BLE001
                _emit("patch_failed", lambda: {"module": name, "error": repr(exc)})

        loader.exec_module = exec_and_patch
        return spec


if _PATH:
    sys.meta_path.insert(0, _PatchAfterImport())
