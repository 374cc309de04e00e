"""Item feature tables: title tokens and genres per model item index.

Model item index `p + 1` is catalog position `p`; index 0 is the
out-of-vocabulary slot (all padding). Tables are plain NumPy arrays here and
become non-trainable weights of the item tower, so any item id can be encoded
from its index alone (which samplers that draw from the catalog need).
"""

import collections
import dataclasses
import re
from typing import List, Optional, Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


@dataclasses.dataclass(frozen=True)
class ItemFeatureTable:
  """`title_tokens` `[N + 1, L]` int32 (0 = pad); `genres` `[N + 1, G]`."""
  title_tokens: Optional[np.ndarray]
  title_vocab_size: int
  genres: Optional[np.ndarray]
  genre_names: List[str]

  @property
  def has_features(self) -> bool:
    return self.title_tokens is not None or self.genres is not None


def tokenize(title: str) -> List[str]:
  return _TOKEN.findall(title.lower())


def build_feature_table(titles: Optional[Sequence[str]],
                        genres: Optional[Sequence[Sequence[str]]],
                        max_title_tokens: int = 8,
                        max_vocab: int = 20000) -> ItemFeatureTable:
  """Tokenizes titles (lower-case alphanumeric words) and multi-hots genres."""
  title_tokens, vocab_size = None, 0
  if titles is not None:
    tokenized = [tokenize(t or "") for t in titles]
    counts = collections.Counter(tok for toks in tokenized for tok in toks)
    vocab = {tok: i + 1 for i, (tok, _) in enumerate(
        sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_vocab])}
    vocab_size = len(vocab) + 1
    title_tokens = np.zeros([len(titles) + 1, max_title_tokens], np.int32)
    for row, toks in enumerate(tokenized, start=1):
      ids = [vocab[t] for t in toks if t in vocab][:max_title_tokens]
      title_tokens[row, :len(ids)] = ids
  genre_table, names = None, []
  if genres is not None:
    names = sorted({g for gs in genres for g in gs})
    index = {g: i for i, g in enumerate(names)}
    genre_table = np.zeros([len(genres) + 1, max(len(names), 1)], np.float32)
    for row, gs in enumerate(genres, start=1):
      for g in gs:
        genre_table[row, index[g]] = 1.0
  return ItemFeatureTable(title_tokens, vocab_size, genre_table, names)
