"""Anchor for the assertion benchmark: medspaCy's ConText (its default rules) on the mentions medpclip found.

Runs in its own virtual environment (``make bench`` makes ``.cache/medspacy-venv`` with medspacy pinned), never
in the project's: medspacy pins its own spaCy. Reads JSON lines ``{"text", "ents": [[start_char, end_char],
…]}`` on stdin and writes, per line, the assertion of each entity: ``negated`` (``is_negated``), ``uncertain``
(``is_uncertain`` or ``is_hypothetical``: CheXpert's uncertain covers both), else ``positive`` (historical
findings are findings).
"""

import json
import sys

import medspacy
from spacy.tokens import Span


def main() -> None:
    try:  # PyRuSH logs every sentence boundary at DEBUG through loguru
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    nlp = medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_context"])
    context = nlp.get_pipe("medspacy_context")
    for line in sys.stdin:
        rec = json.loads(line)
        doc = nlp.get_pipe("medspacy_pyrush")(nlp.make_doc(rec["text"]))
        spans = []
        for start, end in rec["ents"]:
            span = doc.char_span(start, end, label="FINDING", alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.ents = spacy_filter(spans)
        doc = context(doc)
        by_offset = {(e.start_char, e.end_char): e for e in doc.ents}
        out = []
        for start, end in rec["ents"]:
            span = doc.char_span(start, end, alignment_mode="expand")
            e = by_offset.get((span.start_char, span.end_char)) if span is not None else None
            if e is None:
                out.append(None)
            elif e._.is_negated:
                out.append("negated")
            elif e._.is_uncertain or e._.is_hypothetical:
                out.append("uncertain")
            else:
                out.append("positive")
        sys.stdout.write(json.dumps(out) + "\n")


def spacy_filter(spans: list[Span]) -> list[Span]:
    from spacy.util import filter_spans

    return filter_spans(spans)


if __name__ == "__main__":
    main()
