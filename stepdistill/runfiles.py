"""Which files a command reads: the run's own annotations once `stepdistill annotate` wrote them.

    stepdistill annotate my.yaml     # -> runs/<name>/annotations/{train,valid,test}.jsonl
    stepdistill train my.yaml        # reads those files, not data.train/valid/test as written

`annotate` carves validation out of train once (data.valid unset) and writes the carved rows to
annotations/valid.jsonl even when the teacher does not annotate them, so `train` and `evaluate`
score the same validation rows and never carve a second time.

The annotations used are those of the nearest `annotations/` folder from the run folder up to
out_dir: trainings named `sentiment/standard` and `sentiment/step_by_step` both read the
annotations of the run `sentiment`, and `stepdistill report runs/sentiment` shows them side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stepdistill.config import Config
from stepdistill.data.io import write_annotations
from stepdistill.schema import Annotation

SPLITS = ("train", "valid", "test")


def find_annotations(cfg: Config) -> Path | None:
    """The nearest annotations/ folder holding a split file, from the run folder up to out_dir."""
    out = Path(cfg.out_dir).resolve()
    folder = cfg.run_dir.resolve()
    while folder == out or out in folder.parents:
        if folder != out and any((folder / "annotations" / f"{s}.jsonl").exists() for s in SPLITS):
            return folder / "annotations"
        if folder == out:
            return None
        folder = folder.parent
    return None


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies under it, as a user would type it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _annotated(cfg: Config) -> bool:
    """data.train is a file `annotate` wrote (its folder holds the annotation summary)."""
    return cfg.data.train is not None and (Path(cfg.data.train).parent / "summary.json").exists()


def with_annotations(cfg: Config, say: Callable[[str], None] | None = print, verb: str = "train") -> Config:
    """`cfg` reading the run's annotated split files where they exist (the data section as given
    otherwise); says so in one line when that changes what is read."""
    folder = find_annotations(cfg)
    if folder is None:
        # Nothing to say when the data section already names annotated files (as each training of
        # `stepdistill run` does): only a `train` that forgot `annotate` reads unannotated data.
        if say is not None and cfg.teacher is not None and verb == "train" and not _annotated(cfg):
            say(
                f"train: no annotations in {_shown(cfg.run_dir.resolve() / 'annotations')}: reading "
                "data.* as written (`stepdistill annotate` on this config writes them)"
            )
        return cfg
    files = {s: _shown(folder / f"{s}.jsonl") for s in SPLITS if (folder / f"{s}.jsonl").exists()}
    if cfg.data.valid is None and not ("train" in files and "valid" in files):
        # Validation is carved from train: the annotated train and its carved valid go together
        # (an annotated train alone would be carved a second time).
        files.pop("train", None)
        files.pop("valid", None)
    update = {s: str(p) for s, p in files.items() if getattr(cfg.data, s) is not None or s == "valid"}
    if all(getattr(cfg.data, s) == v for s, v in update.items()):
        return cfg
    if say is not None:
        say(f"{verb}: reading the run's annotations in {_shown(folder)} ({', '.join(update)})")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})


def keep_carved_valid(cfg: Config, splits: dict[str, list[Annotation]], out_dir: Path) -> bool:
    """Write the validation rows carved from train to out_dir/valid.jsonl when the teacher did not
    annotate them, so every later command reads the same rows; True when written."""
    if cfg.data.valid is not None or "valid" in cfg.annotate.splits or not splits.get("valid"):
        return False
    write_annotations(out_dir / "valid.jsonl", splits["valid"])
    return True
