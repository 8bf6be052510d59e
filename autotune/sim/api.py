"""The simulated server's HTTP API bodies: SGLang's requests parsed and its responses written.

What /generate and /v1/completions accept (GenerateReqInput with its SamplingParams,
CompletionRequest) and answer (meta_info, OpenAI completion chunks, SGLang's error bodies), with
no server around them: autotune/sim/server.py serves them. The output is a filler (" tok" per
token, token id 1000): there is no tokenizer, so a `text` prompt counts `len(text.split())` tokens.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from autotune.sim.request import SimRequest

DEFAULT_MAX_NEW_TOKENS = 128  # SamplingParams.max_new_tokens
DEFAULT_MAX_TOKENS = 16  # CompletionRequest.max_tokens
FILLER_TEXT = " tok"
FILLER_ID = "1000"


class _Filler:
    """The generated output for n tokens, cut from strings grown on demand: one copy per chunk."""

    def __init__(self) -> None:
        self._text = ""
        self._ids = ""

    def _ensure(self, n: int) -> None:
        if n * len(FILLER_TEXT) > len(self._text):
            size = max(n, 2 * len(self._text) // len(FILLER_TEXT), 1024)
            self._text = FILLER_TEXT * size
            self._ids = (FILLER_ID + ",") * size

    def text(self, n: int) -> str:
        self._ensure(n)
        return self._text[: n * len(FILLER_TEXT)]

    def ids_json(self, n: int) -> str:
        if n <= 0:
            return "[]"
        self._ensure(n)
        return "[" + self._ids[: n * (len(FILLER_ID) + 1) - 1] + "]"


FILLER = _Filler()


class BadRequest(ValueError):
    """A request SGLang refuses with 400; the message is SGLang's where SGLang has one."""


@dataclass(frozen=True)
class GenerateJob:
    """One validated generation request, whichever endpoint it came from."""

    prompt_len: int
    max_new_tokens: int | None  # as asked (None: as many as fit); `SimServer.admit` clips it
    stream: bool
    ignore_eos: bool


@dataclass(eq=False)
class Pending:
    """What the HTTP handler of one request knows: tokens of steps that have ended."""

    req: SimRequest
    stream: bool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0  # output tokens of ended steps
    last_token_s: float = 0.0
    finished: bool = False
    aborted: str | None = None  # why the server gave up on it (shutdown)

    @property
    def rid(self) -> str:
        return self.req.rid

    @property
    def e2e_s(self) -> float:
        return (self.req.finish_s or 0.0) - self.req.arrival_s


# -- request parsing ------------------------------------------------------------------------------


def _int_field(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {value!r}.")
    return value


NO_TOKENIZER = (
    "The engine initialized with skip_tokenizer_init=True cannot accept text prompts. Please provide "
    "input_ids or re-initialize the engine with skip_tokenizer_init=False."
)


def count_prompt(value: Any, name: str, tokenizer: bool) -> int:
    """Prompt tokens: a list of token ids, or a string counted as whitespace-separated words."""
    if isinstance(value, str):
        if not tokenizer:
            raise BadRequest(NO_TOKENIZER)
        tokens = len(value.split())
    elif isinstance(value, list) and value and all(isinstance(v, (list, str)) for v in value):
        raise BadRequest(
            f"`{name}` holds a batch of prompts; the simulated server takes one prompt per request."
        )
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        tokens = len(value)
    else:
        raise BadRequest(f"`{name}` must be a string or a list of token ids.")
    if tokens == 0:
        raise BadRequest(f"`{name}` is empty.")
    return tokens


def _bool_field(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}.")
    return value


def parse_generate(body: dict[str, Any], tokenizer: bool) -> GenerateJob:
    """/generate's body (GenerateReqInput with its SamplingParams)."""
    sources = [key for key in ("text", "input_ids") if body.get(key) is not None]
    if not sources:
        raise BadRequest("Either text, input_ids or input_embeds should be provided.")
    if len(sources) > 1:
        raise BadRequest("Either text or input_ids should be provided, not both.")
    prompt = count_prompt(body[sources[0]], sources[0], tokenizer)
    params = body.get("sampling_params") or {}
    if not isinstance(params, dict):
        raise BadRequest("sampling_params must be an object.")
    max_new = params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if max_new is not None:
        max_new = _int_field(max_new, "max_new_tokens")
        if max_new < 0:
            raise BadRequest(f"max_new_tokens must be at least 0, got {max_new}.")
    stream = _bool_field(body.get("stream", False), "stream")
    ignore_eos = _bool_field(params.get("ignore_eos", False), "ignore_eos")
    return GenerateJob(prompt, max_new, stream, ignore_eos)


def parse_completion(body: dict[str, Any], tokenizer: bool) -> tuple[GenerateJob, bool]:
    """/v1/completions' body (CompletionRequest): the job, and whether to end with a usage chunk."""
    if body.get("prompt") is None:
        raise BadRequest("Field required: prompt")
    prompt = count_prompt(body["prompt"], "prompt", tokenizer)
    max_tokens = body.get("max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else _int_field(max_tokens, "max_tokens")
    if max_tokens <= 0:
        raise BadRequest("max_tokens must be positive")
    stream = _bool_field(body.get("stream", False), "stream")
    ignore_eos = _bool_field(body.get("ignore_eos", False), "ignore_eos")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object.")
    include_usage = _bool_field(options.get("include_usage", False), "stream_options.include_usage")
    return GenerateJob(prompt, max_tokens, stream, ignore_eos), include_usage


# -- response bodies ------------------------------------------------------------------------------


def _finish_reason(p: Pending, final: bool) -> str:
    if p.aborted is not None:
        return json.dumps({"type": "abort", "message": p.aborted})
    if final:
        return f'{{"type":"length","length":{p.delivered}}}'
    return "null"


def generate_body(p: Pending, final: bool, with_text: bool) -> str:
    """/generate's output: cumulative text and output_ids (SGLang's default streaming); without a
    tokenizer (--skip-tokenizer-init) SGLang sends output_ids only."""
    n = p.delivered
    e2e = f',"e2e_latency":{p.e2e_s:.6f}' if final and p.aborted is None else ""
    text = f'"text":"{FILLER.text(n)}",' if with_text else ""
    return (
        f'{{{text}"output_ids":{FILLER.ids_json(n)},"meta_info":{{"id":"{p.rid}",'
        f'"finish_reason":{_finish_reason(p, final)},"prompt_tokens":{p.req.prompt_len},'
        f'"weight_version":"default","num_retractions":{p.req.retractions},"reasoning_tokens":0,'
        f'"completion_tokens":{n},"cached_tokens":0{e2e}{_sim_clock(p)}}}}}'
    )


def _sim_clock(p: Pending) -> str:
    """The simulated clock's stamps (SGLang sends none): when the request arrived and when the
    step that produced these tokens ended. A client timing a sped-up simulator reads these
    rather than its wall clock, on which its own CPU time would count x --time-scale."""
    return f',"sim_arrival_s":{p.req.arrival_s:.6f},"sim_clock_s":{p.last_token_s:.6f}'


def token_usage(p: Pending) -> dict[str, Any]:
    prompt, completion = p.req.prompt_len, p.delivered
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


def _completion_finish(p: Pending, final: bool) -> str | None:
    if p.aborted is not None:
        return "abort"
    return "length" if final else None


def completion_chunk(p: Pending, model: str, created: int, text: str, final: bool) -> str:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _completion_finish(p, final), "matched_stop": None}
    return json.dumps(
        {"id": p.rid, "object": "text_completion", "created": created, "model": model, "choices": [choice], "usage": None}
    )


def completion_body(p: Pending, model: str, created: int) -> dict[str, Any]:
    return {
        "id": p.rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": FILLER.text(p.delivered),
                "logprobs": None,
                "finish_reason": _completion_finish(p, True),
                "matched_stop": None,
            }
        ],
        "usage": token_usage(p),
        "metadata": {"weight_version": "default"},
    }


def generate_error(message: str, status: int = 400) -> web.Response:
    """http_server._create_error_response."""
    return web.json_response({"error": {"message": message}}, status=status)


def openai_error(message: str, status: int = 400, err_type: str = "BadRequestError") -> web.Response:
    """serving_base.create_error_response (ErrorResponse); also SGLang's body for invalid JSON."""
    body = {"object": "error", "message": message, "type": err_type, "param": None, "code": status}
    return web.json_response(body, status=status)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise BadRequest(f"JSON decode error: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body
