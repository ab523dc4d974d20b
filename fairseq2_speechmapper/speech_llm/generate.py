"""``fairseq2 speechmapper generate``: audio files in, the speech LLM's
replies out, for a user trying a model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

import soundfile
import torch

from fairseq2.assets import get_asset_store
from fairseq2.models import load_model
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.datasets import BadSampleError, SpeechBatch
from fairseq2_speechmapper.datasets.audio import UtteranceLoader
from fairseq2_speechmapper.features import SpeechFeatureEncoder
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.speech_llm.generation import GenerationOptions, generate_from_embeddings
from fairseq2_speechmapper.speech_llm.loader import SpeechLLMSection, SpeechLLMSetupError, load_speech_llm
from fairseq2_speechmapper.speech_llm.tasks import DEFAULT_ASR_PROMPTS


@final
@dataclass(kw_only=True)
class Reply:
    audio_path: Path
    instruction: str
    text: str
    stop_reason: str


def generate_replies(
    model_name: str,
    audio_paths: Sequence[Path],
    *,
    instruction: str | None,
    options: GenerationOptions,
    section: SpeechLLMSection,
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[Reply]:
    """Answers ``instruction`` about each audio file (by default the instruction
    the model was tuned with, else the first ASR wording), batch by batch.

    :raises BadSampleError: if a file cannot be read as audio.
    """
    mapper_card = get_asset_store().retrieve_card(model_name)

    mapper = load_model(model_name, device=device, dtype=torch.float32)
    if not isinstance(mapper, SpeechMapper):
        raise SpeechLLMSetupError(f"The `{model_name}` card does not hold a SpeechMapper mapper.")

    mapper.eval()

    model, tokenizer, info = load_speech_llm(
        mapper_card, section, mapper=mapper, unwrapped_mapper=mapper, device=device
    )

    if instruction is None:
        card_instruction = info.extra_fields.get("instruction")

        instruction = card_instruction if isinstance(card_instruction, str) else DEFAULT_ASR_PROMPTS[0]

        if "{" in instruction:
            raise SpeechLLMSetupError(
                f"`{model_name}` was tuned with instructions like {instruction!r}: give the instruction with --prompt."
            )

    prompt = model.chat_template.speech_prompt(instruction)

    text_decoder = tokenizer.create_decoder(skip_special_tokens=True)

    # Loaded without a feature cache: the speech encoder runs on the audio.
    assert isinstance(model.speech_encoder, SpeechFeatureEncoder)

    loader = UtteranceLoader(model.speech_encoder.speech_encoder.prepare_input, convert_audio=True)

    for start in range(0, len(audio_paths), batch_size):
        paths = audio_paths[start : start + batch_size]

        batch = _load_batch(loader, paths)

        batch.to(device)

        with torch.inference_mode():
            prefixes = model.build_prefixes(model.map_speech(batch), [prompt] * len(paths))

            outputs = generate_from_embeddings(
                model.llm, prefixes, stop_token_ids=model.chat_template.stop_token_ids, options=options
            )

        for path, output in zip(paths, outputs):
            text = text_decoder(torch.tensor(output.token_ids, dtype=torch.int64)).strip()

            yield Reply(audio_path=path, instruction=instruction, text=text, stop_reason=output.stop_reason)


def _load_batch(loader: UtteranceLoader, paths: Sequence[Path]) -> SpeechBatch:
    inputs = []

    for path in paths:
        try:
            duration = soundfile.info(str(path)).duration
        except (RuntimeError, OSError) as ex:
            raise BadSampleError(f"{path}: cannot be read as audio ({str(ex).splitlines()[0]}).") from None

        example = loader({"source": str(path), "audio_path": str(path), "offset": 0.0, "duration": duration})

        if "error" in example:
            raise BadSampleError(str(example["error"]))

        inputs.append(example["inputs"])

    seqs, layout = pad_seqs(inputs)  # type: ignore[arg-type]

    return SpeechBatch(
        inputs=seqs,
        input_lens=[int(n) for n in layout.seq_lens],
        texts=[""] * len(paths),
        raw_texts=[""] * len(paths),
        target_ids=[torch.empty((0,), dtype=torch.int64)] * len(paths),
        ids=[p.stem for p in paths],
        sources=[str(p) for p in paths],
        fields=[{} for _ in paths],
    )
