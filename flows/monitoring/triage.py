"""Triage of flagged traffic: for each input the guard flags, its nearest in-distribution training
examples (with their labels and, for text guards, their queries) and distances, from the neighbour
bank registered with the guard (`flows.guard.explanations`; distance rule documented there).

The monitor writes one triage file per scored batch, `<state>.triage/<batch>.json` (atomic), beside
the row hashes `<state>.rows/`, and its summary carries the first few flagged rows of each batch for
the command line to print. A guard registered without a bank gives a triage file that says so.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.files import write_json_atomic
from flows.guard.explanations import NeighbourBank

if TYPE_CHECKING:
    import pandas as pd

    from flows.guard.guard import Guard

DEFAULT_K = 3
MAX_TRIAGE_ROWS = 100  # flagged rows per batch written with their neighbours (the first, in batch order)
SHOWN_ROWS = 3  # flagged rows per batch in the monitor's summary (what the command line prints)
NO_BANK_NOTE = "this guard was registered without a neighbour bank: no nearest training examples"

_loaded_banks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pyfunc -> its bank, loaded once


def neighbour_bank(guard: Guard) -> NeighbourBank | None:
    """The neighbour bank registered with the guard: the one its loaded pyfunc already read, else read
    from the pyfunc's detector artifact folder (once per loaded guard); None when it has none."""
    pyfunc = guard.pyfunc
    if pyfunc is None:
        return None
    model = pyfunc.unwrap_python_model()
    for value in vars(model).values():
        if isinstance(value, NeighbourBank):
            return value
    try:
        return _loaded_banks[pyfunc]
    except (KeyError, TypeError):
        pass
    folder = getattr(model, "detector_dir", None)  # set by EnergyGuardModel.load_context
    if folder is None:
        context = getattr(getattr(pyfunc, "_model_impl", None), "context", None)
        folder = (getattr(context, "artifacts", None) or {}).get("detector")
    bank = NeighbourBank.load(Path(folder)) if folder else None
    try:
        _loaded_banks[pyfunc] = bank
    except TypeError:
        pass  # not weak-referenceable: load again next time
    return bank


def batch_vectors(guard: Guard, frame_or_x: pd.DataFrame | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The detector's input rows (embeddings for a text guard) of the batch rows `rows`."""
    import pandas as pd

    if not isinstance(frame_or_x, pd.DataFrame):
        return np.asarray(frame_or_x, dtype=np.float64)[rows]
    frame = frame_or_x.iloc[rows]
    if "text" in frame.columns and guard.embedder is not None:
        from flows.data.featurize import embed_with_cache

        x, _ = embed_with_cache(frame["text"].tolist(), guard.embedder, progress=False)  # cached when scored
        return np.asarray(x, dtype=np.float64)
    return frame[list(guard.feature_names)].to_numpy(dtype=np.float64)


def flagged_neighbours(
    guard: Guard,
    frame_or_x: pd.DataFrame | np.ndarray,
    is_ood: np.ndarray,
    k: int = DEFAULT_K,
    *,
    energies: np.ndarray | None = None,
    max_rows: int | None = None,
    bank: NeighbourBank | None = None,
) -> list[dict]:
    """For each flagged row of the batch (is_ood True), in batch order: {"row": index in the batch,
    "energy": its energy, "text": the query (text batches) or None, "neighbours": its k nearest training
    examples, as `NeighbourBank.nearest` gives them}. `energies` (N,) are the batch's energies when the
    caller has them (else the flagged rows are scored); `max_rows` keeps the first flagged rows only;
    `bank` defaults to the guard's (`neighbour_bank`). Raises LookupError when the guard has no bank."""
    import pandas as pd

    is_ood = np.asarray(is_ood, dtype=bool)
    n = len(frame_or_x)
    if is_ood.shape != (n,):
        raise ValueError(f"is_ood must have shape ({n},) (one flag per batch row), got {is_ood.shape}")
    if energies is not None and np.shape(energies) != (n,):
        raise ValueError(f"energies must have shape ({n},) (one per batch row), got {np.shape(energies)}")
    bank = bank if bank is not None else neighbour_bank(guard)
    if bank is None:
        raise LookupError(f"model {guard.name} v{guard.version}: {NO_BANK_NOTE}")
    rows = np.flatnonzero(is_ood)
    if max_rows is not None:
        rows = rows[:max_rows]
    if rows.size == 0:
        return []
    x = batch_vectors(guard, frame_or_x, rows)
    row_energies = np.asarray(energies, dtype=np.float64)[rows] if energies is not None else guard.detector.score(x)
    texts = (
        frame_or_x["text"].iloc[rows].tolist()
        if isinstance(frame_or_x, pd.DataFrame) and "text" in frame_or_x.columns
        else [None] * rows.size
    )
    nearest = bank.nearest(x, k)
    return [
        {"row": int(row), "energy": float(energy), "text": text, "neighbours": found}
        for row, energy, text, found in zip(rows, row_energies, texts, nearest)
    ]


def triage_dir(state_file: Path) -> Path:
    """Where the triage of each processed batch lives: `<state>.triage/`."""
    state_file = Path(state_file)
    return state_file.with_name(f"{state_file.stem}.triage")


def write_batch_triage(
    state_file: Path,
    batch: int,
    source: str,
    guard: Guard,
    frame: pd.DataFrame,
    is_ood: np.ndarray,
    energies: np.ndarray,
    file_rows: list[int] | None = None,
    k: int = DEFAULT_K,
) -> dict[str, Any]:
    """Write `<state>.triage/<batch>.json` (atomic) for one scored batch and return its content:
    the batch, its source file, how many rows were flagged, and the first MAX_TRIAGE_ROWS flagged rows
    with their nearest training examples (each row also with "data_row", its row in the file, which
    differs from "row" when only a changed file's new rows were scored: `file_rows`)."""
    n_flagged = int(np.count_nonzero(is_ood))
    payload: dict[str, Any] = {
        "batch": int(batch), "source": source, "model": guard.name, "version": str(guard.version),
        "n_rows": len(frame), "n_flagged": n_flagged, "k": int(k), "rows": [], "truncated": False, "note": None,
    }  # fmt: skip
    bank = neighbour_bank(guard)
    if bank is None:
        payload["note"] = NO_BANK_NOTE
    else:
        payload["metric"] = bank.metric
        found = flagged_neighbours(guard, frame, is_ood, k, energies=energies, max_rows=MAX_TRIAGE_ROWS, bank=bank)
        for entry in found:
            entry["data_row"] = int(file_rows[entry["row"]]) if file_rows is not None else entry["row"]
        payload["rows"] = found
        payload["truncated"] = n_flagged > len(found)
    write_json_atomic(triage_dir(state_file) / f"{int(batch):06d}.json", payload)
    return payload


def summary_entry(payload: dict[str, Any], path: Path | None = None, shown: int = SHOWN_ROWS) -> dict[str, Any]:
    """What the monitor's summary carries for one batch: the first `shown` flagged rows."""
    return {
        "batch": payload["batch"], "source": payload["source"], "n_flagged": payload["n_flagged"],
        "rows": payload["rows"][:shown], "note": payload.get("note"), "file": None if path is None else str(path),
    }  # fmt: skip


def format_triage(entries: list[dict[str, Any]], text_width: int = 60) -> list[str]:
    """Plain lines for the command line: per batch, its first flagged rows and their nearest training
    examples (label, distance, text when known)."""
    lines = []
    for entry in entries:
        if not entry["n_flagged"]:
            continue
        head = f"batch {entry['batch']} ({entry['source']}): {entry['n_flagged']} flagged"
        if entry.get("note"):
            lines.append(f"{head}; {entry['note']}")
            continue
        more = entry["n_flagged"] - len(entry["rows"])
        lines.append(head + (f"; first {len(entry['rows'])} shown" if more > 0 else "") +
                     (f" (all in {entry['file']})" if entry.get("file") else ""))
        for row in entry["rows"]:
            text = f" {_short(row['text'], text_width)!r}" if row.get("text") is not None else ""
            lines.append(f"  row {row.get('data_row', row['row'])}{text} energy {row['energy']:.4g}; nearest training examples:")
            for neighbour in row["neighbours"]:
                label = "" if neighbour["label"] is None else f"label {neighbour['label']!r} "
                ntext = f" {_short(neighbour['text'], text_width)!r}" if neighbour["text"] is not None else ""
                lines.append(f"    {neighbour['rank']}. {label}distance {neighbour['distance']:.4g}"
                             f" (bank row {neighbour['row']}){ntext}")
    return lines


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
