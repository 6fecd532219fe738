"""One emulated generation (:class:`Job`), and the answers ModelsLab gives about it.

The bodies have ModelsLab's documented shapes: integer ids, ``eta`` and ``fetch_result``
and ``future_links`` while processing, ``meta`` with the parameters as ModelsLab names them
(``W``, ``H``, ``n_samples``…), ``nsfw_content_detected``, and the short processing form of
a fetch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from . import drawing
from .validation import FLAGS, STANDARD_FIELDS


@dataclass
class Job:
    """One emulated generation, by provider id."""

    id: int
    route: str
    params: dict[str, Any]
    seed: int
    file_prefix: str
    image_format: str
    output_urls: list[str]
    proxy_urls: list[str]
    fetch_url: str
    meta: dict[str, Any]
    eta: float
    pending_fetches: int
    message_key: str = "messege"
    family: str = "v6/images/fetch"  # the fetch route that knows this job
    inputs: dict[str, bytes] = field(default_factory=dict, repr=False)  # decoded input images
    status: str = "processing"  # processing | success | failed
    message: str | None = None  # why it failed
    fail_message: str | None = None  # set by Fault.failed: fail at the next chance
    never_finish: bool = False
    nsfw: list[bool] = field(default_factory=list)  # per output
    blanked: frozenset[int] = frozenset()  # outputs replaced by a black image
    fetches: int = 0
    generation_time: float = 0.0
    cost: float | None = None  # reported in success answers when the report_cost knob is set
    answer_fields: dict[str, Any] = field(default_factory=dict)  # the answer_fields knob's
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _created: float = field(default_factory=time.monotonic, repr=False)
    _finished: float | None = field(default=None, repr=False)

    def succeed(self) -> None:
        self.status = "success"
        self._finished = time.monotonic()
        self.finished_at = time.time()

    def fail(self, message: str) -> None:
        self.status = "failed"
        self.message = message
        self._finished = time.monotonic()
        self.finished_at = time.time()

    @property
    def webhook(self) -> str | None:
        return self.params.get("webhook")

    @property
    def track_id(self) -> Any:
        return self.params.get("track_id")


def job_meta(params: dict[str, Any], seed: int, prefix: str) -> dict[str, Any]:
    """A job's ``meta``: its parameters as ModelsLab names them, the seed and file prefix."""
    extras = {k: v for k, v in params.items() if k not in STANDARD_FIELDS}
    flags = {k: params[k] for k in FLAGS if k in params}
    return {
        **extras,
        **flags,
        "prompt": params.get("prompt"),
        "negative_prompt": params.get("negative_prompt"),
        "model_id": params["model_id"],
        "W": params.get("width"),
        "H": params.get("height"),
        "steps": params.get("num_inference_steps"),
        "n_samples": params.get("samples"),
        "guidance_scale": params.get("guidance_scale"),
        "seed": seed,
        "webhook": params.get("webhook"),
        "track_id": params.get("track_id"),
        "file_prefix": prefix,
    }


def output_size(job: Job) -> tuple[int, int]:
    """The size of a job's outputs: its input's for an editing job, else width x height."""
    if "init_image" in job.inputs:
        size = drawing.open_rgb(job.inputs["init_image"]).size
        scale = int(job.params["scale"]) if job.route == "upscale" else 1
        return size[0] * scale, size[1] * scale
    return int(job.params["width"]), int(job.params["height"])


def edited_image(job: Job, index: int) -> bytes:
    """An output of an editing job, made from its input images with real image operations."""
    params, fmt = job.params, job.image_format
    init = job.inputs["init_image"]
    if job.route == "upscale":
        return drawing.upscale(init, int(params["scale"]), fmt)
    prompt, seed, strength = params.get("prompt") or "", job.seed + index, params["strength"]
    if "mask_image" in job.inputs:
        return drawing.inpaint(init, job.inputs["mask_image"], prompt, seed, strength, fmt)
    return drawing.img2img(init, prompt, seed, strength, fmt)


def success_body(job: Job) -> dict[str, Any]:
    """What a generate call answers when ``job`` succeeded at once (and its callback body)."""
    body = {
        "status": "success",
        "generationTime": job.generation_time,
        "id": job.id,
        "output": list(job.output_urls),
        "proxy_links": list(job.proxy_urls),
        "nsfw_content_detected": _nsfw_field(job),
        "webhook_status": "",
        "meta": dict(job.meta),
        **_cost(job),
    }
    return _with_answer_fields(body, job)


def _with_answer_fields(body: dict[str, Any], job: Job) -> dict[str, Any]:
    """``body`` with the job's ``answer_fields`` set (its ``"meta"`` merged into the meta)."""
    fields = copy.deepcopy(job.answer_fields)
    meta = fields.pop("meta", None)
    body = {**body, **fields}
    if isinstance(meta, dict):
        body["meta"] = {**body.get("meta", {}), **meta}
    return body


def _cost(job: Job) -> dict[str, Any]:
    return {} if job.cost is None else {"cost": job.cost}


def _nsfw_field(job: Job) -> bool | list[bool]:
    """One bool when every output agrees (as ModelsLab answers), else one flag per output."""
    flags = job.nsfw or [False]
    return flags[0] if len(set(flags)) == 1 else list(flags)


def processing_body(job: Job) -> dict[str, Any]:
    """What a generate call answers while ``job`` is processing."""
    return {
        "status": "processing",
        "tip": f"Your image is processing in background, you can get this image using fetch "
        f"API: here is link for fetch api : {job.fetch_url}",
        "eta": job.eta,
        job.message_key: "Try to fetch request after seconds estimated",
        "webhook_status": "",
        "fetch_result": job.fetch_url,
        "id": job.id,
        "output": [],
        "future_links": list(job.output_urls),
        "meta": dict(job.meta),
    }


def fetch_body(job: Job, *, minimal: bool) -> dict[str, Any]:
    """What a fetch answers about ``job`` (``minimal``: the bare success form)."""
    if job.status == "success":
        body = {
            "status": "success",
            "id": job.id,
            "output": list(job.output_urls),
            "proxy_links": list(job.proxy_urls),
        }
        if minimal:  # a real fetch may answer no more: no meta, so no seed, track id or cost
            return body
        body.update(nsfw_content_detected=_nsfw_field(job), meta=dict(job.meta), **_cost(job))
        return _with_answer_fields(body, job)
    if job.status == "failed":
        return {"status": "failed", "id": job.id, "message": job.message}
    return {  # the short form a fetch answers while the job is processing
        "status": "processing",
        job.message_key: "try again later.",
        "output": "",
        "tip": "Your image is processing in background, fetch it again later.",
    }


def callback_body(job: Job) -> dict[str, Any]:
    """What the webhook callback of a finished ``job`` posts."""
    if job.status == "success":
        return {**success_body(job), "track_id": job.track_id}
    return {"status": "failed", "id": job.id, "message": job.message, "track_id": job.track_id}
