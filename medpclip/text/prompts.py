"""Region texts and image captions from a label's name, category and the image's context.

Deterministic: the same region on the same sample always gets the same texts in the same order. The priors
(definitions, synonyms, semantic types from a concept KB, report sentences) are added by the knowledge-base
layer; this module only needs what a dataset spec says about a label.
"""

from __future__ import annotations

from collections.abc import Sequence

MODALITY_WORDS = {
    "CT": "CT",
    "MR": "MRI",
    "PET": "PET",
    "US": "ultrasound",
    "XR": "X-ray",
    "endoscopy": "endoscopy",
    "dermoscopy": "dermoscopy",
    "fundus": "fundus photograph",
    "pathology": "histopathology",
    "OCT": "OCT",
    "other": "medical",
}
PLANE_WORDS = {"ax": "axial", "co": "coronal", "sa": "sagittal", "im": ""}


def _image_phrase(modality: str, plane: str) -> str:
    plane_word = PLANE_WORDS.get(plane, "")
    mod = MODALITY_WORDS.get(modality, modality)
    return f"{plane_word} {mod}".strip()


def region_texts(name: str, category: str, *, modality: str, plane: str, body_part: str) -> list[str]:
    """Texts for one region, most specific first; duplicates removed, order kept."""
    lower = name.lower()
    image = _image_phrase(modality, plane)
    texts = [
        name,
        f"a segmentation area of the {lower}",
        f"the {lower} in a {image} image of the {body_part}",
    ]
    if category.lower() != lower:
        texts.append(f"{lower}, a {category.lower()}")
    return list(dict.fromkeys(texts))


def caption(
    *, modality: str, plane: str, body_part: str, region_names: Sequence[str], image_labels: Sequence[str]
) -> str:
    """One global caption naming modality, body part and what the image shows (regions, then findings)."""
    image = _image_phrase(modality, plane)
    names = list(dict.fromkeys(n.lower() for n in region_names))
    findings = [f.lower() for f in dict.fromkeys(image_labels) if f.lower() not in names]
    article = "An" if image[:1].lower() in "aeiou" else "A"
    text = f"{article} {image} image of the {body_part}"
    shown = names + findings
    if shown:
        text += " showing " + (", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0])
    return text + "."
