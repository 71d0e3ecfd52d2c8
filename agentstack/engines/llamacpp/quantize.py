"""Requantise a GGUF model file to another format, with the ``gguf`` package's reference codecs.

Every tensor is de-quantised to float32 and encoded again: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (32-value
blocks), F16, BF16 or F32. One-dimensional tensors (norms) stay float32, as llama.cpp's quantiser
keeps them. For the 4- and 5-bit targets the token embedding keeps its source encoding (the shipped
SmolLM2 file stores it as Q8_0; it is also the output matrix), again as llama.cpp does for output
tensors. Rows that do not divide into blocks keep their source encoding.

Starting from a quantised file, every format but the source's own adds error on top of it: F32
is exactly the source's values (what the torch engine computes with), Q8_0 nearly so, Q4_0 loses
more. Whether a format may be served is decided by the evaluation gate's checks
(``agentstack models quantize``), never assumed.

The output is written to a temporary file and renamed into place, with a JSON sidecar
(``<file>.json``) written last: source, its SHA-256, format, tool version.

This module knows nothing about serving.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from agentstack.engines.embedded.weights import _sha256
from agentstack.engines.llamacpp.files import write_gguf

log = logging.getLogger(__name__)

FORMATS = ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
LOW_BIT = ("Q5_1", "Q5_0", "Q4_1", "Q4_0")
TOOL = "agentstack.engines.llamacpp.quantize/1"


def _file_type(fmt: str):
    import gguf

    return gguf.LlamaFileType.ALL_F32 if fmt == "F32" else gguf.LlamaFileType[f"MOSTLY_{fmt}"]


def requantize(src: Path, dst: Path, fmt: str, metadata: dict | None = None) -> dict:
    """Write ``src`` re-encoded as ``fmt`` to ``dst``; returns the sidecar record. Tensors already in
    ``fmt`` are copied as they are. ``metadata`` replaces string/number key-values (e.g.
    ``tokenizer.chat_template``, ``llama.context_length``)."""
    import gguf
    import numpy as np
    from gguf import quants

    from agentstack.errors import InvalidRequestError

    fmt = fmt.upper()
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unknown format {fmt!r}", param="format", fix=f"use one of {', '.join(FORMATS)}")
    started = time.monotonic()
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = (metadata or {}).get(key, field.contents())
        writer.add_key_value(key, value, vtype, sub_type=sub)
    writer.add_file_type(int(_file_type(fmt)))
    target = gguf.GGMLQuantizationType[fmt]
    counts: dict[str, int] = {}
    for t in reader.tensors:
        source_type = t.tensor_type
        keep = (len(t.shape) == 1 or (fmt in LOW_BIT and t.name in ("token_embd.weight", "output.weight"))
                or int(t.shape[0]) % 32 != 0 or source_type == gguf.GGMLQuantizationType[fmt])
        if keep and len(t.shape) == 1 and source_type != gguf.GGMLQuantizationType.F32:
            data, qtype = quants.dequantize(t.data, source_type).astype(np.float32), gguf.GGMLQuantizationType.F32
        elif keep:
            data, qtype = np.array(t.data), source_type
        else:
            values = quants.dequantize(t.data, source_type).astype(np.float32)
            if target == gguf.GGMLQuantizationType.F32:
                data, qtype = values, target
            elif target == gguf.GGMLQuantizationType.F16:
                data, qtype = values.astype(np.float16), target
            else:
                data, qtype = quants.quantize(values, target), target
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        raw = qtype if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else None
        writer.add_tensor(t.name, data, raw_dtype=raw)
    write_gguf(writer, tmp, dst)
    record = {"source": str(src), "source_sha256": _sha256(src), "format": fmt, "tensor_types": counts,
              "sha256": _sha256(dst), "bytes": dst.stat().st_size, "tool": TOOL, "created_at": time.time(),
              "seconds": round(time.monotonic() - started, 2)}
    sidecar = dst.with_name(dst.name + ".json")
    sidecar.write_text(json.dumps(record, indent=2))
    log.info("wrote %s (%s, %.1f MB) in %.1f s", dst, fmt, record["bytes"] / 1e6, record["seconds"])
    return record


def cached(src: Path, fmt: str, cache_dir: Path) -> Path:
    """``src`` requantised to ``fmt`` under ``cache_dir/quantized`` (once, under a file lock)."""
    from filelock import FileLock

    from agentstack.engines.llamacpp.model_file import file_key

    fmt = fmt.upper()
    if fmt == _source_format(src):
        return src
    out = cache_dir / "quantized" / f"{src.stem.split('.')[0]}-{file_key(src)}.{fmt}.gguf"
    sidecar = out.with_name(out.name + ".json")
    if sidecar.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock", timeout=900):
        if not sidecar.is_file():
            requantize(src, out, fmt)
    return out


def _source_format(src: Path) -> str:
    from agentstack.engines.llamacpp.model_file import read_info

    return read_info(src).file_type
