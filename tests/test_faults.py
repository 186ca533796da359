"""Every fault a clear error with nothing left behind (issue 9's "What was found", one test each).

Each case checks: one 'error:' line, the documented exit code, no traceback, the input unchanged,
nothing left beside the output. Cases that need a real filesystem fault use a small tmpfs when the
tests run as root (as CI does) and inject the same OSError otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import mote_convert
from mote_convert import config_patch
from mote_convert.cli import app
from mote_convert.errors import (
    CheckFailedError,
    InputNotFoundError,
    InputReadError,
    OptionsError,
    OutputExistsError,
    OutputWriteError,
    UnsupportedArchitectureError,
)
from mote_convert.io.shards import TensorSpec
from tests.conftest import tree_digest
from tests.helpers import assert_one_line_error, leftovers, sparse_checkpoint

runner = CliRunner()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[bool]:
    """Mount a tmpfs at ``path`` when running as root (yields True), else yield False."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if IS_ROOT and not os.environ.get("MOTE_TEST_NO_MOUNT"):  # set it to exercise the injected faults
        opts = ",".join((f"size={size}", *options))
        mounted = (
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode
            == 0
        )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _run(*args: str):  # noqa: ANN202 - typer's Result
    return runner.invoke(app, [str(a) for a in args])


# --- 1. files from outside the model directory ------------------------------------------------------


def test_symlinks_leading_outside_are_not_copied(tiny_llava: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$very-secret-hash\n")
    secret.chmod(0o600)
    src = _copy(tiny_llava, tmp_path / "model")
    (src / "notes.txt").symlink_to(secret)  # the m/notes.txt -> /etc/shadow
    (src / "outside-dir").symlink_to(secret.parent, target_is_directory=True)
    (src / "dangling.json").symlink_to(tmp_path / "nowhere")
    (src / "alias.json").symlink_to(src / "tokenizer_config.json")  # inside: copied
    os.mkfifo(src / "pipe")
    before = tree_digest(src)
    out = tmp_path / "out"
    result = _run("upcycle", src, "-o", out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("notes.txt" in w and "outside the model directory" in w for w in warnings), warnings
    assert any("outside-dir" in w for w in warnings) and any("dangling.json" in w for w in warnings)
    assert any("pipe" in w and "not a regular file" in w for w in warnings)
    assert not (out / "notes.txt").exists() and not (out / "outside-dir").exists()
    assert (out / "alias.json").read_text() == (src / "tokenizer_config.json").read_text()
    assert not (out / "alias.json").is_symlink()
    for path in out.rglob("*"):
        assert path.is_dir() or b"very-secret-hash" not in path.read_bytes(), path
    assert tree_digest(src) == before and leftovers(tmp_path) == []
    skipped = {
        s["file"] for s in json.loads(_run("upcycle", src, "-o", tmp_path / "o2", "--json").stdout)["skipped_files"]
    }
    assert {"notes.txt", "outside-dir", "dangling.json", "pipe"} <= skipped


def test_hugging_face_cache_snapshot_is_copied(tiny_llava: Path, tmp_path: Path) -> None:
    """``hf download`` layout: snapshots/REV/FILE -> ../../blobs/HASH. Those symlinks are followed."""
    repo = tmp_path / "hub" / "models--org--tiny-llava"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(tiny_llava.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copyfile(path, repo / "blobs" / digest)
            link = snapshot / path.relative_to(tiny_llava)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(repo / "blobs" / digest, link.parent))
    out = tmp_path / "out"
    result = _run("upcycle", snapshot, "-o", out)
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr
    for name in ("tokenizer_config.json", "chat_template.jinja", "extra/notes.txt"):
        assert (out / name).read_bytes() == (tiny_llava / name).read_bytes() and not (out / name).is_symlink()


def test_output_modes_are_never_wider_than_the_source(tiny_llava: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llava, tmp_path / "model")
    for shard in src.glob("*.safetensors"):
        shard.chmod(0o600)  # one private shard makes every output shard private
        break
    (src / "tokenizer_config.json").chmod(0o600)
    (src / "config.json").chmod(0o640)
    out = tmp_path / "out"
    assert _run("upcycle", src, "-o", out).exit_code == 0
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert {m for n, m in modes.items() if n.endswith(".safetensors")} == {0o600}
    assert modes["tokenizer_config.json"] == 0o600 and modes["config.json"] & ~0o640 == 0
    source_modes = {
        p.relative_to(src).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in src.rglob("*") if p.is_file()
    }
    for name, mode in modes.items():
        if name in source_modes:
            assert mode & ~source_modes[name] == 0, (name, oct(mode), oct(source_modes[name]))


# --- 2. environment faults: one line, the right exit code, blame where it belongs --------------------


def test_read_only_output_parent(tiny_llava: Path, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    with tmpfs(parent, "1m", "ro") as mounted:
        if not mounted:
            if IS_ROOT:
                pytest.skip("root without mount: permission bits do not stop root")
            parent.chmod(0o555)
        before = tree_digest(tiny_llava)
        result = _run("upcycle", tiny_llava, "-o", parent / "out")
        line = assert_one_line_error(result, OutputWriteError.exit_code, str(parent))
        assert "output" in line and tree_digest(tiny_llava) == before and list(parent.iterdir()) == []


def test_disk_full_blames_the_output(tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = tmp_path / "small"
    before = tree_digest(tiny_llava)
    with tmpfs(disk, "200k") as mounted:
        if not mounted:  # inject what a full disk does to the shard writer's writes
            from mote_convert.io import reader

            def full(dst, data):  # noqa: ANN001
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(reader, "write_all", full)
            monkeypatch.setattr("mote_convert.io.shards.write_all", full)
        result = _run("upcycle", tiny_llava, "-o", disk / "out")
        line = assert_one_line_error(result, OutputWriteError.exit_code, "No space left on device")
        assert str(disk / "out") in line and "cannot write output" in line
        assert str(tiny_llava) not in line  # the input is not blamed
        assert list(disk.iterdir()) == [] and tree_digest(tiny_llava) == before


@pytest.mark.parametrize("where", ["config.json", "extra file"])
def test_disk_full_at_config_or_extra_file(
    where: str, tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args, **kwargs):  # noqa: ANN002, ANN003
        name = "config.json" if where == "config.json" else "tokenizer_config.json"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    if where == "config.json":
        monkeypatch.setattr(
            config_patch, "write_text", lambda path, *a, **k: full(path) if path.name == "config.json" else None
        )
    else:
        real = config_patch._copy_stream

        def copy(src, dst, name):  # noqa: ANN001
            if name.name == "tokenizer_config.json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst.name))
            return real(src, dst, name)

        monkeypatch.setattr(config_patch, "_copy_stream", copy)
    out = tmp_path / "out"
    line = assert_one_line_error(
        _run("upcycle", tiny_llava, "-o", out), OutputWriteError.exit_code, "No space left on device"
    )
    assert "output" in line and not out.exists() and leftovers(tmp_path) == []


def test_dangling_output_symlink(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone")
    assert_one_line_error(_run("upcycle", tiny_llava, "-o", out), OutputExistsError.exit_code, "a symbolic link")
    assert out.is_symlink()
    assert _run("upcycle", tiny_llava, "-o", out, "--overwrite").exit_code == 0
    assert out.is_dir() and not out.is_symlink()
    assert leftovers(tmp_path) == []
    reference = mote_convert.upcycle(tiny_llava, tmp_path.parent / f"{tmp_path.name}-reference").output
    assert tree_digest(out) == tree_digest(reference)  # a whole output, file for file


def test_unreadable_tokenizer_file(tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _copy(tiny_llava, tmp_path / "model")
    target = src / "tokenizer_config.json"
    if IS_ROOT:  # root reads any file: inject the refusal the kernel gives everyone else
        real_open = os.open

        def refusing_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            if Path(os.fsdecode(path)).name == target.name and not flags & (os.O_WRONLY | os.O_RDWR):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(config_patch.os, "open", refusing_open)
    else:
        target.chmod(0)
    out = tmp_path / "out"
    line = assert_one_line_error(_run("upcycle", src, "-o", out), InputReadError.exit_code, "tokenizer_config.json")
    assert "cannot read input" in line and "Permission denied" in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_overwrite_onto_a_mount_point(tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    with tmpfs(out, "1m") as mounted:
        if not mounted:
            out.mkdir(exist_ok=True)
            real_replace = os.replace

            def busy(src, dst):  # noqa: ANN001
                if Path(src) == out:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src), str(dst))
                return real_replace(src, dst)

            monkeypatch.setattr("mote_convert.io.staging.os.replace", busy)
        (out / "keep.txt").write_text("mine")
        line = assert_one_line_error(
            _run("upcycle", tiny_llava, "-o", out, "--overwrite"), OutputWriteError.exit_code, str(out)
        )
        assert "busy" in line.lower()
        assert (out / "keep.txt").read_text() == "mine" and leftovers(tmp_path) == []


# --- 3. unchecked values ---------------------------------------------------------------------------


def _with_config(tiny_llava: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    src = _copy(tiny_llava, dst)
    config = json.loads((src / "config.json").read_text())
    edit(config)
    (src / "config.json").write_text(json.dumps(config) if isinstance(config, dict) else config)
    return src


CONFIG_CASES = {
    "initializer_range inf": (
        lambda c: c["text_config"].update(initializer_range=float("inf")),
        UnsupportedArchitectureError,  # transformers' own validation of the config, first
        "field 'initializer_range'",
    ),
    "initializer_range nan": (
        lambda c: c["text_config"].update(initializer_range=float("nan")),
        UnsupportedArchitectureError,  # transformers' own validation of the config, first
        "field 'initializer_range'",
    ),
    "initializer_range string": (
        lambda c: c["text_config"].update(initializer_range="abc"),
        UnsupportedArchitectureError,  # transformers' own validation of the config, first
        "field 'initializer_range'",
    ),
    "initializer_range null": (
        lambda c: c["text_config"].update(initializer_range=None),
        UnsupportedArchitectureError,  # transformers' own validation of the config, first
        "field 'initializer_range'",
    ),
    "initializer_range negative": (
        lambda c: c["text_config"].update(initializer_range=-0.02),
        UnsupportedArchitectureError,  # transformers' own validation of the config, first
        "field 'initializer_range'",
    ),
    "model_type a list": (
        lambda c: c.update(model_type=["llava"]),
        UnsupportedArchitectureError,
        "model_type is ['llava']",
    ),
    "layers 1e7 (float)": (
        lambda c: c["text_config"].update(num_hidden_layers=1e7),
        UnsupportedArchitectureError,
        "no integer text_config.num_hidden_layers",
    ),
    "layers 10**7": (
        lambda c: c["text_config"].update(num_hidden_layers=10**7),
        UnsupportedArchitectureError,
        "num_hidden_layers is 10000000",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_values(case: str, tiny_llava: Path, tmp_path: Path) -> None:
    edit, kind, needle = CONFIG_CASES[case]
    src = _with_config(tiny_llava, tmp_path / "model", edit)
    before = tree_digest(src)
    start = time.monotonic()
    assert_one_line_error(_run("upcycle", src, "-o", tmp_path / "out"), kind.exit_code, needle)
    result = _run("inspect", src)
    assert result.exit_code in (kind.exit_code, 10) and "Traceback" not in result.output, result.output
    assert time.monotonic() - start < 20  # the issue saw no answer in minutes for the layer counts
    assert tree_digest(src) == before and not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_deeply_nested_config_json(tiny_llava: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llava, tmp_path / "model")
    (src / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in ("upcycle", "inspect"):
        args = (command, src, "-o", tmp_path / "out") if command == "upcycle" else (command, src)
        assert_one_line_error(_run(*args), InputNotFoundError.exit_code, "nested too deeply")


def test_bad_recipe_and_flag_values(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    cases = {
        "latent: 'false'\n": "--latent must be true or false, got 'false'",
        "top_k: true\n": "--top-k must be an integer, got True",
        "num_experts: 4.5\n": "--num-experts must be an integer, got 4.5",
        "a: &a [1, 1]\nb: [*a, *a]\n": "aliases are not allowed",
    }
    for text, needle in cases.items():
        recipe.write_text(text)
        assert_one_line_error(
            _run("upcycle", tiny_llava, "-o", out, "--recipe", recipe), OptionsError.exit_code, needle
        )
    assert_one_line_error(
        _run("upcycle", tiny_llava, "-o", out, "--seed", str(2**64)), OptionsError.exit_code, "--seed"
    )
    start = time.monotonic()
    assert_one_line_error(
        _run("upcycle", tiny_llava, "-o", out, "--num-experts", "100000000", "--dry-run"),
        OptionsError.exit_code,
        "--num-experts",
    )
    assert time.monotonic() - start < 10
    assert not out.exists() and leftovers(tmp_path) == []


# --- 4. staging: concurrent runs and cleanup failures (signals: tests/io/test_staging.py) -----------


def test_second_concurrent_run_fails_at_once(tiny_llava: Path, tmp_path: Path) -> None:
    from mote_convert.io.staging import StagedOutput

    out = tmp_path / "out"
    with StagedOutput(out) as staging:  # another run, mid-write
        (staging / "partial").write_text("x")
        start = time.monotonic()
        line = assert_one_line_error(
            _run("upcycle", tiny_llava, "-o", out), OutputExistsError.exit_code, "another mote-convert run"
        )
        assert str(out) in line and time.monotonic() - start < 5
        assert staging.exists()  # the first run's staging is untouched
    assert out.exists() and leftovers(tmp_path) == []


def test_cleanup_failures_are_reported(tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mote_convert.io import staging as writer

    out = tmp_path / "out"
    mote_convert.upcycle(tiny_llava, out)
    real = writer._remove_tree

    def failing(path: Path) -> None:
        if ".old-" in path.name:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        real(path)

    monkeypatch.setattr(writer, "_remove_tree", failing)
    line = assert_one_line_error(
        _run("upcycle", tiny_llava, "-o", out, "--overwrite"), OutputWriteError.exit_code, "could not be removed"
    )
    assert ".old-" in line and (out / "config.json").exists()
    monkeypatch.setattr(writer, "_remove_tree", real)
    assert _run("upcycle", tiny_llava, "-o", out, "--overwrite").exit_code == 0  # the next run removes the leftover
    assert leftovers(tmp_path) == []


# --- 6. newcomer defects ---------------------------------------------------------------------------


def test_pack_summary_counts_layers_and_routers(tiny_llava: Path, tmp_path: Path) -> None:
    latent = mote_convert.upcycle(tiny_llava, tmp_path / "latent", latent=True)
    result = _run("pack", latent.output, "-o", tmp_path / "packed", "--json")
    assert result.exit_code == 0, result.output
    packed = json.loads(result.stdout)
    direct = mote_convert.upcycle(tiny_llava, tmp_path / "direct").summary.to_dict()
    assert packed["moe_layers"] == direct["moe_layers"] == 2
    assert packed["router_bytes"] == direct["router_bytes"] > 0
    assert packed["expert_weight_bytes"] == direct["expert_weight_bytes"]
    assert packed["expert_bits_per_weight"] == direct["expert_bits_per_weight"]


HELP_DEFAULTS = {
    "upcycle": [
        "[default: 4]",
        "[default: 1]",
        "[default: all]",
        "[default: packed]",
        "[default: 5GB]",
        "[default: 0]",
    ],
    "pack": ["[default: 5GB]"],
    "inspect": ["[default: 4]", "[default: 1]", "[default: all]"],
    "architectures": [],
    "demo": [],
}


@pytest.mark.parametrize("command", sorted(HELP_DEFAULTS))
def test_help_shows_defaults_and_usage(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for needle in HELP_DEFAULTS[command]:
        assert needle in result.stdout, (needle, result.stdout)
    assert "<bool>" not in result.stdout and "{" not in result.stdout.split("\n\n")[0]
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert (
        usage.split("Usage: mote-convert ")[1].strip()
        == {
            "upcycle": "upcycle [OPTIONS] MODEL",
            "pack": "pack [OPTIONS] IN",
            "inspect": "inspect [OPTIONS] PATH",
            "architectures": "architectures [OPTIONS]",
            "demo": "demo [OPTIONS]",
        }[command]
    )


def test_version_and_listing_json() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mote-convert {mote_convert.__version__}"
    for args in (["upcycle", "--list-architectures", "--json"], ["upcycle", "--json", "--list-architectures"]):
        data = json.loads(runner.invoke(app, args).stdout)
        assert any(d["model_type"] == "llava" and d["status"] == "supported" for d in data)


def test_trainer_style_checkpoint_is_accepted_by_every_tool(tiny_llava: Path, tmp_path: Path) -> None:
    """save_pretrained writes {"format": "pt"} only: inspect, load_model and pack all accept it."""
    ckpt = mote_convert.upcycle(tiny_llava, tmp_path / "latent", latent=True).output
    for f in ckpt.glob("*.safetensors"):
        save_file(load_file(f), f, metadata={"format": "pt"})
    assert mote_convert.inspect_checkpoint(ckpt).ok
    mote_convert.load_model(ckpt, mode="packed")
    mote_convert.pack(ckpt, tmp_path / "packed")
    for f in ckpt.glob("*.safetensors"):  # another version is refused by all three alike
        save_file(load_file(f), f, metadata={"format": "pt", "mote_format": "2"})
    assert any("mote_format" in str(p) for p in mote_convert.inspect_checkpoint(ckpt).problems)
    for run in (lambda: mote_convert.load_model(ckpt), lambda: mote_convert.pack(ckpt, tmp_path / "p2")):
        with pytest.raises(CheckFailedError, match="mote_format"):
            run()


def test_tables_keep_numbers_whole_at_80_columns(tmp_path: Path) -> None:
    layers, hidden, inter, vocab = 32, 4096, 11008, 32064
    text = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden, "intermediate_size": inter}
    config = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "text_config": text}
    specs = [TensorSpec("language_model.model.embed_tokens.weight", "F16", (vocab, hidden))]
    for i in range(layers):
        p = f"language_model.model.layers.{i}"
        specs += [
            TensorSpec(f"{p}.mlp.{n}.weight", "F16", s)
            for n, s in (("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter)))
        ]
        specs += [
            TensorSpec(f"{p}.self_attn.{n}.weight", "F16", (hidden, hidden))
            for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        ]
    sparse_checkpoint(tmp_path / "llava-7b", config, specs)
    result = runner.invoke(app, ["inspect", str(tmp_path / "llava-7b"), "--per-layer"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "6.607 B" in result.stdout  # params of the dense model (131.3 M + 2.147 B + 4.329 B), compact and whole


def test_demo_prints_no_deleted_paths() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "mote-demo-" not in result.output and "/tmp" not in result.output
