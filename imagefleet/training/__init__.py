"""LoRA training as a job: what the orchestrator and the worker share, without torch.

The dataset format and its validation, the hyperparameters and the learning-rate schedule live
here so that the orchestrator can refuse a bad training job at submit (a 422 naming the field),
and the worker's engine (imagefleet.worker.training) trains from exactly the same definitions.
"""
