"""An image-text model run in-process with transformers: no server, one request at a time.

For small models, laptops and tests (with ``medagent.testing.build_tiny_vlm``). Schemas and forced
tool calls are enforced at decode time with xgrammar, so even a weak model returns valid JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, DependencyMissingError, ModelError
from medagent.models._messages import ImagePart, Message, TextPart, ToolCall, ToolSpec
from medagent.models._reasoning import split_think_block, template_arguments
from medagent.models._structured import parse_structured
from medagent.models._wire import (
    forced_tool_call_schema,
    sent_image,
    split_tool_calls,
    to_openai_tool_choice,
    to_openai_tools,
)
from medagent.models.base import GenerateParams, ReasoningEffort, Reply, Usage, UsageTotals
from medagent.models.hf_loading import (
    first_line,
    load_error,
    pick_device,
    pick_dtype,
    resolve_location,
)

__all__ = ["TransformersBackend"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _require(package: str, purpose: str = "The transformers backend") -> None:
    """Turn a missing optional package into the error that names the extra to install."""
    try:
        __import__(package)
    except ImportError:
        raise DependencyMissingError(package, "hf", purpose) from None


def to_template_messages(
    messages: Sequence[Message], artifacts: ArtifactStore | None, image_long_side: int | None
) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Messages in the chat-template format, and their images in order of appearance.

    Images become ``{"type": "image"}`` placeholders; the processor puts the pixels in place of
    the image tokens the template renders, in the same order. ``image_long_side`` is the
    backend's cap (``None``: none), applied as the HTTP backends apply it.
    """
    conversation: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                images.append(_pixels(part, artifacts, image_long_side))
                content.append({"type": "image"})
        item: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "type": "function",
                    "id": call.id,
                    "function": {
                        "name": call.name,
                        # Templates render a dict as JSON; unparsed arguments go in as sent.
                        "arguments": call.arguments
                        if call.arguments is not None
                        else call.raw_arguments,
                    },
                }
                for call in message.tool_calls
            ]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        conversation.append(item)
    return conversation, images


def _pixels(part: ImagePart, artifacts: ArtifactStore | None, cap: int | None) -> Image.Image:
    image = sent_image(part, artifacts, cap)
    return image if image.mode == "RGB" else image.convert("RGB")


class TransformersBackend:
    """A ``ChatModel`` backed by ``AutoModelForImageTextToText`` in this process.

    The model loads on the first ``generate`` (or an explicit ``load()``). Generation blocks, so
    it runs in a worker thread, one request at a time per backend: a single in-process model
    gains nothing from concurrent requests and the seed would not be reproducible.
    ``image_long_side`` caps the images handed to the processor (``None``: no cap).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        image_long_side: int | None = None,
        seed: int | None = None,
        reasoning_effort: ReasoningEffort | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        if image_long_side is not None and image_long_side < 1:
            raise ConfigError(f"image_long_side must be positive, not {image_long_side}")
        self.name = str(model)
        self.usage_totals = UsageTotals()
        self.source = model
        self.device_setting = device
        self.dtype_setting = dtype
        self.image_long_side = image_long_side
        self.seed = seed
        self.reasoning_effort = reasoning_effort
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load processor and weights now (blocking); later calls do nothing."""
        if self._model is not None:
            return
        _require("torch")
        _require("transformers")
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        location = resolve_location(self.source, "medagent.testing.build_tiny_vlm")
        device = pick_device(torch, self.device_setting)
        dtype = pick_dtype(torch, self.dtype_setting, device)
        try:
            processor = AutoProcessor.from_pretrained(location)  # type: ignore[no-untyped-call]
            model = AutoModelForImageTextToText.from_pretrained(location, dtype=dtype)
        except OSError as exc:
            raise load_error(location, exc) from None
        except ValueError as exc:
            raise ConfigError(
                f"{location} is not an image-text-to-text model transformers can load: "
                f"{first_line(exc)}"
            ) from None
        self._device = device
        self._model = model.to(device).eval()
        self._processor = processor

    # -- generation ------------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        """Answer ``messages``; see ``ChatModel.generate``."""
        params = params or GenerateParams()
        tools = list(tools or [])
        if tools:
            to_openai_tool_choice(params.tool_choice, tools)  # a named tool must exist
        async with self._lock:
            try:
                reply = await asyncio.to_thread(
                    self._generate_blocking, messages, schema, tools, params, artifacts
                )
            except ModelError:
                self.usage_totals.failures += 1
                raise
            except (RuntimeError, MemoryError) as exc:  # how torch reports OOM, device errors
                self.usage_totals.failures += 1
                raise ModelError(f"generation with {self.name} failed: {first_line(exc)}") from exc
        self.usage_totals.add(reply.usage)
        return reply

    def _generate_blocking(
        self,
        messages: Sequence[Message],
        schema: type[BaseModel] | None,
        tools: list[ToolSpec],
        params: GenerateParams,
        artifacts: ArtifactStore | None,
    ) -> Reply:
        started = time.perf_counter()
        self.load()
        import torch

        effort = params.reasoning_effort or self.reasoning_effort
        inputs = self._model_inputs(messages, tools, artifacts, template_arguments(effort))

        forced = bool(tools) and params.tool_choice not in ("auto", "none")
        grammar_schema: dict[str, Any] | None = None
        if forced:
            grammar_schema = forced_tool_call_schema(tools, params.tool_choice)
        elif schema is not None:
            grammar_schema = schema.model_json_schema()

        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": False}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p or 1.0)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=self._processor.tokenizer)
        if grammar_schema is not None:
            from xgrammar.contrib.hf import LogitsProcessor

            kwargs["logits_processor"] = [LogitsProcessor(self._grammar(grammar_schema))]
        seed = params.seed if params.seed is not None else self.seed
        if seed is not None:
            torch.manual_seed(seed)

        prompt_tokens = int(inputs["input_ids"].shape[1])
        with torch.inference_mode():
            output = self._model.generate(**inputs, **kwargs)
        new_tokens = output[0, prompt_tokens:].tolist()
        tokenizer = self._processor.tokenizer
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        finish = "stop"
        if len(new_tokens) >= params.max_tokens and new_tokens[-1] not in self._stop_ids():
            finish = "length"
        for stop in params.stop or []:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"

        text, reasoning = split_think_block(text)
        tool_calls: list[ToolCall] = []
        if tools and params.tool_choice != "none":
            text, tool_calls = split_tool_calls(text, forced=forced)
        parsed, parse_error = (None, None)
        if schema is not None and not tool_calls:
            parsed, parse_error = parse_structured(text, schema)

        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_tokens),
            latency_s=time.perf_counter() - started,
        )
        return Reply(
            text=text,
            reasoning=reasoning,
            parsed=parsed,
            parse_error=parse_error,
            tool_calls=tool_calls,
            finish_reason=finish,
            usage=usage,
            model=self.name,
            raw={
                "generated_text": tokenizer.decode(new_tokens, skip_special_tokens=False),
                "prompt_tokens": prompt_tokens,
                "grammar": grammar_schema is not None,
            },
        )

    def _model_inputs(
        self,
        messages: Sequence[Message],
        tools: list[ToolSpec],
        artifacts: ArtifactStore | None,
        template: dict[str, Any] | None = None,
    ) -> Any:
        """Token ids and pixels for ``messages``, through the model's own chat template
        (given ``template`` arguments, such as a reasoning effort)."""
        from jinja2 import TemplateError

        conversation, images = to_template_messages(messages, artifacts, self.image_long_side)
        try:
            prompt = self._processor.apply_chat_template(
                conversation,
                tools=to_openai_tools(tools) if tools else None,
                add_generation_prompt=True,
                tokenize=False,
                **(template or {}),
            )
            # The template already holds every special token the model expects.
            inputs = self._processor(
                text=prompt, images=images or None, return_tensors="pt", add_special_tokens=False
            )
        except (ValueError, TemplateError) as exc:  # no template, image count mismatch, ...
            raise ModelError(f"{self.name} cannot take these messages: {first_line(exc)}") from exc
        inputs = inputs.to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

    def _stop_ids(self) -> set[int]:
        """Token ids that end a turn: the generation config's, else the tokenizer's eos."""
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            eos = self._processor.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return {int(i) for i in ids if i is not None}

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """A compiled grammar for ``schema``, cached: compiling costs far more than one use."""
        # Sorted only for the key: property order in the schema is the order fields are written.
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            _require("xgrammar", "Constrained decoding in the transformers backend")
            import xgrammar

            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._processor.tokenizer,
                    vocab_size=self._model.config.get_text_config().vocab_size,
                    stop_token_ids=sorted(self._stop_ids()),
                )
                self._compiler = xgrammar.GrammarCompiler(info)
            # No free whitespace: a weak model would otherwise pad with spaces to max_tokens.
            self._grammars[key] = self._compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False
            )
        return self._grammars[key]

    async def aclose(self) -> None:
        """Drop the weights (and the GPU memory they hold); a later ``generate`` reloads."""
        async with self._lock:
            on_cuda = self._device is not None and self._device.type == "cuda"
            self._model = self._processor = self._compiler = None
            self._grammars.clear()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()
