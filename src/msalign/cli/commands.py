"""The commands of ``msalign``, in the order ``msalign --help`` lists them, with their one-line help.

Kept apart from the command modules so that the top-level parser can list every command without
importing them: a command module imports the library it drives (training pulls in Lightning, seconds
of start-up), and only the chosen command's module is imported (:func:`msalign.cli.main.build_parser`).
"""

SUMMARIES: dict[str, str] = {
    "models": "list the registered models; with NAME, its modalities and every config key",
    "train": "train a model over seeds; writes OUT/results.json and checkpoints",
    "evaluate": "score a checkpoint on a dataset split",
    "benchmark": "models x seeds on one dataset; a comparison table (resumable)",
    "profile": "parameters and multiply-adds per sample, per module",
    "sweep": "train a model over a grid of config values; selects on validation (resumable)",
    "tune": (
        "search a model's declared hyperparameter space on VALIDATION (Optuna, resumable), then train the "
        "best over 5 seeds and write the tuned config"
    ),
    "convert": (
        "convert a dataset (MMSA .pkl, feature directory, synthetic:...) to an on-disk feature store read row"
        " by row (datasets larger than memory)"
    ),
    "report": "Markdown/HTML report with figures of a train, benchmark or sweep directory",
    "extract": "raw video / audio (or a dataset folder with label.csv) -> a feature directory",
    "predict": "sentiment of raw video / audio files with a trained checkpoint",
    "describe": "describe faces / head / voice of every clip in words (descriptions.json, for textalign)",
}

__all__ = ["SUMMARIES"]
