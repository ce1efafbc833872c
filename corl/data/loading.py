"""Load rows from anywhere into the corl schema, check every row once, and report what was dropped.

Entry point: ``load_rows(source, split, column_map, task, question_type, image_root, limit)``.

Sources (``read_source``):

- a ``datasets.Dataset`` / ``DatasetDict`` object (already in memory);
- a local ``save_to_disk`` directory (Dataset or DatasetDict; ``split`` picks from a dict);
- local files: ``.parquet``, ``.arrow`` (the datasets stream format written by ``save_to_disk``),
  ``.jsonl`` / ``.json``, ``.csv``; one path, a glob pattern, or a list of paths with one extension.
  Files have a single split, so ``split`` is ignored for them (logged when it is not "train");
- any other local directory: its top-level .jsonl/.parquet/.arrow/.csv files (those named after the split,
  e.g. ``train.jsonl``, else all of them as "train"); with none, ``datasets.load_dataset(directory,
  split=split)`` (the layouts datasets recognizes: data/ folders, imagefolder, ...);
- otherwise a hub dataset id: ``datasets.load_dataset(source, split=split)``.

Relative image paths resolve against ``image_root``; by default that is the folder of the files (so a
jsonl next to its image folder just works), the directory itself for directory sources, and the working
directory for hub ids and in-memory datasets. When an image root is known (a local source, or an explicit
``image_root``), image paths must lie inside it, symlinks and ``..`` resolved: a row naming any other file
is skipped as ``image_outside_dataset_folder`` without being read, so a dataset cannot make corl read
arbitrary local files (``allow_images_outside=True`` lifts this). ``scheme://`` image paths are never
fetched (``remote_image``). Embedded image bytes are never confined.

Local json / jsonl / csv files are checked line by line before datasets reads them (``check_data_file``):
an empty file, bytes that are not UTF-8 or a line that is not a JSON object is a ValueError naming the
file and line.

Question types (``question_type`` column), decided once per load and recorded in the report:

- t2i: untouched (passes through if present, never required).
- a recipe constant (``question_type="mc"``) keeps only rows of that type: with a column present, rows
  of the other type are skipped as ``wrong_question_type`` and blanks take the constant; without one, every
  row gets it. For the mc / oe tasks it must equal the task.
- mc / oe tasks otherwise: the task itself. A present column is still read: blank values take the task's
  type, rows of the other type are skipped as ``wrong_question_type`` (one mixed set feeds both stage-2 runs).
- unified otherwise: the column, normalized ("MC" -> "mc"); blank values, or an absent column, are
  inferred from the question text (``corl.data.schema.infer_question_type``); unknown spellings are skipped
  as ``unknown_question_type``.

Validation: one pass over the needed columns (tqdm bar) decodes every image fully and checks texts;
bad rows are counted by reason and dropped with ``Dataset.select`` (an index mapping; no image bytes are
copied and no cache files are written, unlike ``Dataset.filter``), so iterating the result cannot fail on
bad data. The image column is then cast to ``datasets.Image(mode="RGB")``: reading a row yields an RGB PIL
image, whatever form the source stored. Caveat: images referenced by path are checked at load time; a file
deleted afterwards can still fail later.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
from tqdm.auto import tqdm

from corl.data.adapters import ColumnResolution, apply_columns, missing_column_error, resolve_columns
from corl.data.images import ImageCheck, inspect_image
from corl.launch import is_main_launch_rank
from corl.data.schema import (
    IMAGE,
    MULTIPLE_CHOICE,
    OPEN_ENDED,
    PROMPT,
    QUESTION,
    QUESTION_TYPE,
    SOLUTION,
    TEXT_COLUMNS,
    check_task,
    infer_question_type,
    normalize_question_type,
    required_columns,
    task_needs_image,
    task_uses_question_type,
)

logger = logging.getLogger(__name__)

# Skip reasons for text problems (image reasons live in corl.data.images).
EMPTY_REASON = {PROMPT: "empty_prompt", QUESTION: "empty_question", SOLUTION: "empty_solution"}
UNKNOWN_QUESTION_TYPE = "unknown_question_type"
WRONG_QUESTION_TYPE = "wrong_question_type"

FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}
_TEXT_DTYPES = {"string", "large_string", "null"}
_IMAGE_DTYPES = {"string", "large_string", "binary", "large_binary", "null"}

Source = str | os.PathLike[str] | Sequence[str] | datasets.Dataset | datasets.DatasetDict


@dataclass
class SkippedRow:
    """One dropped row: its index in the source split (before dropping), the reason and a detail."""

    index: int
    reason: str
    detail: str = ""


@dataclass
class LoadReport:
    """What a load read, kept and dropped. ``skipped``: reason -> number of rows (each row counted once,
    under the first problem found: text checks come before the image decode)."""

    source: str
    split: str | None
    task: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_skipped: list[SkippedRow] = field(default_factory=list)
    column_map: dict[str, str] = field(default_factory=dict)
    layout: str = ""
    question_type_from: str | None = None  # "constant" | "task" | "column" | "inferred" | None (t2i)
    question_types_inferred: int = 0
    question_type_counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.source} [{self.split}] for task {self.task}: read {self.rows_read}, "
            f"kept {self.rows_kept}, skipped {self.rows_skipped}"
        )
        if self.skipped:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) + ")"
        if self.first_skipped:
            # the first few with their detail (which file, why), so the log names the bad input itself
            shown = [f"#{s.index} {s.reason}" + (f" ({s.detail[:160]})" if s.detail and i < 3 else "")
                     for i, s in enumerate(self.first_skipped)]
            text += "; first skipped: " + ", ".join(shown)
        return text


@dataclass
class LoadedData:
    """A checked dataset in the corl schema, with its load report and the column resolution used."""

    dataset: datasets.Dataset
    report: LoadReport
    columns: ColumnResolution

    def __len__(self) -> int:
        return len(self.dataset)


# ---------------------------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------------------------


def _pick_split(dataset_dict: datasets.DatasetDict, split: str | None, source: str) -> datasets.Dataset:
    if split is None and len(dataset_dict) == 1:
        return next(iter(dataset_dict.values()))
    if split not in dataset_dict:
        raise ValueError(f"{source} has no split {split!r}; available splits: {list(dataset_dict)}")
    return dataset_dict[split]


def _expand_files(source: str | os.PathLike[str] | Sequence[str]) -> list[str] | None:
    """Local data files named by ``source`` (path, glob or list), or None if it names no such files."""
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
    else:
        text = os.path.expanduser(os.fspath(source))
        if glob.has_magic(text):
            paths = sorted(glob.glob(text))
            if not paths:
                raise FileNotFoundError(f"no files match {text!r}")
        elif os.path.isfile(text):
            paths = [text]
        else:
            return None
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"data files not found: {missing}")
    return paths


def _data_files_in_dir(directory: str, split: str | None) -> list[str] | None:
    """Top-level .jsonl/.parquet/.arrow/.csv files of ``directory`` for ``split``, or None if it has none.

    Files whose name starts with the split name win ("train.jsonl", "test-00000.parquet"); without such
    names, every data file is one "train" split. This keeps a jsonl next to its image folder from being
    read by datasets as an image folder.
    """
    extensions = {ext for ext in FILE_BUILDERS if ext != ".json"}  # .json: often metadata, not rows
    files = sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if os.path.splitext(name)[1].lower() in extensions and os.path.isfile(os.path.join(directory, name))
    )
    if not files:
        return None
    if split is not None:
        named = [path for path in files if os.path.basename(path).startswith(split)]
        if named:
            return named
    if split in (None, "train"):
        return files
    names = [os.path.basename(path) for path in files]
    raise ValueError(f"{directory} has no data file for split {split!r}; data files: {names}")


def _looks_local(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "."))
        or os.path.splitext(text)[1].lower() in FILE_BUILDERS
        or glob.has_magic(text)
    )


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _json_kind(value: Any) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def _not_utf8(path: str, line: int, raw: bytes, start: int) -> ValueError:
    return ValueError(
        f"{path} line {line} is not UTF-8 text (byte 0x{raw[start]:02x} at column {start + 1}); "
        "save the file as UTF-8"
    )


def _check_json_document(path: str) -> None:
    """Accept ``path`` when it is one JSON document (an array of row objects, or an object); else raise
    naming the line, as the file is then not valid JSON lines either."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw.count(b"\n", 0, err.start) + 1
        raise _not_utf8(path, line, raw[line_start:], err.start - line_start) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno} is not valid JSON: {err.msg} (column {err.colno})") from None
    if isinstance(document, list):
        bad = next((i for i, item in enumerate(document) if not isinstance(item, dict)), None)
        if bad is not None:
            raise ValueError(
                f"{path}: item {bad + 1} of its JSON array is {_json_kind(document[bad])}, not an object; each row "
                "must be a JSON object {...}"
            )


def check_data_file(path: str) -> None:
    """Raise ValueError naming ``path`` and the line when a local json / jsonl / csv file cannot give rows.

    One streamed pass: every line must be UTF-8 and, for json / jsonl, a JSON object (blank lines pass),
    so a typo reads "rows.jsonl line 7 is not valid JSON" instead of a datasets traceback. A file whose
    first line does not parse but which starts with ``[`` or ``{`` may be one JSON document (a
    pretty-printed array of rows); it is then parsed whole.
    """
    is_json = FILE_BUILDERS.get(os.path.splitext(path)[1].lower()) == "json"
    seen_text = False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, number, raw, err.start) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark, which datasets accepts
            text = line.strip()
            if not text:
                continue
            first_line, seen_text = not seen_text, True
            if not is_json:
                continue
            try:
                row = json.loads(line)  # the unstripped line, so the error's column is the file's
            except json.JSONDecodeError as err:
                if first_line and text[0] in "[{":
                    break
                raise ValueError(
                    f"{path} line {number} is not valid JSON: {err.msg} (column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                if first_line and text[0] == "[":
                    break
                raise ValueError(
                    f"{path} line {number} is {_json_kind(row)}, not a JSON object; each line must be one row "
                    "as a JSON object {...}"
                )
        else:
            if not seen_text:
                raise ValueError(f"data file {path} is empty: it holds no rows")
            return
    _check_json_document(path)  # the loop stopped at a first line that may open a multi-line document


def _load_files(paths: list[str], split: str | None, cache_dir: str | None) -> datasets.Dataset:
    extensions = {os.path.splitext(p)[1].lower() for p in paths}
    if len(extensions) != 1 or next(iter(extensions)) not in FILE_BUILDERS:
        raise ValueError(
            f"data files must share one extension among {sorted(FILE_BUILDERS)}; got {sorted(extensions)}"
        )
    if split not in (None, "train"):
        logger.info("local data files have a single split; ignoring split=%r", split)
    extension = extensions.pop()
    if FILE_BUILDERS[extension] in ("json", "csv"):
        for path in paths:
            check_data_file(path)
    try:
        if extension == ".arrow":
            # Memory-map the files in place (no copy into the datasets cache).
            parts = [datasets.Dataset.from_file(p) for p in paths]
            return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        return datasets.load_dataset(FILE_BUILDERS[extension], data_files=paths, split="train", cache_dir=cache_dir)
    except OSError:
        raise  # a full disk or a permission problem: the CLI reports those as they are
    except Exception as err:  # noqa: BLE001 - the builders raise many types; all mean "this file is not rows"
        cause = err.__cause__ or err  # DatasetGenerationError wraps the parser's own error
        name = paths[0] if len(paths) == 1 else f"{paths[0]} (or one of {len(paths) - 1} more)"
        raise ValueError(f"could not read data file {name}: {type(cause).__name__}: {cause}") from err


def _cached_snapshot(repo_id: str) -> str | None:
    """The hub cache's snapshot folder of dataset `repo_id` when offline (HF_HUB_OFFLINE=1), else None."""
    from huggingface_hub import constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        return None
    try:
        return snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    except Exception:  # not cached (or not a valid id): datasets' own error says so
        return None


def read_source(
    source: Source, split: str | None = "train", cache_dir: str | None = None
) -> tuple[datasets.Dataset, str | None, str]:
    """Read ``source`` as a raw ``datasets.Dataset`` (no mapping, no checks).

    Returns (dataset, default image root, a printable name of the source).
    """
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, "the given DatasetDict"), None, "<DatasetDict>"
    if isinstance(source, datasets.Dataset):
        return source, None, "<Dataset>"
    if isinstance(source, datasets.IterableDataset):
        raise ValueError("streaming (IterableDataset) sources are not supported; load a map-style dataset")  # noqa: TRY004
    files = _expand_files(source)
    if files is not None:
        name = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"
        return _load_files(files, split, cache_dir), os.path.dirname(os.path.abspath(files[0])), name
    text = os.path.expanduser(os.fspath(source))  # type: ignore[arg-type]
    if os.path.isdir(text):
        root = os.path.abspath(text)
        if os.path.isfile(os.path.join(text, "dataset_dict.json")) or os.path.isfile(
            os.path.join(text, "state.json")
        ):
            loaded = datasets.load_from_disk(text)
            if isinstance(loaded, datasets.DatasetDict):
                return _pick_split(loaded, split, text), root, text
            if split not in (None, "train"):
                logger.info("%s holds a single Dataset; ignoring split=%r", text, split)
            return loaded, root, text
        files = _data_files_in_dir(text, split)
        if files is not None:
            return _load_files(files, None, cache_dir), root, text
        return datasets.load_dataset(text, split=split, cache_dir=cache_dir), root, text
    if _looks_local(text):
        raise FileNotFoundError(f"no such file or directory: {text!r}")
    # A hub dataset id ("owner/name"); datasets handles download and caching. Offline, a snapshot in the
    # hub cache (what `corl prefetch` leaves) is read as a local folder: datasets' own offline mode finds
    # only datasets it has prepared before.
    loaded = datasets.load_dataset(_cached_snapshot(text) or text, split=split, cache_dir=cache_dir)
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, split, text)
    return loaded, None, text


# ---------------------------------------------------------------------------------------------------
# Checking rows
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _QuestionTypePlan:
    """How question types are decided for this load (see the module docstring)."""

    source: str  # "constant" | "task" | "column" | "inferred"
    constant: str | None = None  # the type every row gets, for "constant" and "task"
    required: str | None = None  # mc / oe tasks: rows must have this type
    reads_column: bool = False

    def row_type(self, raw: Any, question: Any) -> tuple[str | None, str, bool]:
        """(type, skip reason or "", inferred?) for one row."""
        if not self.reads_column:
            return self.constant, "", False
        try:
            value = normalize_question_type(raw)
        except ValueError as err:
            return None, UNKNOWN_QUESTION_TYPE + f": {err}", False
        if value is None:  # blank: the task's type, or inferred from the question
            if self.required is not None:
                return self.required, "", False
            return infer_question_type(question if isinstance(question, str) else ""), "", True
        if self.required is not None and value != self.required:
            return None, f"{WRONG_QUESTION_TYPE}: row is {value!r}, task needs {self.required!r}", False
        return value, "", False


def _plan_question_types(task: str, constant: str | None, has_column: bool) -> _QuestionTypePlan | None:
    if not task_uses_question_type(task):
        return None
    if constant is not None:
        value = normalize_question_type(constant)
        if value is None:
            raise ValueError("question_type must be 'mc' or 'oe' (or None to use the column / inference)")
        if task in (MULTIPLE_CHOICE, OPEN_ENDED) and value != task:
            raise ValueError(f"question_type={constant!r} contradicts task {task!r}")
        if has_column:  # a filter on the column: rows of the other type are skipped, blanks take the value
            return _QuestionTypePlan("column", required=value, reads_column=True)
        return _QuestionTypePlan("constant", constant=value)
    if task in (MULTIPLE_CHOICE, OPEN_ENDED):
        if has_column:
            return _QuestionTypePlan("column", required=task, reads_column=True)
        return _QuestionTypePlan("task", constant=task)
    if has_column:
        return _QuestionTypePlan("column", reads_column=True)
    return _QuestionTypePlan("inferred", reads_column=True)


def _check_feature_types(dataset: datasets.Dataset, text_columns: list[str], needs_image: bool) -> None:
    for name in text_columns:
        feature = dataset.features[name]
        if not (isinstance(feature, datasets.Value) and feature.dtype in _TEXT_DTYPES):
            raise ValueError(f"column {name!r} must hold text; it has type {feature}")
    if needs_image:
        feature = dataset.features[IMAGE]
        ok = (
            isinstance(feature, datasets.Image)
            or (isinstance(feature, datasets.Value) and feature.dtype in _IMAGE_DTYPES)
            or (isinstance(feature, dict) and set(feature) <= {"bytes", "path"})
        )
        if not ok:
            raise ValueError(
                f"column {IMAGE!r} must hold one image per row (datasets Image, bytes, a path, or a "
                f"{{bytes, path}} struct); it has type {feature}"
            )


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _iter_rows(view: datasets.Dataset, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    for batch in view.iter(batch_size=batch_size):
        names = list(batch)
        yield [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]


@dataclass
class _Checked:
    """Per-row results of the validation pass (lists indexed by row)."""

    reasons: list[str]  # "" for a kept row, "reason: detail" otherwise
    question_types: list[str | None]
    resolved_paths: list[str | None]
    inferred: list[bool]  # the row's question type was inferred from its text
    relative_struct_paths: bool  # an Image/struct row held only a path that had to be resolved


def _check_rows(
    dataset: datasets.Dataset,
    text_columns: list[str],
    needs_image: bool,
    plan: _QuestionTypePlan | None,
    image_root: str | None,
    confine_to: str | None,
    num_workers: int,
    batch_size: int = 256,
) -> _Checked:
    columns = list(text_columns)
    if plan is not None and plan.reads_column and QUESTION_TYPE in dataset.column_names:
        columns.append(QUESTION_TYPE)
    reads_question = plan is not None and plan.reads_column and QUESTION in dataset.column_names
    if reads_question and QUESTION not in columns:
        columns.append(QUESTION)
    if needs_image:
        columns.append(IMAGE)
    view = dataset.select_columns(columns).with_format(None)
    if needs_image and isinstance(view.features[IMAGE], datasets.Image):
        view = view.cast_column(IMAGE, datasets.Image(decode=False))  # raw {bytes, path}: we decode ourselves

    def inspect(value: Any) -> ImageCheck:
        # Drop the decoded pixels at once: a batch of large images would otherwise pile up.
        return dataclasses.replace(inspect_image(value, image_root, confine_to), image=None)

    checked = _Checked([], [], [], [], False)
    pool = ThreadPoolExecutor(max_workers=num_workers) if needs_image and num_workers > 1 else None
    progress = tqdm(total=len(view), desc="corl data: checking rows", unit="row", leave=False,
                    disable=not is_main_launch_rank())  # every rank checks its rows; one bar is enough
    try:
        for rows in _iter_rows(view, batch_size):
            reasons = []
            for row in rows:
                reason = next((EMPTY_REASON[c] for c in text_columns if _is_blank(row[c])), "")
                qtype, inferred = None, False
                if not reason and plan is not None:
                    qtype, reason, inferred = plan.row_type(row.get(QUESTION_TYPE), row.get(QUESTION))
                reasons.append(reason)
                checked.question_types.append(qtype)
                checked.inferred.append(inferred)
            images: list[Any] = [None] * len(rows)
            if needs_image:
                todo = [i for i, r in enumerate(reasons) if not r]
                values = [rows[i][IMAGE] for i in todo]
                results = list(pool.map(inspect, values) if pool else map(inspect, values))
                for i, value, check in zip(todo, values, results):
                    images[i] = check.resolved_path
                    if not check.ok:
                        reasons[i] = f"{check.reason}: {check.detail}"
                    elif isinstance(value, dict) and value.get("bytes") is None:
                        checked.relative_struct_paths |= check.resolved_path != value.get("path")
            checked.reasons += reasons
            checked.resolved_paths += images
            progress.update(len(rows))
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown()
    return checked


def _with_resolved_struct_paths(dataset: datasets.Dataset, resolved: list[str | None]) -> datasets.Dataset:
    """Rewrite path-only {bytes, path} image values to the absolute paths found by the check (rare)."""
    raw = dataset.cast_column(IMAGE, datasets.Image(decode=False))

    def fix(row: dict[str, Any], index: int) -> dict[str, Any]:
        value = row[IMAGE]
        if isinstance(value, dict) and value.get("bytes") is None and resolved[index] is not None:
            value = {"bytes": None, "path": resolved[index]}
        return {IMAGE: value}

    return raw.map(fix, with_indices=True, load_from_cache_file=False, desc="corl data: resolving paths")


def _replace_column(dataset: datasets.Dataset, name: str, values: list[Any]) -> datasets.Dataset:
    order = dataset.column_names if name in dataset.column_names else [*dataset.column_names, name]
    if name in dataset.column_names:
        dataset = dataset.remove_columns(name)
    return dataset.add_column(name, values).select_columns(order)


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------


def prepare_rows(
    dataset: datasets.Dataset,
    *,
    task: str = "unified",
    column_map: Mapping[str, str] | None = None,
    question_type: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    needs_image: bool | None = None,
    num_workers: int | None = None,
    source_name: str = "<Dataset>",
    split: str | None = None,
    max_reported_skips: int = 10,
    allow_images_outside: bool = False,
) -> LoadedData:
    """Map ``dataset`` to the corl schema, check every row, drop and count bad ones.

    ``limit`` keeps the first ``limit`` rows of the source before checking (so ``rows_read`` is at most
    ``limit``). ``needs_image`` overrides the task default (see ``corl.data.schema.task_needs_image``).
    ``num_workers``: threads that decode images during the check (default min(4, cpus)).
    Image paths are confined to ``image_root`` when it is set: a path whose real location lies outside it
    is skipped as ``image_outside_dataset_folder`` unread, unless ``allow_images_outside``.
    An image column the task does not need (t2i without ``needs_image``) is left as it is: not checked,
    not decoded. Raises ValueError for a missing required column or a column of the wrong type.
    """
    check_task(task)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        dataset = dataset.select(range(min(limit, len(dataset))))
    resolution = resolve_columns(dataset.column_names, column_map)
    needed = required_columns(task, needs_image)
    for name in needed:
        if name not in resolution.mapping:
            raise missing_column_error(name, task, resolution, column_map)
    dataset = apply_columns(dataset, resolution)
    image_needed = task_needs_image(task, needs_image)
    text_columns = [name for name in TEXT_COLUMNS if name in needed]
    plan = _plan_question_types(task, question_type, QUESTION_TYPE in dataset.column_names)
    reads_type_column = plan is not None and plan.reads_column and QUESTION_TYPE in dataset.column_names
    type_columns = [QUESTION_TYPE] if reads_type_column else []
    _check_feature_types(dataset, text_columns + type_columns, image_needed)

    report = LoadReport(
        source=source_name,
        split=split,
        task=task,
        rows_read=len(dataset),
        column_map=dict(resolution.mapping),
        layout=resolution.layout,
        question_type_from=plan.source if plan else None,
    )
    logger.info("loading %s: %s", source_name, resolution.describe())
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    root = os.fspath(image_root) if image_root is not None else None
    confine_to = None if allow_images_outside else root
    checked = _check_rows(dataset, text_columns, image_needed, plan, root, confine_to, workers)

    keep = [i for i, reason in enumerate(checked.reasons) if not reason]
    counts: Counter[str] = Counter()
    for index, reason in enumerate(checked.reasons):
        if reason:
            name, _, detail = reason.partition(": ")
            counts[name] += 1
            if len(report.first_skipped) < max_reported_skips:
                report.first_skipped.append(SkippedRow(index, name, detail))
    report.skipped = dict(sorted(counts.items()))
    report.rows_kept = len(keep)
    report.question_types_inferred = sum(checked.inferred[i] for i in keep)
    if plan is not None:
        types = [t or "" for t in checked.question_types]
        report.question_type_counts = dict(sorted(Counter(types[i] for i in keep).items()))
        dataset = _replace_column(dataset, QUESTION_TYPE, types)
    if image_needed:
        feature = dataset.features[IMAGE]
        if isinstance(feature, datasets.Value) and feature.dtype in {"string", "large_string"}:
            dataset = _replace_column(dataset, IMAGE, checked.resolved_paths)
        elif checked.relative_struct_paths:
            dataset = _with_resolved_struct_paths(dataset, checked.resolved_paths)
    if len(keep) != len(dataset):
        dataset = dataset.select(keep)
    if image_needed:
        dataset = dataset.cast_column(IMAGE, datasets.Image(mode="RGB"))

    if report.rows_skipped:
        logger.warning("skipped %d of %d rows: %s", report.rows_skipped, report.rows_read, report.summary())
    else:
        logger.info("%s", report.summary())
    return LoadedData(dataset=dataset, report=report, columns=resolution)


def load_rows(
    source: Source,
    split: str | None = "train",
    column_map: Mapping[str, str] | None = None,
    task: str = "unified",
    question_type: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    *,
    needs_image: bool | None = None,
    cache_dir: str | None = None,
    num_workers: int | None = None,
    max_reported_skips: int = 10,
    allow_images_outside: bool = False,
) -> LoadedData:
    """Load ``source`` (hub id, directory, file(s), or a Dataset) into the corl schema for ``task``.

    See the module docstring for sources, image roots and question types; ``prepare_rows`` for the
    checks. ``cache_dir`` goes to ``datasets.load_dataset`` (hub ids, json/parquet/csv files).
    """
    check_task(task)
    dataset, default_root, name = read_source(source, split, cache_dir)
    return prepare_rows(
        dataset,
        task=task,
        column_map=column_map,
        question_type=question_type,
        image_root=image_root if image_root is not None else default_root,
        limit=limit,
        needs_image=needs_image,
        num_workers=num_workers,
        source_name=name,
        split=split,
        max_reported_skips=max_reported_skips,
        allow_images_outside=allow_images_outside,
    )
