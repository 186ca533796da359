"""Scores of a MoTE model from the evaluation harnesses people use, computed on the MoTE model.

lm-evaluation-harness loads a checkpoint with ``from_pretrained``, which (without this package)
gives the dense model: the shared experts alone. Here the model is loaded as MoTE by
:func:`load_model` (or, for a dense checkpoint, by its own class) and handed to the harness as an
already built model, so its tasks, prompts, metrics and aggregation are the harness's own; nothing
of it is reimplemented. Text tasks run through its ``HFLM``; tasks with images (``doc_to_image``)
through its multimodal ``HFMultimodalLM``, which feeds the images through the model's processor.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from mote_convert.checkpoint import read_config
from mote_convert.errors import InputNotFoundError, MoteError, OptionsError, describe_exception
from mote_convert.generation import load_for_generation
from mote_convert.io.source import resolve_model

LM_EVAL = "lm-eval"
HARNESSES = (LM_EVAL,)


@dataclass(frozen=True)
class Score:
    """One metric of one task, as the harness aggregated it."""

    task: str
    metric: str
    value: float
    stderr: float | None
    samples: int


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured: the scores, and the harness's own results object."""

    model: str
    kind: str  # "mote" or "dense": what was scored
    harness: str
    scores: tuple[Score, ...]
    results: dict[str, Any]  # the harness's "results", per task, as it returned them
    versions: dict[str, Any]  # the harness's task versions
    samples: dict[str, list[dict[str, Any]]]  # with ``log_samples``: per task, each item's target and response

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "harness": self.harness,
            "scores": [vars(s) for s in self.scores],
            "results": self.results,
            "versions": self.versions,
            "samples": self.samples,
        }


def _require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise OptionsError(
            "lm-evaluation-harness is not installed: pip install 'mote-convert[eval]' (or pip install lm-eval)"
        ) from None
    return lm_eval


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The harness's log lines and progress bars off (the library never prints): the caller renders."""
    loggers = [logging.getLogger(name) for name in ("lm-eval", "lm_eval", "datasets", "evaluate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        # tqdm bars of tokenizing and scoring (stderr), and the harness's print()s (stdout)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def harness_model(root: Path, *, multimodal: bool = False, batch_size: int = 1) -> tuple[Any, str]:
    """lm-eval's ``HFLM`` (``HFMultimodalLM`` for image tasks) around the model at ``root`` loaded as
    MoTE (or dense, for a dense checkpoint), with its tokenizer or processor. Returns (lm, kind)."""
    _require_lm_eval()
    from lm_eval.models.hf_vlms import HFMultimodalLM
    from lm_eval.models.huggingface import HFLM

    from mote_convert.generation import load_processor

    processor = load_processor(root, image=multimodal)  # a missing tokenizer or image processor: one line
    model, kind = load_for_generation(root)
    with _quiet():
        if multimodal:
            # the processor from the model's own directory (lm-eval reads it from name_or_path)
            lm = HFMultimodalLM(pretrained=model, batch_size=batch_size)
        else:
            lm = HFLM(pretrained=model, tokenizer=getattr(processor, "tokenizer", processor), batch_size=batch_size)
    return lm, kind


def _has_images(manager: Any, tasks: Sequence[str]) -> bool:
    """Whether any of the tasks (or a group's tasks) gives the model images (``doc_to_image``)."""
    from lm_eval.tasks import get_task_dict

    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        else:
            yield node

    return any(getattr(task.config, "doc_to_image", None) for task in walk(get_task_dict(list(tasks), manager)))


def evaluate(
    model_path: str | Path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
    revision: str | None = None,
    seed: int = 0,
    apply_chat_template: bool = False,
    log_samples: bool = False,
) -> Evaluation:
    """Run lm-evaluation-harness ``tasks`` (names it knows, or defined in YAML files under
    ``include_path``) on the model at ``model_path`` loaded as MoTE; ``limit`` caps each task's items.
    ``apply_chat_template`` renders each prompt with the model's chat template (as the harness's flag
    of that name does); ``log_samples`` keeps each item's target and response in the result."""
    if not tasks:
        raise OptionsError("no tasks given")
    if limit is not None and limit < 1:
        raise OptionsError(f"limit must be at least 1, got {limit}")
    lm_eval = _require_lm_eval()
    from lm_eval.tasks import TaskManager

    root = resolve_model(model_path, revision)
    read_config(root)  # a missing or malformed model: refused before the harness starts
    if include_path is not None and not Path(include_path).exists():
        raise InputNotFoundError(f"{include_path}: no such task directory or file")
    with _quiet():
        manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise OptionsError(f"unknown task {unknown[0]!r} for lm-eval (its task list, plus --include-path's YAML files)")
    with _quiet():
        multimodal = _has_images(manager, tasks)
    lm, kind = harness_model(root, multimodal=multimodal, batch_size=batch_size)
    with _quiet():
        try:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                task_manager=manager,
                limit=limit,
                num_fewshot=num_fewshot,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                apply_chat_template=apply_chat_template,
                log_samples=log_samples,
            )
        except MoteError:
            raise
        except (ValueError, KeyError, OSError) as exc:  # a task whose data or template does not load
            raise InputNotFoundError(f"lm-eval could not run the tasks: {describe_exception(exc)}") from None
    samples = {task: [_sample(entry) for entry in entries] for task, entries in (out.get("samples") or {}).items()}
    return Evaluation(
        str(model_path), kind, LM_EVAL, _scores(out), out["results"], dict(out.get("versions", {})), samples
    )


def _sample(entry: dict[str, Any]) -> dict[str, Any]:
    """One logged item, JSON-ready: its index, target, and the model's filtered response."""
    response = entry.get("filtered_resps")
    return {"doc_id": entry.get("doc_id"), "target": str(entry.get("target")), "response": _plain(response)}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return float(value)
    return str(value)


def _scores(out: dict[str, Any]) -> tuple[Score, ...]:
    scores = []
    samples = out.get("n-samples", {})
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            if "," not in key or key.split(",")[0].endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            err = metrics.get(f"{metric}_stderr,{filt}")
            n = samples.get(task, {}).get("effective", 0)
            scores.append(
                Score(task, metric if filt == "none" else key, float(value), float(err) if _number(err) else None, n)
            )
    return tuple(scores)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lmms_eval_manifest() -> Any:
    """lmms-eval's ``lmms_eval.models`` entry point: the model type ``mote``
    (:class:`mote_convert.lmms_model.MoteLMM`, imported only when a run asks for it)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="mote", chat_class_path="mote_convert.lmms_model.MoteLMM")
