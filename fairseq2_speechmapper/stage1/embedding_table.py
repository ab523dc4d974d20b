"""Loads only the input token-embedding table of an LLM card, without building
the LLM or reading its other weights.

SpeechMapper is pretrained to regress rows of this table, so pretraining never
needs the LLM itself (§8.2 of the fairseq2 guide).

The card comes from fairseq2's asset store, its checkpoint through fairseq2's
download manager and its model configuration through the family's
:class:`~fairseq2.models.ModelHub`. Then:

- **lazy path** (a single ``.pt``/``.pth``/``.bin`` file, or a ``.safetensors``
  file or directory: the formats of fairseq2's basic and Safetensors checkpoint
  loaders): the checkpoint's keys, shapes and dtypes are read without their
  data (``safetensors.safe_open``; ``torch.load(mmap=True)``), the family's
  state-dict converter runs on meta-device placeholders of them, and only the
  source tensor that the converter renames to ``decoder_frontend.embed.weight``
  is read: for Safetensors from the one shard that holds it into the returned
  tensor, a block of rows at a time (so the peak is one table and a block),
  for PyTorch files by copying it out of the memory-mapped file (the table's
  file pages plus its copy);
- **streaming path** (other formats, e.g. fairseq2 training checkpoints or
  LLaMA reference shards, and converters that compute the table instead of
  renaming it): the hub's ``iter_checkpoint(path, config, mmap=True)``, stopped
  at the key.

The lazy path exists because ``iter_checkpoint`` is a generator only on the
surface: the loaders of fairseq2 0.8.1 open *every* shard and run the family's
converter over the complete state dict before yielding the first tensor. With
``mmap=True`` the tensors of ``.pt`` and Safetensors files are still
memory-mapped views, but whatever the converter transforms is materialised: the
LLaMA converter permutes every ``q_proj``/``k_proj`` of a Hugging Face
checkpoint, 1.3 GB in bf16 for Llama 3.1 8B, more than its 1.05 GB table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Final, NamedTuple, TypeAlias, final

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor
from torch.nn import Module

from fairseq2.assets import (
    AssetCard,
    AssetCardError,
    AssetNotFoundError,
    get_asset_download_manager,
    get_asset_store,
)
from fairseq2.device import CPU, get_current_device
from fairseq2.io import CorruptFileError, TensorFileLoader, TensorFileLoadOptions
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.models import ModelFamily, ModelHub, StandardModelFamily
from fairseq2.runtime.dependency import get_dependency_resolver

from fairseq2_speechmapper.errors import SpeechMapperError

EMBEDDING_KEY: Final = "decoder_frontend.embed.weight"
"""The key of the input token-embedding table in the fairseq2 state dict of a
decoder-only LLM (``TransformerLM.decoder_frontend.embed``)."""

_TORCH_SUFFIXES: Final = (".pt", ".pth", ".bin")

_SourceKey: TypeAlias = tuple[str, ...]
"""The path of a tensor in a checkpoint (legacy ones nest the state dict)."""


class EmbeddingTableError(SpeechMapperError):
    """Raised when the token-embedding table of a card cannot be loaded; the
    message is one line naming the card and the key searched."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)

        self.name = name


def load_embedding_table(
    name: str | AssetCard,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Loads the input token-embedding table ``(vocab_size, model_dim)`` of the
    LLM of card ``name`` (a name in fairseq2's asset store, or a card) without
    building the LLM and without reading its other weights into memory.

    Works for every family whose fairseq2 state dict holds
    ``decoder_frontend.embed.weight`` (``llama``, ``qwen``, ...); with tied
    embeddings the output projection is the same table.

    :param device: The device of the table; ``None`` for fairseq2's current
        device, as in :func:`fairseq2.models.load_model`.
    :param dtype: The data type of the table; ``None`` for
        :func:`torch.get_default_dtype`, as in :func:`fairseq2.models.load_model`.

    :returns: A tensor that owns its memory (never a view of the checkpoint
        file) and does not require gradients.

    :raises EmbeddingTableError: The card is unknown, names no registered model
        family or no checkpoint, or its checkpoint cannot be read or holds no
        token-embedding table.
    """
    card = _retrieve_card(name)

    family = _get_family(card)

    # Inside a recipe the global resolver, hence the store, is the recipe's.
    hub: ModelHub[Module, object] = ModelHub(family, get_asset_store())

    try:
        config = hub.get_model_config(card)
    except AssetCardError as ex:
        raise _error(card, f"its model configuration cannot be read ({ex})") from ex

    path = _get_checkpoint_path(card)

    restrict = _get_restrict(card, family)

    try:
        try:
            table = _load_lazily(path, family, config, restrict)
        except _LazyPathNotApplicable:
            table = _stream(hub, path, config, restrict)
    except (CorruptModelCheckpointError, CorruptFileError) as ex:
        raise _error(card, f"its checkpoint {path} cannot be read ({ex})") from ex

    if table is None:
        raise _error(
            card,
            f"its checkpoint {path} has no such key after the {family.name} family's key conversion, so the card does not hold an LLM",
        )

    if device is None:
        device = get_current_device()

    if dtype is None:
        dtype = torch.get_default_dtype()

    # A view of the memory-mapped checkpoint is copied out; a table read into
    # its own memory is returned as it is (where device and dtype match).
    return table.tensor.detach().to(device=device, dtype=dtype, copy=table.is_view)


def _error(card: AssetCard | str, reason: str) -> EmbeddingTableError:
    name = card if isinstance(card, str) else card.name

    # One line, whatever the wrapped exception's message holds.
    reason = " ".join(reason.split())

    return EmbeddingTableError(
        name, f"The token-embedding table (`{EMBEDDING_KEY}`) of the `{name}` card cannot be loaded: {reason}."
    )


def _retrieve_card(name: str | AssetCard) -> AssetCard:
    if isinstance(name, AssetCard):
        return name

    try:
        return get_asset_store().retrieve_card(name)
    except AssetNotFoundError:
        raise _error(name, "no asset card has this name") from None


def _get_family(card: AssetCard) -> ModelFamily:
    field = card.maybe_get_field("model_family")
    if field is None:
        raise _error(card, "it is not a model card (no `model_family` field)")

    try:
        family_name = field.as_(str)
    except AssetCardError as ex:
        raise _error(card, str(ex)) from None

    family = get_dependency_resolver().maybe_resolve(ModelFamily, key=family_name)
    if family is None:
        raise _error(card, f"its model family {family_name} is not registered with fairseq2")

    return family


def _get_checkpoint_path(card: AssetCard) -> Path:
    """Resolves the checkpoint of ``card`` as fairseq2's model families do: the
    ``checkpoint`` URI through the download manager, then ``checkpoint_path``."""
    uri_field = card.maybe_get_field("checkpoint")
    if uri_field is None:
        raise _error(card, "it has no `checkpoint` field (a gated model needs a `@user` overlay that names one)")

    try:
        uri = uri_field.as_uri()
    except AssetCardError as ex:
        raise _error(card, str(ex)) from None

    if uri.scheme == "file":
        path = uri.to_path()
    else:
        path = get_asset_download_manager().download_model(uri, card.name)

    sub_path_field = card.maybe_get_field("checkpoint_path")
    if sub_path_field is not None:
        path = path.joinpath(sub_path_field.as_(str))

    # fairseq2 reads legacy paths with format specifiers as their directory.
    if "shard_idx" in path.name:
        path = path.parent

    if not path.exists():
        raise _error(card, f"its checkpoint {path} does not exist")

    return path


def _get_restrict(card: AssetCard, family: ModelFamily) -> bool:
    field = card.maybe_get_field("restrict")
    if field is not None:
        return field.as_(bool)

    # fairseq2 0.8.1 keeps the family's pickle restriction private; True is its default.
    return bool(getattr(family, "_restrict", True))


class _Table(NamedTuple):
    tensor: Tensor

    is_view: bool
    """``True`` if ``tensor`` may be a view of a memory-mapped checkpoint file."""


class _LazyPathNotApplicable(Exception):
    """Raised where only the streaming path can load the table."""


def _load_lazily(path: Path, family: ModelFamily, config: object, restrict: bool) -> _Table | None:
    """Returns the table, or ``None`` if the converted checkpoint has none.

    :raises _LazyPathNotApplicable: The checkpoint format or the family's
        converter needs the streaming path.
    """
    # fairseq2 0.8.1 exposes a family's state-dict converter only privately here.
    if not isinstance(family, StandardModelFamily):
        raise _LazyPathNotApplicable()

    source: _CheckpointSource

    if path.is_file() and path.suffix in _TORCH_SUFFIXES:
        source = _TorchCheckpointSource(path, restrict)
    elif _is_safetensors(path):
        source = _SafetensorsCheckpointSource(path)
    else:
        raise _LazyPathNotApplicable()

    state_dict = source.placeholders()

    converter = family._state_dict_converter
    if converter is not None:
        try:
            state_dict = converter(state_dict, config=config)
        except Exception as ex:
            # E.g. a converter that needs real data rather than placeholders.
            raise _LazyPathNotApplicable() from ex

    placeholder = state_dict.get(EMBEDDING_KEY)
    if placeholder is None:
        return None

    # None when the converter computed the table instead of renaming it.
    source_key = source.key_of(placeholder) if isinstance(placeholder, Tensor) else None
    if source_key is None:
        raise _LazyPathNotApplicable()

    return source.read(source_key)


def _stream(hub: ModelHub[Module, object], path: Path, config: object, restrict: bool) -> _Table | None:
    """Streams the checkpoint through the hub, keeping only the table."""
    checkpoint = hub.iter_checkpoint(path, config, mmap=True, restrict=restrict)

    try:
        for key, tensor in checkpoint:
            if key == EMBEDDING_KEY:
                return _Table(tensor, is_view=True)
    finally:
        # Drops the loader's references to the other tensors right away.
        close = getattr(checkpoint, "close", None)
        if close is not None:
            close()

    return None


def _is_safetensors(path: Path) -> bool:
    """Mirrors the order of fairseq2's checkpoint loaders: a directory with
    ``pp_00`` is a native fairseq2 checkpoint, whatever else it holds."""
    if path.is_file():
        return path.suffix == ".safetensors"

    if path.joinpath("pp_00").is_dir():
        return False

    return any(file.is_file() for file in path.glob("*.safetensors"))


class _CheckpointSource(ABC):
    """The tensors of a checkpoint as meta-device placeholders of the same
    shape and dtype, each readable on its own."""

    def __init__(self) -> None:
        # By id of placeholder; holding the placeholder keeps its id unique.
        self._keys: dict[int, tuple[Tensor, _SourceKey]] = {}

    @abstractmethod
    def placeholders(self) -> dict[str, object]:
        """Returns the checkpoint's state dict with placeholders for tensors."""

    @abstractmethod
    def read(self, key: _SourceKey) -> _Table:
        """Reads the tensor of ``key`` and nothing else."""

    def key_of(self, placeholder: Tensor) -> _SourceKey | None:
        entry = self._keys.get(id(placeholder))
        if entry is None or entry[0] is not placeholder:
            return None

        return entry[1]

    def _placeholder(self, key: _SourceKey, shape: list[int] | torch.Size, dtype: torch.dtype) -> Tensor:
        placeholder = torch.empty(shape, dtype=dtype, device="meta")

        self._keys[id(placeholder)] = (placeholder, key)

        return placeholder


@final
class _TorchCheckpointSource(_CheckpointSource):
    """A single-file PyTorch checkpoint, memory-mapped: no tensor is read until
    its pages are touched."""

    def __init__(self, path: Path, restrict: bool) -> None:
        super().__init__()

        loader = get_dependency_resolver().resolve(TensorFileLoader)

        options = TensorFileLoadOptions(map_location=CPU, mmap=True, restrict=restrict)

        self._checkpoint = loader.load(path, options)

    def placeholders(self) -> dict[str, object]:
        return self._replace(self._checkpoint, ())

    def _replace(self, state_dict: dict[str, object], prefix: _SourceKey) -> dict[str, object]:
        output: dict[str, object] = {}

        for key, value in state_dict.items():
            if isinstance(value, Tensor):
                output[key] = self._placeholder(prefix + (key,), value.shape, value.dtype)
            elif isinstance(value, dict):
                # Legacy checkpoints nest the state dict (e.g. under "model").
                output[key] = self._replace(value, prefix + (key,))
            else:
                output[key] = value

        return output

    def read(self, key: _SourceKey) -> _Table:
        value: object = self._checkpoint

        for part in key:
            value = value[part]  # type: ignore[index]

        if not isinstance(value, Tensor):
            raise TypeError(f"{key} is expected to be a tensor, but is a `{type(value)}` instead.")

        return _Table(value, is_view=True)


class _SafetensorsEntry(NamedTuple):
    file: Path
    dtype: str
    shape: list[int]


@final
class _SafetensorsCheckpointSource(_CheckpointSource):
    """A Safetensors file or a directory of shards: the placeholders come from
    the headers (``safe_open``), and the requested tensor is copied from its
    shard into its own memory a few rows at a time (``get_slice``), the shard
    opened anew for each block of rows so that no more than one block of the
    file's pages is mapped at a time; the other tensors are never touched."""

    # The rows copied per opening of the shard; its mapped pages stay resident
    # until it is closed.
    _BLOCK_BYTES: Final = 2 * 2**20

    def __init__(self, path: Path) -> None:
        super().__init__()

        self._files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))

        self._entries: dict[str, _SafetensorsEntry] = {}

    def placeholders(self) -> dict[str, object]:
        state_dict: dict[str, object] = {}

        for file in self._files:
            try:
                with safe_open(file, framework="pt") as fp:
                    entries = {}

                    for key in fp.keys():
                        tensor_slice = fp.get_slice(key)

                        entries[key] = _SafetensorsEntry(file, tensor_slice.get_dtype(), tensor_slice.get_shape())
            except (SafetensorError, OSError) as ex:
                raise CorruptModelCheckpointError(file, f"{file} has no valid Safetensors header ({ex}).") from ex

            for key, entry in entries.items():
                if key in self._entries:
                    raise CorruptModelCheckpointError(file, f"{key} is in both {file} and {self._entries[key].file}.")

                self._entries[key] = entry

                # An unknown dtype only matters if the table has it (see read()).
                dtype = _SAFETENSORS_DTYPES.get(entry.dtype, torch.uint8)

                state_dict[key] = self._placeholder((key,), entry.shape, dtype)

        return state_dict

    def read(self, key: _SourceKey) -> _Table:
        (name,) = key

        entry = self._entries[name]

        dtype = _SAFETENSORS_DTYPES.get(entry.dtype)
        if dtype is None:
            # The loader behind the streaming path may know it.
            raise _LazyPathNotApplicable()

        table = torch.empty(entry.shape, dtype=dtype)

        if table.dim() != 2:
            raise CorruptModelCheckpointError(
                entry.file, f"{name} in {entry.file} has the shape {entry.shape}, not that of a table."
            )

        num_rows, dim = table.shape

        block_rows = max(1, self._BLOCK_BYTES // max(1, dim * table.element_size()))

        try:
            for begin in range(0, num_rows, block_rows):
                with safe_open(entry.file, framework="pt") as fp:
                    table[begin : begin + block_rows].copy_(fp.get_slice(name)[begin : begin + block_rows])
        except (SafetensorError, OSError) as ex:
            raise CorruptModelCheckpointError(entry.file, f"{name} cannot be read from {entry.file} ({ex}).") from ex

        return _Table(table, is_view=False)


def _safetensors_dtypes() -> dict[str, torch.dtype]:
    names = {
        "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
        "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
        "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
        "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    }  # fmt: skip

    # Only the dtypes this torch build has; a placeholder's dtype is informative.
    return {k: getattr(torch, v) for k, v in names.items() if isinstance(getattr(torch, v, None), torch.dtype)}


_SAFETENSORS_DTYPES: Final = _safetensors_dtypes()
