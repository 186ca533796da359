"""Header fuzzer: a few hundred seeded mutations of a checkpoint's safetensors header and index.

For each mutation, ``inspect`` and ``upcycle`` must answer with a documented exit code and at most
one error line: no traceback, no hang (an alarm bounds every case), the input left unchanged.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from mote_convert.cli import app
from mote_convert.tiny import build_tiny_llava
from tests.conftest import tree_digest

runner = CliRunner()
DOCUMENTED = {0, 3, 4, 5, 6, 8, 10, 11}  # ok, not found, corrupt, arch, plan, format, check failed, read
CASES = 240
CASE_SECONDS = 10


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a tiny LLaVA in two shards (an index json to mutate too)."""
    root = build_tiny_llava(tmp_path_factory.mktemp("fuzz") / "m", max_shard_size="300KB")
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: Any, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


NEST = "__nested__"
WEIRD = [None, True, -1, 0, 2**63, 1.5, "", "F33", "U8", [], {}, [[1]], "x" * 1000, [-3, 2], [2**40, 2**40], ["1", "2"]]


def _mutate_header(rng: random.Random, data: bytes) -> bytes:
    header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    kind = rng.randrange(12)
    if kind == 0:
        entry["dtype"] = rng.choice(WEIRD)
    elif kind == 1:
        entry["shape"] = rng.choice(WEIRD)
    elif kind == 2:
        entry["shape"] = [d * rng.choice([0, 2, 3, 1000]) for d in entry["shape"]] or [rng.randrange(5)]
    elif kind == 3:
        entry["data_offsets"] = rng.choice(WEIRD)
    elif kind == 4:
        a, b = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b, a], [a, b + rng.randrange(1, 99)], [a - 1, b], [0, b - a], [a, a]])
    elif kind == 5:
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 6:
        header["__metadata__"] = rng.choice(WEIRD + [{"mote_format": 7}, {"format": ["pt"]}])
    elif kind == 7:  # deep nesting, spliced in as text (json.dumps itself would recurse)
        depth = rng.choice([10, 1000, 100_000])
        header[name] = NEST
        raw = json.dumps(header).replace(json.dumps(NEST), "[" * depth + "0" + "]" * depth).encode()
        return struct.pack("<Q", len(raw)) + raw + body
    elif kind == 8:
        header[rng.choice(["", "a" * 5000, name + ".x", "../escape"])] = dict(entry)
    elif kind == 9:
        del header[name]
    elif kind == 10:
        header = rng.choice(WEIRD)
    else:
        other = header[rng.choice(names)]
        entry["data_offsets"] = list(other["data_offsets"])  # overlap another tensor
    return _join(header, body)


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    (n,) = struct.unpack("<Q", data[:8])
    kind = rng.randrange(4)
    if kind == 0:  # flip bytes inside the JSON header
        for _ in range(rng.randrange(1, 6)):
            raw[8 + rng.randrange(n)] = rng.randrange(256)
    elif kind == 1:  # a wrong header length
        raw[:8] = struct.pack("<Q", rng.choice([0, 1, n - 1, n + 1, n + 8, 2**40, 2**64 - 1, len(data)]))
    elif kind == 2:  # truncated anywhere
        raw = raw[: rng.randrange(len(raw))]
    else:  # garbage appended or the body cut short by one
        raw = raw + bytes(rng.randrange(1, 64)) if rng.random() < 0.5 else raw[:-1]
    return bytes(raw)


def _mutate_index(rng: random.Random, data: bytes) -> bytes:
    index = json.loads(data)
    weight_map = index["weight_map"]
    name = rng.choice(sorted(weight_map))
    kind = rng.randrange(6)
    if kind == 0:
        weight_map[name] = rng.choice(["../../etc/passwd", "/etc/passwd", "missing.safetensors", "", "config.json"])
    elif kind == 1:
        weight_map[name] = rng.choice(WEIRD)
    elif kind == 2:
        del weight_map[name]
    elif kind == 3:
        weight_map["ghost.tensor"] = weight_map[name]
    elif kind == 4:
        index["weight_map"] = rng.choice(WEIRD)
    else:
        return data[: rng.randrange(len(data))]
    return json.dumps(index).encode()


def _mutation(rng: random.Random, files: dict[str, bytes]) -> dict[str, bytes]:
    files = dict(files)
    shards = sorted(n for n in files if n.endswith(".safetensors"))
    target = rng.choice(shards + ["model.safetensors.index.json"])
    mutate: Callable[[random.Random, bytes], bytes]
    if target.endswith(".json"):
        mutate = _mutate_index
    else:
        mutate = _mutate_header if rng.random() < 0.6 else _mutate_bytes
    files[target] = mutate(rng, files[target])
    return files


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


def _check(result, what: str) -> None:  # noqa: ANN001
    assert result.exit_code in DOCUMENTED, (what, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (what, result.exception)
    assert "Traceback" not in result.output, (what, result.output)
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) <= 1, (what, result.stderr)


def test_header_fuzzer(pristine: dict[str, bytes], tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("MOTE_FUZZ_SEED", "20261123")))  # other seeds: explore more
    previous = signal.signal(signal.SIGALRM, _alarm)
    codes: dict[int, int] = {}
    try:
        for case in range(CASES):
            files = _mutation(rng, pristine)
            root = tmp_path / f"case{case}"
            root.mkdir()
            for name, data in files.items():
                (root / name).write_bytes(data)
            before = tree_digest(root)
            out = tmp_path / f"out{case}"
            for args in (["inspect", str(root)], ["upcycle", str(root), "-o", str(out)]):
                signal.alarm(CASE_SECONDS)
                try:
                    result = runner.invoke(app, args)
                except Hang:
                    pytest.fail(f"case {case}: {args[0]} did not answer in {CASE_SECONDS} s")
                finally:
                    signal.alarm(0)
                _check(result, f"case {case} {args[0]}")
                codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
            assert tree_digest(root) == before, f"case {case}: the input changed"
            assert not any(".partial-" in p.name or p.name.endswith(".mote-lock") for p in tmp_path.iterdir())
            shutil.rmtree(root)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert codes.get(4, 0) > CASES // 4, codes  # most mutations are caught as corrupt checkpoints
