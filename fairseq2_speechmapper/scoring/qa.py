"""Spoken QA: SQuAD's exact match and token F1, and an LLM as judge.

EM and F1 follow SQuAD v1.1's official evaluation script: answers are lower-
cased, stripped of punctuation, of the articles a/an/the and of extra spaces;
each prediction takes its best score over the reference answers. They fit
extractive answers (Spoken-SQuAD); free-form answers (LibriSQA) need the judge,
which is what the paper reports.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, final

from fairseq2_speechmapper.scoring.errors import ScoringError, check_same_length

_ARTICLES: Final = re.compile(r"\b(a|an|the)\b")

_PUNCTUATION: Final = frozenset(string.punctuation)


def normalize_squad_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles,
    single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)

    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """Whether ``prediction`` equals one of ``answers`` after normalisation."""
    prediction = normalize_squad_answer(prediction)

    return any(prediction == normalize_squad_answer(answer) for answer in answers)


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token F1 (0 to 1) of ``prediction`` against one of ``answers``."""
    return max((_token_f1(prediction, answer) for answer in answers), default=0.0)


def _token_f1(prediction: str, answer: str) -> float:
    prediction_tokens = normalize_squad_answer(prediction).split()
    answer_tokens = normalize_squad_answer(answer).split()

    num_common = sum((Counter(prediction_tokens) & Counter(answer_tokens)).values())

    if num_common == 0:
        return 0.0

    precision = num_common / len(prediction_tokens)
    recall = num_common / len(answer_tokens)

    return 2 * precision * recall / (precision + recall)


@final
@dataclass(frozen=True, kw_only=True)
class SquadScore:
    exact_match: float
    """The percentage of predictions that match a reference answer exactly."""

    f1: float
    """The mean best token F1, ×100."""

    num_questions: int

    def metrics(self) -> dict[str, float]:
        return {"exact_match": self.exact_match, "f1": self.f1}

    def info(self) -> dict[str, object]:
        return {"num_questions": self.num_questions}


def score_squad(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> SquadScore:
    """SQuAD EM and F1 of ``predictions``, each against its reference answers.

    :raises ScoringError: if the inputs differ in length or a question has no
        reference answer.
    """
    _check_answers("SQuAD EM/F1", predictions, answers)

    exact_matches = sum(squad_exact_match(p, a) for p, a in zip(predictions, answers))

    f1 = sum(squad_f1(p, a) for p, a in zip(predictions, answers))

    return SquadScore(
        exact_match=100.0 * exact_matches / len(predictions),
        f1=100.0 * f1 / len(predictions),
        num_questions=len(predictions),
    )


def _check_answers(what: str, predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
    check_same_length(what, predictions=predictions, answers=answers)

    if not predictions:
        raise ScoringError(f"{what}: there is no question to score.")

    for index, question_answers in enumerate(answers):
        # A bare string would be taken as a list of one-character answers.
        if isinstance(question_answers, str) or not question_answers:
            raise ScoringError(f"{what}: question {index} needs a non-empty list of reference answers.")


DEFAULT_JUDGE_PROMPT: Final = """\
You are grading the answer to a question about a spoken passage.

Question: {question}
Reference answer(s): {references}
Candidate answer: {candidate}

Does the candidate answer the question correctly, agreeing in meaning with a \
reference answer? Extra detail is fine; a wrong or missing fact is not. \
Reply with a single word: yes or no."""
"""The judge prompt, with ``{question}``, ``{references}`` (joined by `` | ``)
and ``{candidate}``."""

# The first verdict word of a reply: "Yes.", "**No**", "Verdict: yes",
# "correct", "not correct".
_VERDICT: Final = re.compile(r"\b(not\s+(?:correct|true)|yes|no|incorrect|correct|true|false)\b", re.IGNORECASE)

_POSITIVE_VERDICTS: Final = frozenset(("yes", "correct", "true"))


def parse_verdict(reply: str) -> bool | None:
    """``True``/``False`` for the first yes/no (correct/incorrect/not correct,
    true/false) in a judge's ``reply``, ``None`` if there is none."""
    match = _VERDICT.search(reply)

    if match is None:
        return None

    return match.group(1).lower() in _POSITIVE_VERDICTS


@final
@dataclass(frozen=True, kw_only=True)
class JudgeScore:
    judge_accuracy: float
    """The percentage of answers the judge found correct."""

    verdicts: list[bool]
    """Each answer's verdict, in input order (an unparsed reply is ``False``)."""

    num_unparsed: int
    """Replies with no yes/no in them, counted as incorrect."""

    num_empty: int
    """Empty candidate answers, incorrect without asking the judge."""

    def metrics(self) -> dict[str, float]:
        return {"judge_accuracy": self.judge_accuracy}

    def info(self) -> dict[str, object]:
        return {
            "num_questions": len(self.verdicts),
            "num_unparsed_verdicts": self.num_unparsed,
            "num_empty_answers": self.num_empty,
        }


@final
class LLMJudge:
    """Asks an LLM whether each candidate answer is correct.

    ``complete`` maps a batch of prompts to the LLM's replies, one each, in
    order (greedy decoding, a few tokens are enough); the chat template, if
    any, is its business.
    """

    def __init__(
        self,
        complete: Callable[[list[str]], Sequence[str]],
        *,
        prompt_template: str = DEFAULT_JUDGE_PROMPT,
        batch_size: int = 32,
    ) -> None:
        self._complete = complete
        self._prompt_template = prompt_template
        self._batch_size = batch_size

    def build_prompt(self, question: str, references: Sequence[str], candidate: str) -> str:
        return self._prompt_template.format(
            question=question.strip(), references=" | ".join(r.strip() for r in references), candidate=candidate.strip()
        )

    def judge(
        self, questions: Sequence[str], references: Sequence[Sequence[str]], candidates: Sequence[str]
    ) -> JudgeScore:
        """Judges ``candidates``, the answers to ``questions`` whose reference
        answers are ``references``.

        :raises ScoringError: if the inputs differ in length, a question has
            no reference answer, or ``complete`` returns a reply count other
            than the prompt count.
        """
        check_same_length("LLM judge", questions=questions, candidates=candidates)

        _check_answers("LLM judge", candidates, references)

        to_ask = [i for i, candidate in enumerate(candidates) if candidate.strip()]

        verdicts = [False] * len(candidates)

        num_unparsed = 0

        for start in range(0, len(to_ask), self._batch_size):
            batch = to_ask[start : start + self._batch_size]

            prompts = [self.build_prompt(questions[i], references[i], candidates[i]) for i in batch]

            replies = list(self._complete(prompts))

            if len(replies) != len(prompts):
                raise ScoringError(f"LLM judge: `complete` returned {len(replies)} replies to {len(prompts)} prompts.")

            for i, reply in zip(batch, replies):
                verdict = parse_verdict(reply)

                if verdict is None:
                    num_unparsed += 1
                else:
                    verdicts[i] = verdict

        return JudgeScore(
            judge_accuracy=100.0 * sum(verdicts) / len(verdicts),
            verdicts=verdicts,
            num_unparsed=num_unparsed,
            num_empty=len(candidates) - len(to_ask),
        )
