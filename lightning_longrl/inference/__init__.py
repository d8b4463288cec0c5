"""Answering questions with a model: loading it, batching questions, sampling and decoding
responses, and scoring them into prediction rows and benchmark metrics. The training stages,
``lightning-longrl eval`` and the difficulty filter all answer through this layer, so they score
alike."""
