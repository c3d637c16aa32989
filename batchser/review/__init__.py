"""Review: which recordings a person checks, the answers they give, and what the answers say of the labels.

``sample`` draws the units to check (stratified by the model's label, at
random, the labels interleaved); ``answers`` keeps what a person says, each
answer on disk the moment it is given and checked at the door; ``estimate``
turns the answers into the archive's accuracy, the share of recordings that
hold none of the model's emotions and UAR, each with its interval, and says
what to expect before any review. The page is :mod:`batchser.web.review`;
learning from the answers is :mod:`batchser.relearn`.
"""

from batchser.review.answers import (
    ANSWERS,
    DIMENSION_ANSWERS,
    NONE,
    SKIP,
    TORN,
    UNDO,
    Answer,
    AnswerLog,
    AnswerNotSavedError,
    Answers,
    AnswersError,
    AnswersFile,
    canonical_label,
    read_answers,
    review_folder,
)
from batchser.review.estimate import (
    describe_expected,
    describe_review,
    estimate,
    expected_accuracy,
    in_words,
    plain_rates,
    share_in_words,
)
from batchser.review.sample import (
    PER_LABEL,
    RANDOM_SHARE,
    SAMPLE,
    SampleError,
    choose,
    extend_sample,
    read_sample,
    top_labels,
)

__all__ = [
    "ANSWERS",
    "DIMENSION_ANSWERS",
    "NONE",
    "PER_LABEL",
    "RANDOM_SHARE",
    "SAMPLE",
    "SKIP",
    "TORN",
    "UNDO",
    "Answer",
    "AnswerLog",
    "AnswerNotSavedError",
    "Answers",
    "AnswersError",
    "AnswersFile",
    "SampleError",
    "canonical_label",
    "choose",
    "describe_expected",
    "describe_review",
    "estimate",
    "expected_accuracy",
    "extend_sample",
    "in_words",
    "plain_rates",
    "read_answers",
    "read_sample",
    "review_folder",
    "share_in_words",
    "top_labels",
]
