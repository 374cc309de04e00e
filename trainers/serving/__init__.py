"""The application layer of serving: the REST server, its request parser,
the load test and the ScaNN index benchmark."""
