"""The application layer: the experiment pipeline, benchmark harness, tuner
and cluster helpers behind the programs in `trainers/`."""
