"""What the emulator accepts: ModelsLab's request rules, with its Laravel-style messages.

The first rule a body breaks is the answer (``The width must be at least 256.``), as
ModelsLab's validation answers. Input images of the editing routes are read here too.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from base64 import b64decode
from binascii import Error as Base64Error
from typing import Any
from urllib.parse import urlsplit

from . import drawing

#: Hosts the editing routes download input images from (a test server: this machine only).
INPUT_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_INPUT_BYTES = 20 * 1024 * 1024
#: The yes/no flags of a generate body, answered as "yes" or "no" whatever form they came in.
FLAGS = (
    "safety_checker",
    "enhance_prompt",
    "base64",
    "temp",
    "instant_response",
    "tomesd",
    "use_karras_sigmas",
    "multi_lingual",
    "panorama",
    "self_attention",
    "highres_fix",
)
#: The fields the rules know; any other field is passed through into the job's ``meta``.
STANDARD_FIELDS = {
    "key",
    "prompt",
    "negative_prompt",
    "model_id",
    "width",
    "height",
    "samples",
    "num_inference_steps",
    "steps",
    "guidance_scale",
    "seed",
    "webhook",
    "track_id",
    *FLAGS,
}


class ValidationError(Exception):
    """A request field broke a rule; the message is what the API answers."""


def _label(name: str) -> str:
    return name.replace("_", " ")


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValidationError(f"The {_label(name)} must be an integer.")


def _number(value: Any, name: str) -> float:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)\s*", value)):
        number = float(value)
    else:
        raise ValidationError(f"The {_label(name)} must be a number.")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValidationError(f"The {_label(name)} must be a number.")
    return number


def _between(number: float, name: str, lo: float, hi: float) -> None:
    if not lo <= number <= hi:
        raise ValidationError(f"The {_label(name)} must be between {lo:g} and {hi:g}.")


def _size(body: dict[str, Any], name: str) -> int:
    if blank(body.get(name)):
        return 512
    number = _integer(body[name], name)
    if number < 256:
        raise ValidationError(f"The {_label(name)} must be at least 256.")
    if number > 1024:
        raise ValidationError(f"The {_label(name)} must not be greater than 1024.")
    return number


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if blank(value):
        if required:
            raise ValidationError(f"The {_label(name)} field is required.")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"The {_label(name)} must be a string.")
    return value


def _flag(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return "yes" if value.strip().lower() in ("yes", "true") else "no"
    raise ValidationError(f"The selected {_label(name)} is invalid.")


def validate_text2img(body: dict[str, Any]) -> dict[str, Any]:
    """Coerced parameters of a text2img body (no ``key``), or ValidationError."""
    params: dict[str, Any] = {
        "prompt": _string(body, "prompt", required=True),
        "model_id": _string(body, "model_id", required=True),
        "negative_prompt": _string(body, "negative_prompt", required=False),
        "width": _size(body, "width"),
        "height": _size(body, "height"),
    }
    samples = 1 if blank(body.get("samples")) else _integer(body["samples"], "samples")
    _between(samples, "samples", 1, 4)
    steps_field = "num_inference_steps" if "num_inference_steps" in body else "steps"
    steps = 30 if blank(body.get(steps_field)) else _integer(body[steps_field], steps_field)
    _between(steps, steps_field, 1, 50)
    guidance = body.get("guidance_scale")
    guidance = 7.5 if blank(guidance) else _number(guidance, "guidance_scale")
    _between(guidance, "guidance_scale", 1, 20)
    seed = None if blank(body.get("seed")) else _integer(body["seed"], "seed")
    if seed is not None and seed < 0:
        raise ValidationError("The seed must be at least 0.")
    params.update(samples=samples, num_inference_steps=steps, guidance_scale=guidance, seed=seed)
    for name in FLAGS:
        if not blank(body.get(name)):
            params[name] = _flag(body[name], name)
    webhook = _string(body, "webhook", required=False)
    if webhook is not None:
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("The webhook must be a valid URL.")
    track_id = body.get("track_id")
    if isinstance(track_id, (dict, list, bool)):
        raise ValidationError("The track id must be a string.")
    params.update(webhook=webhook, track_id=None if track_id == "" else track_id)
    params.update({k: v for k, v in body.items() if k not in STANDARD_FIELDS})
    return params


def _image_field(body: dict[str, Any], name: str) -> str:
    """A required input image: an http(s) URL, a ``data:`` URL or bare base64."""
    value = _string(body, name, required=True)
    assert value is not None
    return value.strip()


def _strength(body: dict[str, Any], default: float) -> float:
    if blank(body.get("strength")):
        return default
    strength = _number(body["strength"], "strength")
    _between(strength, "strength", 0, 1)
    return strength


def validate_img2img(body: dict[str, Any]) -> dict[str, Any]:
    """text2img's rules plus ``init_image`` (required) and ``strength`` (0 to 1, default 0.7)."""
    params = validate_text2img(body)
    params.update(init_image=_image_field(body, "init_image"), strength=_strength(body, 0.7))
    return params


def validate_inpaint(body: dict[str, Any]) -> dict[str, Any]:
    """img2img's rules plus ``mask_image`` (required; white is repainted); strength default 1."""
    params = validate_text2img(body)
    params.update(
        init_image=_image_field(body, "init_image"),
        mask_image=_image_field(body, "mask_image"),
        strength=_strength(body, 1.0),
    )
    return params


def validate_upscale(body: dict[str, Any]) -> dict[str, Any]:
    """super_resolution: ``init_image`` (required), ``scale`` 1 to 4 (default 3), ``model_id``."""
    init = _image_field(body, "init_image")
    scale = 3 if blank(body.get("scale")) else _integer(body["scale"], "scale")
    _between(scale, "scale", 1, 4)
    model_id = _string(body, "model_id", required=False) or "realesr-general-x4v3"
    params = {k: v for k, v in body.items() if k not in ("key", "init_image", "scale", "model_id")}
    webhook = _string(body, "webhook", required=False)
    if webhook is not None and urlsplit(webhook).scheme not in ("http", "https"):
        raise ValidationError("The webhook must be a valid URL.")
    params.update(
        init_image=init,
        scale=scale,
        model_id=model_id,
        prompt=None,
        negative_prompt=None,
        samples=1,
        seed=None,
        webhook=webhook,
        track_id=body.get("track_id") or None,
    )
    return params


def validate_v7_image(body: dict[str, Any]) -> dict[str, Any]:
    """v7 image-to-image: text2img's rules plus ``init_image`` and ``strength`` (default 0.7)."""
    return validate_img2img(body)


def load_inputs(params: dict[str, Any], input_hosts: tuple[str, ...]) -> dict[str, bytes]:
    """Fetch or decode ``init_image`` / ``mask_image``; set the output size from the init.

    URLs are downloaded from ``input_hosts`` only. Raises ValidationError (answered as 400)
    when an input cannot be read.
    """
    inputs: dict[str, bytes] = {}
    for name in ("init_image", "mask_image"):
        value = params.get(name)
        if value is None:
            continue
        data = _input_bytes(str(value), _label(name), input_hosts)
        try:
            image = drawing.open_rgb(data)
        except ValueError:
            raise ValidationError(f"The {_label(name)} must be an image.") from None
        inputs[name] = data
        if name == "init_image":
            scale = int(params.get("scale") or 1)
            params["width"], params["height"] = image.width * scale, image.height * scale
    return inputs


def _input_bytes(value: str, label: str, input_hosts: tuple[str, ...]) -> bytes:
    if value[:5].lower() == "data:":
        _, _, value = value.partition(",")
    elif urlsplit(value).scheme in ("http", "https"):
        return _download_input(value, label, input_hosts)
    try:
        return b64decode("".join(value.split()), validate=True)
    except (Base64Error, ValueError):
        raise ValidationError(f"The {label} must be a valid URL or base64 image.") from None


def _download_input(url: str, label: str, input_hosts: tuple[str, ...]) -> bytes:
    host = urlsplit(url).hostname or ""
    if host not in input_hosts:
        raise ValidationError(f"The {label} could not be downloaded: host {host} not allowed.")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:  # the host was checked above
            data = response.read(MAX_INPUT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ValidationError(f"The {label} could not be downloaded (HTTP {exc.code}).") from exc
    except (OSError, ValueError) as exc:
        raise ValidationError(f"The {label} could not be downloaded: {exc}.") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise ValidationError(f"The {label} must not be larger than {MAX_INPUT_BYTES} bytes.")
    return data
