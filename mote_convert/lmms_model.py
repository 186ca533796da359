"""lmms-eval's model type ``mote``: its image tasks scored on the model loaded as MoTE.

lmms-eval's own model types load checkpoints with ``from_pretrained``, which gives a MoTE
checkpoint's dense model (the shared experts alone). This one loads it with :func:`load_model`
(a dense checkpoint through its transformers class) and answers lmms-eval's chat requests with the
model's processor, chat template and ``generate``, as :func:`mote_convert.generate` does; the tasks,
their prompts, images, metrics and aggregation stay lmms-eval's. lmms-eval finds it through its
``lmms_eval.models`` entry point (``mote_convert.evaluation:lmms_eval_manifest``), so with this
package installed ``lmms-eval --model mote --model_args pretrained=DIR`` runs it.

This module imports lmms-eval: it is loaded by lmms-eval, when a run asks for ``--model mote``.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import PartialState
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages

from mote_convert.errors import DataError, OptionsError
from mote_convert.generation import encode_messages, load_for_generation, load_processor
from mote_convert.io.source import resolve_model

DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's chat models' default, where a task sets none


class MoteLMM(lmms):
    """A MoTE (or dense) checkpoint as an lmms-eval chat model. ``model_args``: ``pretrained`` (a
    directory or a Hub repo id), ``revision``, ``dtype`` (e.g. ``bfloat16``; default the
    checkpoint's), ``device`` (default ``cuda`` when there is one, else ``cpu``), ``system_prompt``.
    Requests run one at a time (``batch_size`` is accepted and changes nothing), so an answer does not
    depend on its batch's padding. Under ``torchrun`` or ``accelerate launch`` each process holds the
    model (on its own GPU where there are GPUs) and answers its share of the requests (lmms-eval splits
    them by rank)."""

    is_simple = False

    def __init__(
        self,
        pretrained: str,
        revision: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int | str = 1,
        system_prompt: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            known = "pretrained, revision, dtype, device, batch_size, system_prompt"
            raise OptionsError(f"unknown model_args for mote: {', '.join(sorted(unknown))} (known: {known})")
        state = PartialState()
        self._rank, self._world_size = state.process_index, state.num_processes
        if device is None:
            device = f"cuda:{state.local_process_index}" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        root = resolve_model(pretrained, revision)
        self.processor = load_processor(root, image=False)
        model, self.kind = load_for_generation(root, dtype=dtype)
        self._model = model.to(self._device)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.batch_size_per_gpu = int(batch_size)
        self.system_prompt = self._resolve_system_prompt(system_prompt) if system_prompt else None

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Each request's messages (text and images) answered by ``generate``: greedy unless the
        task asks for a temperature, at most ``max_new_tokens`` (or lm-eval's ``max_gen_toks``) new
        tokens, cut at the first of the task's ``until`` strings."""
        results = []
        for request in requests:
            _, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
            messages = doc_to_messages(self.task_dict[task][split][doc_id])
            if self.system_prompt:
                messages = self._apply_system_prompt(messages, self.system_prompt)
            text, tokens = self._answer(ChatMessages(messages=messages), dict(gen_kwargs))
            results.append(GenerationResult(text=text, token_counts=TokenCounts(output_tokens=tokens)))
            self.cache_hook.add_partial("generate_until", (request.args[0], gen_kwargs), text)
        return results

    def _answer(self, chat: ChatMessages, gen_kwargs: dict[str, Any]) -> tuple[str, int]:
        images, videos, audios = chat.extract_media()
        if videos or audios:
            raise DataError("the mote model answers text and images; this task gives it video or audio")
        if images and not hasattr(self.processor, "image_processor"):
            raise DataError("this task gives the model images, and the model has no image processor")
        inputs = encode_messages(self.processor, chat.to_hf_messages())
        inputs = {k: v.to(self._device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": gen_kwargs.get("top_p")}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self._model.generate(
                **inputs,
                max_new_tokens=int(
                    gen_kwargs.get("max_new_tokens") or gen_kwargs.get("max_gen_toks") or DEFAULT_MAX_NEW_TOKENS
                ),
                num_beams=int(gen_kwargs.get("num_beams") or 1),
                pad_token_id=pad,
                **sampling,
            )
        new = out[0, inputs["input_ids"].shape[-1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for stop in until:
            if stop:
                text = text.split(stop, 1)[0]
        return text, int(new.numel())

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise OptionsError(
            "the mote model of lmms-eval answers generation tasks; score log-likelihood tasks with "
            "mote-convert eval lm-eval"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise OptionsError("the mote model of lmms-eval answers one round per request")
