"""Export and serving of trained retrievers (see `serving.export`)."""
