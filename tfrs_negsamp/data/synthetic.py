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
# The smallest catalog the generator makes (every user gets at least 3
# distinct items, for a leave-last-out split).
MIN_ITEMS = 3
# Above this many users x items cells, `_sample_items_pooled` (O(rows))
# replaces the exact dense draw (issue 17).
DENSE_CELLS = 1 << 26
# Pooled draw: candidates per requested item, and pool entries per chunk.
POOL_FACTOR = 4
_POOL_CHUNK = 1 << 21


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


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Walker/Vose alias table of `weights` (> 0): (accept [n], alias [n]).

  Draw: i uniform in [0, n), keep i with probability accept[i], else
  alias[i]; then P(j) = weights[j] / sum(weights).
  """
  n = weights.size
  scaled = weights * (n / weights.sum())
  accept = np.ones(n)
  alias = np.arange(n)
  small = [int(i) for i in np.flatnonzero(scaled < 1.0)]
  large = [int(i) for i in np.flatnonzero(scaled >= 1.0)]
  while small and large:
    s, l = small.pop(), large[-1]
    accept[s] = scaled[s]
    alias[s] = l
    scaled[l] -= 1.0 - scaled[s]
    if scaled[l] < 1.0:
      small.append(large.pop())
  return accept, alias


def _descending_bits(values: np.ndarray) -> np.ndarray:
  """uint64 codes of float32(values) whose ascending order is descending."""
  bits = (-values).astype(np.float32).view(np.uint32).astype(np.uint64)
  negative = bits >= np.uint64(1 << 31)
  return np.where(negative, bits ^ np.uint64(0xFFFFFFFF),
                  bits | np.uint64(1 << 31))


def _sample_items_pooled(rng: np.random.Generator, log_pop: np.ndarray,
                         user_factors: np.ndarray, item_factors: np.ndarray,
                         strength: float, counts: np.ndarray) -> np.ndarray:
  """`_sample_items` by sampling-importance-resampling, in O(rows) work.

  Per user u: a pool of R = POOL_FACTOR c_u + 8 items drawn with
  replacement from the popularity p_j (alias method); then the
  Gumbel-top-c_u of the pool's distinct items with keys
  strength <u, v_j> + G (an item drawn m times keeps the max of its m
  Gumbels, i.e. weight m e^{strength <u,v_j>}).
  As R grows this tends to the exact draw (weights p_j e^{strength
  <u, v_j>}, without replacement); no users x items array is formed. A
  user whose pool holds fewer than c_u distinct items gets them all.

  Returns:
    [num_users, max(counts)] int array; entries beyond a user's draws -1.
  """
  num_users = user_factors.shape[0]
  num_items = item_factors.shape[0]
  k_max = int(counts.max())
  out = np.full((num_users, k_max), -1, np.int64)
  accept, alias = _alias_table(np.exp(log_pop - log_pop.max()))
  pool = POOL_FACTOR * counts.astype(np.int64) + 8
  # Users per chunk so that (user, item) pair codes fit in 32 bits.
  max_users = max(1, (1 << 32) // num_items)
  ends = np.cumsum(pool)
  user_factors = user_factors.astype(np.float32)
  item_factors = item_factors.astype(np.float32)
  start = 0
  while start < num_users:
    # Users [start, stop): about _POOL_CHUNK pool entries.
    base = ends[start - 1] if start else 0
    stop = max(start + 1, int(np.searchsorted(ends, base + _POOL_CHUNK,
                                              side="right")))
    stop = min(stop, num_users, start + max_users)
    sizes = pool[start:stop]
    user = np.repeat(np.arange(start, stop), sizes)
    item = (rng.random(user.size) * num_items).astype(np.int64)
    item = np.where(rng.random(user.size) < accept[item], item, alias[item])
    key = strength * np.einsum("ij,ij->i", user_factors[user],
                               item_factors[item]) + rng.gumbel(
                                   size=user.size)
    # Distinct (user, item) pairs with their best key, then per user by
    # decreasing key; keep each user's first counts[u]. One integer sort
    # each, of (pair << 32 | key code) then (user << 32 | key code), with
    # float32 key codes (np.lexsort is several times slower).
    pair = ((user - start) * num_items + item).astype(np.uint64)
    packed = np.sort((pair << np.uint64(32)) | _descending_bits(key))
    pair = (packed >> np.uint64(32)).astype(np.int64)
    first = np.ones(pair.size, bool)
    first[1:] = pair[1:] != pair[:-1]
    pair, code = pair[first], packed[first] & np.uint64(0xFFFFFFFF)
    user, item = np.divmod(pair, num_items)
    user += start
    order = np.argsort(((user - start).astype(np.uint64) << np.uint64(32))
                       | code)
    user, item = user[order], item[order]
    group_start = np.searchsorted(user, user, side="left")
    rank = np.arange(user.size) - group_start
    keep = rank < counts[user]
    out[user[keep], rank[keep]] = item[keep]
    start = stop
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
  v_j>): exactly (Gumbel-top-k over the catalog) up to DENSE_CELLS users x
  items, above that by sampling-importance-resampling from a pool of
  POOL_FACTOR x draws by popularity (`_sample_items_pooled`, O(rows) time
  and memory: 200,000 x 50,000 with 5M rows in about 20 s of CPU).
  Timestamps increase per user from a random start within a year, so a
  global temporal split is also meaningful. Titles ("c3 w61 w77 w205")
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
  if num_users < 1 or num_items < MIN_ITEMS:
    raise ValueError("need num_users >= 1 and num_items >= %d, got %d, %d"
                     % (MIN_ITEMS, num_users, num_items))
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
  sample = (_sample_items if num_users * num_items <= DENSE_CELLS
            else _sample_items_pooled)
  chosen = sample(rng, log_pop, user_factors, item_factors,
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
      # Gathers from the id strings: converting each row's int is slower.
      user_ids=np.arange(num_users).astype(str)[users[by_time]],
      item_ids=np.arange(num_items).astype(str)[items[by_time]],
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
