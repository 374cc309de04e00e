"""Int64 keys of item ids: what samplers compare, store and hash.

Int ids are their own keys; string ids get a 64-bit FarmHash fingerprint in
`[0, 2^63 - 1)` (two distinct ids collide with probability ~2^-63 per pair).
Samplers built with `candidates=` use catalog indices instead
(`NegativeSampler.id_keys`).
"""

import tensorflow as tf

# Keys of string ids: FarmHash fingerprints in [0, 2^63 - 1).
STRING_KEY_BUCKETS = 2**63 - 1


def default_keys(ids: tf.Tensor) -> tf.Tensor:
  """int64 keys of ids: a cast for ints, a 64-bit fingerprint for strings."""
  ids = tf.convert_to_tensor(ids)
  if ids.dtype == tf.string:
    return tf.strings.to_hash_bucket_fast(ids, STRING_KEY_BUCKETS)
  if not ids.dtype.is_integer:
    raise ValueError("candidate ids must be integers or strings, got %s."
                     % ids.dtype.name)
  return tf.cast(ids, tf.int64)
