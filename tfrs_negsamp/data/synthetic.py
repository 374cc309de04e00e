"""Synthetic implicit feedback with planted factors and Zipf popularity."""

import numpy as np

from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Interactions

NUM_GENRES = 10
WORDS_PER_CLUSTER = 20
_START_TIME = 1_000_000_000  # 2001-09-09, in seconds.
_SPAN = 365 * 86400  # User start times are spread over a year.
_MEAN_GAP = 86400  # Mean time between two interactions of one user.
_CHUNK_CELLS = 1 << 22  # Users x items score cells handled at once.


def _unit_rows(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  x = rng.standard_normal((n, k))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _draw_factors(rng: np.random.Generator, num_users: int, num_items: int,
                  num_factors: int) -> tuple[np.ndarray, np.ndarray]:
  """The first draws from the generator: user and item factors."""
  return (_unit_rows(rng, num_users, num_factors),
          _unit_rows(rng, num_items, num_factors))


def _sample_items(rng: np.random.Generator, log_pop: np.ndarray,
                  user_factors: np.ndarray, item_factors: np.ndarray,
                  strength: float, counts: np.ndarray) -> np.ndarray:
  """Per user, `counts[u]` distinct items by the Gumbel-top-k trick.

  Returns a [num_users, max(counts)] int array; entries beyond a user's count
  are -1.
  """
  num_users, num_items = user_factors.shape[0], item_factors.shape[0]
  k_max = int(counts.max())
  out = np.full((num_users, k_max), -1, np.int64)
  chunk = max(1, _CHUNK_CELLS // num_items)
  for start in range(0, num_users, chunk):
    stop = min(start + chunk, num_users)
    scores = log_pop + strength * (user_factors[start:stop] @ item_factors.T)
    scores += rng.gumbel(size=scores.shape)
    if k_max < num_items:
      top = np.argpartition(-scores, k_max - 1, axis=1)[:, :k_max]
    else:
      top = np.broadcast_to(np.arange(num_items), scores.shape)
    top_scores = np.take_along_axis(scores, top, axis=1)
    top = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
    keep = np.arange(k_max)[None, :] < counts[start:stop, None]
    out[start:stop] = np.where(keep, top, -1)
  return out


def _item_metadata(rng: np.random.Generator, item_factors: np.ndarray
                   ) -> tuple[list[str], list[list[str]]]:
  """Titles and genres that carry signal about the item factors."""
  num_items, k = item_factors.shape
  cluster = np.argmax(item_factors, axis=1)
  # Two words from the item's cluster vocabulary (with prob. 0.8 each, else
  # from the whole vocabulary) and one noise word.
  local = cluster[:, None] * WORDS_PER_CLUSTER + rng.integers(
      0, WORDS_PER_CLUSTER, (num_items, 2))
  anywhere = rng.integers(0, k * WORDS_PER_CLUSTER, (num_items, 3))
  words = np.concatenate(
      [np.where(rng.random((num_items, 2)) < 0.8, local, anywhere[:, :2]),
       anywhere[:, 2:]], axis=1)
  titles = ["c%d %s" % (c, " ".join("w%d" % w for w in ws))
            for c, ws in zip(cluster.tolist(), words.tolist())]
  genre_scores = item_factors @ rng.standard_normal((k, NUM_GENRES))
  ranked = np.argsort(-genre_scores, axis=1)[:, :2]
  second = rng.random(num_items) < 0.5
  genres = [["g%d" % a, "g%d" % b] if two else ["g%d" % a]
            for (a, b), two in zip(ranked.tolist(), second.tolist())]
  return titles, genres


def make_synthetic(num_users: int = 2000,
                   num_items: int = 1000,
                   interactions_per_user: float = 40,
                   num_factors: int = 16,
                   zipf_exponent: float = 1.0,
                   preference_strength: float = 6.0,
                   seed: int = 0) -> tuple[Interactions, Catalog]:
  """Generates a deterministic synthetic implicit-feedback data set.

  Users and items get random unit-norm factors u, v. Item base popularity
  is Zipf, p_j ∝ 1 / rank_j^zipf_exponent over a random permutation of the
  items. Each user draws Poisson(interactions_per_user) distinct items
  (at least 3, at most num_items) with probability ∝ p_j exp(strength <u,
  v_j>). Timestamps increase per user from a random start within a year,
  so a global temporal split is also meaningful. Titles ("c3 w61 w77 w205")
  hold a cluster token (argmax of the item factor) and words mostly from
  that cluster's vocabulary; genres are 1-2 of "g0".."g9" from a random
  projection of the factors.

  Args:
    num_users: Number of users; ids "0".."num_users-1".
    num_items: Number of items; ids "0".."num_items-1".
    interactions_per_user: Mean number of interactions per user.
    num_factors: Dimension of the planted factors.
    zipf_exponent: Exponent of the popularity law (0 = uniform).
    preference_strength: Weight of <u, v> in the item logits.
    seed: Seed of the numpy random generator.

  Returns:
    (interactions, catalog); rows are in time order.
  """
  if num_users < 1 or num_items < 3:
    raise ValueError("need num_users >= 1 and num_items >= 3, got %d, %d"
                     % (num_users, num_items))
  if interactions_per_user <= 0 or num_factors < 1:
    raise ValueError("interactions_per_user and num_factors must be "
                     "positive")
  if zipf_exponent < 0:
    raise ValueError("zipf_exponent must be >= 0, got %r" % zipf_exponent)
  rng = np.random.default_rng(seed)
  user_factors, item_factors = _draw_factors(rng, num_users, num_items,
                                             num_factors)
  rank = np.empty(num_items, np.int64)
  rank[rng.permutation(num_items)] = np.arange(1, num_items + 1)
  log_pop = -zipf_exponent * np.log(rank)
  counts = np.clip(rng.poisson(interactions_per_user, num_users), 3,
                   num_items)
  chosen = _sample_items(rng, log_pop, user_factors, item_factors,
                         preference_strength, counts)
  # The sample order favours preferred items; shuffle it per user so the
  # held-out last items are exchangeable with the others.
  order = np.argsort(
      np.where(chosen >= 0, rng.random(chosen.shape), np.inf), axis=1)
  chosen = np.take_along_axis(chosen, order, axis=1)
  gaps = rng.exponential(_MEAN_GAP, chosen.shape).astype(np.int64) + 1
  start = rng.integers(0, _SPAN, num_users)
  times = _START_TIME + start[:, None] + np.cumsum(gaps, axis=1)
  users = np.broadcast_to(np.arange(num_users)[:, None], chosen.shape)
  valid = chosen >= 0
  users, items, times = users[valid], chosen[valid], times[valid]
  by_time = np.lexsort((users, times))
  interactions = Interactions(
      user_ids=users[by_time].astype(str),
      item_ids=items[by_time].astype(str),
      timestamps=times[by_time],
      source="synthetic(num_users=%d, num_items=%d, seed=%d)"
      % (num_users, num_items, seed))
  titles, genres = _item_metadata(rng, item_factors)
  catalog = Catalog(item_ids=np.arange(num_items).astype(str), titles=titles,
                    genres=genres)
  return interactions, catalog


def planted_factors(num_users: int = 2000,
                    num_items: int = 1000,
                    num_factors: int = 16,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The (user, item) factors `make_synthetic` plants for these arguments.

  Rows are indexed by the integer value of the user / item id.
  """
  return _draw_factors(np.random.default_rng(seed), num_users, num_items,
                       num_factors)
