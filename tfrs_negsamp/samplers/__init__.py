"""Negative samplers: one module per strategy, one contract (`base`)."""

from tfrs_negsamp.samplers.base import (CandidateGroup, CatalogSoftmax,
                                        NegativeSampler,
                                        OptionInfo, PerQuery, SamplerContext,
                                        Tune, available_samplers,
                                        build_options, check_option,
                                        create_sampler, loss_kind, option,
                                        option_names, option_table,
                                        option_tunes, register_sampler,
                                        sampler_options, sampler_summary,
                                        task_loss, unregister_sampler)
from tfrs_negsamp.samplers.adaptive import AdaptiveSampler
from tfrs_negsamp.samplers.adaptive_mixed import AdaptiveMixedSampler
from tfrs_negsamp.samplers.balanced import BalancedSampler
from tfrs_negsamp.samplers.bir import BIRSampler
from tfrs_negsamp.samplers.catalog import CandidateCatalog
from tfrs_negsamp.samplers.compose import Compose
from tfrs_negsamp.samplers.cross_batch import CrossBatchSampler
from tfrs_negsamp.samplers.full import FullSoftmax
from tfrs_negsamp.samplers.in_batch import InBatchSampler
from tfrs_negsamp.samplers.inverse_popularity import InversePopularitySampler
from tfrs_negsamp.samplers.mixed import MixedSampler
from tfrs_negsamp.samplers.popularity import PopularitySampler
from tfrs_negsamp.samplers.two_stage import TwoStageSampler
from tfrs_negsamp.samplers.uniform import UniformSampler
from tfrs_negsamp.samplers.warmup import WarmupSampler
from tfrs_negsamp.samplers.xir import XIRSampler
