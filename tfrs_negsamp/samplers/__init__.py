"""Negative samplers: one module per strategy, one contract (`base`)."""

from tfrs_negsamp.samplers.base import (CandidateGroup, NegativeSampler,
                                        PerQuery, SamplerContext,
                                        available_samplers, create_sampler,
                                        register_sampler)
from tfrs_negsamp.samplers.in_batch import InBatchSampler
