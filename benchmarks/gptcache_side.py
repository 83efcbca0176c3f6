"""GPTCache (PyPI gptcache 0.1.44) set up as fairly as it allows, for benchmarks/suite.py.

Same embedding model and ONNX session layout as semcached (all-MiniLM-L6-v2 int8, one
1-thread session shared by the calling threads), GPTCache's hnswlib vector store at the
same search width as semcached (ef 128; GPTCache's own default is 2, which misses stored
questions), its sqlite scalar store, no report table, an LRU as large as the workload.
A hit needs cosine >= ``min_cosine``: GPTCache's SearchDistanceEvaluation scores
4 - squared L2 distance of unit vectors and compares with 4 x similarity_threshold, so
the threshold is (1 + min_cosine) / 2.

Two fixes it needs to work at all, applied here: hnswlib returns numpy ids, which
Python 3.11's sqlite3 binds as blobs, so every id lookup misses (registered as ints); and
its helpers pip-install missing packages at run time (made an error instead).

Run as a script (under a venv holding gptcache, sqlalchemy, fastapi, uvicorn and
openai==0.28.1, which its server imports) it serves GPTCache's own HTTP server (FastAPI:
POST /get, POST /put) with that cache:

    .venv-gptcache/bin/python benchmarks/gptcache_side.py PORT DATA_DIR MODEL_DIR MIN_COSINE
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EF = 128  # semcached's search width (index.EF_SEARCH)


def _refuse_install(package: str, warn: bool = False) -> None:
    raise RuntimeError(f"GPTCache tried to pip install {package!r} at run time")


def setup_cache(cache: Any, data_dir: Path, embed: Callable[[str], np.ndarray], dim: int,
                min_cosine: float, max_size: int) -> None:
    """Initialises GPTCache's ``cache`` object (a gptcache.Cache) in ``data_dir``."""
    import gptcache.utils
    from gptcache import Config
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    gptcache.utils.prompt_install = _refuse_install
    for t in (np.uint64, np.int64, np.uint32, np.int32):
        sqlite3.register_adapter(t, int)
    data_dir.mkdir(parents=True, exist_ok=True)
    manager = get_data_manager(
        CacheBase("sqlite", sql_url=f"sqlite:///{data_dir}/gptcache.db"),
        VectorBase("hnswlib", dimension=dim, index_path=str(data_dir / "hnswlib.bin"), top_k=1,
                   max_elements=max_size),
        max_size=max_size)
    manager.v._index.set_ef(EF)
    cache.init(pre_embedding_func=get_prompt, embedding_func=lambda text, **_: embed(text),
               data_manager=manager, similarity_evaluation=SearchDistanceEvaluation(),
               config=Config(similarity_threshold=(1 + min_cosine) / 2, disable_report=True))


def onnx_embedding(model_dir: Path) -> tuple[Callable[[str], np.ndarray], int]:
    """The model as semcached runs it (mean pooling, unit length), without semcached."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.no_padding()  # the file pads to 128 tokens: the mean would average the padding
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(text: str) -> np.ndarray:
        e = tokenizer.encode(text)
        feeds = {"input_ids": np.array([e.ids], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask], dtype=np.int64)}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        states = session.run(None, feeds)[0][0]
        pooled = states.mean(axis=0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)

    return embed, len(embed("dimension probe"))


def serve(port: int, data_dir: Path, model_dir: Path, min_cosine: float) -> None:
    import uvicorn
    from gptcache import cache
    from gptcache_server import server

    embed, dim = onnx_embedding(model_dir)
    setup_cache(cache, data_dir, embed, dim, min_cosine, max_size=1_000_000)
    uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning")).run()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
