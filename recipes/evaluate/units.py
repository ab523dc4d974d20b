"""Generation over a manifest split: each utterance's prompt → the speech LLM
→ a hypothesis line (JSONL) per utterance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO, final

import torch
from typing_extensions import override

from fairseq2.data.tokenizers import TokenDecoder
from fairseq2.generator import GeneratorUnit
from fairseq2.metrics import MetricBag, Sum

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.speech_llm import InstructionBuilder, SpeechLLM, SpeechTask
from fairseq2_speechmapper.speech_llm.generation import GenerationOptions, generate_from_embeddings


@final
class HypothesisFile:
    """One JSON line per utterance: id, test set, source, task, instruction, references,
    hypothesis and what scoring needs (target language, question, the
    normalised transcript, and as ``source_text`` the transcript as the
    manifest writes it, COMET's source)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

        self.path = path

        self._fp: TextIO | None = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, object]) -> None:
        if self._fp is None:
            raise ValueError(f"{self.path} is closed.")

        self._fp.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()

            self._fp = None


@final
class SpeechGenerationUnit(GeneratorUnit[SpeechBatch]):
    def __init__(
        self,
        model: SpeechLLM,
        builder: InstructionBuilder,
        text_decoder: TokenDecoder,
        hypothesis_file: HypothesisFile,
        *,
        task: SpeechTask,
        test_set: str,
        options: GenerationOptions,
    ) -> None:
        self._model = model
        self._builder = builder
        self._text_decoder = text_decoder
        self._hypothesis_file = hypothesis_file
        self._task = task
        self._test_set = test_set
        self._options = options

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        metric_bag.add("num_examples", Sum())
        metric_bag.add("num_generated_tokens", Sum())
        metric_bag.add("num_truncated", Sum())
        metric_bag.add("num_bad_samples", Sum())

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> None:
        model = self._model

        examples = self._builder.examples(batch, self._task, rng=None)

        prefixes = model.build_prefixes(
            model.map_speech(batch), [self._builder.speech_prompt(e.instruction) for e in examples]
        )

        outputs = generate_from_embeddings(
            model.llm, prefixes, stop_token_ids=model.chat_template.stop_token_ids, options=self._options
        )

        for i, (example, output) in enumerate(zip(examples, outputs)):
            hypothesis = self._text_decoder(torch.tensor(output.token_ids, dtype=torch.int64)).strip()

            record: dict[str, object] = {
                "id": batch.ids[i],
                "test_set": self._test_set,
                "source": batch.sources[i],
                "task": self._task,
                "instruction": example.instruction,
                "transcript": batch.texts[i],
                "source_text": batch.raw_texts[i],
                "references": example.references,
                "hypothesis": hypothesis,
                "stop_reason": output.stop_reason,
            }

            if example.target_language is not None:
                record["tgt_lang"] = example.target_language

            question = batch.fields[i].get("question")
            if isinstance(question, str):
                record["question"] = question

            self._hypothesis_file.write(record)

        metric_bag.get("num_examples", Sum).update(batch.num_examples)
        metric_bag.get("num_generated_tokens", Sum).update(sum(len(o.token_ids) for o in outputs))
        metric_bag.get("num_truncated", Sum).update(sum(o.stop_reason == "length" for o in outputs))
        metric_bag.get("num_bad_samples", Sum).update(batch.num_bad_samples)

    @override
    def finalize(self, metric_bag: MetricBag) -> None:
        # Before the generator's closing barrier, so that rank 0 then reads
        # every rank's complete file.
        self._hypothesis_file.close()
