"""What every job needs from the process it runs in: torch.distributed set-up and collectives, autocast.

The lowest layer of istpan's own code with `errors`, `modality` and `config`: nothing here imports the data path,
the models or any job.
"""
