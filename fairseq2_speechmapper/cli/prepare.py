"""``fairseq2 speechmapper prepare CORPUS ...``: writes the speech manifests of
a corpus from its official layout and prints what each split holds."""

from __future__ import annotations

import time
from argparse import ArgumentParser, Namespace, _SubParsersAction
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fairseq2_speechmapper.cli.errors import CommandError

if TYPE_CHECKING:
    from fairseq2_speechmapper.prepare.manifest import PrepareOptions, PrepareResult

# Most corpora are read from one directory.
_ROOT_INPUT: Final = {"ROOT": None}

_DESCRIPTION = (
    "Writes speech manifests (NeMo-style JSONL, OUT/<split>.jsonl: audio_filepath, duration, text, id, "
    "and offset, lang, translation, tgt_lang, speaker, question, answers, choices where the corpus has them) from a corpus in its "
    "official layout. Durations come from the audio headers; the audio stays where it is."
)


def run_prepare(prog: str, args: list[str]) -> int:
    """Runs ``prepare`` on ``args``; a missing or malformed corpus file raises
    :class:`CommandError` with one line naming the file (and line)."""
    parser = _create_parser(prog)

    namespace = parser.parse_args(args)

    from fairseq2_speechmapper.prepare.manifest import PrepareError, PrepareOptions

    options = PrepareOptions(skip_missing=namespace.skip_missing, num_threads=namespace.num_threads)

    out_dir: Path = namespace.out

    start_time = time.perf_counter()

    try:
        result = namespace.prepare(namespace, out_dir, options)
    except PrepareError as ex:
        raise CommandError(str(ex)) from None

    for split in result.splits:
        skipped = ", ".join(f"{reason}: {count}" for reason, count in sorted(split.skipped.items()))

        print(
            f"{split.name:<16} {split.num_utterances:>9,} utterances {split.hours:>9.2f} h  "
            f"skipped {sum(split.skipped.values()):,}{f' ({skipped})' if skipped else ''}  -> {split.manifest_file}"
        )

    print(f"Wrote {len(result.splits)} manifest(s) to {out_dir} in {time.perf_counter() - start_time:.1f} s.")

    for note in result.notes:
        print(f"NOTE: {note}")

    return 0


def _create_parser(prog: str) -> ArgumentParser:
    from fairseq2_speechmapper.prepare.manifest import DEFAULT_NUM_THREADS

    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--skip-missing",
        action="store_true",
        help="skip and count utterances whose audio file is missing, instead of failing",
    )
    common.add_argument(
        "--num-threads",
        type=int,
        default=DEFAULT_NUM_THREADS,
        help="threads reading audio headers (default: %(default)s)",
    )

    splits = ArgumentParser(add_help=False)
    _add_choice_list(splits, "--splits", default=["train", "dev", "test"])

    translation = ArgumentParser(add_help=False, parents=[splits])
    translation.add_argument("--src", required=True, help="source (speech) language, e.g. en")
    translation.add_argument("--tgt", required=True, help="target (text) language, e.g. de")

    parser = ArgumentParser(prog=prog, description=_DESCRIPTION)

    corpora = parser.add_subparsers(title="corpora", metavar="CORPUS", required=True)

    _add_corpus(
        corpora,
        "librispeech",
        _prepare_librispeech,
        parents=[common],
        help="LibriSpeech: one manifest per subset, and train-960 when the three training subsets are there",
        description="Reads ROOT/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt and the .flac files beside it; ROOT is the LibriSpeech directory or its parent. Writes OUT/<subset>.jsonl per subset found and OUT/train-960.jsonl when train-clean-100, train-clean-360 and train-other-500 are all there. Transcripts stay upper case (the reader normalises them).",
    )

    common_voice = _add_corpus(
        corpora,
        "commonvoice",
        _prepare_common_voice,
        parents=[common, splits],
        help="Common Voice ASR: one manifest per split TSV",
        description="Reads ROOT/<split>.tsv (client_id, path, sentence, ...) of a Common Voice release's language directory and the clips in ROOT/clips/. Writes OUT/<split>.jsonl.",
    )
    common_voice.add_argument("--lang", help="the `lang` field (default: the name of ROOT, the release's locale)")

    _add_corpus(
        corpora,
        "covost2",
        _prepare_covost2,
        inputs={"CV_ROOT": "Common Voice's directory of the source language", "COVOST_TSV_DIR": None},
        parents=[common, translation],
        help="CoVoST 2 speech translation: Common Voice clips with CoVoST 2's translations",
        description="Reads COVOST_TSV_DIR/covost_v2.<src>_<tgt>.<split>.tsv (path, sentence, translation, client_id; written by CoVoST's get_covost_splits.py) or else the official COVOST_TSV_DIR/covost_v2.<src>_<tgt>.tsv (path, translation, split) joined with CV_ROOT/validated.tsv; the clips are in CV_ROOT/clips/. Writes OUT/<split>.jsonl with translation, lang and tgt_lang.",
    )

    europarl_st = _add_corpus(
        corpora,
        "europarl-st",
        _prepare_europarl_st,
        parents=[common, translation],
        help="EuroParl-ST v1.1 speech translation: segments of the talks' recordings",
        description="Reads ROOT/<src>/<tgt>/<split>/{segments.lst,segments.<src>,segments.<tgt>} and the recordings ROOT/<src>/audios/<talk>.<ext>; ROOT is v1.1/ of the official archive or its parent. Writes OUT/<split>.jsonl with offset and duration into the recordings, translation, lang and tgt_lang. libsndfile cannot decode the official .m4a recordings: convert them to .flac or .wav with the same stem and pass --audio-ext.",
    )
    europarl_st.add_argument(
        "--audio-ext", default="m4a", help="extension of the recordings in ROOT/<src>/audios/ (default: %(default)s)"
    )

    spoken_squad = _add_corpus(
        corpora,
        "spoken-squad",
        _prepare_spoken_squad,
        parents=[common],
        help="Spoken-SQuAD spoken QA: one line per question, the audio its spoken paragraph",
        description="Reads ROOT/spoken_{train,test}-v1.1.json (SQuAD format; the contexts are ASR transcripts) and the sentence audio ROOT/{train,dev}_wav/<article>_<paragraph>_<sentence>.wav (0-based, in JSON order). Concatenates each paragraph's sentences once into OUT/audio/<split>/<article>_<paragraph>.wav and writes OUT/<split>.jsonl with text (the paragraph's transcript), question and answers (a list).",
    )
    _add_choice_list(spoken_squad, "--splits", default=["train", "test"], choices=["train", "test"])

    librisqa = _add_corpus(
        corpora,
        "librisqa",
        _prepare_librisqa,
        inputs={"LIBRISQA_DIR": None, "LIBRISPEECH_ROOT": None},
        parents=[common],
        help="LibriSQA spoken QA on LibriSpeech: Part I open answers, Part II multiple choice",
        description="Reads LIBRISQA_DIR/LibriSQA-Part{I,II}/LibriSQA-Part{I,II}-<split>.json (or .jsonl, or flat in LIBRISQA_DIR; records with speech_path or a LibriSpeech id, question, answer, text; Part II also choices, or (A)...(D) in the question) and the audio in LIBRISPEECH_ROOT (the LibriSpeech directory or its parent). Writes OUT/part1/<split>.jsonl and OUT/part2/<split>.jsonl with text, question, answers (a list), part and, for Part II, choices.",
    )
    _add_choice_list(librisqa, "--parts", default=["1", "2"], choices=["1", "2"])
    _add_choice_list(librisqa, "--splits", default=["train", "test"])

    return parser


def _add_corpus(
    corpora: _SubParsersAction[ArgumentParser],
    name: str,
    prepare: Callable[[Namespace, Path, PrepareOptions], PrepareResult],
    *,
    inputs: Mapping[str, str | None] = _ROOT_INPUT,
    parents: list[ArgumentParser],
    help: str,
    description: str,
) -> ArgumentParser:
    """Adds the subcommand of a corpus: its input directories (by metavar,
    with their help), then ``OUT``."""
    parser = corpora.add_parser(name, parents=parents, help=help, description=description)

    for metavar, input_help in inputs.items():
        parser.add_argument(metavar.lower(), type=Path, metavar=metavar, help=input_help)

    parser.add_argument("out", type=Path, metavar="OUT")
    parser.set_defaults(prepare=prepare)

    return parser


def _add_choice_list(
    parser: ArgumentParser, option: str, *, default: list[str], choices: list[str] | None = None
) -> None:
    parser.add_argument(
        option,
        nargs="+",
        default=default,
        choices=choices,
        metavar=option.removeprefix("--").removesuffix("s").upper(),
        help=f"the {option.removeprefix('--')} to write (default: %(default)s)",
    )


# The corpus modules import soundfile: only the chosen one is imported, and
# only when a corpus is prepared.


def _prepare_librispeech(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.librispeech import prepare_librispeech

    return prepare_librispeech(namespace.root, out_dir, options)


def _prepare_common_voice(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.common_voice import prepare_common_voice

    return prepare_common_voice(namespace.root, out_dir, options, splits=namespace.splits, lang=namespace.lang)


def _prepare_covost2(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.covost2 import prepare_covost2

    return prepare_covost2(
        namespace.cv_root, namespace.covost_tsv_dir, out_dir, options, **_translation_options(namespace)
    )


def _prepare_europarl_st(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.europarl_st import prepare_europarl_st

    return prepare_europarl_st(
        namespace.root, out_dir, options, audio_ext=namespace.audio_ext, **_translation_options(namespace)
    )


def _translation_options(namespace: Namespace) -> dict[str, Any]:
    """What the translation corpora take from the options they share
    (``--src``, ``--tgt``, ``--splits``)."""
    return {"src": namespace.src, "tgt": namespace.tgt, "splits": namespace.splits}


def _prepare_spoken_squad(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.spoken_squad import prepare_spoken_squad

    return prepare_spoken_squad(namespace.root, out_dir, options, splits=namespace.splits)


def _prepare_librisqa(namespace: Namespace, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    from fairseq2_speechmapper.prepare.librisqa import prepare_librisqa

    return prepare_librisqa(
        namespace.librisqa_dir,
        namespace.librispeech_root,
        out_dir,
        options,
        parts=namespace.parts,
        splits=namespace.splits,
    )
