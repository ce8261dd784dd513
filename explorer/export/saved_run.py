"""A run saved as one NPZ file, and read back without the model: :func:`save_run`,
:func:`load_run`.

The file is a plain NumPy ``.npz`` (a zip of ``.npy`` arrays, no pickled objects) holding:

- ``meta.json``: UTF-8 JSON as a ``uint8`` array: ``format`` (:data:`FORMAT`), ``version``,
  ``model`` (name and its ``ModelConfig`` as a dict), ``prompt``, ``target_text``, ``page``,
  ``settings`` (the view's choices, as in its link) and ``arrays`` (name -> shape, dtype);
- ``tokens.{source,target}.{ids,pieces,special}``: ``[N]`` (pieces as a unicode array);
- ``stream.{name}.boundaries``: the residual stream after the embeddings and after each
  block ``[L + 1, N, D]``; ``stream.{name}.sublayer.{attn,cross}``: what each attention
  sub-layer added ``[L, N, D]`` (``stream.{name}.tokens`` names the token sequence);
- ``scores.{stack}.{score}``: every head score ``[L, H]`` (Clark et al. 2019, Olsson et al.
  2022); ``lens.{stream}.{top_ids,top_probs}`` ``[R, C, k]``, ``lens.{stream}.{entropy,kl}``
  ``[R, C]``, ``lens.{stream}.rows`` (row labels ``[R]``), ``.positions`` ``[C]`` and,
  when saved with the tokenizer, ``.top_tokens`` ``[R, C, k]`` (the top tokens as text):
  the logit lens (nostalgebraist 2020) at every block over the last :data:`LENS_POSITIONS`
  positions;
- ``generation.*``: a generation's steps (``token_ids``, ``tokens``, ``probs``,
  ``entropies`` ``[T]``, ``top_ids``/``top_probs`` ``[T, k]``, ``prompt_ids``).

Anyone can read it with NumPy alone::

    with np.load("run.npz", allow_pickle=False) as f:
        meta = json.loads(f["meta.json"].tobytes())

:func:`load_run` does that for an untrusted file: a size cap on the file and on what it
unpacks to, no pickles, only ``.npy`` members, and a :class:`SavedRunError` saying what is
wrong otherwise.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

FORMAT = "transformer-explorer-run"
VERSION = 1
META = "meta.json"
MAX_BYTES = 512 * 2**20  # a saved 1,024-token SmolLM2 run is about 110 MB
MAX_ARRAYS = 2_048
LENS_POSITIONS = 64  # the lens is saved for the last this many positions
LENS_K = 5


class SavedRunError(ValueError):
    """A file that is not a saved run, or one this version cannot read."""


@dataclass
class SavedRun:
    """A saved run read back: ``meta`` (the JSON) and ``arrays`` (name -> ndarray)."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def model(self) -> str:
        return str(self.meta.get("model", {}).get("name", ""))

    @property
    def prompt(self) -> str:
        return str(self.meta.get("prompt", ""))

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.meta.get("settings", {}))

    def tokens(self, sequence: str = "source") -> tuple[np.ndarray, list[str]]:
        """(ids ``[N]``, pieces) of the ``source`` (prompt) or ``target`` (decoder) text."""
        return (self.arrays[f"tokens.{sequence}.ids"],
                [str(p) for p in self.arrays[f"tokens.{sequence}.pieces"]])

    @property
    def streams(self) -> list[str]:
        return sorted({name.split(".")[1] for name in self.arrays if name.startswith("stream.")
                       and name.endswith(".boundaries")})

    def residual(self, stream: str = "main") -> np.ndarray:
        """The residual stream after the embeddings and each block ``[L + 1, N, D]``."""
        return self.arrays[f"stream.{stream}.boundaries"]

    @property
    def stacks(self) -> list[str]:
        return sorted({name.split(".")[1] for name in self.arrays if name.startswith("scores.")})

    def scores(self, stack: str = "self") -> dict[str, np.ndarray]:
        """Every head score of ``stack``: ``{score name: [L, H]}``."""
        prefix = f"scores.{stack}."
        return {name[len(prefix):]: value for name, value in self.arrays.items()
                if name.startswith(prefix)}

    def lens(self, stream: str = "main") -> dict[str, np.ndarray]:
        """The saved logit lens of ``stream``: ``top_ids``, ``top_probs``, ``entropy``,
        ``kl``, ``rows`` and ``positions`` (empty when the model has no lens)."""
        prefix = f"lens.{stream}."
        return {name[len(prefix):]: value for name, value in self.arrays.items()
                if name.startswith(prefix)}

    @property
    def generation(self) -> dict[str, np.ndarray]:
        """The generated steps (empty when the run saved none)."""
        return {name.removeprefix("generation."): value for name, value in self.arrays.items()
                if name.startswith("generation.")}


# --------------------------------------------------------------------------- arrays of a run


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _text_array(texts: list[str]) -> np.ndarray:
    return np.array([str(t) for t in texts], dtype=np.str_)  # unicode, no pickle


def run_arrays(run: Any, residuals: bool = True, scores: bool = True,
               lens_positions: int = LENS_POSITIONS, k: int = LENS_K,
               token_text: Callable[[torch.Tensor], np.ndarray] | None = None
               ) -> dict[str, np.ndarray]:
    """The small arrays of a :class:`~explorer.runs.PromptRun`, named as the module says.

    ``residuals`` False leaves out the residual streams (most of the bytes); ``scores`` False
    the head scores (they need every layer's pattern once). The lens covers every block and
    the last ``lens_positions`` positions (0: no lens); ``token_text`` (ids -> texts of the
    same shape, from the tokenizer) adds ``lens.{stream}.top_tokens``, so the file can be
    read without the tokenizer.
    """
    from explorer.runs import lens, lens_stream

    arrays: dict[str, np.ndarray] = {}
    for stream in run.streams.values():
        sequence = "target" if stream.name == "decoder" else "source"
        tokens = stream.tokens
        arrays[f"tokens.{sequence}.ids"] = _numpy(tokens.ids).astype(np.int64)
        arrays[f"tokens.{sequence}.pieces"] = _text_array(tokens.pieces)
        arrays[f"tokens.{sequence}.special"] = _numpy(tokens.special).astype(bool)
        arrays[f"stream.{stream.name}.tokens"] = _text_array([sequence])
        if residuals:
            arrays[f"stream.{stream.name}.boundaries"] = _numpy(stream.boundaries)
            for name, added in stream.sublayers.items():
                arrays[f"stream.{stream.name}.sublayer.{name}"] = _numpy(added)
    if scores:
        for stack_name in run.stacks:
            for name, values in run.scores(stack_name).items():
                arrays[f"scores.{stack_name}.{name}"] = _numpy(values).astype(np.float32)
    stream = lens_stream(run) if lens_positions else None
    if stream is not None:
        n = len(stream.tokens)
        positions = list(range(max(0, n - lens_positions), n))
        rows = stream.rows()
        summary = lens(run, rows, positions, k)
        prefix = f"lens.{stream.name}."
        arrays[prefix + "top_ids"] = _numpy(summary.top_ids).astype(np.int64)
        if token_text is not None:
            arrays[prefix + "top_tokens"] = _text_array(
                list(np.asarray(token_text(summary.top_ids)).ravel())
            ).reshape(tuple(summary.top_ids.shape))
        arrays[prefix + "top_probs"] = _numpy(summary.top_probs).astype(np.float32)
        arrays[prefix + "entropy"] = _numpy(summary.entropy).astype(np.float32)
        if summary.kl is not None:
            arrays[prefix + "kl"] = _numpy(summary.kl).astype(np.float32)
        arrays[prefix + "rows"] = _text_array([row.label for row in rows])
        arrays[prefix + "positions"] = np.array(positions, dtype=np.int64)
    return arrays


def run_nbytes(run: Any, residuals: bool = True) -> int:
    """About how many bytes :func:`run_arrays` gives (the streams dominate)."""
    total = sum(len(stream.tokens) * 64 for stream in run.streams.values())
    if residuals:
        total += sum(stream.nbytes() for stream in run.streams.values())
    return total


def generation_arrays(record: Any) -> dict[str, np.ndarray]:
    """A generation's steps (an ``explorer.generation.GenerationRecord``) as arrays."""
    k = max((len(ids) for ids in record.top_ids), default=0)

    def padded(rows: list[list], fill: float, dtype: Any) -> np.ndarray:
        out = np.full((len(rows), k), fill, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        return out

    return {
        "generation.prompt_ids": np.array(record.prompt_ids, dtype=np.int64),
        "generation.token_ids": np.array(record.token_ids, dtype=np.int64),
        "generation.tokens": _text_array(record.tokens),
        "generation.texts": _text_array(record.texts),
        "generation.probs": np.array(record.probs, dtype=np.float32),
        "generation.entropies": np.array(record.entropies, dtype=np.float32),
        "generation.top_ids": padded(record.top_ids, -1, np.int64),
        "generation.top_probs": padded(record.top_probs, np.nan, np.float32),
    }


# --------------------------------------------------------------------------- save and load


def save_run(target: str | Path | IO[bytes] | None, arrays: Mapping[str, np.ndarray],
             meta: Mapping[str, Any]) -> bytes | None:
    """Write ``arrays`` and ``meta`` (model, prompt, settings...) as one NPZ file.

    ``target`` None returns the file's bytes instead. ``meta`` gets ``format``, ``version``
    and ``arrays`` (each array's shape and dtype) added; it must be JSON-serialisable.
    """
    if META in arrays:
        raise ValueError(f"{META!r} is reserved for the metadata")
    full = {**meta, "format": FORMAT, "version": VERSION,
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)}
                       for name, a in arrays.items()}}
    payload = np.frombuffer(json.dumps(full, ensure_ascii=False).encode("utf-8"), np.uint8)
    buffer = io.BytesIO() if target is None else target
    np.savez(buffer, **{META: payload}, **arrays)
    return buffer.getvalue() if target is None else None


def load_run(source: str | Path | bytes | IO[bytes], max_bytes: int = MAX_BYTES) -> SavedRun:
    """Read a file written by :func:`save_run` (a path, its bytes or an open binary file).

    The file is untrusted: over ``max_bytes`` (packed or unpacked), not a zip of ``.npy``
    arrays, holding pickled objects, or without valid ``meta.json`` of this format, it
    raises :class:`SavedRunError` with a sentence saying why.
    """
    data = _read_capped(source, max_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise SavedRunError("This is not a saved run (not an NPZ file).") from exc
    if len(members) > MAX_ARRAYS:
        raise SavedRunError(f"The file holds {len(members):,} entries (at most {MAX_ARRAYS:,}).")
    if sum(m.file_size for m in members) > max_bytes:
        raise SavedRunError(f"The file unpacks to more than {max_bytes / 2**20:,.0f} MB.")
    if any(not m.filename.endswith(".npy") for m in members):
        raise SavedRunError("The file holds entries that are not NumPy arrays.")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:  # pickled objects are refused by allow_pickle=False
        raise SavedRunError("The file holds Python objects, which are never loaded.") from exc
    except Exception as exc:  # a corrupt member: zlib, header or shape errors
        raise SavedRunError(f"The file is damaged ({type(exc).__name__}).") from exc
    meta = _meta(arrays.pop(META, None))
    return SavedRun(meta, arrays)


def _read_capped(source: str | Path | bytes | IO[bytes], max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.stat().st_size > max_bytes:
            raise SavedRunError(f"The file is larger than {max_bytes / 2**20:,.0f} MB.")
        data = path.read_bytes()
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SavedRunError(f"The file is larger than {max_bytes / 2**20:,.0f} MB.")
    return data


def _meta(raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise SavedRunError(f"This is not a saved run of Transformer Explorer (no {META}).")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SavedRunError(f"The run's {META} is not valid JSON.") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SavedRunError("This is not a saved run of Transformer Explorer.")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SavedRunError(f"This run was saved by a newer version (format {version!r}); "
                            f"this one reads up to {VERSION}.")
    return meta
