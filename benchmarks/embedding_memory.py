"""Peak host memory of loading only an LLM's token-embedding table
(:func:`fairseq2_speechmapper.stage1.embedding_table.load_embedding_table`) versus
building the whole LLM of the same card.

Run from the repository root (Linux; one to two minutes, mostly interpreter
start-ups and reading the 1 GB table)::

    .venv/bin/python -m benchmarks.embedding_memory [--no-8b]

What is measured and what is computed:

- Every *measured* figure is the growth of the peak resident set size (VmHWM,
  reset through ``/proc/self/clear_refs``) of a fresh interpreter during one
  operation, after a warm-up that initialises fairseq2 and runs the same code
  path once on another card. It counts anonymous memory and the mapped pages
  of memory-mapped checkpoint files.
- (a) the tiny llama test card (``speechmapper_tiny_llama_instruct``, written
  to the cache directory like ``fairseq2 speechmapper self-check`` does): both
  operations are measured; at this size the figures are dominated by Python
  objects and allocator granularity, so the parameter bytes are shown too
  (computed from the tensors).
- (b) the Llama 3.1 8B shape (vocabulary 128256, dimension 4096, 32 layers,
  bf16) as a Hugging Face checkpoint: 4 Safetensors shards plus
  ``model.safetensors.index.json`` with the real keys, shapes and headers, but
  every tensor is a hole of a sparse file (zeros, no disk blocks), so a 16 GB
  checkpoint costs no disk. Measured: ``load_embedding_table`` and, for
  comparison, fairseq2's ``iter_checkpoint(mmap=True)`` stopped at the table's
  key. Computed, not measured: the full LLM, as the parameter bytes of the model
  built on the meta device (a real build needs about 15 GiB and minutes).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import textwrap
from argparse import ArgumentParser
from pathlib import Path

import torch

from benchmarks.common import MiB, require_linux

# Runs one operation in a fresh interpreter and prints its peak RSS growth.
_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import torch

    from fairseq2.assets import AssetCard
    from fairseq2.models import load_model
    from fairseq2.models.llama import get_llama_model_hub

    from fairseq2_speechmapper.stage1.embedding_table import EMBEDDING_KEY, load_embedding_table
    from fairseq2_speechmapper.cli.tiny_assets import TINY_QWEN_CARD

    def read_status(field):
        with open("/proc/self/status") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as fp:
            fp.write("5")

        return read_status("VmRSS")

    op, card_json, dtype_name = sys.argv[1:]

    card = json.loads(card_json)
    if isinstance(card, dict):
        card = AssetCard(card["name"], card)

    cpu = torch.device("cpu")
    dtype = getattr(torch, dtype_name)

    def iter_checkpoint_until_table(card):
        hub = get_llama_model_hub()
        config = hub.get_model_config(card)
        path = Path(card.field("checkpoint").as_(str))
        for key, tensor in hub.iter_checkpoint(path, config, mmap=True):
            if key == EMBEDDING_KEY:
                return tensor.to(dtype=dtype, copy=True)

    ops = {
        "table": lambda c: load_embedding_table(c, device=cpu, dtype=dtype),
        "model": lambda c: load_model(c, device=cpu, dtype=dtype),
        "iter_checkpoint": iter_checkpoint_until_table,
    }

    # Warm-up: fairseq2's set-up and lazy imports on the same code path.
    if op == "iter_checkpoint":
        load_embedding_table(TINY_QWEN_CARD, device=cpu)
    else:
        ops[op](TINY_QWEN_CARD)

    base = reset_peak()
    start = time.perf_counter()
    result = ops[op](card)
    elapsed = time.perf_counter() - start
    peak = read_status("VmHWM") - base

    if isinstance(result, torch.Tensor):
        num_bytes = result.numel() * result.element_size()
    else:
        num_bytes = sum(t.numel() * t.element_size() for t in result.state_dict().values())

    print(json.dumps({"peak": peak, "bytes": num_bytes, "seconds": elapsed}))
    """
)


def _measure(op: str, card: str | dict[str, object], dtype: torch.dtype) -> dict[str, float]:
    dtype_name = str(dtype).removeprefix("torch.")

    result = subprocess.run(
        [sys.executable, "-c", _CHILD, op, json.dumps(card), dtype_name],
        capture_output=True,
        text=True,
        check=False,
    )

    if result.returncode != 0:
        raise RuntimeError(f"The `{op}` measurement failed:\n{result.stderr}")

    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _write_sparse_safetensors(file: Path, shapes: dict[str, tuple[list[int], str]]) -> None:
    """Writes a Safetensors file whose tensors are all a hole of the file
    (zeros that take no disk blocks)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}

    offset = 0

    for key, (shape, dtype) in shapes.items():
        num_bytes = math.prod(shape) * {"BF16": 2, "F16": 2, "F32": 4}[dtype]

        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + num_bytes]}

        offset += num_bytes

    header_bytes = json.dumps(header).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    with file.open("wb") as fp:
        fp.write(len(header_bytes).to_bytes(8, "little"))
        fp.write(header_bytes)
        fp.truncate(8 + len(header_bytes) + offset)


def _write_llama_8b_checkpoint(output_dir: Path, num_shards: int = 4) -> tuple[dict[str, object], int]:
    """Writes the sparse Llama 3.1 8B-shaped Hugging Face checkpoint; returns
    its card's metadata and the full model's parameter bytes (bf16)."""
    from fairseq2.models.hg import get_hugging_face_converter
    from fairseq2.models.llama import create_llama_model, get_llama_model_hub

    config = get_llama_model_hub().get_arch_config("llama3_1_8b")

    # The meta device gives the shapes of all parameters without memory.
    with torch.device("meta"):
        model = create_llama_model(config)

    param_bytes = sum(p.numel() * torch.bfloat16.itemsize for p in model.parameters())

    hg_state_dict = get_hugging_face_converter("llama").to_hg_state_dict(dict(model.state_dict()), config)

    shapes = {k: (list(v.shape), "BF16") for k, v in hg_state_dict.items() if isinstance(v, torch.Tensor)}

    keys = list(shapes)

    shard_size = math.ceil(len(keys) / num_shards)

    weight_map = {}

    for idx in range(num_shards):
        file_name = f"model-{idx + 1:05d}-of-{num_shards:05d}.safetensors"

        shard_keys = keys[idx * shard_size : (idx + 1) * shard_size]

        file = output_dir / file_name

        _write_sparse_safetensors(file, {k: shapes[k] for k in shard_keys})

        stat = file.stat()
        if stat.st_blocks * 512 > stat.st_size // 2:
            raise RuntimeError(
                f"{output_dir} is on a file system without sparse files; the 16 GB checkpoint would take real disk space."
            )

        weight_map.update({k: file_name for k in shard_keys})

    index = {"metadata": {}, "weight_map": weight_map}

    output_dir.joinpath("model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")

    card = {
        "name": "benchmark_llama3_1_8b_shape",
        "model_family": "llama",
        "model_arch": "llama3_1_8b",
        "checkpoint": str(output_dir),
    }

    return card, param_bytes


def _row(case: str, method: str, kind: str, value: float, note: str = "") -> str:
    return f"{case:<20} {method:<42} {kind:<9} {value / MiB:>10.1f} MiB  {note}"


def main() -> int:
    parser = ArgumentParser(
        description="Peak memory of loading an LLM's token-embedding table alone vs. the whole LLM."
    )
    parser.add_argument("--no-8b", action="store_true", help="skip the Llama 3.1 8B-shaped case")
    args = parser.parse_args()

    if not require_linux():
        return 1

    from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir, get_cache_dir
    from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, write_tiny_assets

    # Before any fairseq2 set-up: the asset store reads the cards directory once.
    write_tiny_assets(get_cache_dir() / "tiny", get_cache_cards_dir())

    header = f"{'case':<20} {'method':<42} {'kind':<9} {'peak RSS growth / bytes':>14}"

    print(header)
    print("-" * len(header))

    table = _measure("table", TINY_LLAMA_CARD, torch.float32)
    model = _measure("model", TINY_LLAMA_CARD, torch.float32)

    case = "(a) tiny llama"

    print(_row(case, "load_embedding_table", "measured", table["peak"], f"{table['seconds']:.2f} s"))
    print(_row(case, "load_model (full LLM)", "measured", model["peak"], f"{model['seconds']:.2f} s"))
    print(_row(case, "table bytes (fp32)", "computed", table["bytes"]))
    print(
        _row(
            case,
            "LLM parameter bytes (fp32)",
            "computed",
            model["bytes"],
            f"table/LLM = {table['bytes'] / model['bytes']:.3f}",
        )
    )
    print(f"{'':<20} measured ratio table/LLM peak = {table['peak'] / max(model['peak'], 1):.3f}")

    if args.no_8b:
        return 0

    with tempfile.TemporaryDirectory(prefix="embedding-memory-") as tmp_dir:
        card, param_bytes = _write_llama_8b_checkpoint(Path(tmp_dir))

        table = _measure("table", card, torch.bfloat16)
        streamed = _measure("iter_checkpoint", card, torch.bfloat16)

    case = "(b) Llama 3.1 8B"

    print(_row(case, "load_embedding_table", "measured", table["peak"], f"{table['seconds']:.2f} s"))
    print(
        _row(
            case, "iter_checkpoint(mmap=True) until table", "measured", streamed["peak"], f"{streamed['seconds']:.2f} s"
        )
    )
    print(_row(case, "table bytes (bf16)", "computed", table["bytes"]))
    print(
        _row(
            case,
            "full LLM parameter bytes (bf16, meta)",
            "computed",
            param_bytes,
            f"table/LLM = {table['bytes'] / param_bytes:.3f}",
        )
    )
    print(f"{'':<20} measured table peak / computed LLM bytes = {table['peak'] / param_bytes:.3f}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
