"""The sampler contract shared by every negative-sampling strategy.

A sampler is a Keras layer. Given the query embeddings of a (per-replica)
batch and the in-batch candidates (gathered across replicas, local block
first), it returns one or more `CandidateGroup`s: the columns of a softmax and
the corrections that apply to them. It never computes the loss: the
`tasks.Retrieval` task turns groups into logits and a loss through
`tfrs.tasks.Retrieval`'s machinery. See
docs/design/sampler_contract.md#candidate-groups.

State (queues, caches, frequency sketches) lives in non-trainable variables
created with `tfrs_negsamp.distribute.add_state`, so it is checkpointed,
restored and mirrored like any other model state. A sampler reads its state
first, builds its groups, then updates its state, and only when
`training=True`.

The registry (`--sampler=NAME`) maps a name to a factory and the sampler's
options: a frozen dataclass whose fields are the option (flag) names, typed,
each with its default and valid range (`option`). `create_sampler` builds
it from `SamplerContext.options`, so a misspelt option, a value of the
wrong type or out of range is an error naming it.
"""

import dataclasses
import difflib
import math
import typing
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp import keys as keys_lib


class PerQuery(NamedTuple):
  """Per-row negatives: row `i` sees its own `K` extra columns.

  The embeddings come either dense (`embeddings [B, K, d]`) or as a table
  of the distinct drawn items and an index into it (`table [U, d]`,
  `index [B, K]`): the task then scores `[B, U]` and gathers when that is
  smaller than `[B, K, d]` (many rows drawing from a small catalog, e.g.
  sequence rows), the same logits either way.

  Attributes:
    embeddings: `[B, K, d]` candidate embeddings (None with `table`).
    ids: `[B, K]` int64 ids (accidental hits against the row's positive are
      masked by the task).
    log_q: optional `[B, K]` log expected count, subtracted from the logits.
    logit_offset: optional `[B, K]` additive offset (e.g. `log n_ij`).
    mask: optional `[B, K]` bool, True = keep.
    table: optional `[U, d]` embeddings of the distinct drawn items.
    index: `[B, K]` int rows of `table` (with `table`).
  """
  embeddings: Optional[tf.Tensor]
  ids: tf.Tensor
  log_q: Optional[tf.Tensor] = None
  logit_offset: Optional[tf.Tensor] = None
  mask: Optional[tf.Tensor] = None
  table: Optional[tf.Tensor] = None
  index: Optional[tf.Tensor] = None

  def dense_embeddings(self) -> tf.Tensor:
    """`[B, K, d]`: `embeddings`, or `table` gathered by `index`."""
    if self.table is None:
      return self.embeddings
    return tf.gather(self.table, self.index)


def encode_per_query(item_model: Callable[[tf.Tensor], tf.Tensor],
                     ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """`(table [U, d], index)`: the distinct `ids` encoded once, and where
  each of `ids` is in the table (`index` has the shape of `ids`).

  `tf.gather(table, index)` equals `item_model(ids)`, gradients included
  (the gather's gradient sums a repeated id's rows).
  """
  unique, index = tf.unique(tf.reshape(tf.cast(ids, tf.int64), [-1]))
  return item_model(unique), tf.reshape(index, tf.shape(ids))


class CatalogSoftmax(NamedTuple):
  """Every catalog item as a column: the exact softmax (`FullSoftmax`).

  Attributes:
    item_embeddings: int64 item keys `[n]` (`1..num_items`) -> `[n, d]`.
    num_items: the catalog size `I`.
    chunk_size: items per chunk of the running log-sum-exp.
  """
  item_embeddings: Callable[[tf.Tensor], tf.Tensor]
  num_items: int
  chunk_size: int


class CandidateGroup(NamedTuple):
  """One softmax; the loss is `sum_g weight_g * CE_g`.

  Column layout: `[in-batch candidates | extra_embeddings]`, followed by the
  per-query columns if any. With `drop_in_batch` the in-batch block is
  replaced by the row's positive alone, so the shared columns are
  `[positive | extra]` and `column_log_q`, `logit_offset` and `score_mask`
  are laid out over those `1 + E` columns.

  Attributes:
    weight: weight of this group's cross-entropy.
    extra_embeddings: `[E, d]` shared extra columns for every row.
    extra_ids: `[E]` int64 ids of the extra columns.
    column_log_q: `[C]` (or `[B, C]`) log expected count of each shared column
      (`C` = in-batch columns + `E`), subtracted from the logits. None means
      no correction.
    logit_offset: `[B, C]` additive offset on the shared columns.
    score_mask: `[B, C]` bool (or `[C]`), True = keep.
    per_query: per-row negatives, see `PerQuery`.
    drop_in_batch: only the positive (and extra / per-query columns) remain.
    remove_accidental_hits: mask shared columns whose id equals the row's
      positive id (TFRS `RemoveAccidentalHits`).
    num_hard_negatives: keep only the hardest negatives per row (TFRS
      `HardNegativeMining`), after corrections and masks.
    catalog_softmax: the whole catalog as the columns (the other fields
      are then unused): the task computes the exact softmax in chunks.
  """
  weight: float = 1.0
  extra_embeddings: Optional[tf.Tensor] = None
  extra_ids: Optional[tf.Tensor] = None
  column_log_q: Optional[tf.Tensor] = None
  logit_offset: Optional[tf.Tensor] = None
  score_mask: Optional[tf.Tensor] = None
  per_query: Optional[PerQuery] = None
  drop_in_batch: bool = False
  remove_accidental_hits: bool = True
  num_hard_negatives: Optional[int] = None
  catalog_softmax: Optional[CatalogSoftmax] = None


class NegativeSampler(tf.keras.layers.Layer):
  """Base class of all samplers.

  Subclasses implement `sample()`; `call()` is fixed here so every sampler
  takes the same arguments.

  Args:
    frequency: optional `FrequencySource` giving `log Q` of item ids (the
      streaming estimator of Yi et al. 2019, or fixed training counts). It is
      updated once per training step with the global batch's ids.
    remove_accidental_hits: mask negatives equal to the row's positive.
  """

  # Whether `build` needs the embedding dimension (a `[B, d]` shape).
  needs_embedding_dim = False
  # No state, no randomness and no shared columns (the full softmax): the
  # task may score only the valid positions of sequence rows, as one block
  # of data-dependent size, instead of fixed blocks that include padding.
  stateless = False

  def __init__(self,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True,
               **kwargs) -> None:
    super().__init__(**kwargs)
    if frequency is not None and not isinstance(
        frequency, frequency_lib.FrequencySource):
      raise TypeError("`frequency` must be a FrequencySource layer, got %r."
                      % (frequency,))
    self.frequency = frequency
    self.remove_accidental_hits = bool(remove_accidental_hits)

  # -- the contract ------------------------------------------------------

  def call(self,
           query_embeddings: tf.Tensor,
           candidate_embeddings: tf.Tensor,
           candidate_ids: tf.Tensor,
           training: bool = False,
           positive_ids: Optional[tf.Tensor] = None,
           consumed: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
           ids_are_keys: bool = False) -> List[CandidateGroup]:
    """Builds the candidate groups of one step.

    Args:
      query_embeddings: `[B, d]` this replica's queries.
      candidate_embeddings: `[G, d]` in-batch candidates of the global batch,
        local block first (row `i`'s positive is column `i`).
      candidate_ids: `[G]` ids of those candidates: int, or strings (see
        `id_keys`).
      training: state is updated only when True.
      positive_ids: `[B]` ids of the rows' positives (defaults to the first
        `B` candidate ids).
      consumed: optional `consumed(ids) -> bool [B, K]` (ids `[K]` shared or
        `[B, K]` per row): True where the row's user consumed the item in
        training (`tfrs_negsamp.masking`). Samplers that select inside
        themselves (resampling, pools, catalog draws) exclude those items;
        the task masks them in the loss. None: no history masking.
      ids_are_keys: the ids are already `id_keys` (the task maps them
        before gathering them across replicas).

    Returns:
      A list of `CandidateGroup`.

    Raises:
      ValueError: for a tensor of the wrong rank, or ids and embeddings of
        different lengths (the message names the argument).
    """
    query_embeddings = tf.convert_to_tensor(query_embeddings)
    candidate_embeddings = tf.convert_to_tensor(candidate_embeddings)
    candidate_ids = tf.convert_to_tensor(candidate_ids)
    check_rank(query_embeddings, 2, "query_embeddings")
    check_rank(candidate_embeddings, 2, "candidate_embeddings")
    check_rank(candidate_ids, 1, "candidate_ids")
    check_same_length(candidate_ids, candidate_embeddings, "candidate_ids",
                      "candidate_embeddings")
    if positive_ids is None:
      positive_ids = candidate_ids[:tf.shape(query_embeddings)[0]]
    else:
      positive_ids = tf.convert_to_tensor(positive_ids)
      check_rank(positive_ids, 1, "positive_ids")
    if ids_are_keys:
      candidate_ids = tf.cast(candidate_ids, tf.int64)
      positive_ids = tf.cast(positive_ids, tf.int64)
    else:
      candidate_ids = self.id_keys(candidate_ids)
      positive_ids = self.id_keys(positive_ids)
    return self.sample(query_embeddings, candidate_embeddings, candidate_ids,
                       positive_ids, training=training, consumed=consumed)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training,
             consumed=None) -> List[CandidateGroup]:
    raise TypeError("%s must override sample()." % type(self).__name__)

  def build(self, input_shape=None):
    """Creates the frequency source's state with the sampler's."""
    if self.frequency is not None and not self.frequency.built:
      self.frequency.build()
    super().build(input_shape)

  # -- shared mechanics --------------------------------------------------

  def id_keys(self, ids: tf.Tensor) -> tf.Tensor:
    """The int64 keys the sampler compares, stores and hashes.

    Samplers built with `candidates=` map ids to their catalog indices
    (`1..N`, 0 out of vocabulary: exact for ints and strings); otherwise
    int ids are cast and string ids get their 64-bit FarmHash fingerprint
    (`keys.default_keys`).
    """
    catalog = getattr(self, "candidate_catalog", None)
    if catalog is not None:
      return catalog.lookup(ids)
    return keys_lib.default_keys(ids)

  def in_batch_log_q(self, candidate_ids: tf.Tensor,
                     training: bool) -> Optional[tf.Tensor]:
    """Updates the frequency source (training only), then returns `log Q`.

    `update` runs before `lookup` so that current-batch items have at least
    one observation (docs/design/in_batch_logq.md#streaming-estimator).
    Returns None without a source.
    """
    if self.frequency is None:
      return None
    # Update and look up in replica order, identical on every replica (D4):
    # a transcendental op may round an element differently at another
    # position (vectorised body vs scalar tail), so a value computed in
    # local-first order can differ by an ulp between replicas, and state
    # written from it (the CBNS queue's log Q) would drift between workers.
    _, num_replicas = distribute.replica_info()
    local = tf.shape(candidate_ids)[0] // num_replicas
    ids = distribute.to_replica_order(candidate_ids, local)
    if training:  # `update` then `log_q`, sharing their hashing
      # Negative keys are padding (sequence rows): not counted.
      log_q = self.frequency.update_and_log_q(ids, num_draws=tf.size(ids),
                                              valid=ids >= 0)
    else:
      log_q = self.frequency.log_q(ids, num_draws=tf.size(ids))
    return tf.stop_gradient(distribute.to_local_first(log_q, local))

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({
        "frequency": (tf.keras.layers.serialize(self.frequency)
                      if self.frequency is not None else None),
        "remove_accidental_hits": self.remove_accidental_hits,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    if config.get("frequency") is not None:
      config["frequency"] = tf.keras.layers.deserialize(
          config["frequency"], custom_objects=frequency_lib.CUSTOM_OBJECTS)
    return cls(**config)


def check_rank(x: tf.Tensor, rank: int, name: str) -> None:
  """Raises `ValueError` naming `name` unless `x` has rank `rank`."""
  if x.shape.rank is not None and x.shape.rank != rank:
    raise ValueError("%s must have rank %d, got shape %s."
                     % (name, rank, x.shape))


def check_same_length(a: tf.Tensor, b: tf.Tensor, name_a: str,
                      name_b: str) -> None:
  """Raises `ValueError` unless the (static) leading dimensions agree."""
  if (a.shape.rank and b.shape.rank and a.shape[0] is not None and
      b.shape[0] is not None and a.shape[0] != b.shape[0]):
    raise ValueError("%s and %s must have the same length, got %d and %d."
                     % (name_a, name_b, a.shape[0], b.shape[0]))


# -- typed options: one frozen dataclass per sampler -----------------------


@dataclasses.dataclass(frozen=True)
class OptionSpec:
  """The valid values of one option, kept in its field's `metadata`.

  Attributes:
    low: lowest valid number (None: unbounded).
    high: highest valid number (None: unbounded).
    low_open: `low` itself is invalid (`value > low`).
    high_open: `high` itself is invalid (`value < high`).
    zero_is_default: 0 stands for the field's default (the flags' "0: the
      default" convention).
    choices: the valid strings of a string option (empty: any string).
  """
  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False
  high_open: bool = False
  zero_is_default: bool = False
  choices: Tuple[str, ...] = ()

  def interval(self) -> str:
    """The valid range in words, e.g. " in (0, 1]" or " >= 0" ("": any)."""
    if self.low is not None and self.high is not None:
      return " in %s%g, %g%s" % ("(" if self.low_open else "[", self.low,
                                 self.high, ")" if self.high_open else "]")
    if self.low is not None:
      return " %s %g" % (">" if self.low_open else ">=", self.low)
    if self.high is not None:
      return " %s %g" % ("<" if self.high_open else "<=", self.high)
    return ""

  def contains(self, value: float) -> bool:
    if self.low is not None and (value <= self.low if self.low_open
                                 else value < self.low):
      return False
    if self.high is not None and (value >= self.high if self.high_open
                                  else value > self.high):
      return False
    return True


@dataclasses.dataclass(frozen=True)
class Tune:
  """How the tuner searches an option (its search range).

  Attributes:
    kind: "float" or "int" (the range `low`..`high`, on a log scale when
      `log`) or "categorical" (`choices`).
    low: lowest value searched.
    high: highest value searched.
    log: search on a log scale.
    choices: the values of a categorical search.
    per_batch: the choices are multiples of the global batch size (rounded
      to whole numbers, at least 1).
  """
  kind: str
  low: float = 0.0
  high: float = 0.0
  log: bool = False
  choices: Tuple[Any, ...] = ()
  per_batch: bool = False

  def __post_init__(self):
    if self.kind not in ("float", "int", "categorical"):
      raise ValueError("unknown Tune kind %r" % self.kind)
    if self.kind == "categorical" and not self.choices:
      raise ValueError("a categorical Tune needs choices")


def option(default: Any, *, low: Optional[float] = None,
           high: Optional[float] = None, low_open: bool = False,
           high_open: bool = False, zero_is_default: bool = False,
           choices: Sequence[str] = (), help: str = "",  # pylint: disable=redefined-builtin
           tune: Optional[Tune] = None) -> Any:
  """A field of an options dataclass: the one place an option is written.

  The field's name is the constructor argument it sets (and the trainer's
  flag: `--<name>`); it holds the default, the valid values, the help text
  of the flag and the tuner's search range.

  ```
  @dataclasses.dataclass(frozen=True)
  class CrossBatchOptions:
    memory_size: int = base.option(
        0, low=0, help="queue size M (0: 4x the global batch)",
        tune=base.Tune("categorical", choices=(1, 4, 16), per_batch=True))
  ```

  Args:
    default: the option's default.
    low: see `OptionSpec`.
    high: see `OptionSpec`.
    low_open: see `OptionSpec`.
    high_open: see `OptionSpec`.
    zero_is_default: see `OptionSpec`.
    choices: see `OptionSpec`.
    help: one line for the flag's help and the docs.
    tune: the tuner's search range (None: not searched).

  Returns:
    A `dataclasses.field` with `metadata={"spec": OptionSpec(...), "help":
    help, "tune": tune}`.
  """
  return dataclasses.field(default=default, metadata={"spec": OptionSpec(
      low=low, high=high, low_open=low_open, high_open=high_open,
      zero_is_default=zero_is_default, choices=tuple(choices)),
                                                      "help": help,
                                                      "tune": tune})


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """The options of a sampler that takes none."""


def _is_integer(value: Any) -> bool:
  return (isinstance(value, (int, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _is_number(value: Any) -> bool:
  return (_is_integer(value) or isinstance(value, (float, np.floating))) and (
      math.isfinite(float(value)))


def _field(options_cls: type, name: str) -> dataclasses.Field:
  for f in dataclasses.fields(options_cls):
    if f.name == name:
      return f
  raise ValueError("%s has no option %r" % (options_cls.__name__, name))


def _value_type(options_cls: type, name: str) -> Tuple[type, bool]:
  """(int | float | bool | str, whether None is a valid value)."""
  hint = typing.get_type_hints(options_cls)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is Union and len(args) == 1:
    return args[0], True
  return hint, False


def check_option(options_cls: type, name: str, value: Any) -> Any:
  """The typed value of option `name` of `options_cls`; ValueError if bad.

  None means "unset" and gives the field's default, as does 0 where the
  field's `OptionSpec.zero_is_default`. Integers are ints (not bools),
  floats any finite number, bools True/False (or 0/1), strings one of
  `choices`, each in the field's range.

  Args:
    options_cls: a sampler's options dataclass.
    name: one of its fields.
    value: the raw value (a flag's, a variant spec's, ...).

  Returns:
    The value as the field's type.

  Raises:
    ValueError: starting with the option's name, e.g. "memory_size must be
      an integer >= 0 (0: the default), got -5".
  """
  field = _field(options_cls, name)
  spec = field.metadata.get("spec", OptionSpec())
  kind, optional = _value_type(options_cls, name)
  if value is None:
    return None if optional else field.default
  if kind is bool:
    if isinstance(value, (bool, np.bool_)) or (_is_integer(value)
                                               and value in (0, 1)):
      return bool(value)
    raise ValueError("%s must be True or False, got %r" % (name, value))
  if kind is str:
    if isinstance(value, str) and (not spec.choices or value in spec.choices):
      return value
    raise ValueError("%s must be one of %s, got %r"
                     % (name, ", ".join(spec.choices), value))
  if kind is int:
    if not _is_integer(value) or not spec.contains(value):
      zero = spec.zero_is_default or field.default == 0
      raise ValueError("%s must be an integer%s%s, got %r"
                       % (name, spec.interval(), " (0: the default)"
                          if zero and spec.contains(0) else "", value))
    value = int(value)
  elif kind is float:
    if not _is_number(value) or not spec.contains(value):
      raise ValueError("%s must be a finite number%s, got %r"
                       % (name, spec.interval(), value))
    value = float(value)
  else:
    raise TypeError("option %s of %s has unsupported type %r"
                    % (name, options_cls.__name__, kind))
  return field.default if spec.zero_is_default and value == 0 else value


def unknown_option_message(sampler: str, key: str,
                           valid: Sequence[str]) -> str:
  """The error for option `key`, which `sampler` does not declare.

  E.g. "sampler 'cross_batch' has no option 'memry_size' (did you mean
  'memory_size'?); its options: ...", the suggestion from
  `difflib.get_close_matches`.
  """
  close = difflib.get_close_matches(key, valid, n=1)
  return "sampler %r has no option %r%s; its options: %s" % (
      sampler, key, " (did you mean %r?)" % close[0] if close else "",
      ", ".join(sorted(valid)) or "none")


# -- registry: `--sampler=NAME` -------------------------------------------

SamplerFactory = Callable[..., NegativeSampler]
# The task's loss of a sampler: "softmax", "triplet", "gbce", or a callable
# `options -> loss` (e.g. a `losses.CMLTripletLoss` with the options' margin).
LossSpec = Union[str, Callable[[Any], Any]]


class _Entry(NamedTuple):
  factory: SamplerFactory
  options: type
  loss: LossSpec
  summary: str


_REGISTRY: Dict[str, _Entry] = {}


def register_sampler(name: str, options: type = NoOptions,
                     loss: LossSpec = "softmax", summary: str = ""
                     ) -> Callable[[SamplerFactory], SamplerFactory]:
  """Registers `fn(context, options) -> NegativeSampler` as `name`.

  Everything a program needs about a sampler comes from here: the trainer's
  flags (`--<option>`, help and type from the options' fields), the tuner's
  search space (the fields' `tune`), the task's loss and the docs' one-line
  summary. A new sampler is its module (ending in this decorator), one
  import line in `samplers/__init__.py`, and its tests.

  Args:
    name: the registry name (`--sampler=NAME`).
    options: the sampler's frozen options dataclass (fields made with
      `option`); `create_sampler` builds it from `context.options` and
      passes it to the factory.
    loss: the task's loss for this sampler (see `LossSpec`).
    summary: one line for `--help` and the docs (default: the first line of
      the factory's docstring).

  Returns:
    The decorator (it returns the factory unchanged).
  """
  if not (dataclasses.is_dataclass(options) and isinstance(options, type)):
    raise TypeError("options of sampler %r must be a dataclass, got %r"
                    % (name, options))
  for f in dataclasses.fields(options):  # fail at import, not at a run
    _value_type(options, f.name)
    check_option(options, f.name, f.default)

  def decorator(fn: SamplerFactory) -> SamplerFactory:
    if name in _REGISTRY:
      raise ValueError("sampler %r registered twice" % name)
    line = summary or (fn.__doc__ or "").strip().split("\n")[0]
    _REGISTRY[name] = _Entry(fn, options, loss, line)
    return fn
  return decorator


def unregister_sampler(name: str) -> None:
  """Removes `name` from the registry (for tests that register one)."""
  _REGISTRY.pop(name, None)


def available_samplers() -> List[str]:
  return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    raise ValueError("unknown sampler %r%s; valid samplers: %s"
                     % (name, " (did you mean %r?)" % close[0]
                        if close else "", ", ".join(available_samplers())))
  return _REGISTRY[name]


def sampler_options(name: str) -> type:
  """The options dataclass of the sampler registered as `name`."""
  return _entry(name).options


def sampler_summary(name: str) -> str:
  """The one-line description of the sampler registered as `name`."""
  return _entry(name).summary


def option_names(name: str) -> Tuple[str, ...]:
  """The options the sampler `name` declares (its dataclass's fields)."""
  return tuple(f.name for f in dataclasses.fields(sampler_options(name)))


def task_loss(name: str, options: Any = None) -> Any:
  """The task's loss argument for sampler `name` with `options`.

  A string ("softmax", "triplet", ...) or what the registered callable
  returns for the options (default options when None).
  """
  entry = _entry(name)
  if callable(entry.loss):
    return entry.loss(options if options is not None else entry.options())
  return entry.loss


def loss_kind(name: str) -> str:
  """"softmax", "triplet" or "gbce": the family of the sampler's loss."""
  loss = task_loss(name)
  return loss if isinstance(loss, str) else getattr(loss, "kind", "softmax")


class OptionInfo(NamedTuple):
  """One option across the samplers that declare it (for flags and docs).

  Attributes:
    name: the option (flag) name.
    kind: int, float, bool or str.
    help: the help line (the first declaration's).
    choices: the valid strings of a str option (union over samplers).
    defaults: `{sampler: default}`.
  """
  name: str
  kind: type
  help: str
  choices: Tuple[str, ...]
  defaults: Dict[str, Any]


def option_table() -> Dict[str, OptionInfo]:
  """Every option of every registered sampler, by name.

  Raises:
    TypeError: two samplers declare one option name with different types
      (a flag has one type).
  """
  table: Dict[str, OptionInfo] = {}
  for sampler in available_samplers():
    options_cls = sampler_options(sampler)
    for f in dataclasses.fields(options_cls):
      kind, _ = _value_type(options_cls, f.name)
      spec = f.metadata.get("spec", OptionSpec())
      info = table.get(f.name)
      if info is None:
        table[f.name] = OptionInfo(f.name, kind, f.metadata.get("help", ""),
                                   spec.choices, {sampler: f.default})
        continue
      if info.kind is not kind:
        raise TypeError(
            "option %r is %s for %s but %s for %s: one flag has one type; "
            "rename one of them" % (f.name, info.kind.__name__,
                                    ", ".join(info.defaults),
                                    kind.__name__, sampler))
      info.defaults[sampler] = f.default
      choices = tuple(dict.fromkeys(info.choices + spec.choices))
      table[f.name] = info._replace(
          help=info.help or f.metadata.get("help", ""), choices=choices)
  return table


def option_tunes(name: str) -> Dict[str, Tune]:
  """`{option: Tune}` of the options of sampler `name` that are searched."""
  options_cls = sampler_options(name)
  return {f.name: f.metadata["tune"] for f in dataclasses.fields(options_cls)
          if f.metadata.get("tune") is not None}


def build_options(name: str, values: Mapping[str, Any]) -> Any:
  """The options dataclass of sampler `name` from a `{option: value}` dict.

  Args:
    name: a registered sampler.
    values: raw values (missing or None: the field default).

  Returns:
    The sampler's frozen options instance.

  Raises:
    ValueError: for an option the sampler does not declare (naming it, the
      sampler, its options and the closest one), or a value of the wrong
      type or out of range (naming the option).
  """
  options_cls = sampler_options(name)
  valid = option_names(name)
  typed = {}
  for key, value in values.items():
    if key not in valid:
      raise ValueError(unknown_option_message(name, key, valid))
    typed[key] = check_option(options_cls, key, value)
  for group in getattr(options_cls, "exclusive_options", ()):
    # Alternative units of one setting (the warm-up in steps or epochs):
    # one given replaces the others' defaults (two given: the options
    # class's own check refuses them).
    given = [k for k in group if typed.get(k)]
    if len(given) == 1:
      typed.update({k: check_option(options_cls, k, 0)
                    for k in group if k not in given})
  return options_cls(**typed)


def create_sampler(name: str, context: "SamplerContext") -> NegativeSampler:
  """Builds the sampler registered as `name` from `context`.

  `context.options` must hold only options the sampler declares (see
  `build_options`); the factory receives them typed.

  Raises:
    ValueError: for an unknown name (listing the valid ones) or a bad
      option (see `build_options`).
  """
  entry = _entry(name)
  return entry.factory(context, build_options(name, context.options))


class SamplerContext(NamedTuple):
  """What a factory may need to build a sampler.

  Attributes:
    item_counts: `[N + 1]` training counts per model item index (index 0 is
      the out-of-vocabulary slot, count 0).
    item_model: callable mapping `[...]` int64 item indices to embeddings.
    global_batch_size: `G`, the number of in-batch candidates per step.
    seed: base seed for stateless randomness.
    options: `{option: value}` (from flags), e.g. `memory_size`; only
      options the sampler declares (`sampler_options(name)`).
    temperature: the task's softmax temperature (None: raw dot products),
      for samplers that select by the model's own softmax (BIR, XIR).
    sampler_calls_per_epoch: training calls of the sampler per pass over
      the training rows (steps per epoch x calls per step: one on flat
      rows, one per block of positions on sequence rows), for options in
      epochs (`warmup_epochs`); None: flat rows, the training interactions
      (`sum(item_counts)`) over `global_batch_size`.
  """
  item_counts: Any
  item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
  global_batch_size: int = 128
  seed: int = 0
  options: Dict[str, Any] = {}
  temperature: Optional[float] = None
  sampler_calls_per_epoch: Optional[float] = None
