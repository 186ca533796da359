"""Mutation check: small deliberate breakages of the package, each of which a named test must catch.

A test suite can pass on wrong code (``train --resume`` once shipped broken behind a test that checked
step numbers, not weights). Each mutant below is a one-place breakage of the kind that has happened or
could: routing to the wrong expert, an export that stacks experts in another order, training that
publishes its input, a resume that loads nothing, a check that accepts a NaN, an error printed with a
traceback. The script copies the repository once, applies each mutant to the copy in turn, runs the
tests meant to catch it there, and reports which survive. Every mutant must be killed (exit 1
otherwise); the unmutated copy must pass the same tests first. Add a mutant with every feature.

    python scripts/mutants.py            # all of them (CI runs this)
    python scripts/mutants.py --list     # names only
    python scripts/mutants.py routing-permutation aux-loss-factor
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("mote_convert", "tests", "configs", "docs", "README.md", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (found exactly once in ``path``) by ``new``; ``tests`` must then fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    # --- the MoE layer and its losses
    Mutant(
        "discovery-key-styles-swapped",
        "mote_convert/arch/discover.py",
        "    styles = [_template(saved_a, saved_b, la, lb), _template(pa, pb, la, lb)]\n",
        "    styles = [_template(pa, pb, la, lb), _template(saved_a, saved_b, la, lb)]\n",
        ("tests/arch/test_registry.py::test_discovery_finds_what_the_definition_files_said",),
    ),
    Mutant(
        "discovery-misses-moe",
        "mote_convert/arch/discover.py",
        "        elif _is_moe(layer):\n",
        "        elif False:\n",
        ("tests/arch/test_registry.py::test_moe_decoders_are_refused_from_the_model_itself",),
    ),
    Mutant(
        "routing-permutation",
        "mote_convert/modeling/block.py",
        "        flat = chosen.reshape(-1)\n",
        "        flat = (self.num_experts - 1 - chosen).reshape(-1)\n",
        ("tests/modeling/test_routing.py",),
    ),
    Mutant(
        "one-token-routing-permutation",
        "mote_convert/modeling/block.py",
        "routed += self.experts[picks[slot]](x)",
        "routed += self.experts[self.num_experts - 1 - picks[slot]](x)",
        ("tests/modeling/test_routing.py::test_one_token_decoding_takes_the_same_experts",),
    ),
    Mutant(
        "norm-topk-prob-ignored",
        "mote_convert/modeling/block.py",
        "        if self.norm_topk_prob:\n",
        "        if False:\n",
        ("tests/modeling/test_routing.py",),
    ),
    Mutant(
        "top-k-weight-dropped",
        "mote_convert/modeling/block.py",
        "y = expert(x[tokens]).to(torch.float32) * weights[tokens, slot, None]",
        "y = expert(x[tokens]).to(torch.float32)",
        ("tests/modeling/test_routing.py",),
    ),
    Mutant(
        "aux-loss-factor",
        "mote_convert/modeling/block.py",
        "    return num_experts * torch.sum(f * p)",
        "    return torch.sum(f * p)",
        ("tests/modeling/test_routing.py::test_load_balancing_loss_and_the_loss_the_trainer_sees",),
    ),
    Mutant(
        "aux-loss-not-in-outputs-loss",
        "mote_convert/modeling/integration.py",
        "output.loss = probe_loss(loss + coef * extra.detach().to(loss.dtype), cell)",
        "output.loss = probe_loss(loss, cell)",
        ("tests/modeling/test_routing.py::test_load_balancing_loss_and_the_loss_the_trainer_sees",),
    ),
    Mutant(
        "train-mode-decodes-gamma-times-codes",
        "mote_convert/quant/ternary.py",
        "    return (t * (gamma.to(torch.float32) / density)).to(dtype)",
        "    return (t * gamma.to(torch.float32)).to(dtype)",
        ("tests/modeling/test_moe.py::test_train_mode_matches_packed_mode",),
    ),
    Mutant(
        "frozen-weights-trainable",
        "mote_convert/modeling/integration.py",
        "    for p in model.parameters():\n        p.requires_grad_(False)",
        "    for p in model.parameters():\n        p.requires_grad_(True)",
        ("tests/modeling/test_moe.py::test_train_mode_gradients_reach_only_routers_and_experts",),
    ),
    Mutant(
        "fsdp2-router-gradients-summed",
        "mote_convert/modeling/distributed.py",
        "            fully_shard(module.router, mp_policy=float32, **fsdp_kwargs)",
        "            fully_shard(module.router, mp_policy=float32, **fsdp_kwargs).set_gradient_divide_factor(1.0)",
        ("tests/distributed/test_engines.py::test_sharded_training_equals_one_process[fsdp2]",),
    ),
    Mutant(
        "device-decoding-descending-experts",
        "mote_convert/modeling/block.py",
        "        order = torch.argsort(chosen[0])\n",
        "        order = torch.argsort(chosen[0], descending=True)\n",
        (
            "tests/modeling/test_moe.py::test_device_decoding_path_reads_nothing_on_the_host_and_equals_the_one_token_path",
        ),
    ),
    Mutant(
        "device-decoding-first-expert",
        "mote_convert/modeling/block.py",
        "            expert.index = picks[slot : slot + 1]\n",
        "            expert.index = picks[:1] * 0\n",
        (
            "tests/modeling/test_moe.py::test_device_decoding_path_reads_nothing_on_the_host_and_equals_the_one_token_path",
        ),
    ),
    Mutant(
        "triton-gemv-drops-a-k-split",
        "mote_convert/kernels/triton_kernel.py",
        "        split = _cdiv(k_steps, steps_per_split)  # no program without work\n",
        "        split = max(1, _cdiv(k_steps, steps_per_split) - 1)\n",
        ("tests/kernels/test_triton_kernel.py::test_triton_kernel_in_the_interpreter",),
    ),
    Mutant(
        "triton-indexed-ignores-the-expert",
        "mote_convert/kernels/triton_kernel.py",
        "            w_ptr = w_ptr + tl.load(offsets_ptr + tl.load(expert_ptr))\n",
        "            w_ptr = w_ptr + tl.load(offsets_ptr)\n",
        ("tests/kernels/test_triton_kernel.py::test_triton_kernel_in_the_interpreter",),
    ),
    # --- training
    Mutant(
        "recipe-aux-coefficient-ignored",
        "mote_convert/train/run.py",
        "attach_aux_loss(net, recipe.router_aux_loss_coef)",
        "attach_aux_loss(net, 0.01)",
        ("tests/train/test_train_cli.py::test_the_recipes_load_balancing_coefficient_reaches_the_loss",),
    ),
    Mutant(
        "train-publishes-its-input",
        "mote_convert/train/run.py",
        "                trainer.train(resume_from_checkpoint=str(point.path) if point is not None else None)\n",
        "                pass\n",
        ("tests/train/test_train_cli.py::test_train_one_process_then_resume",),
    ),
    Mutant(
        "frozen-weights-widened-to-float32",
        "mote_convert/train/run.py",
        "                if param.requires_grad:\n                    param.data = param.data.to(torch.float32)",
        "                if True:\n                    param.data = param.data.to(torch.float32)",
        ("tests/train/test_train_cli.py::test_training_in_bf16_changes_only_routers_and_experts",),
    ),
    Mutant(
        "resume-loads-nothing",
        "mote_convert/train/trainer.py",
        "        load_trainable(\n            self.accelerator.unwrap_model(model if model is not None else self.model), resume_from_checkpoint\n        )",
        "        return None",
        ("tests/train/test_resume.py::test_a_stopped_and_resumed_run_ends_where_the_uninterrupted_one_does",),
    ),
    Mutant(
        "resume-takes-a-damaged-checkpoint",
        "mote_convert/train/checkpoints.py",
        "        reason = damage(path, step)\n",
        "        reason = None\n",
        ("tests/train/test_resume.py::test_a_half_written_latest_checkpoint_is_skipped_by_name",),
    ),
    Mutant(
        "resume-of-another-model-accepted",
        "mote_convert/train/run.py",
        "            check_fits(model_path, point.path)",
        "            pass",
        ("tests/train/test_resume.py::test_another_expert_count_is_refused_before_training",),
    ),
    Mutant(
        "half-checkpoint-kept-on-disk-full",
        "mote_convert/train/trainer.py",
        "                _remove(staging)\n            detail = ",
        "                pass\n            detail = ",
        ("tests/train/test_train_refusals.py::test_disk_full_during_a_checkpoint_save_is_an_output_error",),
    ),
    Mutant(
        "nan-gradient-trains-on",
        "mote_convert/train/trainer.py",
        "        if not math.isfinite(value):\n",
        "        if False:\n",
        ("tests/train/test_train_refusals.py::test_a_non_finite_gradient_stops_training_with_an_error",),
    ),
    Mutant(
        "signals-not-caught-while-training",
        "mote_convert/train/run.py",
        "        with InterruptSignals():\n",
        "        with open(os.devnull):\n",
        ("tests/train/test_train_refusals.py::test_signals_at_random_points_leave_whole_checkpoints_and_resume_works",),
    ),
    Mutant(
        "images-outside-the-folder-read",
        "mote_convert/train/data.py",
        "            if not inside and not allow_outside:\n",
        "            if False:\n",
        ("tests/train/test_train_refusals.py::test_images_outside_the_image_folder_need_an_opt_in",),
    ),
    # --- the checks every command applies
    Mutant(
        "nan-scale-accepted",
        "mote_convert/check.py",
        '        if not math.isfinite(value):\n            problems.append(Problem(name, f"scale gamma is {value}, not finite"))',
        '        if False:\n            problems.append(Problem(name, f"scale gamma is {value}, not finite"))',
        ("tests/test_check.py",),
    ),
    Mutant(
        "nan-router-accepted",
        "mote_convert/check.py",
        '    return [Problem(n, f"{k} of {size} router weights are not finite") for n, (k, size) in bad.items() if k]',
        "    return []",
        ("tests/test_check.py",),
    ),
    Mutant(
        "invalid-codes-accepted",
        "mote_convert/check.py",
        "    count = 0\n",
        "    return 0\n",
        ("tests/test_check.py", "tests/modeling/test_quantizer.py::test_invalid_codes_are_refused_at_load"),
    ),
    Mutant(
        "nan-latent-packs",
        "mote_convert/execute.py",
        "    if codec.scale is not None and not bool(torch.isfinite(parts[codec.scale]).all()):",
        "    if False:",
        ("tests/test_check.py",),
    ),
    Mutant(
        "pack-skips-the-checker",
        "mote_convert/pack.py",
        "    require_sound(root, index, config, arch, mote, router_dtypes=ENGINE_ROUTER_DTYPES)",
        "    pass",
        ("tests/test_check.py",),
    ),
    Mutant(
        "load-model-skips-the-checker",
        "mote_convert/modeling/quantizer.py",
        "            require_sound(root, load_index(root), config_dict, arch, mote)",
        "            pass",
        ("tests/test_check.py", "tests/modeling/test_moe.py::test_load_errors"),
    ),
    Mutant(
        "export-skips-the-checker",
        "mote_convert/export/gguf_text.py",
        "        require_sound(root, index, config, arch, mote)",
        "        pass",
        ("tests/test_check.py",),
    ),
    # --- export
    Mutant(
        "gguf-experts-reversed",
        "mote_convert/export/gguf_text.py",
        "experts = [(expert_base(prefix, i, proj), rows) for i in range(mote.num_experts)]",
        "experts = [(expert_base(prefix, i, proj), rows) for i in reversed(range(mote.num_experts))]",
        ("tests/export/test_gguf.py::test_expert_blocks_decode_to_gamma_times_the_spec_codes",),
    ),
    Mutant(
        "gguf-gate-and-up-swapped",
        "mote_convert/export/gguf_text.py",
        '    "gate_proj": ("FFN_GATE", "FFN_GATE_SHEXP", "FFN_GATE_EXP"),\n    "up_proj": ("FFN_UP", "FFN_UP_SHEXP", "FFN_UP_EXP"),',
        '    "gate_proj": ("FFN_UP", "FFN_UP_SHEXP", "FFN_UP_EXP"),\n    "up_proj": ("FFN_GATE", "FFN_GATE_SHEXP", "FFN_GATE_EXP"),',
        ("tests/export/test_gguf.py::test_q8_0_shared_experts_and_the_vocabulary_are_values_not_only_types",),
    ),
    Mutant(
        "gguf-fallback-drops-gamma",
        "mote_convert/export/tensors.py",
        "    scale = np.full((rows, cols // 32, 1), float(gamma.reshape(())), dtype=np.float16)",
        "    scale = np.full((rows, cols // 32, 1), 1.0, dtype=np.float16)",
        ("tests/export/test_gguf.py::test_rows_that_are_not_whole_blocks_fall_back_to_exact_q4_0",),
    ),
    Mutant(
        "gguf-tq-drops-gamma",
        "mote_convert/export/tensors.py",
        "    return codes.to(torch.float32) * gamma.to(torch.float32).reshape(())",
        "    return codes.to(torch.float32)",
        ("tests/export/test_gguf.py::test_expert_blocks_decode_to_gamma_times_the_spec_codes",),
    ),
    Mutant(
        "gguf-vocabulary-scrambled",
        "mote_convert/export/vocab.py",
        "    tokens = [t for t, _, _ in entries]\n",
        "    tokens = [t for t, _, _ in entries][::-1]\n",
        ("tests/export/test_gguf.py::test_q8_0_shared_experts_and_the_vocabulary_are_values_not_only_types",),
    ),
    Mutant(
        "gguf-pre-tokenizer-misidentified",
        "mote_convert/pretokenizers.py",
        'PreTokenizer("llama-bpe", "Llama 3, 3.1, 3.2", (("split", LLAMA3_REGEX),)),',
        'PreTokenizer("llama-bpe", "Llama 3, 3.1, 3.2", (("split", QWEN2_REGEX),)),',
        ("tests/export/test_gguf.py::test_a_byte_level_vocabulary_is_the_tokenizer_json_token_by_token",),
    ),
    Mutant(
        "gguf-added-tokens-all-control",
        "mote_convert/export/vocab.py",
        'token_type = gguf.TokenType.CONTROL if added[i].get("special", False) else gguf.TokenType.USER_DEFINED',
        "token_type = gguf.TokenType.CONTROL",
        ("tests/export/test_gguf.py::test_a_byte_level_vocabulary_is_the_tokenizer_json_token_by_token",),
    ),
    Mutant(
        "gguf-quantize-requantizes-experts",
        "mote_convert/export/__init__.py",
        '    kinds = ("_exps.", "_shexp.") if shared else ("_exps.",)',
        '    kinds = ("_shexp.",) if shared else ("_nothing.",)',
        (
            "tests/export/test_llamacpp.py::test_quantize_gives_the_rest_llamacpps_types_for_the_dense_model_and_keeps_the_experts[q8_0]",
        ),
    ),
    Mutant(
        "gguf-llama3-rope-freqs-dropped",
        "mote_convert/export/gguf_text.py",
        "_array(factors)",
        "_array(factors * 0 + 1)",
        (
            "tests/export/test_llamacpp.py::"
            "test_llama31_rope_scaling_exports_exactly_for_the_dense_model_and_is_refused_for_mote",
        ),
    ),
    Mutant(
        "gguf-qwen3-kv-heads-tiled",
        "mote_convert/export/gguf_text.py",
        ".repeat_interleave(times, dim=0)",
        ".repeat(times, 1, 1)",
        ("tests/export/test_llamacpp.py::test_each_family_computes_in_llamacpp_as_the_packed_model[qwen3]",),
    ),
    Mutant(
        "mmproj-pixtral-image-break-row-off-by-one",
        "mote_convert/export/gguf_mmproj.py",
        'return encode(reader.read(name)[row], TYPES["f32"])',
        'return encode(reader.read(name)[row + 1], TYPES["f32"])',
        (
            "tests/export/test_llamacpp.py::"
            "test_each_vision_family_mmproj_gives_transformers_image_features_and_answers_an_image_prompt[mistral3]",
        ),
    ),
    Mutant(
        "mmproj-idefics3-post-norm-misplaced",
        "mote_convert/export/gguf_mmproj.py",
        'add(gguf_name("V_POST_NORM"), f"{vroot}post_layernorm.weight")',
        'add(gguf_name("V_POST_NORM"), f"{vroot}post_layernorm.bias")',
        (
            "tests/export/test_llamacpp.py::"
            "test_each_vision_family_mmproj_gives_transformers_image_features_and_answers_an_image_prompt[smolvlm]",
        ),
    ),
    Mutant(
        "gguf-norm-topk-prob-exported",
        "mote_convert/export/gguf_text.py",
        "        if mote.top_k < 1 or mote.norm_topk_prob:",
        "        if mote.top_k < 1:",
        ("tests/export/test_gguf.py::test_what_llama_cpp_would_compute_otherwise_is_refused",),
    ),
    Mutant(
        "mmproj-tensor-misplaced",
        "mote_convert/export/gguf_mmproj.py",
        'add(gguf_name("V_PRE_NORM"), f"{vroot}pre_layrnorm.weight")',
        'add(gguf_name("V_PRE_NORM"), f"{vroot}pre_layrnorm.bias")',
        ("tests/export/test_gguf.py::test_mmproj_tensors_are_the_vision_towers_values",),
    ),
    Mutant(
        "q4_0-fallback-nibbles-swapped",
        "mote_convert/export/tensors.py",
        "    nibbles = q[..., :16] | (q[..., 16:] << np.uint8(4))",
        "    nibbles = q[..., 16:] | (q[..., :16] << np.uint8(4))",
        ("tests/export/test_gguf.py::test_ternary_q4_0_blocks_hold_exactly_fp16_gamma_times_t",),
    ),
    Mutant(
        "vllm-export-shared-down-not-doubled",
        "mote_convert/export/vllm.py",
        '            op = DOUBLE if proj == "down_proj" else COPY\n',
        "            op = COPY\n",
        ("tests/export/test_vllm_export.py::test_every_tensor_is_the_checkpoints_under_qwen2_moe_names",),
    ),
    Mutant(
        "vllm-routed-sum-ignores-the-weights-off-the-host",
        "mote_convert/serving/routing.py",
        "            weight = (topk_weights.to(torch.float32) * (topk_ids == expert)).sum(dim=-1, keepdim=True)\n",
        "            weight = (topk_ids == expert).to(torch.float32).sum(dim=-1, keepdim=True)\n",
        ("tests/serving/test_routing.py::test_routed_sum_is_each_tokens_weighted_experts_in_order",),
    ),
    # --- trying and scoring a model
    Mutant(
        "generate-dense-fallback",
        "mote_convert/generation.py",
        '    if "mote" in config:',
        "    if False:",
        ("tests/test_generate.py::test_generate_gives_load_models_greedy_tokens",),
    ),
    Mutant(
        "eval-scores-the-dense-fallback",
        "mote_convert/evaluation.py",
        "    model, kind = load_for_generation(root)",
        "    from transformers import AutoModelForImageTextToText\n\n"
        "    model, kind = AutoModelForImageTextToText.from_pretrained(root), 'mote'",
        ("tests/test_evaluation.py::test_lm_eval_scores_the_mote_model",),
    ),
    Mutant(
        "train-loss-curve-of-another-run",
        "mote_convert/train/run.py",
        '    logged = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]',
        '    logged = [(int(e["step"]), float(e["loss"]) * 0.5) for e in trainer.state.log_history if "loss" in e]',
        ("tests/train/test_train_cli.py::test_train_from_a_repo_id_reports_to_tensorboard_and_draws_its_loss",),
    ),
    # --- outputs, inputs and the command line
    Mutant(
        "table-cuts-names",
        "mote_convert/cli/app.py",
        "        out_console.width = max(width, natural)",
        "        out_console.width = width",
        ("tests/test_cli.py::test_tables_never_cut_a_name",),
    ),
    Mutant(
        "output-inside-the-input-allowed",
        "mote_convert/io/staging.py",
        "        if resolved == src or src.is_relative_to(resolved) or resolved.is_relative_to(src):",
        "        if False:",
        ("tests/train/test_train_refusals.py::test_checkpoints_and_outputs_never_inside_the_input",),
    ),
    Mutant(
        "staging-left-behind-on-error",
        "mote_convert/io/staging.py",
        "        try:\n            _remove_tree(self.path)\n        except OSError as cleanup:",
        "        try:\n            pass\n        except OSError as cleanup:",
        ("tests/io/test_staging.py",),
    ),
    Mutant(
        "traceback-on-stdout",
        "mote_convert/cli/app.py",
        "    except MoteError as exc:\n        fail(exc)",
        "    except MoteError as exc:\n        import traceback\n\n        traceback.print_exc(file=sys.stdout)\n        fail(exc)",
        ("tests/test_cli.py",),
    ),
)


def _copy_repository(destination: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination / name)


def _run_tests(copy: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str]:
    """pytest on ``tests`` inside the copy (which is first on the path); every marker group included."""
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def _check_imports_from(copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    where = subprocess.run(
        [sys.executable, "-c", "import mote_convert; print(mote_convert.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy is not what runs: mote_convert imports from {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for one mutant's tests")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}: {m.path} -> {' '.join(m.tests)}")
        return 0
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    with tempfile.TemporaryDirectory(prefix="mote-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repository(copy)
        _check_imports_from(copy)
        baseline = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, output = _run_tests(copy, baseline, args.timeout * 2)
        if code != 0:
            print(f"the unmutated copy fails its own tests (exit {code}):\n{output}", file=sys.stderr)
            return 1
        survivors, broken = [], []
        for m in chosen:
            target = copy / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                broken.append(m.name)
                print(f"{m.name:42s} STALE: its text is found {original.count(m.old)} times in {m.path}")
                continue
            target.write_text(original.replace(m.old, m.new))
            start = time.monotonic()
            try:
                code, output = _run_tests(copy, m.tests, args.timeout)
            finally:
                target.write_text(original)
            verdict = "killed" if code == 1 else ("SURVIVED" if code == 0 else f"ERROR (pytest exit {code})")
            print(f"{m.name:42s} {verdict:10s} {time.monotonic() - start:6.1f} s", flush=True)
            if code == 0:
                survivors.append(m.name)
            elif code != 1:
                broken.append(m.name)
                print(output, file=sys.stderr)
    print(
        f"{len(chosen) - len(survivors) - len(broken)} killed, {len(survivors)} survived, {len(broken)} broken "
        f"of {len(chosen)} mutants"
    )
    return 1 if survivors or broken else 0


if __name__ == "__main__":
    sys.exit(main())
